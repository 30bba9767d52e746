"""Retries of FHIR GETs (issue 4 item 4) and the FHIR metrics: failure paths only, mocked with ``responses``.

A GET is idempotent, so it is retried once, and only when the wait plus one more request fits before the
hook's deadline: after 429/502/503/504 (honouring ``Retry-After`` in seconds or as an HTTP date), a refused
or reset connection, or a body cut off mid-way. Timeouts are not retried (the per-request timeout already
spans the remaining deadline). Redirects are never followed off the allowlist, however many hops in.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses

from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query, _retry_after
from cds_service.observability import FHIR_ERRORS, FHIR_LATENCY

BASE = "https://ehr.example.org/fhir"
URL = f"{BASE}/Condition"
ALLOW = Allowlist.parse((BASE,))
COND = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": COND, "search": {"mode": "match"}}]}


def _search(deadline: float = 3.0, kind: str = "Condition"):
    client = FhirClient(BASE, token="tok", allowlist=ALLOW, max_pages=3, deadline=Deadline(deadline))
    started = time.monotonic()
    result = client.search(Query(kind, "Condition?patient=p1"))
    return result, time.monotonic() - started


@responses.activate
@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_then_success(status):
    responses.get(URL, status=status, headers={"Retry-After": "0"})
    responses.get(URL, json=BUNDLE)
    result, _ = _search()
    assert result.error is None and result.resources == [COND]
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 500, 501])
def test_other_statuses_are_not_retried(status):
    responses.get(URL, status=status, headers={"Retry-After": "0"})
    result, _ = _search()
    assert result.error and len(responses.calls) == 1


@responses.activate
def test_retry_after_that_fits_the_deadline_is_waited_for():
    responses.get(URL, status=429, headers={"Retry-After": "1.2"})
    responses.get(URL, json=BUNDLE)
    result, elapsed = _search(deadline=3.0)
    assert result.error is None and len(responses.calls) == 2
    assert 1.1 <= elapsed < 3.0


@responses.activate
def test_retry_after_past_the_deadline_is_not_waited_for():
    responses.get(URL, status=429, headers={"Retry-After": "5"})
    result, elapsed = _search(deadline=3.0)
    assert "rate-limiting" in result.error
    assert len(responses.calls) == 1 and elapsed < 0.5  # answered at once, not after a pointless wait


@responses.activate
def test_retry_after_as_an_http_date():
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    responses.get(URL, status=503, headers={"Retry-After": soon})
    responses.get(URL, json=BUNDLE)
    result, elapsed = _search(deadline=3.5)
    assert result.error is None and len(responses.calls) == 2 and elapsed < 3.5


@responses.activate
def test_unreadable_retry_after_is_not_retried():
    responses.get(URL, status=503, headers={"Retry-After": "whenever"})
    result, _ = _search()
    assert "503" in result.error and len(responses.calls) == 1


@pytest.mark.parametrize("value,expected", [(None, 0.2), ("0", 0.0), ("2.5", 2.5), ("-1", None), ("nan", None),
                                            ("inf", None), ("soon", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_values(value, expected):
    assert _retry_after(value) == expected


@responses.activate
def test_refused_connection_is_retried_once():
    responses.get(URL, body=requests.ConnectionError("refused"))
    responses.get(URL, json=BUNDLE)
    result, _ = _search()
    assert result.error is None and result.resources == [COND] and len(responses.calls) == 2


@responses.activate
def test_a_server_that_stays_down_is_tried_twice_at_most():
    responses.get(URL, body=requests.ConnectionError("refused"))
    result, _ = _search()
    assert "could not be reached" in result.error and len(responses.calls) == 2


@responses.activate
def test_no_retry_when_the_deadline_is_too_close():
    responses.get(URL, body=requests.ConnectionError("refused"))
    result, _ = _search(deadline=0.3)
    assert "could not be reached" in result.error and len(responses.calls) == 1


@responses.activate
def test_timeouts_are_not_retried():
    responses.get(URL, body=requests.ReadTimeout("slow"))
    result, _ = _search()
    assert "timed out" in result.error and len(responses.calls) == 1


@responses.activate
def test_truncated_body_is_retried_once():
    responses.get(URL, body=b'{"resourceType": "Bundle", "ent', headers={"Content-Length": "5000"},
                  auto_calculate_content_length=False)
    responses.get(URL, json=BUNDLE)
    result, _ = _search()
    assert result.error is None and result.resources == [COND] and len(responses.calls) == 2


@responses.activate
def test_truncated_twice_is_a_reason():
    for _ in range(2):
        responses.get(URL, body=b'{"resourceType": "Bundle", "ent', headers={"Content-Length": "5000"},
                      auto_calculate_content_length=False)
    result, _ = _search()
    assert "cut off" in result.error and len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"\xff\xfe", b"null"])
def test_non_json_bodies_are_not_retried(body):
    responses.get(URL, body=body, content_type="text/html")
    result, _ = _search()
    assert result.error and len(responses.calls) == 1


@responses.activate
def test_a_redirect_chain_leaving_the_allowlist_is_not_followed():
    responses.get(URL, status=302, headers={"Location": f"{BASE}/Condition2"})
    responses.get(f"{BASE}/Condition2", status=307, headers={"Location": "https://evil.example.com/steal"})
    evil = responses.get("https://evil.example.com/steal", json=BUNDLE)
    result, _ = _search()
    assert "not on the FHIR allowlist" in result.error
    assert evil.call_count == 0


@responses.activate
def test_a_redirect_loop_ends():
    responses.get(URL, status=302, headers={"Location": URL})
    result, _ = _search()
    assert "redirect" in result.error and len(responses.calls) <= 6


@responses.activate
def test_fhir_errors_and_latency_are_counted_by_resource_type():
    errors = FHIR_ERRORS.labels(resource_type="Immunization", error="FhirUnavailable")
    before_errors = errors._value.get()
    before_count = _histogram_count("Immunization")
    responses.get(URL, status=500)
    result, _ = _search(kind="Immunization")
    assert result.error
    assert errors._value.get() == before_errors + 1
    assert _histogram_count("Immunization") == before_count + 1


def _histogram_count(kind: str) -> float:
    for metric in FHIR_LATENCY.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("resource_type") == kind:
                return sample.value
    return 0.0
