"""Every response the service produces, checked against the CDS Hooks 2.0.1 rules.

``check_cards`` is the validator: required fields, summary under 140 characters, indicator values,
source.label, selectionBehavior exactly when suggestions exist, appContext only on smart links, link and
action types, uuids, and no null or empty optional field anywhere in the CDS Hooks envelope. (The
``extension`` object is the service's own; inside it the screening JSON is kept exactly as ``trialscreen
screen --format json`` writes it, which is checked for nulls but may hold empty evidence lists.)
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from builders import AT, date_ago, immunization, patient
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body, new_instance

CARD_FIELDS = {"uuid", "summary", "detail", "indicator", "source", "suggestions", "selectionBehavior",
               "overrideReasons", "links", "extension"}
INDICATORS = {"info", "warning", "critical"}


def _no_nulls(value: Any, where: str, *, allow_empty: bool = False) -> None:
    if value is None:
        raise AssertionError(f"{where} is null")
    if isinstance(value, dict):
        if not allow_empty:
            assert value, f"{where} is an empty object"
        for k, v in value.items():
            _no_nulls(v, f"{where}.{k}", allow_empty=allow_empty)
    elif isinstance(value, list):
        if not allow_empty:
            assert value, f"{where} is an empty array"
        for i, v in enumerate(value):
            _no_nulls(v, f"{where}[{i}]", allow_empty=allow_empty)
    elif isinstance(value, str) and not allow_empty:
        assert value.strip(), f"{where} is an empty string"


def _coding(c: Any, where: str, *, display_required: bool) -> None:
    assert isinstance(c, dict), where
    assert set(c) <= {"code", "system", "display"}, f"{where}: unknown fields {set(c)}"
    assert isinstance(c.get("code"), str) and c["code"], f"{where}.code required"
    if display_required:
        assert isinstance(c.get("display"), str) and c["display"], f"{where}.display required"


def _uuid(value: Any, where: str) -> None:
    assert isinstance(value, str), where
    uuid.UUID(value)


def check_card(card: dict[str, Any], where: str = "card") -> None:
    assert set(card) <= CARD_FIELDS, f"{where}: unknown fields {set(card) - CARD_FIELDS}"
    envelope = {k: v for k, v in card.items() if k != "extension"}
    _no_nulls(envelope, where)
    assert isinstance(card.get("summary"), str) and 0 < len(card["summary"]) < 140, f"{where}.summary"
    assert card.get("indicator") in INDICATORS, f"{where}.indicator"
    source = card.get("source")
    assert isinstance(source, dict) and isinstance(source.get("label"), str) and source["label"], f"{where}.source"
    assert set(source) <= {"label", "url", "icon", "topic"}
    if "topic" in source:
        _coding(source["topic"], f"{where}.source.topic", display_required=False)
    if "uuid" in card:
        _uuid(card["uuid"], f"{where}.uuid")
    if "detail" in card:
        assert isinstance(card["detail"], str)
    if "suggestions" in card:
        assert card.get("selectionBehavior") in {"at-most-one", "any"}, f"{where}: selectionBehavior required"
        for i, s in enumerate(card["suggestions"]):
            w = f"{where}.suggestions[{i}]"
            assert set(s) <= {"label", "uuid", "isRecommended", "actions"}, w
            assert isinstance(s.get("label"), str) and s["label"], f"{w}.label"
            if "uuid" in s:
                _uuid(s["uuid"], f"{w}.uuid")
            for j, a in enumerate(s.get("actions", [])):
                aw = f"{w}.actions[{j}]"
                assert set(a) <= {"type", "description", "resource", "resourceId"}, aw
                assert a.get("type") in {"create", "update", "delete"}, f"{aw}.type"
                assert isinstance(a.get("description"), str) and a["description"], f"{aw}.description"
                if a["type"] in {"create", "update"}:
                    assert isinstance(a.get("resource"), dict) and a["resource"].get("resourceType"), f"{aw}.resource"
    else:
        assert "selectionBehavior" not in card, f"{where}: selectionBehavior without suggestions"
    for i, r in enumerate(card.get("overrideReasons", [])):
        _coding(r, f"{where}.overrideReasons[{i}]", display_required=True)
    for i, link in enumerate(card.get("links", [])):
        lw = f"{where}.links[{i}]"
        assert set(link) <= {"label", "url", "type", "appContext", "autolaunchable"}, lw
        assert isinstance(link.get("label"), str) and link["label"], f"{lw}.label"
        assert isinstance(link.get("url"), str) and link["url"].startswith(("http://", "https://")), f"{lw}.url"
        assert link.get("type") in {"absolute", "smart"}, f"{lw}.type"
        if "appContext" in link:
            assert link["type"] == "smart", f"{lw}: appContext only on smart links"
    if "extension" in card:
        assert isinstance(card["extension"], dict) and card["extension"]
        _no_nulls(card["extension"], f"{where}.extension", allow_empty=True)


def check_cards(body: Any) -> None:
    """A CDS Hooks 2.0.1 service response: {"cards": [...]} (and optional systemActions)."""
    assert isinstance(body, dict) and set(body) <= {"cards", "systemActions"}, body
    assert isinstance(body["cards"], list)
    for i, card in enumerate(body["cards"]):
        check_card(card, f"cards[{i}]")
    if "systemActions" in body:
        assert body["systemActions"], "systemActions must not be empty"


def check_outcome(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    _no_nulls(body, "OperationOutcome")
    for issue in body["issue"]:
        assert issue["severity"] in {"fatal", "error", "warning", "information"}
        assert isinstance(issue["code"], str) and issue["code"]
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text


# --- every kind of answer --------------------------------------------------------------------------------------
def test_discovery_conforms(client):
    body = client.get("/cds-services").get_json()
    _no_nulls(body, "discovery")
    for s in body["services"]:
        assert {"hook", "id", "description", "prefetch"} <= set(s)
        assert set(s) <= {"hook", "id", "title", "description", "prefetch", "usageRequirements"}


def _post(client, prefetch, **kw):
    resp = client.post(SERVICE_URL, json=hook_body(prefetch, hook_instance=new_instance(), **kw))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    check_cards(body)
    return body


def test_potential_candidate_card_conforms(app, client):
    body = _post(client, full_prefetch(app, *aml_patient()))
    assert len(body["cards"]) == 1 and body["cards"][0]["suggestions"]


def test_time_window_card_conforms(app, client):
    body = _post(client, full_prefetch(app, *aml_patient(immunization("03", date=date_ago(10)))))
    assert len(body["cards"]) == 1
    assert body["cards"][0]["summary"].startswith("Not eligible for NCT06880354 until ")


@pytest.mark.parametrize("resources,status", [
    ([patient(birth="1970-05-01")], "not-applicable"),
    ([patient(birth="1940-01-01"), *aml_patient()[1:]], "ineligible"),  # too old (I1)
])
def test_explained_ineligibility_cards_conform(make_app, resources, status):
    app = make_app(explain_ineligibility=True)
    body = _post(app.test_client(), full_prefetch(app, *resources))
    assert len(body["cards"]) == 1
    assert body["cards"][0]["extension"]["org.trialscreen.screening"]["status"] == status


def test_no_card_answers_conform(app, client):
    """A patient screened whom the trial does not concern: no card (not an error)."""
    assert _post(client, full_prefetch(app, patient()))["cards"] == []


def test_a_patient_that_cannot_be_obtained_is_a_412_outcome_not_an_empty_card_list(app, client):
    resp = client.post(SERVICE_URL, json=hook_body(full_prefetch(app, overrides={"patient": None})))
    check_outcome(resp, 412)
    assert "cards" not in resp.get_json()


def test_report_link_conforms(make_app):
    app = make_app(public_url="https://trialscreen.example.org")
    from cds_service.hooks.app import state

    state(app).save_report = lambda screening: "tok123"
    body = _post(app.test_client(), full_prefetch(app, *aml_patient()))
    urls = [link["url"] for link in body["cards"][0]["links"]]
    assert "https://trialscreen.example.org/report/tok123" in urls


def test_not_retrieved_kinds_conform(app, client):
    failed = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    body = _post(client, full_prefetch(app, *aml_patient(), overrides={"observations": failed}))
    card = body["cards"][0]
    assert card["detail"].startswith("**Screening incomplete:** results (labs, vitals, ECG, echo) could not be "
                                     "retrieved")
    assert not card["summary"].startswith("Possible candidate") and "incomplete" in card["summary"]


@pytest.mark.parametrize("status,make", [
    (400, lambda c: c.post(SERVICE_URL, data=b"{not json", content_type="application/json")),
    (400, lambda c: c.post(SERVICE_URL, json={"hook": "order-sign", "hookInstance": new_instance(),
                                              "context": {"patientId": "p1"}})),
    (400, lambda c: c.post(SERVICE_URL, json={"hook": "patient-view", "hookInstance": new_instance()})),
    (404, lambda c: c.post("/cds-services/nope", json=hook_body({}))),
    (404, lambda c: c.get("/nothing-here")),
    (405, lambda c: c.get(SERVICE_URL)),
    (412, lambda c: c.post(SERVICE_URL, json=hook_body({}))),
])
def test_error_answers_are_operation_outcomes(client, status, make):
    check_outcome(make(client), status)


def test_413_is_an_operation_outcome(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    check_outcome(client.post(SERVICE_URL, data=b"{" + b" " * 2000 + b"}", content_type="application/json"), 413)


def test_evaluation_time_is_the_fixed_clock(app, client):
    body = _post(client, full_prefetch(app, *aml_patient()))
    assert body["cards"][0]["extension"]["org.trialscreen.screening"]["evaluated_at"] == AT.isoformat()
