"""Exclusion criteria E17, E18, E19: met / unknown (none of them can be NOT_MET from the record)."""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    AT,
    ICD10CM,
    LOINC,
    SCT,
    coded_observation,
    condition,
    days_ago,
    observation,
    patient,
    record_of,
)

import cds_service.criteria.other  # noqa: F401 - registers the criteria
from cds_service.config import default_knowledge
from cds_service.criteria.registry import REGISTRY, Verdict
from cds_service.criteria.result import Result
from cds_service.facts.index import Facts

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN
WOMAN = patient(birth="1985-03-01", gender="female")
MAN = patient(birth="1985-03-01", gender="male")


def verdict(criterion_id: str, *resources: dict) -> Verdict:
    return REGISTRY[criterion_id](Facts(record_of(*resources), AT, default_knowledge()))


def hcg(answer: str, ago: float = 3, **kw: Any) -> dict:
    return coded_observation(LOINC, "2106-3", LOINC, answer, date=days_ago(ago), **kw)


# --- E17 --------------------------------------------------------------------------------------------------------

def test_E17_positive_hcg_is_met() -> None:
    v = verdict("E17", WOMAN, hcg("LA6576-8"))
    assert v.result is MET
    assert "hCG positive" in v.reason
    assert v.evidence[0].code.endswith("2106-3")


def test_E17_quantitative_hcg_above_cutoff_is_met() -> None:
    obs = observation(LOINC, "19080-1", value=850, unit="m[IU]/mL", high=5, date=days_ago(2))
    assert verdict("E17", WOMAN, obs).result is MET


def test_E17_pregnancy_status_pregnant_is_met() -> None:
    obs = coded_observation(LOINC, "82810-3", SCT, "77386006", date=days_ago(5))
    v = verdict("E17", WOMAN, obs)
    assert v.result is MET
    assert "pregnant" in v.reason


def test_E17_active_pregnancy_condition_is_met() -> None:
    v = verdict("E17", WOMAN, condition(ICD10CM, "Z34.00", onset="2026-08-01"))
    assert v.result is MET


def test_E17_resolved_pregnancy_condition_is_not_evidence() -> None:
    v = verdict("E17", WOMAN, condition(ICD10CM, "Z34.00", onset="2024-01-01", clinical="resolved"))
    assert v.result is UNKNOWN


def test_E17_unconfirmed_pregnancy_condition_is_unknown() -> None:
    v = verdict("E17", WOMAN, condition(ICD10CM, "Z33.1", verification="provisional"))
    assert v.result is UNKNOWN


def test_E17_puerperium_code_goes_to_review() -> None:
    # O8x/O9x blocks mean recently pregnant rather than pregnant now.
    v = verdict("E17", WOMAN, condition(ICD10CM, "O80"))
    assert v.result is UNKNOWN
    assert "review" in v.reason


def test_E17_breastfeeding_is_unknown_for_review() -> None:
    obs = coded_observation(LOINC, "63895-7", SCT, "169750002", date=days_ago(3))
    v = verdict("E17", WOMAN, obs)
    assert v.result is UNKNOWN
    assert "Breastfeeding" in v.reason and "agrees to stop" in v.reason


def test_E17_lactation_encounter_is_unknown_for_review() -> None:
    v = verdict("E17", WOMAN, condition(ICD10CM, "Z39.1"))
    assert v.result is UNKNOWN
    assert "Breastfeeding" in v.reason


def test_E17_negative_hcg_still_needs_family_planning() -> None:
    v = verdict("E17", WOMAN, hcg("LA6577-6"))
    assert v.result is UNKNOWN
    assert "hCG negative" in v.reason
    assert "2 years" in v.reason


def test_E17_stale_positive_hcg_is_not_pregnancy_now() -> None:
    assert verdict("E17", WOMAN, hcg("LA6576-8", ago=60)).result is UNKNOWN


def test_E17_preliminary_positive_hcg_does_not_decide() -> None:
    assert verdict("E17", WOMAN, hcg("LA6576-8", status="preliminary")).result is UNKNOWN


def test_E17_entered_in_error_hcg_is_ignored() -> None:
    assert verdict("E17", WOMAN, hcg("LA6576-8", status="entered-in-error")).result is UNKNOWN


def test_E17_male_still_asked_about_family_planning() -> None:
    v = verdict("E17", MAN)
    assert v.result is UNKNOWN
    assert "family-planning" in v.reason


def test_E17_documented_non_childbearing_still_unknown() -> None:
    assert verdict("E17", WOMAN, condition(ICD10CM, "Z90.710")).result is UNKNOWN


@pytest.mark.parametrize("record", [
    [WOMAN], [MAN], [WOMAN, hcg("LA6577-6")], [WOMAN, condition(ICD10CM, "Z78.0")],
    [WOMAN, coded_observation(LOINC, "82810-3", SCT, "60001007", date=days_ago(2))],
])
def test_E17_is_never_not_met(record: list[dict]) -> None:
    assert verdict("E17", *record).result is UNKNOWN


# --- E18, E19 ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["E18", "E19"])
def test_E18_E19_attestations_are_unknown(cid: str) -> None:
    v = verdict(cid, WOMAN)
    assert v.result is UNKNOWN
    assert v.reason.startswith("Needs confirmation by the study team")


def test_E18_names_the_grade() -> None:
    assert "grade 1" in verdict("E18", MAN).reason
