"""``POST /cds-services/<id>``: validation, prefetch semantics (resource / null / OperationOutcome / missing),
the FHIR fallback, and the 400 / 404 / 412 / 413 answers."""

from __future__ import annotations

import logging

import orjson
import pytest
import responses
from builders import AT, LOINC, PID, SCT, allergy, condition, observation, patient, screen_of
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body, searchset, templates_of
from test_conformance import check_cards, check_outcome

from cds_service.hooks.app import JsonFormatter

EHR = "https://ehr.example.org/fhir"
FAILED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
TOKEN = "secret-access-token-xyz"


def _post(client, body, status=200):
    resp = client.post(SERVICE_URL, json=body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def _screening(body) -> dict:
    assert len(body["cards"]) == 1, body
    return body["cards"][0]["extension"]["org.trialscreen.screening"]


def _json_log(caplog) -> str:
    """The captured records as the service writes them (JSON lines with their extra fields)."""
    return "\n".join(JsonFormatter().format(r) for r in caplog.records)


def _auth(token: str = TOKEN) -> dict:
    return {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
            "subject": "trialscreen"}


# --- prefetch semantics ----------------------------------------------------------------------------------------
def test_full_prefetch_screens_like_the_engine(app, client):
    resources = aml_patient(observation(LOINC, "1742-6", value=30, unit="U/L", high=40, date="2026-09-20"))
    body = _post(client, hook_body(full_prefetch(app, *resources)))
    check_cards(body)
    assert _screening(body) == screen_of(*resources, at=AT).to_json()


def test_null_means_no_data_not_a_failure(app, client):
    body = _post(client, hook_body(full_prefetch(app, *aml_patient())))
    screening = _screening(body)
    assert "not_retrieved" not in screening
    assert "Data not retrieved" not in body["cards"][0]["detail"]


def test_operation_outcome_marks_the_kind_not_retrieved(app, client):
    prefetch = full_prefetch(app, *aml_patient(), overrides={"allergies": FAILED})
    screening = _screening(_post(client, hook_body(prefetch)))
    assert "prefetch query failed" in screening["not_retrieved"]["AllergyIntolerance"]


def test_bundle_with_an_error_outcome_entry_marks_the_kind_not_retrieved(app, client):
    bundle = searchset(allergy(SCT, "294505008"))
    bundle["entry"].append({"resource": FAILED, "search": {"mode": "outcome"}})
    prefetch = full_prefetch(app, *aml_patient(), overrides={"allergies": bundle})
    assert "AllergyIntolerance" in _screening(_post(client, hook_body(prefetch)))["not_retrieved"]


def test_warning_outcome_entries_are_ignored(app, client):
    bundle = searchset()
    bundle["entry"] = [{"resource": {"resourceType": "OperationOutcome",
                                     "issue": [{"severity": "warning", "code": "not-supported"}]},
                        "search": {"mode": "outcome"}}]
    prefetch = full_prefetch(app, *aml_patient(), overrides={"allergies": bundle})
    assert "not_retrieved" not in _screening(_post(client, hook_body(prefetch)))


def test_missing_key_without_fhir_server_is_412_naming_the_key(app, client):
    prefetch = full_prefetch(app, *aml_patient())
    del prefetch["conditions"]
    body = _post(client, hook_body(prefetch), status=412)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["prefetch.conditions"]


def test_no_prefetch_and_no_fhir_server_is_412(client):
    check_outcome(client.post(SERVICE_URL, json=hook_body()), 412)


def test_paged_prefetch_without_fhir_server_marks_the_kind_not_retrieved(app, client):
    bundle = searchset(condition(SCT, "91861009"))
    bundle["link"] = [{"relation": "next", "url": f"{EHR}/Condition?patient={PID}&_offset=1"}]
    prefetch = full_prefetch(app, patient(), overrides={"conditions": bundle})
    screening = _screening(_post(client, hook_body(prefetch)))
    assert "more pages" in screening["not_retrieved"]["Condition"]


@responses.activate
def test_paged_prefetch_is_completed_through_the_fhir_server(make_app):
    app = make_app(explain_ineligibility=True)  # a card whatever the status, to read the screening from
    bundle = searchset(condition(SCT, "91861009"))
    bundle["link"] = [{"relation": "next", "url": f"{EHR}/Condition?patient={PID}&_offset=1"}]
    page2 = searchset(condition(SCT, "230690007", onset="2026-06-01"))  # a stroke, 4 months ago
    responses.get(f"{EHR}/Condition", json=page2)
    prefetch = full_prefetch(app, patient(), overrides={"conditions": bundle})
    body = _post(app.test_client(), hook_body(prefetch, fhirServer=EHR, fhirAuthorization=_auth()))
    assert [c.request.url for c in responses.calls] == [f"{EHR}/Condition?patient={PID}&_offset=1"]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    resources = [patient(), bundle["entry"][0]["resource"], page2["entry"][0]["resource"]]
    assert _screening(body) == screen_of(*resources, at=AT).to_json()


@responses.activate
def test_missing_key_is_fetched_from_the_fhir_server(app, client):
    prefetch = full_prefetch(app, *aml_patient())
    del prefetch["allergies"]
    responses.get(f"{EHR}/AllergyIntolerance", json=searchset())
    body = _post(client, hook_body(prefetch, fhirServer=EHR, fhirAuthorization=_auth()))
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Accept"].startswith("application/fhir+json")
    assert f"patient={PID}" in responses.calls[0].request.url
    assert "not_retrieved" not in _screening(body)


@responses.activate
def test_failed_prefetch_query_is_retried_on_the_fhir_server(app, client):
    prefetch = full_prefetch(app, *aml_patient(), overrides={"allergies": FAILED})
    responses.get(f"{EHR}/AllergyIntolerance", json=searchset())
    body = _post(client, hook_body(prefetch, fhirServer=EHR, fhirAuthorization=_auth()))
    assert len(responses.calls) == 1
    assert "not_retrieved" not in _screening(body)


@responses.activate
def test_failed_prefetch_and_failed_fetch_stay_not_retrieved(app, client):
    prefetch = full_prefetch(app, *aml_patient(), overrides={"allergies": FAILED})
    responses.get(f"{EHR}/AllergyIntolerance", status=503)
    screening = _screening(_post(client, hook_body(prefetch, fhirServer=EHR, fhirAuthorization=_auth())))
    assert "503" in screening["not_retrieved"]["AllergyIntolerance"]


@responses.activate
def test_server_off_the_allowlist_is_never_contacted(app, client, caplog):
    prefetch = full_prefetch(app, *aml_patient())
    del prefetch["allergies"]
    with caplog.at_level(logging.INFO, logger="trialscreen"):
        body = _post(client, hook_body(prefetch, fhirServer="https://evil.example.com/fhir",
                                       fhirAuthorization=_auth()))
    assert len(responses.calls) == 0
    assert "allowlist" in _screening(body)["not_retrieved"]["AllergyIntolerance"]
    logged = _json_log(caplog)
    assert "evil.example.com" in logged
    assert TOKEN not in logged


def test_plain_http_server_is_refused_unless_listed(make_app):
    app = make_app(fhir_allowlist=("https://ehr.example.org/fhir",))
    prefetch = full_prefetch(app, *aml_patient())
    del prefetch["allergies"]
    body = _post(app.test_client(), hook_body(prefetch, fhirServer="http://ehr.example.org/fhir"))
    assert "allowlist" in _screening(body)["not_retrieved"]["AllergyIntolerance"]


@responses.activate
def test_a_patient_the_fhir_server_does_not_know_is_a_412_naming_the_cause(app, client, caplog):
    """Nothing was screened: an empty card list would read as "screened, nothing to show"."""
    responses.get(f"{EHR}/Patient/{PID}", status=404)
    for kind in set(templates_of(app).values()) - {"Patient"}:
        responses.get(f"{EHR}/{kind}", json=searchset())
    with caplog.at_level(logging.INFO, logger="trialscreen"):
        body = _post(client, hook_body(fhirServer=EHR, fhirAuthorization=_auth()), status=412)
    assert body["resourceType"] == "OperationOutcome"
    assert "could not be read from the FHIR server" in body["issue"][0]["diagnostics"]
    assert PID not in body["issue"][0]["diagnostics"]
    assert "no patient record to screen: 412" in caplog.text


def test_null_patient_is_a_412(app, client):
    body = _post(client, hook_body(full_prefetch(app, overrides={"patient": None})), status=412)
    assert "the prefetch holds no Patient" in body["issue"][0]["diagnostics"]


def test_resources_of_another_patient_are_set_aside(app, client):
    other = condition(SCT, "91861009", pid="someone-else")
    body = _post(client, hook_body(full_prefetch(app, patient(), other)))
    # The diagnoses answer held only someone else's: a failed retrieval (issue 17), not "no AML recorded". The
    # one card says the screening is incomplete; the other patient's Condition is nowhere in the answer.
    [card] = body["cards"]
    assert "incomplete" in card["summary"] and "diagnoses" in card["summary"]
    screening = card["extension"]["org.trialscreen.screening"]
    assert "Condition" in screening["not_retrieved"] and screening["set_aside"] == 1
    assert "someone-else" not in str(body)


def test_invalid_resource_is_skipped_and_reported(app, client):
    bad = observation(LOINC, "1742-6", value=30, unit="U/L", date="not-a-date")
    screening = _screening(_post(client, hook_body(full_prefetch(app, *aml_patient(bad)))))
    assert screening["data_problems"][0]["resource_type"] == "Observation"


def test_referenced_medication_without_fhir_server_marks_the_kind_not_retrieved(app, client):
    req = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
           "subject": {"reference": f"Patient/{PID}"}, "medicationReference": {"reference": "Medication/m1"},
           "authoredOn": "2026-09-01"}
    screening = _screening(_post(client, hook_body(full_prefetch(app, *aml_patient(req)))))
    assert "Medication" in screening["not_retrieved"]["MedicationRequest"]


# --- bad requests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mutate,field", [
    (lambda b: b["context"].pop("patientId"), "context.patientId"),
    (lambda b: b["context"].update(patientId="../Patient?x=1"), "context.patientId"),
    (lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
    (lambda b: b.pop("hookInstance"), "hookInstance"),
    (lambda b: b.pop("context"), "context"),
    (lambda b: b.update(fhirAuthorization=_auth()), "fhirServer"),
    (lambda b: b.update(fhirServer="ftp://ehr.example.org"), "fhirServer"),
    (lambda b: b.update(fhirServer="https://ehr.example.org/fhir",
                        fhirAuthorization={**_auth(), "token_type": "MAC"}), "fhirAuthorization.token_type"),
    (lambda b: b.update(fhirServer="https://ehr.example.org/fhir",
                        fhirAuthorization={**_auth(), "expires_in": "soon"}), "fhirAuthorization.expires_in"),
    (lambda b: b.update(prefetch={"patient": "Patient/1"}), "prefetch.patient"),
    (lambda b: b.update(prefetch=[]), "prefetch"),
])
def test_invalid_request_is_400_naming_the_field(client, mutate, field):
    body = hook_body({})
    mutate(body)
    resp = client.post(SERVICE_URL, json=body)
    check_outcome(resp, 400)
    issue = resp.get_json()["issue"][0]
    assert issue["expression"] == [field], issue
    assert field.split(".")[-1] in issue["diagnostics"]


def test_hook_not_served_is_400(client):
    resp = client.post(SERVICE_URL, json={**hook_body({}), "hook": "order-sign"})
    check_outcome(resp, 400)
    assert "order-sign" in resp.get_json()["issue"][0]["diagnostics"]


def test_unknown_service_is_404(client):
    check_outcome(client.post("/cds-services/other-service", json=hook_body({})), 404)


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b"\"text\"", b"{\"hook\": ", b"\xff\xfe",
                                 b"[" * 5000 + b"]" * 5000])
def test_unreadable_bodies_are_400(client, raw):
    check_outcome(client.post(SERVICE_URL, data=raw, content_type="application/json"), 400)


def test_body_over_the_limit_is_413(make_app):
    client = make_app(max_body_bytes=10_000).test_client()
    big = orjson.dumps(hook_body({"patient": {"resourceType": "Patient", "text": {"div": "x" * 20_000}}}))
    check_outcome(client.post(SERVICE_URL, data=big, content_type="application/json"), 413)


def test_logs_carry_no_patient_id_or_token(make_app, caplog):
    app = make_app()
    pid = "patient-7f3a9c"
    prefetch = full_prefetch(app, patient(pid=pid), condition(SCT, "91861009", pid=pid))
    del prefetch["allergies"]
    with caplog.at_level(logging.DEBUG):
        app.test_client().post(SERVICE_URL, json=hook_body(prefetch, patient_id=pid, fhirServer=EHR + "x",
                                                           fhirAuthorization=_auth()))
    assert caplog.records
    logged = _json_log(caplog)
    assert pid not in logged and TOKEN not in logged
    assert any(getattr(r, "request_id", None) for r in caplog.records)


def test_prefetched_patient_with_another_id_is_a_412(app, client):
    """The prefetched Patient is someone else's: this patient could not be obtained, so nothing was screened."""
    prefetch = full_prefetch(app, *aml_patient(), overrides={"patient": patient(pid="someone-else")})
    body = _post(client, hook_body(prefetch), status=412)
    assert "someone-else" not in str(body) and "no Patient" in body["issue"][0]["diagnostics"]


def test_unexpected_error_is_a_500_outcome_without_trace(app, client, monkeypatch, caplog):
    import cds_service.hooks.patient_view as pv

    def broken(*args, **kwargs):
        raise RuntimeError("secret patient detail in an exception message")

    monkeypatch.setattr(pv, "screen", broken)
    with caplog.at_level(logging.INFO, logger="trialscreen"):
        resp = client.post(SERVICE_URL, json=hook_body(full_prefetch(app, *aml_patient())))
    check_outcome(resp, 500)
    assert "secret" not in resp.get_data(as_text=True)
    logged = _json_log(caplog)
    assert "RuntimeError" in logged and "secret" not in logged


def test_bad_code_tables_fail_start_up(make_app, tmp_path):
    from cds_service.errors import ConfigurationError

    (tmp_path / "value-sets").mkdir()
    with pytest.raises(ConfigurationError):
        make_app(knowledge=None, mappings_dir=tmp_path)


def test_bad_allowlist_fails_start_up(make_app):
    from cds_service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ALLOWLIST"):
        make_app(fhir_allowlist=("ehr.example.org",))


def test_huge_prefetch_bundle_is_read_up_to_the_cap(app, client, monkeypatch):
    import cds_service.gather.prefetch as prefetch_module

    monkeypatch.setattr(prefetch_module, "MAX_BUNDLE_ENTRIES", 5)
    many = searchset(*[allergy(SCT, "294505008") for _ in range(8)])
    screening = _screening(_post(client, hook_body(full_prefetch(app, *aml_patient(), overrides={"allergies": many}))))
    assert "more than 5 entries" in screening["not_retrieved"]["AllergyIntolerance"]


def test_a_request_shaped_like_the_spec_example_is_accepted(app, client):
    """The spec's example request (extra top-level and context fields, fhirAuthorization with patient)."""
    prefetch = full_prefetch(app, *aml_patient())
    body = {
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.example.org/fhir",
        "hook": "patient-view",
        "fhirAuthorization": {"access_token": "some-opaque-fhir-access-token", "token_type": "Bearer",
                              "expires_in": 300, "scope": "user/Patient.read user/Observation.read",
                              "subject": "cds-service4", "patient": PID},
        "user": "Practitioner/example",
        "context": {"userId": "PractitionerRole/123", "patientId": PID, "encounterId": "456"},
        "prefetch": prefetch,
    }
    result = _post(client, body)
    check_cards(result)
    assert len(result["cards"]) == 1
