"""Per-call HTTP state (issue 10): a FHIR server's cookies answered for one user's token are never sent with
another user's token, nor later in the same call; each hook call has its own session and shares no auth state.

Through the real hook endpoint on a real socket, against a real loopback FHIR server that sets a cookie named
after the token it was sent on every answer (``upstreams.Upstream``).
"""

from __future__ import annotations

import threading

import pytest
import requests
from upstreams import Reply, Upstream, fhir_json, searchset, service_over_http

from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query
from cds_service.hooks.app import create_app
from cds_service.hooks.discovery import SERVICE_ID

HOOK = f"/cds-services/{SERVICE_ID}"
PID = "ts01-patient"
PATIENT = {"resourceType": "Patient", "id": PID, "birthDate": "1970-05-01", "gender": "female"}


def _cookie_server() -> Upstream:
    def route(path: str, headers: dict[str, str]) -> Reply:
        token = headers.get("authorization", "none").rsplit(" ", 1)[-1]
        cookies = {"Set-Cookie": f"SESSION={token}; Path=/; HttpOnly", "Cache-Control": "no-store"}
        if "/Patient/" in path:
            return fhir_json(PATIENT, **cookies)
        return fhir_json(searchset([]), **cookies)

    return Upstream(route)


@pytest.fixture
def cookie_upstream():
    with _cookie_server() as server:
        yield server


@pytest.fixture
def service(tmp_path, cookie_upstream):
    app = create_app({"environ": {}, "auth_required": False, "fhir_allowlist": (cookie_upstream.base,),
                      "state_dir": tmp_path / "state"})
    with service_over_http(app) as base:
        yield base


def _call(base: str, fhir: str, token: str) -> int:
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": PID}, "fhirServer": fhir,
            "fhirAuthorization": {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "trialscreen"}}
    return requests.post(base + HOOK, json=body, timeout=60).status_code


def test_cookies_set_for_one_users_token_are_never_sent_back(service, cookie_upstream):
    tokens = ["user-a-token", "user-b-token"] * 6  # 12 calls, alternating users (the attack run's 10 of 12)
    for token in tokens:
        assert _call(service, cookie_upstream.base, token) == 200
    seen = cookie_upstream.seen
    assert len(seen) >= 12 * 8  # every kind of data of every call was asked for
    assert [s for s in seen if "cookie" in s.headers] == []
    # every request carried its own call's token, and only it
    assert {s.headers["authorization"] for s in seen} == {f"Bearer {t}" for t in set(tokens)}


def test_concurrent_calls_of_two_users_never_mix_tokens(service, cookie_upstream):
    errors: list[str] = []

    def user(token: str) -> None:
        for _ in range(4):
            if _call(service, cookie_upstream.base, token) != 200:
                errors.append(token)

    threads = [threading.Thread(target=user, args=(t,)) for t in ("alice-tok", "bob-tok")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert not any("cookie" in s.headers for s in cookie_upstream.seen)
    assert {s.headers["authorization"] for s in cookie_upstream.seen} == {"Bearer alice-tok", "Bearer bob-tok"}


def test_each_client_has_its_own_session_which_stores_no_cookie(cookie_upstream):
    allow = Allowlist.parse((cookie_upstream.base,))
    clients = [FhirClient(cookie_upstream.base, token=t, allowlist=allow, max_pages=2, deadline=Deadline(5))
               for t in ("t1", "t2")]
    try:
        for c in clients:
            assert c.search(Query("Condition", f"Condition?patient={PID}")).error is None
        a, b = (c.transport for c in clients)
        assert a is not None and b is not None and a.session is not b.session
        assert len(a.session.cookies) == 0 and len(b.session.cookies) == 0
        assert "Authorization" not in a.session.headers and not a.session.trust_env
    finally:
        for c in clients:
            c.close()


def test_a_closed_call_sends_nothing_more(cookie_upstream):
    allow = Allowlist.parse((cookie_upstream.base,))
    client = FhirClient(cookie_upstream.base, token="t", allowlist=allow, max_pages=2, deadline=Deadline(5))
    client.close()
    before = len(cookie_upstream.seen)
    result = client.search(Query("Condition", f"Condition?patient={PID}"))
    assert result.error and len(cookie_upstream.seen) == before
    assert isinstance(requests.Session(), requests.Session)
