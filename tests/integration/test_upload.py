"""``trialscreen fixtures upload`` against the local FHIR server: every fixture patient, prefixed ids."""

from __future__ import annotations

import re
import secrets

import pytest
import requests

from cds_service.cli import main
from cds_service.hooks.commands import upload_fixtures
from cds_service.hooks.demo_data import load_fixture_patients, transaction_for

pytestmark = pytest.mark.integration

FHIR_JSON = {"Accept": "application/fhir+json"}
STATUSES = ("potential-candidate", "ineligible", "not-applicable")


@pytest.fixture(scope="module")
def patients():
    found = load_fixture_patients()
    if not found:
        pytest.skip("no fixture patients in fixtures/")
    return found


def _search(base: str, query: str) -> dict:
    resp = requests.get(f"{base}/{query}", headers=FHIR_JSON, timeout=30)
    resp.raise_for_status()
    return resp.json()


def test_upload_command_puts_every_patient_and_prints_expected_status(fhir_server, patients, capsys):
    prefix = f"up{secrets.token_hex(3)}-"
    code = main(["fixtures", "upload", "--fhir-server", fhir_server.base_url, "--id-prefix", prefix])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Uploaded {len(patients)} patients" in out
    assert "the engine's own verdict at the fixtures' time 2026-10-01T09:00:00+00:00" in out
    for p in patients:
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [prefix + p.patient_id]), None)
        assert line is not None, f"{p.patient_id} not printed"
        assert line.split()[1] in STATUSES
        assert line.split()[2] == p.source
        # the Patient exists on the server under its prefixed id
        resp = requests.get(f"{fhir_server.base_url}/Patient/{prefix}{p.patient_id}", headers=FHIR_JSON, timeout=30)
        assert resp.status_code == 200, (p.patient_id, resp.status_code)
        assert resp.json()["id"] == prefix + p.patient_id


def test_references_point_at_the_prefixed_resources(fhir_server, patients):
    prefix = f"ref{secrets.token_hex(3)}-"
    first = patients[0]
    upload_fixtures(fhir_server.base_url, [first], prefix)
    own = [r for r in first.resources if r.get("resourceType") not in ("Patient", "Medication", "Organization",
                                                                       "Practitioner")]
    assert own, "the first fixture has clinical resources"
    for kind in sorted({r["resourceType"] for r in own}):
        bundle = _search(fhir_server.base_url, f"{kind}?patient={prefix}{first.patient_id}&_count=500")
        matches = [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]
        expected = {prefix + r["id"] for r in own if r["resourceType"] == kind}
        assert {m["id"] for m in matches} == expected, kind
    # nothing left pointing at an unprefixed id of this patient
    text = str(transaction_for(first, prefix))
    assert not re.search(rf"'Patient/{re.escape(first.patient_id)}'", text)


def test_upload_is_idempotent(fhir_server, patients):
    prefix = f"idem{secrets.token_hex(3)}-"
    one = patients[:1]
    upload_fixtures(fhir_server.base_url, one, prefix)
    upload_fixtures(fhir_server.base_url, one, prefix)
    bundle = _search(fhir_server.base_url, f"Patient?_id={prefix}{one[0].patient_id}")
    assert bundle.get("total") == 1


def test_two_patients_in_one_bundle_become_two_transactions(patients):
    pair = [p for p in patients if p.source.startswith("43-")]
    if len(pair) != 2:
        pytest.skip("fixture 43 (two patients in one bundle) not present")
    a, b = (transaction_for(p, "x-") for p in pair)
    ids_a = {e["resource"]["id"] for e in a["entry"] if e["resource"]["resourceType"] == "Patient"}
    ids_b = {e["resource"]["id"] for e in b["entry"] if e["resource"]["resourceType"] == "Patient"}
    assert len(ids_a) == len(ids_b) == 1 and ids_a != ids_b


def test_bad_prefix_and_unreachable_server(capsys):
    assert main(["fixtures", "upload", "--fhir-server", "http://127.0.0.1:9/fhir", "--id-prefix", "bad/prefix"]) == 2
    assert "id prefix" in capsys.readouterr().err
    assert main(["fixtures", "upload", "--fhir-server", "http://127.0.0.1:9/fhir", "--id-prefix", "ok-"]) == 2
    assert "cannot reach the FHIR server" in capsys.readouterr().err


def test_refused_transaction_names_the_fixture(fhir_server, patients):
    broken = type(patients[0])(patients[0].patient_id, "broken.json",
                               [{**patients[0].resources[0], "birthDate": "not-a-date"}])
    with pytest.raises(Exception, match="broken.json"):
        upload_fixtures(fhir_server.base_url, [broken], "brk-")
