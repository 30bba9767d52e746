"""Real-world data: the 30 Synthea R4 records in ``../shared/synthea/`` (none has leukemia), each through the
hook with prefetch and through the FHIR server path: no error, no card, status ``not-applicable``, every kind
retrieved. Skipped (not failed) when the folder is absent."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from cds_service.config import Settings, load_knowledge
from cds_service.hooks.app import create_app
from cds_service.hooks.commands import serve_in_thread
from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID

pytestmark = pytest.mark.integration



def _synthea_dir() -> Path:
    """The shared Synthea folder: ``TRIALSCREEN_SYNTHEA_DIR``, else ``shared/synthea`` beside the checkout (or
    beside the worktrees' folder, for a git worktree one level deeper)."""
    here = Path(__file__).resolve()
    candidates = [os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ""), str(here.parents[3] / "shared" / "synthea"),
                  str(here.parents[4] / "shared" / "synthea")]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), Path(candidates[1]))


SYNTHEA = _synthea_dir()
EXT = "org.trialscreen.screening"


def _records() -> list[Path]:
    if not SYNTHEA.is_dir():
        return []
    return sorted(p for p in SYNTHEA.glob("*.json") if not p.name.startswith(("hospital", "practitioner")))


@pytest.fixture(scope="module")
def synthea():
    paths = _records()
    if not paths:
        pytest.skip(f"no Synthea records in {SYNTHEA}")
    patients = []
    for path in paths:
        found = load_fixture_patients(path)
        assert len(found) == 1, path.name
        patients.append(found[0])
    return patients


@pytest.fixture(scope="module")
def apps(fhir_server):
    """Two services on real loopback HTTP servers: the default one, and one that explains every status."""
    knowledge = load_knowledge(Settings.from_env({}))
    servers = {}
    for name, explain in (("default", False), ("explain", True)):
        app = create_app({"environ": {}, "knowledge": knowledge, "clock": lambda: FIXTURE_TIME,
                          "auth_required": False, "explain_ineligibility": explain,
                          "fhir_allowlist": (fhir_server.base_url,),
                          # what is read, not how fast (a loaded machine, HAPI's JVM warming up its queries)
                          "fhir_deadline_seconds": 20.0})
        servers[name] = serve_in_thread(app)
    yield {k: s.base_url for k, s in servers.items()}
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def on_server(fhir_server, synthea):
    """Every Synthea record on the FHIR server with its own ids (idempotent: PUT by urn:uuid)."""
    for path in sorted(SYNTHEA.glob("*.json")):
        if path.name.startswith(("hospital", "practitioner")):
            fhir_server.load_bundle(json.loads(path.read_text(encoding="utf-8")), keep_ids=True)
    for path in _records():
        fhir_server.load_bundle(json.loads(path.read_text(encoding="utf-8")), keep_ids=True)
    fhir_server.analyze()
    return fhir_server


def _call(base: str, patient_id: str, **extra) -> dict:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient_id},
            **extra}
    resp = requests.post(f"{base}/cds-services/{SERVICE_ID}", json=body, timeout=60)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def _check(default: dict, explained: dict, name: str) -> None:
    assert default == {"cards": []}, name
    [card] = explained["cards"]
    screening = card["extension"][EXT]
    assert screening["status"] == "not-applicable", name
    assert "not_retrieved" not in screening, (name, screening.get("not_retrieved"))


def test_synthea_records_through_prefetch_give_no_card(apps, synthea):
    templates = requests.get(f"{apps['default']}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    for p in synthea:
        prefetch = prefetch_for(p, templates)
        _check(_call(apps["default"], p.patient_id, prefetch=prefetch),
               _call(apps["explain"], p.patient_id, prefetch=prefetch), p.source)


def test_synthea_records_through_the_fhir_server_give_no_card(apps, synthea, on_server):
    for p in synthea:
        fhir = {"fhirServer": on_server.base_url}
        _check(_call(apps["default"], p.patient_id, **fhir), _call(apps["explain"], p.patient_id, **fhir), p.source)


def test_synthea_screening_through_the_fhir_server_equals_the_bundle_screening(apps, synthea, on_server):
    """The whole checklist (evidence included), not only the status: FHIR queries give what the bundle gives."""
    templates = requests.get(f"{apps['explain']}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    for p in synthea:
        via_bundle = _call(apps["explain"], p.patient_id, prefetch=prefetch_for(p, templates))
        via_fhir = _call(apps["explain"], p.patient_id, fhirServer=on_server.base_url)
        assert via_fhir["cards"][0]["extension"][EXT] == via_bundle["cards"][0]["extension"][EXT], p.source
