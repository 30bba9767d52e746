"""The tri-state tables of ``criteria.result``: one test per cell."""

import pytest

from cds_service.criteria.result import CriterionResult, Evidence, Result, all_of, any_of, negate

M, N, U = Result.MET, Result.NOT_MET, Result.UNKNOWN

ALL_OF = {(M, M): M, (M, N): N, (M, U): U, (N, M): N, (N, N): N, (N, U): N, (U, M): U, (U, N): N, (U, U): U}
ANY_OF = {(M, M): M, (M, N): M, (M, U): M, (N, M): M, (N, N): N, (N, U): U, (U, M): M, (U, N): U, (U, U): U}


@pytest.mark.parametrize(("pair", "expected"), ALL_OF.items())
def test_all_of_table(pair, expected):
    assert all_of(pair) is expected


@pytest.mark.parametrize(("pair", "expected"), ANY_OF.items())
def test_any_of_table(pair, expected):
    assert any_of(pair) is expected


def test_empty_combinations():
    assert all_of([]) is M
    assert any_of([]) is N


@pytest.mark.parametrize(("value", "expected"), [(M, N), (N, M), (U, U)])
def test_negate(value, expected):
    assert negate(value) is expected


def test_result_is_never_truthy():
    with pytest.raises(TypeError):
        bool(Result.UNKNOWN)
    with pytest.raises(TypeError):
        if Result.MET:  # noqa: SIM108 - the point is that this raises
            pass


def test_of_maps_none_to_unknown():
    assert Result.of(True) is M and Result.of(False) is N and Result.of(None) is U


def test_criterion_result_json_shape():
    ev = Evidence("Patient/p1", value=50, unit="a", date="2026-01-01")
    r = CriterionResult("I1", "inclusion", M, "Age 50.", (ev,))
    assert r.to_json() == {
        "id": "I1", "kind": "inclusion", "result": "met", "reason": "Age 50.",
        "evidence": [{"reference": "Patient/p1", "value": 50, "unit": "a", "date": "2026-01-01"}],
    }
