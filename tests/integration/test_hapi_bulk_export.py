"""HAPI FHIR's bulk data export (``$export``, FHIR Bulk Data Access 1.0/2.0) as TrialScreen's export client
meets it, with plain HTTP: kick-off, status polling, the output manifest and the NDJSON files.

What these tests pin down about HAPI (also in FHIR_SERVER.md):

* kick-off needs ``Prefer: respond-async`` (else 400, OperationOutcome ``HAPI-0513``); it answers **202** with
  an empty body and ``Content-Location`` = ``[base]/$export-poll-status?_jobId=<id>`` (absolute, same base);
* polling answers **202** with ``X-Progress`` (``Build in progress - Status set to QUEUED|IN_PROGRESS at ...``)
  and ``Retry-After: 120`` (always 120, however small the job) while the batch2 job runs, then **200**
  (``Content-Type: application/json``) with the manifest: ``transactionTime``, ``request``,
  ``requiresAccessToken`` (``true`` even on a base without authentication), ``output`` = ``[{type, url}]``
  where every ``url`` is a ``Binary`` on the same base, and ``error`` (``[]``);
* a ``Binary`` of the output is served as ``application/fhir+ndjson`` (one resource a line) when asked with
  ``Accept: application/fhir+ndjson`` or no Accept; ``Accept: application/fhir+json`` gets the Binary resource
  with the NDJSON base64-encoded in ``data``;
* ``DELETE`` on the poll URL cancels the job (**202**, an informational OperationOutcome); the poll URL then
  answers **404** with an OperationOutcome ("was cancelled").
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.integration

TIMEOUT = 30
POLL_DEADLINE = 300.0  # seconds: the job runs on batch2 threads of a possibly loaded 2-core machine
KICKOFF = {"Accept": "application/fhir+json", "Prefer": "respond-async"}


def kick_off(url: str, params: dict[str, str] | None = None) -> requests.Response:
    return requests.get(url, params=params, headers=KICKOFF, timeout=TIMEOUT)


def poll(status_url: str) -> tuple[dict[str, Any], list[requests.Response]]:
    """Poll until 200 (bounded by a deadline); the manifest and every 202 answer seen on the way."""
    waiting: list[requests.Response] = []
    deadline = time.monotonic() + POLL_DEADLINE
    while time.monotonic() < deadline:
        resp = requests.get(status_url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
        if resp.status_code == 200:
            return resp.json(), waiting
        assert resp.status_code == 202, (resp.status_code, resp.text[:1000])
        waiting.append(resp)
        # HAPI says Retry-After: 120 whatever the job's size; a test waits at most a second between polls
        time.sleep(min(float(resp.headers.get("Retry-After", "1")), 1.0))
    raise AssertionError(f"bulk export not complete after {POLL_DEADLINE:.0f}s")


def ndjson(url: str) -> list[dict[str, Any]]:
    resp = requests.get(url, headers={"Accept": "application/fhir+ndjson"}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text[:1000]
    assert resp.headers["Content-Type"].startswith("application/fhir+ndjson")
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def group_export(hapi_bulk_export) -> dict[str, Any]:
    """One completed Group export of the fixture patients (Patient, Condition, Observation)."""
    started = time.monotonic()
    kick = kick_off(hapi_bulk_export.group_export_url, {"_type": "Patient,Condition,Observation"})
    assert kick.status_code == 202, kick.text[:1000]
    status_url = kick.headers["Content-Location"]
    manifest, waiting = poll(status_url)
    print(f"\n[hapi] Group $export of {len(hapi_bulk_export.patient_ids)} patients: "
          f"{time.monotonic() - started:.1f}s, {len(waiting)} polls answered 202")
    return {"kick": kick, "status_url": status_url, "manifest": manifest, "waiting": waiting}


def test_kick_off_answers_202_with_a_poll_url_on_the_same_base(hapi_bulk_export, group_export):
    kick, status_url = group_export["kick"], group_export["status_url"]
    assert status_url.startswith(f"{hapi_bulk_export.base_url}/$export-poll-status?_jobId=")
    assert urlsplit(status_url).netloc == urlsplit(hapi_bulk_export.base_url).netloc
    assert kick.content == b""  # HAPI's 202 has no body


def test_polling_answers_202_with_progress_and_retry_after(group_export):
    for resp in group_export["waiting"]:  # empty only when the job was done by the first poll
        assert resp.headers.get("X-Progress")
        assert float(resp.headers["Retry-After"]) > 0


def test_manifest_lists_one_binary_per_type_and_file(hapi_bulk_export, group_export):
    manifest = group_export["manifest"]
    assert manifest["request"].startswith(hapi_bulk_export.group_export_url)
    assert manifest["requiresAccessToken"] is True  # HAPI says so even on its open /fhir base
    assert manifest.get("error", []) == []
    assert "transactionTime" in manifest
    types = {o["type"] for o in manifest["output"]}
    assert types == {"Patient", "Condition", "Observation"}
    for out in manifest["output"]:
        assert out["url"].startswith(f"{hapi_bulk_export.base_url}/Binary/"), out


def test_ndjson_files_hold_exactly_the_group_members_data(hapi_bulk_export, group_export):
    got: Counter[str] = Counter()
    members = {f"Patient/{pid}" for pid in hapi_bulk_export.patient_ids}
    for out in group_export["manifest"]["output"]:
        for res in ndjson(out["url"]):
            assert res["resourceType"] == out["type"]
            if res["resourceType"] == "Patient":
                assert f"Patient/{res['id']}" in members
            else:
                assert res["subject"]["reference"] in members, res["subject"]
            assert res["id"].startswith(hapi_bulk_export.prefix)
            got[res["resourceType"]] += 1
    want = {t: hapi_bulk_export.counts.get(t, 0) for t in ("Patient", "Condition", "Observation")}
    assert dict(got) == {t: n for t, n in want.items() if n}


def test_binary_is_ndjson_unless_fhir_json_is_asked_for(group_export):
    """Without an Accept header the Binary is its NDJSON; ``Accept: application/fhir+json`` gets the Binary
    resource, the NDJSON base64-encoded in ``data`` (a client must not ask for JSON)."""
    url = group_export["manifest"]["output"][0]["url"]
    plain = requests.get(url, timeout=TIMEOUT)
    assert plain.headers["Content-Type"].startswith("application/fhir+ndjson")
    as_json = requests.get(url, headers={"Accept": "application/fhir+json"}, timeout=TIMEOUT).json()
    assert as_json["resourceType"] == "Binary" and as_json["contentType"] == "application/fhir+ndjson"
    assert base64.b64decode(as_json["data"]) == plain.content
    assert [json.loads(line) for line in plain.text.splitlines() if line.strip()] == ndjson(url)


def test_kick_off_without_prefer_respond_async_is_refused(hapi_bulk_export):
    resp = requests.get(hapi_bulk_export.group_export_url, headers={"Accept": "application/fhir+json"},
                        timeout=TIMEOUT)
    assert resp.status_code == 400
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_delete_on_the_poll_url_cancels_the_job(hapi_bulk_export):
    kick = kick_off(hapi_bulk_export.group_export_url, {"_type": "Observation"})
    assert kick.status_code == 202
    status_url = kick.headers["Content-Location"]
    cancel = requests.delete(status_url, timeout=TIMEOUT)
    assert cancel.status_code == 202, cancel.text[:500]
    assert cancel.json()["issue"][0]["severity"] == "information"
    after = requests.get(status_url, headers={"Accept": "application/json"}, timeout=TIMEOUT)
    assert after.status_code == 404, after.text[:500]
    assert after.json()["resourceType"] == "OperationOutcome"


# --- TrialScreen's own export client (cds_service/gather/bulk_export.py) against HAPI ---------------------------
def test_export_client_on_hapi_screens_the_group_as_its_bundles(hapi_bulk_export, tmp_path):
    """run_export (what ``trialscreen export --group`` runs) against HAPI, then the folder screened: each patient
    equals ``screen()`` of its bundle. HAPI refuses Medication in a Group export (HAPI-0512), so the client leaves
    it out of ``_type``; HAPI's ``Retry-After: 120`` is capped by ``max_wait``."""
    import copy

    from cds_service.gather.bulk_export import ExportRequest, run_export
    from cds_service.gather.record import build_record
    from cds_service.hooks.demo_data import load_fixture_patients, transaction_for
    from cds_service.pipeline import screen

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gather"))
    from test_bulk import AT, by_bulk  # noqa: PLC0415
    from test_bulk import _evidence_as_set as evidence_as_set  # noqa: PLC0415

    out = tmp_path / "export"
    polls: list[str] = []
    result = run_export(ExportRequest(base_url=hapi_bulk_export.base_url, out_dir=out,
                                      group=hapi_bulk_export.group_id, timeout=POLL_DEADLINE, max_wait=2.0),
                        status=polls.append)
    assert {p.name.split(".")[0] for p in result.files} >= {"Patient", "Condition", "Observation"}
    assert result.errors == []
    expected = {}
    for p in load_fixture_patients():
        resources = [e["resource"] for e in transaction_for(p, hapi_bulk_export.prefix)["entry"]]
        ref = f"Patient/{hapi_bulk_export.prefix}{p.patient_id}"
        expected[ref] = screen(build_record(ref, copy.deepcopy(resources)), AT).to_json()
    got = by_bulk(out)
    assert sorted(s["patient"] for s in got) == sorted(expected)
    for s in got:
        assert evidence_as_set(s) == evidence_as_set(expected[s["patient"]]), s["patient"]
