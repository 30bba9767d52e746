"""The hook sees what the command line sees (issue 9 part 5).

For every fixture patient in ``fixtures/`` and every Synthea record in ``../shared/synthea`` (skipped when the
folder is absent), the screening the hook returns equals ``screen()`` of the same bundle (what ``trialscreen
screen`` prints), both when the EHR answers the discovery prefetch templates (``prefetch_for``: a FHIR
server's search semantics over the patient's resources) and when the service queries a real FHIR server
process itself (no prefetch). Observations are asked for by category and filtered locally, so a record's
Observations reach the hook whatever their code; the templates used are the ones discovery publishes.

A blood-pressure panel coded only 55284-4 (Synthea's and many EHRs' code) reaches the hook and decides E10f
as it does for the command line.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from cds_service.config import Settings, load_knowledge
from cds_service.gather.record import build_record
from cds_service.hooks.app import create_app
from cds_service.hooks.commands import serve_in_thread
from cds_service.hooks.demo_data import (
    FIXTURE_TIME,
    FixturePatient,
    load_fixture_patients,
    prefetch_for,
    transaction_for,
)
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.pipeline import screen

pytestmark = pytest.mark.integration



def _synthea_dir() -> Path:
    """``TRIALSCREEN_SYNTHEA_DIR``, else ``shared/synthea`` beside the checkout or any folder above it (a git
    worktree sits one level deeper than the main checkout)."""
    if os.environ.get("TRIALSCREEN_SYNTHEA_DIR"):
        return Path(os.environ["TRIALSCREEN_SYNTHEA_DIR"])
    root = Path(__file__).resolve().parents[2]
    return next((d / "shared" / "synthea" for d in root.parents if (d / "shared" / "synthea").is_dir()),
                root.parent / "shared" / "synthea")


SYNTHEA = _synthea_dir()
EXT = "org.trialscreen.screening"
PREFIX = f"hc{uuid.uuid4().hex[:6]}-"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _synthea_paths() -> list[Path]:
    if not SYNTHEA.is_dir():
        return []
    return sorted(p for p in SYNTHEA.glob("*.json") if not p.name.startswith(("hospital", "practitioner")))


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(Settings.from_env({}))


@pytest.fixture(scope="module")
def fixtures() -> list[FixturePatient]:
    found = load_fixture_patients()
    assert found, "fixtures/ holds the demo patients"
    return found


@pytest.fixture(scope="module")
def synthea() -> list[FixturePatient]:
    paths = _synthea_paths()
    if not paths:
        pytest.skip(f"no Synthea records in {SYNTHEA}")
    out = []
    for path in paths:
        [p] = load_fixture_patients(path)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def service(knowledge, fhir_server) -> Iterator[str]:
    """Our app on a real loopback HTTP server, explaining every status (one card per patient)."""
    app = create_app({"environ": {}, "knowledge": knowledge, "clock": lambda: FIXTURE_TIME, "auth_required": False,
                      "explain_ineligibility": True, "fhir_allowlist": (fhir_server.base_url,)})
    server = serve_in_thread(app)
    try:
        yield server.base_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def templates(service) -> dict[str, str]:
    return requests.get(f"{service}/cds-services", timeout=10).json()["services"][0]["prefetch"]


def _call(base: str, patient_id: str, **extra) -> dict:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient_id},
            **extra}
    resp = requests.post(f"{base}/cds-services/{SERVICE_ID}", json=body, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    cards = resp.json()["cards"]
    assert len(cards) == 1, (patient_id, cards)
    return cards[0]["extension"][EXT]


def _cli(resources: list[dict], patient_id: str, knowledge) -> dict:
    """What the command line computes for the bundle: ``screen()`` of the record built from its resources."""
    record = build_record(f"Patient/{patient_id}", copy.deepcopy(resources))
    return screen(record, FIXTURE_TIME, knowledge).to_json()


def _differences(got: dict, want: dict) -> list[str]:
    """The criteria (and top-level keys) that differ, for a readable failure."""
    out = [k for k in set(got) | set(want) if k != "criteria" and got.get(k) != want.get(k)]
    g = {c["id"]: c for c in got.get("criteria", [])}
    w = {c["id"]: c for c in want.get("criteria", [])}
    out += [f"{k}: hook {g.get(k, {}).get('status')} / cli {w.get(k, {}).get('status')}"
            for k in sorted(set(g) | set(w)) if g.get(k) != w.get(k)]
    return out


def _check_prefetch(base: str, templates: dict[str, str], patients: list[FixturePatient], knowledge) -> int:
    checked = 0
    for p in patients:
        got = _call(base, p.patient_id, prefetch=prefetch_for(p, templates))
        want = _cli(p.resources, p.patient_id, knowledge)
        assert "not_retrieved" not in got, (p.source, got.get("not_retrieved"))
        assert got == want, (p.source, _differences(got, want))
        checked += 1
    return checked


# --- through the prefetch ------------------------------------------------------------------------------------
def test_every_fixture_through_prefetch_equals_the_cli(service, templates, fixtures, knowledge):
    assert _check_prefetch(service, templates, fixtures, knowledge) == len(fixtures)


def test_every_synthea_record_through_prefetch_equals_the_cli(service, templates, synthea, knowledge):
    assert _check_prefetch(service, templates, synthea, knowledge) == len(synthea)


# --- through a real FHIR server ------------------------------------------------------------------------------
def test_every_fixture_through_the_fhir_server_equals_the_cli(service, fhir_server, fixtures, knowledge):
    for p in fixtures:
        fhir_server.load_bundle(transaction_for(p, PREFIX))
    fhir_server.analyze()
    for p in fixtures:
        got = _call(service, PREFIX + p.patient_id, fhirServer=fhir_server.base_url)
        resources = [e["resource"] for e in transaction_for(p, PREFIX)["entry"]]
        want = _cli(resources, PREFIX + p.patient_id, knowledge)
        assert "not_retrieved" not in got, (p.source, got.get("not_retrieved"))
        assert got == want, (p.source, _differences(got, want))


def test_every_synthea_record_through_the_fhir_server_equals_the_cli(service, fhir_server, synthea, knowledge):
    for path in sorted(SYNTHEA.glob("*.json")):  # organisations and practitioners first, then the patients
        if path.name.startswith(("hospital", "practitioner")):
            fhir_server.load_bundle(json.loads(path.read_text(encoding="utf-8")), keep_ids=True)
    for path in _synthea_paths():
        fhir_server.load_bundle(json.loads(path.read_text(encoding="utf-8")), keep_ids=True)
    fhir_server.analyze()
    for p in synthea:
        got = _call(service, p.patient_id, fhirServer=fhir_server.base_url)
        want = _cli(p.resources, p.patient_id, knowledge)
        assert "not_retrieved" not in got, (p.source, got.get("not_retrieved"))
        assert got == want, (p.source, _differences(got, want))


# --- a blood-pressure panel coded 55284-4 --------------------------------------------------------------------
def _bp_patient() -> FixturePatient:
    """A relapsed-AML fixture patient whose blood pressures are two 55284-4 panels four days apart, both high."""
    [base] = [p for p in load_fixture_patients() if p.source.startswith("01-")]
    resources = [r for r in copy.deepcopy(base.resources)
                 if not (r.get("resourceType") == "Observation"
                         and {c.get("code") for c in r.get("code", {}).get("coding", [])}
                         & {"85354-9", "8480-6", "8462-4", "55284-4"})]
    pid = base.patient_id
    for n, days in enumerate((1, 5), 1):
        when = (FIXTURE_TIME - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        resources.append({
            "resourceType": "Observation", "id": f"bp-panel-{n}", "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": "55284-4", "display": "Blood pressure panel"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": {"value": 162, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                   "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": {"value": 96, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                   "code": "mm[Hg]"}},
            ]})
    return FixturePatient(pid, "bp-panel-55284-4", resources)


def test_a_blood_pressure_panel_coded_55284_4_reaches_the_hook(service, templates, knowledge):
    p = _bp_patient()
    prefetch = prefetch_for(p, templates)
    sent = [e["resource"]["id"] for v in prefetch.values() if isinstance(v, dict) and v.get("entry")
            for e in v["entry"]]
    assert {"bp-panel-1", "bp-panel-2"} <= set(sent)
    got = _call(service, p.patient_id, prefetch=prefetch)
    want = _cli(p.resources, p.patient_id, knowledge)
    assert got == want, _differences(got, want)
    e10f = next(c for c in got["criteria"] if c["id"] == "E10f")
    assert "bp-panel-1" in json.dumps(e10f)  # the panel is E10f's evidence, not "no reading"
