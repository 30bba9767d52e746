"""The report page against the production server (``trialscreen serve``, one worker, so its one limiter sees every
request): unknown tokens are limited per client address (429 with Retry-After, counted in /metrics), found
reports cost nothing, X-Forwarded-For counts only behind a configured proxy, and no page can be framed (issue 10:
tokens could be guessed at 144/s with no limit; the page allowed framing)."""

from __future__ import annotations

import re
import secrets
import time
import uuid

import pytest
import requests
from served import serve

from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.rate_limit import MissLimiter, client_address

MISSES = 5
WINDOW = 10.0  # one more miss every 2 s
REFUSED = re.compile(r'^trialscreen_report_lookups_refused_total\{page="report"\} (\S+)$', re.MULTILINE)


def _env(proxies: int) -> dict[str, str]:
    return {"TRIALSCREEN_REPORT_RATE_LIMIT_MISSES": str(MISSES),
            "TRIALSCREEN_REPORT_RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
            "TRIALSCREEN_TRUSTED_PROXY_COUNT": str(proxies)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("report-limit"), _env(0), workers=1, threads=2) as served:
        served.report_url = _a_report(served)
        yield served


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("report-limit-proxy"), _env(1), workers=1, threads=2) as served:
        yield served


def _a_report(served) -> str:
    """The report link of a card for a fixture candidate."""
    templates = requests.get(served.base_url + "/cds-services", timeout=30).json()["services"][0]["prefetch"]
    for patient in load_fixture_patients():
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": patient.patient_id}, "prefetch": prefetch_for(patient, templates)}
        cards = requests.post(f"{served.base_url}/cds-services/{SERVICE_ID}", json=body, timeout=60).json()["cards"]
        links = [link["url"] for card in cards for link in card.get("links") or [] if "/report/" in link["url"]]
        if links:
            return links[0]
    raise AssertionError("no fixture patient got a card with a report link")


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=30)


def guess(served) -> str:
    return f"{served.base_url}/report/{secrets.token_urlsafe(24)}"


def refused_total(served) -> float:
    found = REFUSED.findall(get(served.base_url + "/metrics").text)
    return float(found[0]) if found else 0.0


def wait_until_allowed(url: str, retry_after: int) -> requests.Response:
    """``url`` fetched once the limit lets requests through again (Retry-After, plus a second's rounding on a loaded
    machine)."""
    time.sleep(retry_after)
    deadline = time.monotonic() + WINDOW * 2
    while (resp := get(url)).status_code == 429:
        assert time.monotonic() < deadline, "the limit never let a request through again"
        time.sleep(0.5)
    return resp


def assert_unframeable(resp: requests.Response) -> None:
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


def test_found_reports_cost_nothing_and_cannot_be_framed(server):
    for _ in range(3 * MISSES):
        resp = get(server.report_url)
        assert resp.status_code == 200
    assert_unframeable(resp)


def test_unknown_tokens_are_limited_per_address_with_429_and_retry_after(server):
    before = refused_total(server)
    responses = [get(guess(server)) for _ in range(MISSES + 3)]
    statuses = [r.status_code for r in responses]
    assert_unframeable(responses[0])  # the 404 page
    assert statuses[:MISSES] == [404] * MISSES and statuses[MISSES:] == [429] * 3, statuses
    blocked = get(server.report_url)  # refused before any lookup: while blocked, no token is tested at all
    assert blocked.status_code == 429
    retry_after = int(blocked.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW / MISSES + 1
    assert_unframeable(blocked)
    assert refused_total(server) - before == 4
    # Spoofing X-Forwarded-For does not help when no proxy is trusted (the default).
    assert get(guess(server), **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    assert wait_until_allowed(server.report_url, retry_after).status_code == 200


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_limit(proxied):
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    clinician = {"X-Forwarded-For": "192.0.2.20"}
    assert [get(guess(proxied), **attacker).status_code for _ in range(MISSES + 1)] == [404] * MISSES + [429]
    assert get(guess(proxied), **clinician).status_code == 404
    # An address the caller wrote to the left of the proxy's entry is not believed.
    spoofed = {"X-Forwarded-For": "192.0.2.99, 203.0.113.9"}
    assert get(guess(proxied), **spoofed).status_code == 429


@pytest.mark.parametrize(("remote", "forwarded", "proxies", "expected"), [
    ("10.0.0.1", None, 0, "10.0.0.1"),
    ("10.0.0.1", "203.0.113.9", 0, "10.0.0.1"),
    ("10.0.0.1", "203.0.113.9", 1, "203.0.113.9"),
    ("10.0.0.1", "198.51.100.1, 203.0.113.9", 1, "203.0.113.9"),
    ("10.0.0.1", "198.51.100.1, 203.0.113.9", 2, "198.51.100.1"),
    ("10.0.0.1", "203.0.113.9", 3, "203.0.113.9"),  # fewer hops than proxies: the furthest one there is
    ("10.0.0.1", " , ", 1, "10.0.0.1"),
    (None, None, 0, "unknown"),
])
def test_the_client_address(remote, forwarded, proxies, expected):
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    assert client_address(remote, headers, proxies) == expected


def test_the_limiter_refills_evenly_and_forgets_the_oldest_addresses():
    now = [0.0]
    limiter = MissLimiter(2, 10.0, clock=lambda: now[0])
    limiter.miss("a")
    limiter.miss("a")
    assert limiter.retry_after("a") == 5 and limiter.retry_after("b") is None
    now[0] = 5.0
    assert limiter.retry_after("a") is None
    off = MissLimiter(0, 60.0)
    for _ in range(100):
        off.miss("a")
    assert not off.enabled and off.retry_after("a") is None
