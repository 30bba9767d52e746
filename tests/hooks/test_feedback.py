"""``POST /cds-services/<id>/feedback`` (CDS Hooks 2.0 Feedback): validation naming the bad field, 200 with an
empty body, the same feedback stored once. (The same on PostgreSQL: tests/store/test_feedback_app.py.)"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import STORE_KEY

URL = f"/cds-services/{SERVICE_ID}/feedback"
CARD = "b3c9d7a6-6c1e-4a53-9b2f-0c6f1d9d4e11"
SUGGESTION = "2f5e8f8a-8d4b-4c77-b0f0-7a7a1cc2c001"
REASON = {"system": "urn:trialscreen:override-reason", "code": "patient-declined", "display": "Patient declined"}


@pytest.fixture
def app(make_app, tmp_path):
    """The service with its own database (the shared conftest app uses the default state folder)."""
    app = make_app(state_dir=tmp_path / "state")
    yield app
    app.extensions[STORE_KEY].close()


@pytest.fixture
def client(app):
    return app.test_client()


def accepted(**kw) -> dict:
    return {"card": CARD, "outcome": "accepted", "acceptedSuggestions": [{"id": SUGGESTION}],
            "outcomeTimestamp": "2026-10-01T09:30:00Z", **kw}


def overridden(**kw) -> dict:
    return {"card": CARD, "outcome": "overridden", "overrideReason": {"reason": REASON, "userComment": "prefers"},
            "outcomeTimestamp": "2026-10-01T09:31:00+02:00", **kw}


def _count(app) -> int:
    with app.extensions[STORE_KEY].engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM cds_feedback")).scalar_one()


def test_feedback_is_stored_and_answered_200_with_an_empty_body(app, client):
    resp = client.post(URL, json={"feedback": [accepted(), overridden()]})
    assert resp.status_code == 200 and resp.get_data() == b""
    assert _count(app) == 2
    with app.extensions[STORE_KEY].engine.connect() as conn:
        rows = conn.execute(text("SELECT outcome, override_reason_code, override_reason_system, override_comment "
                                 "FROM cds_feedback ORDER BY outcome")).all()
    assert [tuple(r) for r in rows] == [("accepted", None, None, None),
                                        ("overridden", "patient-declined", REASON["system"], "prefers")]


def test_the_same_feedback_twice_is_stored_once(app, client):
    body = {"feedback": [overridden()]}
    assert client.post(URL, json=body).status_code == 200
    assert client.post(URL, json=body).status_code == 200  # a retried request
    assert client.post(URL, json={"feedback": [overridden(), overridden()]}).status_code == 200
    assert _count(app) == 1
    assert client.post(URL, json={"feedback": [overridden(card=str(uuid.uuid4()))]}).status_code == 200
    assert _count(app) == 2


def test_override_without_a_reason_is_valid(app, client):
    assert client.post(URL, json={"feedback": [overridden(overrideReason={"userComment": "n/a"})]}).status_code == 200
    item = overridden()
    del item["overrideReason"]
    assert client.post(URL, json={"feedback": [item]}).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({}, "feedback"),
    ({"feedback": []}, "feedback"),
    ({"feedback": "yes"}, "feedback"),
    ([accepted()], "(body)"),
    ({"feedback": [accepted(outcome="maybe")]}, "feedback[0].outcome"),
    ({"feedback": [overridden(), {k: v for k, v in accepted().items() if k != "card"}]}, "feedback[1].card"),
    ({"feedback": [{k: v for k, v in accepted().items() if k != "acceptedSuggestions"}]},
     "feedback[0].acceptedSuggestions"),
    ({"feedback": [accepted(acceptedSuggestions=[{}])]}, "feedback[0].acceptedSuggestions[0].id"),
    ({"feedback": [accepted(overrideReason={"reason": REASON})]}, "feedback[0].overrideReason"),
    ({"feedback": [overridden(acceptedSuggestions=[{"id": SUGGESTION}])]}, "feedback[0].acceptedSuggestions"),
    ({"feedback": [overridden(overrideReason={"reason": {"system": "x"}})]}, "feedback[0].overrideReason.reason.code"),
    ({"feedback": [overridden(outcomeTimestamp="2026-10-01T09:31:00")]}, "feedback[0].outcomeTimestamp"),
    ({"feedback": [overridden(outcomeTimestamp="last tuesday afternoon")]}, "feedback[0].outcomeTimestamp"),
    ({"feedback": [overridden(card=7)]}, "feedback[0].card"),
    ({"feedback": [overridden()] * 101}, "feedback"),
])
def test_invalid_feedback_is_400_naming_the_field_and_stores_nothing(app, client, body, field):
    resp = client.post(URL, json=body)
    assert resp.status_code == 400
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue, = outcome["issue"]
    assert issue["expression"] == [field] and field in issue["diagnostics"]
    assert _count(app) == 0


def test_malformed_json_is_400(client):
    resp = client.post(URL, data=b"{not json", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_feedback_not_declared_as_json_is_415(app, client, content_type):
    import json

    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post(URL, data=json.dumps({"feedback": [accepted()]}), headers=headers)
    assert resp.status_code == 415 and resp.get_json()["resourceType"] == "OperationOutcome"
    assert _count(app) == 0


def test_unknown_service_is_404(client):
    assert client.post("/cds-services/nope/feedback", json={"feedback": [accepted()]}).status_code == 404


def test_feedback_content_is_never_logged(client, caplog):
    caplog.set_level("DEBUG", logger="trialscreen")
    comment = "Mrs Testperson declined on 2026-09-30"
    assert client.post(URL, json={"feedback": [overridden(overrideReason={"userComment": comment})]}).status_code == 200
    assert comment not in caplog.text and CARD not in caplog.text
