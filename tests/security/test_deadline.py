"""Deadline isolation (issue 10): one slow upstream never poisons later calls. The deadline is per hook call and
holds for the whole response read (a server dripping one byte every 1.5 s keeps every socket read short), and
nothing of a call's fetches outlives it: no thread, no connection.

Through the real hook endpoint on a real socket (the app under a threaded server, so the FHIR threads it
starts are visible in this process), against two real loopback FHIR servers: one dripping, one healthy.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import requests
from upstreams import Upstream, drip, established_to, fhir_json, fhir_threads, searchset, service_over_http, wait_for

from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query
from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import create_app, state
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID

HOOK = f"/cds-services/{SERVICE_ID}"
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
DEADLINE = 3.0
DRIP_EVERY = 1.5
PID = "ts01-patient"
BODY = b'{"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}'


@pytest.fixture(scope="module")
def ts01():
    return next(p for p in load_fixture_patients() if p.patient_id == PID)


@pytest.fixture(scope="module")
def upstreams(ts01):
    answers: dict[str, object] = {}

    def healthy(path: str, headers: dict[str, str]):
        rel = unquote(path.split("/fhir/", 1)[1])
        value = answers.get(rel)
        return fhir_json(value if value is not None else searchset([]))

    dripping = Upstream(lambda path, headers: drip(BODY, DRIP_EVERY))
    ok = Upstream(healthy)
    ok.answers = answers  # type: ignore[attr-defined]
    yield dripping, ok
    dripping.close()
    ok.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, upstreams, ts01):
    dripping, ok = upstreams
    app = create_app({"environ": {}, "auth_required": False, "clock": lambda: AT,
                      "fhir_allowlist": (dripping.base, ok.base), "fhir_deadline_seconds": DEADLINE,
                      "state_dir": tmp_path_factory.mktemp("state")})
    templates = discovery_prefetch(state(app).templates)
    prefetch = prefetch_for(ts01, templates)
    ok.answers.update({templates[k].replace("{{context.patientId}}", PID): v  # type: ignore[attr-defined]
                       for k, v in prefetch.items()})
    with service_over_http(app) as base:
        yield base, {"patient": prefetch["patient"]}


def _call(base: str, fhir: str, prefetch: dict) -> tuple[dict, float]:
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": PID}, "fhirServer": fhir, "prefetch": prefetch}
    started = time.monotonic()
    resp = requests.post(base + HOOK, json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json(), time.monotonic() - started


def test_a_dripping_upstream_never_poisons_later_calls(service, upstreams, capsys):
    base, prefetch = service
    dripping, ok = upstreams
    drip_times, leftover_threads, leftover_connections = [], [], []
    for _ in range(6):
        answer, seconds = _call(base, dripping.base, prefetch)
        drip_times.append(seconds)
        screening = answer["cards"][0]["extension"]["org.trialscreen.screening"] if answer["cards"] else {}
        assert all("deadline" in why for why in screening.get("not_retrieved", {}).values())
        # nothing of the call is left: its FHIR threads end and its connections close at once
        assert wait_for(lambda: fhir_threads() == 0, 2.0), fhir_threads()
        assert wait_for(lambda: established_to(dripping.port) == 0, 2.0)
        leftover_threads.append(fhir_threads())
        leftover_connections.append(established_to(dripping.port))
    healthy_times = []
    for _ in range(6):
        answer, seconds = _call(base, ok.base, prefetch)
        healthy_times.append(seconds)
        screening = answer["cards"][0]["extension"]["org.trialscreen.screening"]
        assert screening.get("not_retrieved", {}) == {}, screening.get("not_retrieved")
        assert screening["status"] == "potential-candidate"
    with capsys.disabled():
        print(f"\n[deadline] deadline {DEADLINE} s; 6 calls to a server dripping 1 byte/{DRIP_EVERY} s: "
              f"{', '.join(f'{t:.2f}' for t in drip_times)} s (max {max(drip_times):.2f}); FHIR threads left "
              f"{max(leftover_threads)}, connections left {max(leftover_connections)}; then 6 calls to a healthy "
              f"server: all retrieved, median {statistics.median(healthy_times):.3f} s, "
              f"max {max(healthy_times):.3f} s")
    # every dripping call is answered at its deadline, not after the drip (the body would take ~110 s)
    assert max(drip_times) < DEADLINE + 2.0


def test_the_whole_read_is_bounded_even_without_the_watchdog(upstreams):
    """One search alone (no fetch_all, so no abort at the deadline): the read loop's clock ends it."""
    dripping, _ = upstreams
    client = FhirClient(dripping.base, token=None, allowlist=Allowlist.parse((dripping.base,)), max_pages=2,
                        deadline=Deadline(2.0))
    started = time.monotonic()
    try:
        result = client.search(Query("Condition", "Condition?patient=p"))
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert result.error == "deadline passed"
    assert elapsed < 2.0 + DRIP_EVERY + 0.5  # at most one drip beyond the deadline


def test_concurrent_calls_each_keep_their_own_deadline(service, upstreams):
    import threading

    base, prefetch = service
    dripping, ok = upstreams
    results: dict[str, list[float]] = {"drip": [], "ok": []}
    lock = threading.Lock()
    incomplete: list[dict] = []

    def caller(kind: str, fhir: str) -> None:
        for _ in range(3):
            answer, seconds = _call(base, fhir, prefetch)
            if kind == "ok":
                missing = answer["cards"][0]["extension"]["org.trialscreen.screening"].get("not_retrieved", {})
                if missing:
                    incomplete.append(missing)
            with lock:
                results[kind].append(seconds)

    threads = [threading.Thread(target=caller, args=("drip", dripping.base)) for _ in range(2)]
    threads += [threading.Thread(target=caller, args=("ok", ok.base)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results["ok"]) == 6 and len(results["drip"]) == 6
    assert incomplete == []
    assert max(results["ok"]) < DEADLINE  # a healthy call never waits for the dripping ones
    assert wait_for(lambda: fhir_threads() == 0, 3.0)
