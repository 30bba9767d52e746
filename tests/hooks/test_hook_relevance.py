"""Through the hook, the fast path (the request decoded lazily, gather.lazy; prefetched resources no criterion can
use, and Observations beyond their date horizon, are skipped before model validation; Observations the checked
reader vouches for are read without fhir.resources) gives exactly the answer of the plain path (the request
parsed whole, all validated by fhir.resources), for every
fixture patient at several evaluation times and for the benchmarks' long records."""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from builders import AT
from hookhelp import SERVICE_URL, hook_body

import cds_service.gather.prefetch as cds_prefetch
import cds_service.gather.record as record_module
import cds_service.hooks.patient_view as patient_view
from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import state
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.json_body import parse_json_body

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
from _common import aml_record, full_prefetch, patient_id_of  # noqa: E402 - the benchmarks' generated records

PATIENTS = load_fixture_patients()


def _without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


def _answers(app) -> list[Any]:
    client = app.test_client()
    templates = discovery_prefetch(state(app).templates)
    out = []
    for p in PATIENTS:
        resp = client.post(SERVICE_URL, json=hook_body(prefetch_for(p, templates), patient_id=p.patient_id))
        assert resp.status_code == 200, p.source
        out.append(_without_uuids(resp.json))
    return out


def _plain(calls: list[Any], monkeypatch: Any):
    """relevant_to for the plain path: no filter, and every resource validated by fhir.resources."""
    real_build = cds_prefetch.build_record
    monkeypatch.setattr(cds_prefetch, "build_record", functools.partial(real_build, checked=False))
    monkeypatch.setattr(patient_view, "_lazy_body", parse_json_body)  # the request parsed whole (no gather.lazy)

    def plain(tables: Any, **_horizon: Any) -> None:
        calls.append(tables)
        return None
    return plain


def _no_horizon(calls: list[Any]):
    def codes_only(tables: Any, **_horizon: Any) -> Any:
        calls.append(tables)
        return record_module.relevant_to(tables)
    return codes_only


def test_fast_path_through_the_hook_is_identical_on_all_fixtures(make_app, monkeypatch):
    assert len(PATIENTS) >= 30
    app = make_app()
    state(app).save_report = None  # report links carry random tokens: compare everything else
    fast = _answers(app)
    assert any(a["cards"] for a in fast)
    calls: list[Any] = []
    monkeypatch.setattr(patient_view, "relevant_to", _plain(calls, monkeypatch))
    slow = _answers(app)
    assert len(calls) == len(PATIENTS)  # the plain path was really taken
    for p, f, s in zip(PATIENTS, fast, slow, strict=True):
        assert f == s, p.source


@pytest.mark.parametrize("days", [30, 120, 800])
def test_date_horizon_through_the_hook_is_identical_on_all_fixtures_later(make_app, monkeypatch, days):
    app = make_app(clock=lambda: AT + timedelta(days=days))
    state(app).save_report = None
    fast = _answers(app)
    calls: list[Any] = []
    monkeypatch.setattr(patient_view, "relevant_to", _no_horizon(calls))
    slow = _answers(app)
    assert len(calls) == len(PATIENTS)
    for p, f, s in zip(PATIENTS, fast, slow, strict=True):
        assert f == s, p.source


@pytest.mark.parametrize("size", [1_000, 10_000])
def test_date_horizon_through_the_hook_is_identical_on_the_bench_records(make_app, monkeypatch, size):
    app = make_app()
    state(app).save_report = None
    resources = aml_record(size)
    body = hook_body(full_prefetch(state(app).templates, resources), patient_id=patient_id_of(resources))
    client = app.test_client()
    seen: list[int] = []
    real_build = record_module.build_record

    def counting(*args: Any, **kwargs: Any):
        record = real_build(*args, **kwargs)
        seen.append(sum(len(v) for v in record.resources.values()))
        return record

    monkeypatch.setattr("cds_service.gather.prefetch.build_record", counting)
    fast = client.post(SERVICE_URL, json=body)
    monkeypatch.setattr(patient_view, "relevant_to", _plain([], monkeypatch))
    slow = client.post(SERVICE_URL, json=body)
    assert fast.status_code == slow.status_code == 200
    assert _without_uuids(fast.json) == _without_uuids(slow.json)
    assert seen[0] < seen[1] // 2  # the horizon did skip most of the history
