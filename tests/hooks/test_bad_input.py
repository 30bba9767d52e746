"""Bad input never hurts (issue 4 item 4), through the real app.

Every hostile or broken request body gets a clear 4xx with a FHIR OperationOutcome (never a 500, never a
stack trace); broken FHIR resources *inside* the prefetch are skipped and reported as data problems in the
screening extension, and the call answers 200.

The 100,000-entry prefetch Bundle (the choice): at the default body limit (20 MiB) such a Bundle of realistic
entries (~270 bytes each, 26 MB) is refused with 413 before any parsing. Where an operator raises the limit it
is accepted and answered in bounded time, because the prefetch reader reads at most ``MAX_BUNDLE_ENTRIES``
(20,000) entries per key and marks the kind *not retrieved* ("more than 20000 entries"). Both are tested.
"""

from __future__ import annotations

import time

import orjson
import pytest
from builders import LOINC, PID, SCT, condition, observation, patient
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body
from test_conformance import check_outcome

from cds_service.config import Settings
from cds_service.gather.prefetch import MAX_BUNDLE_ENTRIES

JSON = "application/json"


def _post_raw(client, raw: bytes, content_type: str | None = JSON):
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post(SERVICE_URL, data=raw, headers=headers)


def _screening(resp) -> dict:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    cards = resp.get_json()["cards"]
    assert len(cards) == 1, cards
    return cards[0]["extension"]["org.trialscreen.screening"]


# --- size -------------------------------------------------------------------------------------------------------
def test_body_over_the_limit_is_413_before_parsing(make_app):
    client = make_app(max_body_bytes=50_000).test_client()
    raw = b'{"hook": "patient-view", "pad": "' + b"x" * 60_000 + b'"}'
    resp = _post_raw(client, raw)
    check_outcome(resp, 413)
    assert resp.get_json()["issue"][0]["code"] == "too-long"


def test_body_over_the_limit_without_json_is_still_413(make_app):
    client = make_app(max_body_bytes=1_000).test_client()
    check_outcome(_post_raw(client, b"\xff" * 5_000), 413)


# --- unreadable bodies ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b"",
    b"{",
    b'{"hook": "patient-view",}',
    b"{'hook': 'patient-view'}",
    b"NaN",
    b'{"hook": "patient-view", "hook": "patient-view"',
    b"\xff\xfe\xfd",  # not UTF-8
    '{"hook": "patient-view"}'.encode("utf-16"),  # UTF-16 with a BOM: not the UTF-8 JSON requires
    b'{"hook": "patient-\xc3("}',  # an invalid UTF-8 sequence inside a string
    b"\x00" * 100,
], ids=["empty", "truncated", "trailing-comma", "single-quotes", "nan", "unterminated", "not-utf8", "utf16",
        "bad-utf8-in-string", "nul-bytes"])
def test_unreadable_body_is_400(client, raw):
    resp = _post_raw(client, raw)
    check_outcome(resp, 400)
    assert "JSON" in resp.get_json()["issue"][0]["diagnostics"]


def test_100000_levels_of_nesting_is_400_not_a_recursion_error(client):
    depth = 100_000
    started = time.perf_counter()
    resp = _post_raw(client, b"[" * depth + b"]" * depth)
    check_outcome(resp, 400)
    assert time.perf_counter() - started < 5


def test_deep_nesting_inside_an_object_is_400(client):
    depth = 100_000
    body = b'{"hook": "patient-view", "context": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    check_outcome(_post_raw(client, body), 400)


def test_nesting_just_under_the_parser_limit_inside_a_resource_is_answered(app, client):
    """Nesting the JSON parser accepts (orjson reads up to 1024 levels) must not break validation or screening."""
    depth = 1000
    nested = b'{"url": "http://example.org/x", "extension": [' * depth + \
        b'{"url": "http://example.org/x", "valueString": "leaf"}' + b"]}" * depth
    body = orjson.dumps(hook_body(full_prefetch(app, patient(extension="@X@"), condition(SCT, "91861009"))))
    raw = body.replace(b'"@X@"', b"[" + nested + b"]")
    resp = _post_raw(client, raw)
    assert resp.status_code in (200, 400), resp.get_data(as_text=True)[:300]
    if resp.status_code == 400:
        check_outcome(resp, 400)


# --- content type -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", None])
def test_wrong_content_type_is_415(client, content_type):
    resp = _post_raw(client, orjson.dumps(hook_body({})), content_type)
    check_outcome(resp, 415)
    assert "Content-Type" in resp.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/fhir+json", "Application/JSON"])
def test_json_content_types_are_accepted(app, client, content_type):
    body = hook_body(full_prefetch(app, *aml_patient()))
    resp = _post_raw(client, orjson.dumps(body), content_type)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]


# --- wrong shapes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,field", [
    ({"hook": 42, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": {"patientId": "p1"}}, "hook"),
    ({**hook_body({}), "context": "p1"}, "context"),
    ({**hook_body({}), "context": {"patientId": 1}}, "context.patientId"),
    ({**hook_body({}), "context": {"patientId": ["p1"]}}, "context.patientId"),
    ({**hook_body({}), "context": {"patientId": None}}, "context.patientId"),
    ({**hook_body({}), "context": {"patientId": "p" * 65}}, "context.patientId"),
    ({**hook_body({}), "context": {"patientId": "p1\u0000"}}, "context.patientId"),
    ({**hook_body({}), "hookInstance": 12345}, "hookInstance"),
    ({**hook_body({}), "prefetch": "everything"}, "prefetch"),
    ({**hook_body({}), "prefetch": {"patient": 7}}, "prefetch.patient"),
    ({**hook_body({}), "prefetch": {"patient": {"id": "p1"}}}, "prefetch.patient.resourceType"),
    ({**hook_body({}), "fhirServer": 12}, "fhirServer"),
    ({**hook_body({}), "fhirServer": "javascript:alert(1)"}, "fhirServer"),
    ({**hook_body({}), "extension": []}, "extension"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_wrong_types_are_400_naming_the_field(client, body, field):
    resp = client.post(SERVICE_URL, json=body)
    check_outcome(resp, 400)
    assert resp.get_json()["issue"][0]["expression"] == [field]


@pytest.mark.parametrize("raw", [b"[]", b"null", b"true", b"3.5", b'"patient-view"', b"[{}]"])
def test_a_body_that_is_not_an_object_is_400(client, raw):
    check_outcome(_post_raw(client, raw), 400)


@pytest.mark.parametrize("hook", ["order-sign", "order-select", "encounter-start", "PATIENT-VIEW", "", "x" * 5000])
def test_unknown_hooks_are_400(client, hook):
    resp = client.post(SERVICE_URL, json={**hook_body({}), "hook": hook})
    check_outcome(resp, 400)
    assert len(resp.get_data()) < 2_000  # the hook name is quoted shortened, not echoed whole


def test_unknown_service_is_404_whatever_the_body(client):
    check_outcome(client.post("/cds-services/nope", json=hook_body({})), 404)
    check_outcome(client.post("/cds-services/nope", data=b"\xff not json", content_type=JSON), 404)


@pytest.mark.parametrize("drop", ["context", "patientId"])
def test_missing_context_is_400(client, drop):
    body = hook_body({})
    if drop == "context":
        del body["context"]
    else:
        del body["context"]["patientId"]
    resp = client.post(SERVICE_URL, json=body)
    check_outcome(resp, 400)
    assert "required" in resp.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(client, method):
    resp = client.open(SERVICE_URL, method=method)
    check_outcome(resp, 405)
    assert "POST" in resp.headers.get("Allow", "")


# --- broken resources inside the prefetch: skipped and reported -------------------------------------------------
def test_invalid_dates_in_prefetch_resources_are_skipped_and_reported(app, client):
    bad_onset = condition(SCT, "91861009", onset="2025-13-45", id="bad-onset")
    bad_obs = observation(LOINC, "1742-6", value=30, unit="U/L", high=40, date="yesterday", id="bad-date")
    bad_birth = {"resourceType": "Condition", "id": "bad-recorded", "code": {"coding": [{"system": SCT,
                 "code": "91861009"}]}, "subject": {"reference": f"Patient/{PID}"}, "recordedDate": "2025-02-30"}
    prefetch = full_prefetch(app, *aml_patient(bad_onset, bad_obs, bad_birth))
    screening = _screening(client.post(SERVICE_URL, json=hook_body(prefetch)))
    problems = {p["reference"]: p for p in screening["data_problems"]}
    assert {"Condition/bad-onset", "Observation/bad-date", "Condition/bad-recorded"} <= set(problems)
    assert all(p["message"] for p in problems.values())


def test_invalid_quantities_in_prefetch_resources_are_skipped_and_reported(app, client):
    not_a_number = observation(LOINC, "1742-6", value=30, unit="U/L", high=40, id="alt-nan")
    not_a_number["valueQuantity"]["value"] = "thirty"
    prefetch = full_prefetch(app, *aml_patient(not_a_number))
    screening = _screening(client.post(SERVICE_URL, json=hook_body(prefetch)))
    assert "Observation/alt-nan" in {p["reference"] for p in screening["data_problems"]}
    i7a = next(c for c in screening["criteria"] if c["id"] == "I7a")
    assert i7a["result"] == "unknown"  # an unreadable ALT is never taken as normal


def test_an_unknown_comparator_leaves_the_criterion_unknown(app, client):
    alt = observation(LOINC, "1742-6", value=30, unit="U/L", high=40, comparator="approximately")
    ast = observation(LOINC, "1920-8", value=30, unit="U/L", high=40)
    prefetch = full_prefetch(app, *aml_patient(alt, ast))
    screening = _screening(client.post(SERVICE_URL, json=hook_body(prefetch)))
    i7a = next(c for c in screening["criteria"] if c["id"] == "I7a")
    assert i7a["result"] == "unknown", i7a


def test_unknown_units_leave_the_criterion_unknown(app, client):
    alt = observation(LOINC, "1742-6", value=30, unit="furlong/fortnight", high=40, id="alt-unit")
    ast = observation(LOINC, "1920-8", value=30, unit="U/L", high=40)
    prefetch = full_prefetch(app, *aml_patient(alt, ast))
    screening = _screening(client.post(SERVICE_URL, json=hook_body(prefetch)))
    i7a = next(c for c in screening["criteria"] if c["id"] == "I7a")
    assert i7a["result"] == "unknown", i7a


@pytest.mark.parametrize("junk", [
    {"resourceType": "Observation"},
    {"resourceType": "Observation", "id": 5, "status": "final", "code": "ALT"},
    {"resourceType": "Condition", "id": "c", "subject": "Patient/p1", "code": []},
    {"resourceType": "NotAResource", "id": "x"},
    {"resourceType": "Observation", "id": "o", "status": "final", "code": {"coding": [{"code": {"x": 1}}]},
     "subject": {"reference": "Patient/p1"}},
    {"resourceType": ["Observation"], "id": "l", "status": "final", "subject": {"reference": "Patient/p1"}},
    {"resourceType": {"type": "Condition"}, "id": "d", "subject": {"reference": "Patient/p1"}},
], ids=["empty-observation", "wrong-types", "condition-shapes", "unknown-type", "coding-object", "type-list",
        "type-object"])
def test_malformed_resources_in_a_bundle_are_skipped(app, client, junk):
    prefetch = full_prefetch(app, *aml_patient())
    key = "conditions" if junk["resourceType"] in ("Condition", {"type": "Condition"}) else "observations"
    bundle = prefetch.get(key) or {"resourceType": "Bundle", "type": "searchset", "entry": []}
    bundle["entry"].append({"resource": junk})
    prefetch[key] = bundle
    resp = client.post(SERVICE_URL, json=hook_body(prefetch))
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]


def test_malformed_bundle_entries_are_ignored(app, client):
    prefetch = full_prefetch(app, *aml_patient())
    prefetch["observations"] = {"resourceType": "Bundle", "type": "searchset",
                                "entry": [None, 1, "x", [], {"resource": None}, {"resource": "Observation/1"},
                                          {"search": {"mode": 3}, "resource": {"resourceType": "Observation"}}]}
    resp = client.post(SERVICE_URL, json=hook_body(prefetch))
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    prefetch["observations"] = {"resourceType": "Bundle", "entry": {"not": "a list"}}
    screening = _screening(client.post(SERVICE_URL, json=hook_body(prefetch)))
    assert "Observation" in screening["not_retrieved"]


def test_an_unreadable_patient_is_a_412_naming_the_cause_not_an_empty_card_list(app, client):
    """Nothing was screened: "no card" would read as a negative screen (the sandbox shows "All clear")."""
    prefetch = full_prefetch(app, *aml_patient(), overrides={"patient": patient(birthDate="1970-02-31")})
    resp = client.post(SERVICE_URL, json=hook_body(prefetch))
    assert resp.status_code == 412
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body
    assert "could not be read" in body["issue"][0]["diagnostics"]


# --- a 100,000-entry Bundle -------------------------------------------------------------------------------------
def _huge_prefetch_bytes(app, entries: int) -> bytes:
    """A hook body whose Observation prefetch holds ``entries`` copies of one small final Observation.

    Built as bytes (one serialised entry repeated), so the test spends its time in the service, not here.
    """
    prefetch = full_prefetch(app, *aml_patient())
    prefetch["observations"] = {"resourceType": "Bundle", "type": "searchset", "entry": "@ENTRIES@"}
    template = orjson.dumps(hook_body(prefetch))
    one = orjson.dumps({"resource": {"resourceType": "Observation", "status": "final",
                                     "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                     "subject": {"reference": f"Patient/{PID}"},
                                     "effectiveDateTime": "2026-09-28",
                                     "valueQuantity": {"value": 80, "unit": "/min"}},
                        "search": {"mode": "match"}})
    entries_json = b"[" + b",".join([one] * entries) + b"]"
    return template.replace(b'"@ENTRIES@"', entries_json)


def test_100000_entry_bundle_is_read_up_to_the_cap_in_bounded_time(make_app):
    app = make_app(max_body_bytes=64 * 1024 * 1024)
    raw = _huge_prefetch_bytes(app, 100_000)
    started = time.perf_counter()
    resp = _post_raw(app.test_client(), raw)
    elapsed = time.perf_counter() - started
    screening = _screening(resp)
    assert f"more than {MAX_BUNDLE_ENTRIES} entries" in screening["not_retrieved"]["Observation"]
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_100000_entry_bundle_over_the_default_limit_is_413(make_app):
    """At the default 20 MiB limit a 100,000-entry Bundle of realistic entries is refused before parsing."""
    app = make_app()
    raw = _huge_prefetch_bytes(app, 100_000)
    assert len(raw) > Settings().max_body_bytes
    started = time.perf_counter()
    check_outcome(_post_raw(app.test_client(), raw), 413)
    assert time.perf_counter() - started < 5


def test_a_chunked_body_over_the_limit_is_413(make_app):
    """No Content-Length (chunked transfer, as a gunicorn worker sees it): the limit holds while reading."""
    import io

    client = make_app(max_body_bytes=10_000).test_client()
    raw = b'{"hook": "patient-view", "pad": "' + b"x" * 50_000 + b'"}'
    resp = client.post(SERVICE_URL, input_stream=io.BytesIO(raw), headers={"Content-Type": JSON,
                                                                          "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})
    check_outcome(resp, 413)


def _chunked(client, url: str, raw: bytes):
    import io

    headers = {"Content-Type": JSON, "Transfer-Encoding": "chunked"}
    return client.post(url, input_stream=io.BytesIO(raw), headers=headers,
                       environ_overrides={"wsgi.input_terminated": True})


def test_a_chunked_body_at_or_under_the_limit_is_read_whole(make_app):
    app = make_app()
    raw = orjson.dumps(hook_body(full_prefetch(app, *aml_patient())))
    exact = make_app(max_body_bytes=len(raw)).test_client()
    assert _chunked(exact, SERVICE_URL, raw).status_code == 200
    assert _chunked(app.test_client(), SERVICE_URL, raw).status_code == 200
    check_outcome(_chunked(make_app(max_body_bytes=len(raw) - 1).test_client(), SERVICE_URL, raw), 413)


def test_chunked_feedback_over_the_limit_is_413(make_app):
    client = make_app(max_body_bytes=1_000).test_client()
    raw = orjson.dumps({"feedback": [{"card": "c" * 100, "outcome": "overridden",
                                      "outcomeTimestamp": "2026-10-01T10:00:00Z"}] * 20})
    check_outcome(_chunked(client, SERVICE_URL + "/feedback", raw), 413)
