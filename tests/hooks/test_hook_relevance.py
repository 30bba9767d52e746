"""Through the hook, the fast path (prefetched resources no criterion can use are skipped before model
validation) gives exactly the answer of the plain path, for every fixture patient."""

from __future__ import annotations

from typing import Any

from hookhelp import SERVICE_URL, hook_body

import cds_service.hooks.patient_view as patient_view
from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import state
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for

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


def test_fast_path_through_the_hook_is_identical_on_all_fixtures(make_app, monkeypatch):
    assert len(PATIENTS) >= 30
    app = make_app()
    state(app).save_report = None  # report links carry random tokens: compare everything else
    fast = _answers(app)
    assert any(a["cards"] for a in fast)
    calls: list[Any] = []

    def plain(tables: Any) -> None:
        calls.append(tables)
        return None

    monkeypatch.setattr(patient_view, "relevant_to", plain)
    slow = _answers(app)
    assert len(calls) == len(PATIENTS)  # the plain path was really taken
    for p, f, s in zip(PATIENTS, fast, slow, strict=True):
        assert f == s, p.source

