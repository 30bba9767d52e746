"""``trialscreen export`` against a real FHIR server process that implements Bulk Data ``$export`` (sekmet-fhir
0.1.1, tests/fhir_server.py): kick-off, polling, download, resume and screening, the same results as the bundles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from cds_service.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gather"))
from test_bulk import AT_ISO, FIXTURES, SYNTHEA, by_bundles  # noqa: E402
from test_bulk import _evidence_as_set as evidence_as_set  # noqa: E402

TOKEN = "tok-3f9a1c-never-shown"
CHOSEN = ["01-candidate-relapsed-aml.json", "07-ineligible-apl.json", "09-ineligible-allo-hsct-3-months.json",
          "18-ineligible-gilteritinib-washout.json", "43-two-patients-one-bundle.json",
          "38-not-applicable-cml.json"]


def _transaction(path: Path) -> dict:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    entries = []
    for e in bundle["entry"]:
        res = e["resource"]
        entries.append({"fullUrl": e.get("fullUrl") or f"{res['resourceType']}/{res['id']}", "resource": res,
                        "request": {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
def server():
    from fhir_server import LocalFhirServer, server_installed

    if not server_installed():
        pytest.skip("sekmet-fhir is not installed")
    with LocalFhirServer() as srv:
        for name in CHOSEN:
            srv.load_bundle(_transaction(FIXTURES / name))
        synthea = sorted(SYNTHEA.glob("*.json"))[:2] if SYNTHEA.is_dir() else []
        for path in synthea:
            srv.load_bundle(json.loads(path.read_text(encoding="utf-8")), keep_ids=True)
        group = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
                 "member": [{"entity": {"reference": f"Patient/{p}"}}
                            for p in ("ts01-patient", "ts09-patient", "ts43a-patient")]}
        resp = requests.put(f"{srv.base_url}/Group/g1", json=group, timeout=30,
                            headers={"Content-Type": "application/fhir+json"})
        assert resp.status_code in (200, 201), resp.text
        srv.synthea = synthea
        yield srv


@pytest.fixture(scope="module")
def expected(server) -> dict[str, dict]:
    return by_bundles([FIXTURES / n for n in CHOSEN] + list(server.synthea))


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_group_export_screened_in_one_step(server, expected, tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setenv("TRIALSCREEN_FHIR_TOKEN", TOKEN)
    out = tmp_path / "export"
    code = main(["export", "--fhir-server", server.base_url, "--group", "g1", "--out", str(out), "--screen",
                 "--format", "json", "--at", AT_ISO])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = _lines(captured.out)
    assert sorted(s["patient"] for s in lines) == ["Patient/ts01-patient", "Patient/ts09-patient",
                                                  "Patient/ts43a-patient"]
    for s in lines:
        assert s == expected[s["patient"]]
    [s09] = [s for s in lines if s["patient"] == "Patient/ts09-patient"]
    assert s09["status"] == "ineligible"  # the transplant came in Procedure's file
    assert (out / "Procedure.1.ndjson").is_file() and (out / "Patient.1.ndjson").is_file()
    assert TOKEN not in captured.err + captured.out + caplog.text
    for path in out.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes()


def test_patient_export_of_everyone_then_a_second_run_resumes(server, expected, tmp_path, capsys):
    out = tmp_path / "all"
    args = ["export", "--fhir-server", server.base_url, "--out", str(out), "--screen", "--format", "json",
            "--at", AT_ISO]
    assert main(args) == 0
    first = capsys.readouterr()
    lines = _lines(first.out)
    assert sorted(s["patient"] for s in lines) == sorted(expected)
    for s in lines:  # Synthea dates many items alike: evidence order compared as a set (see test_bulk.py)
        assert evidence_as_set(s) == evidence_as_set(expected[s["patient"]])
    files = sorted(p.name for p in out.glob("*.ndjson"))
    assert main(args) == 0
    second = capsys.readouterr()
    assert f"({len(files)} already complete)" in second.err
    assert _lines(second.out) == lines


def test_since_in_the_future_exports_nothing_to_screen(server, tmp_path, capsys):
    code = main(["export", "--fhir-server", server.base_url, "--out", str(tmp_path / "none"), "--since",
                 "2100-01-01T00:00:00Z", "--screen", "--at", AT_ISO])
    assert code == 2
    assert "the export holds no file to screen" in capsys.readouterr().err


def test_an_unknown_group_is_reported(server, tmp_path, capsys):
    code = main(["export", "--fhir-server", server.base_url, "--group", "nope", "--out", str(tmp_path / "g")])
    assert code == 4
    err = capsys.readouterr().err
    assert "kick-off refused: HTTP 404" in err and "Group/nope" in err
