"""The FHIR client's failure paths (mocked with ``responses``): every fault becomes a reason, never an
exception, a hang or a leaked token. The working paths run against a real server in tests/integration."""

from __future__ import annotations

import logging
import threading

import pytest
import requests
import responses

from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query

BASE = "https://ehr.example.org/fhir"
TOKEN = "tok-7e1b2c-never-log-me"
ALLOW = Allowlist.parse(("https://ehr.example.org/fhir",))


def _client(deadline: float = 3.0, max_pages: int = 5, base: str = BASE, allow: Allowlist = ALLOW) -> FhirClient:
    return FhirClient(base, token=TOKEN, allowlist=allow, max_pages=max_pages, deadline=Deadline(deadline))


def _search(client: FhirClient, url: str = "Condition?patient=p1") -> tuple[list, str | None]:
    r = client.search(Query("Condition", url))
    return r.resources, r.error


def _bundle(*resources: dict, next_url: str | None = None) -> dict:
    b: dict = {"resourceType": "Bundle", "type": "searchset",
               "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]}
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


COND = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}


# --- the allowlist ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,ok", [
    ("https://ehr.example.org/fhir", True),
    ("https://ehr.example.org/fhir/", True),
    ("https://ehr.example.org/fhir/Patient/1", True),
    ("https://EHR.example.org:443/fhir/Patient/1", True),
    ("https://ehr.example.org/fhirx", False),
    ("https://ehr.example.org/other", False),
    ("http://ehr.example.org/fhir", False),  # plain http only when the allowlist says http
    ("https://ehr.example.org:8443/fhir", False),
    ("https://ehr.example.org.evil.com/fhir", False),
    ("https://ehr.example.org@evil.com/fhir", False),
    ("https://user:pw@ehr.example.org/fhir", False),
    ("ftp://ehr.example.org/fhir", False),
    ("not a url", False),
])
def test_allowlist_matches_scheme_host_port_and_path_prefix(url, ok):
    assert ALLOW.allows(url) is ok


def test_allowlist_allows_plain_http_when_named():
    allow = Allowlist.parse(("http://127.0.0.1:8080/fhir",))
    assert allow.allows("http://127.0.0.1:8080/fhir/Patient/1")
    assert not allow.allows("https://127.0.0.1:8080/fhir/Patient/1")


def test_allowlist_rejects_a_bad_entry():
    with pytest.raises(ValueError):
        Allowlist.parse(("ehr.example.org",))


@responses.activate
def test_server_off_the_allowlist_is_sent_nothing():
    client = _client(base="https://evil.example.com/fhir")
    assert not client.trusted
    results = client.fetch_all({"c": Query("Condition", "Condition?patient=p1")})
    assert "allowlist" in results["c"].error
    assert len(responses.calls) == 0


# --- HTTP faults -----------------------------------------------------------------------------------------------
@responses.activate
@pytest.mark.parametrize("status,words", [(401, "refused the access token"), (403, "refused the access token"),
                                          (404, "not found"), (410, "not found"), (500, "HTTP 500"),
                                          (502, "HTTP 502"), (429, "rate-limiting")])
def test_http_errors_become_reasons(status, words):
    responses.get(f"{BASE}/Condition", status=status, json={"resourceType": "OperationOutcome", "issue": []},
                  headers={"Retry-After": "120"})
    resources, error = _search(_client())
    assert resources == [] and words in error


@responses.activate
def test_429_with_short_retry_after_is_retried_once():
    responses.get(f"{BASE}/Condition", status=429, headers={"Retry-After": "0"})
    responses.get(f"{BASE}/Condition", json=_bundle(COND))
    resources, error = _search(_client())
    assert error is None and resources == [COND]
    assert len(responses.calls) == 2


@responses.activate
def test_5xx_is_retried_only_once():
    for _ in range(3):
        responses.get(f"{BASE}/Condition", status=503, headers={"Retry-After": "0"})
    _, error = _search(_client())
    assert "503" in error and len(responses.calls) == 2


@responses.activate
def test_timeout_becomes_a_reason():
    responses.get(f"{BASE}/Condition", body=requests.ReadTimeout("slow"))
    _, error = _search(_client())
    assert "timed out" in error


@responses.activate
def test_connection_error_becomes_a_reason():
    responses.get(f"{BASE}/Condition", body=requests.ConnectionError("refused"))
    _, error = _search(_client())
    assert "could not be reached" in error


@responses.activate
@pytest.mark.parametrize("body", [b"<html>oops</html>", b"{\"resourceType\": \"Bund", b"[1, 2]", b"{}", b""])
def test_garbage_bodies_become_reasons(body):
    responses.get(f"{BASE}/Condition", body=body, content_type="application/fhir+json")
    _, error = _search(_client())
    assert "not JSON" in error or "not a FHIR resource" in error


@responses.activate
def test_error_outcome_entry_marks_the_search_failed():
    bundle = _bundle(COND)
    bundle["entry"].append({"resource": {"resourceType": "OperationOutcome",
                                         "issue": [{"severity": "error", "code": "too-costly",
                                                    "diagnostics": "Patient Jane Doe has too much data"}]},
                            "search": {"mode": "outcome"}})
    responses.get(f"{BASE}/Condition", json=bundle)
    _, error = _search(_client())
    assert "too-costly" in error and "Jane" not in error  # the code, never the text (it may quote data)


@responses.activate
def test_warning_outcome_entries_are_ignored():
    bundle = _bundle(COND)
    bundle["entry"].append({"resource": {"resourceType": "OperationOutcome",
                                         "issue": [{"severity": "warning", "code": "not-supported"}]},
                            "search": {"mode": "outcome"}})
    responses.get(f"{BASE}/Condition", json=bundle)
    assert _search(_client()) == ([COND], None)


@responses.activate
def test_top_level_operation_outcome_with_200_is_a_failure():
    responses.get(f"{BASE}/Condition", json={"resourceType": "OperationOutcome", "issue": []})
    _, error = _search(_client())
    assert "OperationOutcome" in error


# --- redirects and paging --------------------------------------------------------------------------------------
@responses.activate
def test_redirect_off_the_allowlist_is_not_followed():
    responses.get(f"{BASE}/Condition", status=302, headers={"Location": "https://evil.example.com/steal"})
    responses.get("https://evil.example.com/steal", json=_bundle(COND))
    _, error = _search(_client())
    assert "not on the FHIR allowlist" in error
    assert [c.request.url.split("?")[0] for c in responses.calls] == [f"{BASE}/Condition"]


@responses.activate
def test_redirect_on_the_allowlist_is_followed():
    responses.get(f"{BASE}/Condition", status=307, headers={"Location": f"{BASE}/v2/Condition?patient=p1"})
    responses.get(f"{BASE}/v2/Condition", json=_bundle(COND))
    assert _search(_client()) == ([COND], None)


@responses.activate
def test_next_link_off_the_allowlist_is_not_followed():
    responses.get(f"{BASE}/Condition", json=_bundle(COND, next_url="https://evil.example.com/page2"))
    resources, error = _search(_client())
    assert resources == [COND] and "allowlist" in error
    assert len(responses.calls) == 1


@responses.activate
def test_paging_stops_at_the_page_cap():
    responses.get(f"{BASE}/Condition", json=_bundle(COND, next_url=f"{BASE}/Condition?page=next"))
    resources, error = _search(_client(max_pages=3))
    assert len(resources) == 3 and "more than 3 pages" in error
    assert len(responses.calls) == 3


# --- deadline and logs -----------------------------------------------------------------------------------------
@responses.activate
def test_deadline_marks_unfinished_queries():
    release, finished = threading.Event(), threading.Event()

    def slow(request):
        release.wait(2.0)
        finished.set()
        return 200, {}, b'{"resourceType": "Bundle", "type": "searchset"}'

    responses.add_callback(responses.GET, f"{BASE}/Condition", callback=slow)
    responses.get(f"{BASE}/Procedure", json=_bundle())
    client = _client(deadline=0.3)
    try:
        results = client.fetch_all({"c": Query("Condition", "Condition?patient=p1"),
                                    "p": Query("Procedure", "Procedure?patient=p1")})
    finally:
        release.set()
        finished.wait(3.0)  # let the abandoned request end inside this test's mock, not a later test's
    assert results["c"].error == "deadline passed"
    assert results["p"].error is None


def test_deadline_already_passed_sends_nothing():
    with responses.RequestsMock() as rsps:
        _, error = _search(_client(deadline=0))
        assert "deadline passed" in error
        assert len(rsps.calls) == 0


@responses.activate
def test_token_is_sent_per_request_and_never_logged_or_kept(caplog):
    responses.get(f"{BASE}/Condition", status=401)
    client = _client()
    with caplog.at_level(logging.DEBUG):
        _search(client)
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)
    assert client.transport is not None and "Authorization" not in client.transport.session.headers


@responses.activate
def test_no_token_sends_no_authorization_header():
    responses.get(f"{BASE}/Condition", json=_bundle())
    FhirClient(BASE, token=None, allowlist=ALLOW, max_pages=2, deadline=Deadline(2)).search(
        Query("Condition", "Condition?patient=p1"))
    assert "Authorization" not in responses.calls[0].request.headers
