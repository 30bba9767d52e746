"""The hook without prefetch, through a real HTTP server of our app, against the real local FHIR server.

* every fixture patient: the screening through FHIR queries equals ``screen()`` of the same bundle;
* paging: a small page size gives the same screening; a page cap too small marks kinds not retrieved;
* a FHIR server that is down (a closed port), one that refuses the token (401), and one slower than the
  deadline: the service still answers, on time, and the card names the kinds not retrieved.

Only 127.0.0.1 addresses; every loop and wait is bounded.
"""

from __future__ import annotations

import copy
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from cds_service.config import Settings, load_knowledge
from cds_service.gather.record import build_record
from cds_service.hooks.app import create_app
from cds_service.hooks.commands import serve_in_thread
from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients, prefetch_for, transaction_for
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.pipeline import screen

pytestmark = pytest.mark.integration

PREFIX = f"hv{uuid.uuid4().hex[:6]}-"
EXT = "org.trialscreen.screening"


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(Settings.from_env({}))


@pytest.fixture(scope="module")
def patients():
    found = load_fixture_patients()
    if not found:
        pytest.skip("no fixture patients in fixtures/")
    return found


@pytest.fixture(scope="module")
def loaded(fhir_server, patients):
    """The fixture patients on the FHIR server, ids prefixed so the shared server holds no clash."""
    for p in patients:
        fhir_server.load_bundle(transaction_for(p, PREFIX))
    fhir_server.analyze()
    return fhir_server


@contextmanager
def service(knowledge, allow: tuple[str, ...], **settings) -> Iterator[str]:
    """Our app on a real loopback HTTP server; yields its base URL."""
    overrides = {"environ": {}, "knowledge": knowledge, "clock": lambda: FIXTURE_TIME, "auth_required": False,
                 "explain_ineligibility": True, "fhir_allowlist": allow, **settings}
    server = serve_in_thread(create_app(overrides))
    try:
        yield server.base_url
    finally:
        server.stop()


def call(base: str, patient_id: str, fhir: str | None, prefetch: dict | None = None,
         token: str | None = "test-token", status: int = 200) -> tuple[dict, float]:
    body: dict = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": patient_id}}
    if fhir:
        body["fhirServer"] = fhir
    if fhir and token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "user/*.read", "subject": "trialscreen"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    t0 = time.perf_counter()
    resp = requests.post(f"{base}/cds-services/{SERVICE_ID}", json=body, timeout=30)
    elapsed = time.perf_counter() - t0
    assert resp.status_code == status, resp.text
    return resp.json(), elapsed


def screening_of(body: dict) -> dict:
    assert len(body["cards"]) == 1, body
    return body["cards"][0]["extension"][EXT]


def expected(patient, knowledge, prefix: str = "") -> dict:
    """``screen()`` of the fixture bundle, with the ids the server gave (the prefix)."""
    bundle = transaction_for(patient, prefix)
    resources = [e["resource"] for e in bundle["entry"]]
    record = build_record(f"Patient/{prefix}{patient.patient_id}", copy.deepcopy(resources))
    return screen(record, FIXTURE_TIME, knowledge).to_json()


# --- the real FHIR server ------------------------------------------------------------------------------------
def test_screening_through_fhir_equals_screening_of_the_bundle(loaded, patients, knowledge):
    with service(knowledge, (loaded.base_url,)) as base:
        for p in patients:
            body, _ = call(base, PREFIX + p.patient_id, loaded.base_url)
            got = screening_of(body)
            assert "not_retrieved" not in got, (p.source, got.get("not_retrieved"))
            assert got == expected(p, knowledge, PREFIX), p.source


def test_small_pages_are_followed_to_the_same_screening(loaded, patients, knowledge):
    p = max(patients, key=lambda x: len(x.resources))
    with service(knowledge, (loaded.base_url,), fhir_page_size=3, fhir_max_pages=100) as base:
        body, _ = call(base, PREFIX + p.patient_id, loaded.base_url)
    assert screening_of(body) == expected(p, knowledge, PREFIX)


def test_page_cap_marks_the_rest_not_retrieved(loaded, patients, knowledge):
    p = max(patients, key=lambda x: sum(r["resourceType"] == "Observation" for r in x.resources))
    with service(knowledge, (loaded.base_url,), fhir_page_size=2, fhir_max_pages=1) as base:
        body, _ = call(base, PREFIX + p.patient_id, loaded.base_url)
    reasons = screening_of(body)["not_retrieved"]
    assert "more than 1 pages" in reasons["Observation"]
    detail = body["cards"][0]["detail"]
    assert detail.startswith("**Screening incomplete:**") and "results (labs, vitals, ECG, echo)" in detail


def test_prefetch_and_fhir_paths_agree(loaded, patients, knowledge):
    with service(knowledge, (loaded.base_url,)) as base:
        templates = requests.get(f"{base}/cds-services", timeout=10).json()["services"][0]["prefetch"]
        for p in patients[:5]:
            via_prefetch, _ = call(base, p.patient_id, None, prefetch=prefetch_for(p, templates))
            assert screening_of(via_prefetch) == expected(p, knowledge), p.source


def test_unknown_patient_on_the_server_is_a_412_naming_the_cause(loaded, knowledge):
    """Nothing was screened: an empty card list would read as a negative screen ("All clear" in the sandbox)."""
    with service(knowledge, (loaded.base_url,)) as base:
        body, _ = call(base, "no-such-patient-" + PREFIX, loaded.base_url, status=412)
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body
    assert "could not be read from the FHIR server" in body["issue"][0]["diagnostics"]


def test_server_off_the_allowlist_gets_no_request_and_the_answer_is_a_412(loaded, patients, knowledge):
    p = patients[0]
    with service(knowledge, ("https://ehr.example.org/fhir",)) as base:
        body, _ = call(base, PREFIX + p.patient_id, loaded.base_url, status=412)
    assert body["resourceType"] == "OperationOutcome"
    assert "fhirServer is not on this service's allowlist" in body["issue"][0]["diagnostics"]


# --- servers that misbehave (tiny local HTTP servers) ----------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "401"
    delay = 0.0

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.mode == "slow":
            time.sleep(min(self.delay, 5.0))
            body = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode()
            self.send_response(200)
        else:
            body = json.dumps({"resourceType": "OperationOutcome",
                               "issue": [{"severity": "error", "code": "login"}]}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def tiny_server(mode: str, delay: float = 0.0) -> Iterator[str]:
    handler = type("H", (_Handler,), {"mode": mode, "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _partial_prefetch(p) -> dict:
    """Only the Patient and its Conditions prefetched: everything else must come from the FHIR server."""
    return {"patient": p.patient,
            "conditions": {"resourceType": "Bundle", "type": "searchset",
                           "entry": [{"resource": r} for r in p.resources if r["resourceType"] == "Condition"]}}


def _candidate(patients):
    return next(p for p in patients if "candidate" in p.source)


def test_server_down_still_answers_with_kinds_not_retrieved(patients, knowledge):
    down = f"http://127.0.0.1:{_closed_port()}/fhir"
    p = _candidate(patients)
    with service(knowledge, (down,)) as base:
        body, elapsed = call(base, p.patient_id, down, prefetch=_partial_prefetch(p))
    reasons = screening_of(body)["not_retrieved"]
    assert "could not be reached" in reasons["Observation"]
    assert "Condition" not in reasons and elapsed < 3
    detail = body["cards"][0]["detail"]
    assert detail.startswith("**Screening incomplete:**") and "results (labs, vitals, ECG, echo)" in detail


def test_401_marks_kinds_not_retrieved(patients, knowledge):
    p = _candidate(patients)
    with tiny_server("401") as fhir, service(knowledge, (fhir,)) as base:
        body, _ = call(base, p.patient_id, fhir, prefetch=_partial_prefetch(p), token="bad-token")
    reasons = screening_of(body)["not_retrieved"]
    assert "refused the access token (HTTP 401)" in reasons["Observation"]
    assert body["cards"][0]["summary"]


def test_401_on_the_patient_read_is_a_412_naming_the_refused_token(knowledge):
    with tiny_server("401") as fhir, service(knowledge, (fhir,)) as base:
        body, _ = call(base, "p1", fhir, token="bad-token", status=412)
    assert "refused the access token (HTTP 401)" in body["issue"][0]["diagnostics"]


def test_slow_server_is_cut_off_at_the_deadline(patients, knowledge):
    p = _candidate(patients)
    with tiny_server("slow", delay=4.0) as fhir, service(knowledge, (fhir,), fhir_deadline_seconds=1.0) as base:
        body, elapsed = call(base, p.patient_id, fhir, prefetch=_partial_prefetch(p))
    reasons = screening_of(body)["not_retrieved"]
    assert elapsed < 2.5, elapsed
    assert {part for r in reasons.values() for part in r.split("; ")} == {"deadline passed"}, reasons
    assert "Observation" in reasons
