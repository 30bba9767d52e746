"""Failure paths of the Bulk Data export client (``responses``): Retry-After, 5xx, time-out, expiry, resume, token.

The happy path runs against a real server process in tests/integration/test_bulk_export_server.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses

from cds_service.gather.bulk_export import (
    ExportError,
    ExportRequest,
    ExportTimeout,
    criteria_types,
    download,
    poll,
    retry_after,
    run_export,
)

BASE = "https://ehr.example.org/fhir"
STATUS = "https://ehr.example.org/bulk-status/job1"
FILES = "https://files.example.org/job1"
TOKEN = "s3cr3t-token-value"


class Clock:
    """A fake monotonic clock that sleep() moves on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def request(tmp_path, **kw) -> ExportRequest:
    return ExportRequest(base_url=BASE, out_dir=tmp_path / "out", token=TOKEN, **kw)


def manifest(*, token: bool = False, errors: bool = False) -> dict:
    return {"transactionTime": "2026-10-01T09:00:00Z", "request": f"{BASE}/Patient/$export",
            "requiresAccessToken": token,
            "output": [{"type": "Patient", "url": f"{FILES}/Patient.ndjson"},
                       {"type": "Condition", "url": f"{FILES}/Condition.ndjson"}],
            "error": [{"type": "OperationOutcome", "url": f"{FILES}/err.ndjson"}] if errors else []}


def test_retry_after_in_seconds_and_as_a_date():
    now = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    assert retry_after("7", 1.0) == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), 1.0, now=lambda: now) == 30.0
    assert retry_after("soon", 3.0) == 3.0 and retry_after(None, 2.0) == 2.0


@responses.activate
def test_kick_off_asks_async_for_the_criteria_types_and_polls_as_retry_after_says(tmp_path):
    responses.get(f"{BASE}/Group/g1/$export", status=202, headers={"Content-Location": STATUS})
    responses.get(STATUS, status=202, headers={"Retry-After": "7", "X-Progress": "10%"})
    responses.get(STATUS, status=202, headers={"Retry-After": "3"})
    responses.get(STATUS, json=manifest())
    responses.get(f"{FILES}/Patient.ndjson", body=b'{"resourceType":"Patient","id":"p"}\n')
    responses.get(f"{FILES}/Condition.ndjson", body=b"")
    clock = Clock()
    seen: list[str] = []
    result = run_export(request(tmp_path, group="g1", since=datetime(2026, 1, 1, tzinfo=UTC)), sleep=clock.sleep,
                        clock=clock, status=seen.append)
    kick = responses.calls[0].request
    assert kick.headers["Prefer"] == "respond-async" and kick.headers["Authorization"] == f"Bearer {TOKEN}"
    assert kick.params["_type"].split(",") == criteria_types() and "Procedure" in criteria_types()
    assert kick.params["_since"] == "2026-01-01T00:00:00+00:00"
    assert clock.sleeps == [7.0, 3.0] and seen == ["10%", "in progress"]
    assert [p.name for p in result.files] == ["Patient.1.ndjson", "Condition.1.ndjson"]
    assert (tmp_path / "out" / "Patient.1.ndjson").read_bytes() == b'{"resourceType":"Patient","id":"p"}\n'
    # Files are not sent the token when the manifest says it is not needed (they may be on other storage).
    assert all("Authorization" not in c.request.headers for c in responses.calls if c.request.url.startswith(FILES))


@responses.activate
def test_5xx_while_polling_are_retried_then_give_up_and_cancel(tmp_path):
    responses.get(STATUS, status=503, headers={"Retry-After": "2"})
    responses.get(STATUS, status=500)
    responses.get(STATUS, json=manifest())
    clock = Clock()
    assert poll(requests.Session(), STATUS, request(tmp_path), sleep=clock.sleep, clock=clock)["output"]
    assert clock.sleeps == [2.0, 4.0]
    responses.reset()
    responses.get(STATUS, status=500, json={"resourceType": "OperationOutcome",
                                            "issue": [{"severity": "error", "code": "exception",
                                                       "diagnostics": "database down"}]})
    responses.delete(STATUS, status=202)
    with pytest.raises(ExportError, match="failed 4 times in a row .*database down"):
        poll(requests.Session(), STATUS, request(tmp_path, retries=3), sleep=clock.sleep, clock=clock)
    assert responses.calls[-1].request.method == "DELETE"


@responses.activate
def test_a_job_not_ready_by_the_deadline_is_cancelled(tmp_path):
    responses.get(STATUS, status=202, headers={"Retry-After": "100"})
    responses.delete(STATUS, status=202)
    clock = Clock()
    with pytest.raises(ExportTimeout, match="not ready within 150 s"):
        poll(requests.Session(), STATUS, request(tmp_path, timeout=150, max_wait=1000), sleep=clock.sleep,
             clock=clock)
    assert clock.sleeps == [100.0] and responses.calls[-1].request.method == "DELETE"


@responses.activate
def test_an_expired_job_or_file_says_so(tmp_path):
    responses.get(STATUS, status=410)
    with pytest.raises(ExportError, match="gone .HTTP 410"):
        poll(requests.Session(), STATUS, request(tmp_path), sleep=lambda s: None)
    responses.get(f"{FILES}/Patient.ndjson", status=404)
    with pytest.raises(ExportError, match="Patient.1.ndjson refused: HTTP 404 .the export has expired"):
        download(requests.Session(), manifest(), request(tmp_path), sleep=lambda s: None)


@responses.activate
def test_a_partial_file_is_resumed_with_range_and_complete_files_are_skipped(tmp_path):
    req = request(tmp_path)
    out = req.out_dir
    out.mkdir()
    (out / "Patient.1.ndjson.part").write_bytes(b'{"resourceType":"Patient",')
    responses.get(f"{FILES}/Patient.ndjson", status=206, body=b'"id":"p"}\n')
    responses.get(f"{FILES}/Condition.ndjson", body=b'{"resourceType":"Condition"}\n')
    result = download(requests.Session(), manifest(), req, sleep=lambda s: None)
    assert responses.calls[0].request.headers["Range"] == "bytes=26-"
    assert (out / "Patient.1.ndjson").read_bytes() == b'{"resourceType":"Patient","id":"p"}\n'
    assert not (out / "Patient.1.ndjson.part").exists() and result.skipped == 0
    again = download(requests.Session(), manifest(), req, sleep=lambda s: None)
    assert again.skipped == 2 and len(responses.calls) == 2  # nothing fetched twice


@responses.activate
def test_a_server_that_ignores_range_sends_the_file_again(tmp_path):
    req = request(tmp_path)
    req.out_dir.mkdir()
    (req.out_dir / "Patient.1.ndjson.part").write_bytes(b"garbage from an earlier try")
    responses.get(f"{FILES}/Patient.ndjson", status=200, body=b'{"resourceType":"Patient","id":"p"}\n')
    responses.get(f"{FILES}/Condition.ndjson", body=b"")
    download(requests.Session(), manifest(), req, sleep=lambda s: None)
    assert (req.out_dir / "Patient.1.ndjson").read_bytes() == b'{"resourceType":"Patient","id":"p"}\n'


@responses.activate
def test_the_token_goes_to_files_only_when_required_and_never_into_messages_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    responses.get(f"{FILES}/Patient.ndjson", body=b"")
    responses.get(f"{FILES}/Condition.ndjson", body=b"")
    responses.get(f"{FILES}/err.ndjson", body=b'{"resourceType":"OperationOutcome"}\n')
    result = download(requests.Session(), manifest(token=True, errors=True), request(tmp_path), sleep=lambda s: None)
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in responses.calls)
    assert [p.name for p in result.errors] == ["OperationOutcome.1.ndjson"]
    responses.reset()
    responses.get(f"{BASE}/Patient/$export", body=requests.exceptions.ConnectTimeout(f"Bearer {TOKEN}"))
    with pytest.raises(ExportError) as exc:
        run_export(request(tmp_path / "b"), sleep=lambda s: None)
    assert "ConnectTimeout" in str(exc.value)
    responses.reset()
    responses.get(f"{BASE}/Patient/$export", status=401, json={
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login",
                                                       "diagnostics": "invalid token"}]})
    with pytest.raises(ExportError, match="kick-off refused: HTTP 401 .*invalid token") as refused:
        run_export(request(tmp_path / "c"), sleep=lambda s: None)
    assert TOKEN not in str(exc.value) + str(refused.value) + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@responses.activate
def test_a_dropped_connection_mid_file_is_retried(tmp_path, caplog):
    req = request(tmp_path)
    body = b'{"resourceType":"Patient","id":"p"}\n'
    # The first answer promises more bytes than it sends (the connection dropped): tried again, whole.
    responses.get(f"{FILES}/Patient.ndjson", body=body[:10], headers={"Content-Length": str(len(body))},
                  auto_calculate_content_length=False)
    responses.get(f"{FILES}/Patient.ndjson", body=body)
    responses.get(f"{FILES}/Condition.ndjson", status=503, headers={"Retry-After": "5"})
    responses.get(f"{FILES}/Condition.ndjson", body=b"")
    clock = Clock()
    download(requests.Session(), manifest(), req, sleep=clock.sleep)
    assert (req.out_dir / "Patient.1.ndjson").read_bytes() == body
    assert clock.sleeps == [2.0, 5.0] and "retrying (1/5)" in caplog.text
