"""Feedback is stored whole or not at all (issue 17): every item is checked before any is stored, and the items
go in one transaction. Times outside what UTC can represent, NUL characters and lone surrogates (which no
database text column holds) are 400 naming the field, and a body with one such item stores nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import STORE_KEY

URL = f"/cds-services/{SERVICE_ID}/feedback"
CARD = "b3c9d7a6-6c1e-4a53-9b2f-0c6f1d9d4e11"


@pytest.fixture
def app(make_app, tmp_path):
    app = make_app(state_dir=tmp_path / "state")
    yield app
    app.extensions[STORE_KEY].close()


def item(card: str = CARD, at: str = "2026-10-01T09:31:00Z", comment: str = "prefers") -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": at,
            "overrideReason": {"reason": {"code": "patient-declined"}, "userComment": comment}}


def _count(app) -> int:
    with app.extensions[STORE_KEY].engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM cds_feedback")).scalar_one()


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_beyond_the_utc_range_is_400_and_the_good_item_before_it_is_not_stored(app, at):
    resp = app.test_client().post(URL, json={"feedback": [item(), item(card="c2", at=at)]})
    assert resp.status_code == 400
    issue = resp.get_json()["issue"][0]
    assert issue["expression"] == ["feedback[1].outcomeTimestamp"] and "range" in issue["diagnostics"]
    assert _count(app) == 0


@pytest.mark.parametrize("at", ["0001-01-01T01:00:00+01:00", "9999-12-31T23:59:59+00:00"])
def test_the_edges_that_fit_are_stored(app, at):
    assert app.test_client().post(URL, json={"feedback": [item(at=at)]}).status_code == 200
    assert _count(app) == 1


@pytest.mark.parametrize(("bad", "field"), [
    (item(comment="declined\x00 by phone"), "feedback[1].overrideReason.userComment"),
    (item(card="card\x00"), "feedback[1].card"),
])
def test_a_nul_character_is_400_naming_the_field_and_nothing_is_stored(app, bad, field):
    resp = app.test_client().post(URL, json={"feedback": [item(card="first"), bad]})
    assert resp.status_code == 400 and resp.get_json()["issue"][0]["expression"] == [field]
    assert _count(app) == 0


def test_a_lone_surrogate_is_400_and_nothing_is_stored(app):
    raw = ('{"feedback": [{"card": "first", "outcome": "overridden", "outcomeTimestamp": "2026-10-01T09:31:00Z"},'
           ' {"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-10-01T09:31:00Z",'
           ' "overrideReason": {"userComment": "\\ud800"}}]}')
    resp = app.test_client().post(URL, data=raw, content_type="application/json")
    assert resp.status_code == 400
    assert _count(app) == 0


def test_items_repeated_within_one_body_are_stored_once(app):
    assert app.test_client().post(URL, json={"feedback": [item(), item(), item(card="c2")]}).status_code == 200
    assert _count(app) == 2


def test_items_are_stored_in_one_transaction(app, monkeypatch):
    """A failure writing the second row rolls back the first: the answer is 503 and nothing is stored."""
    from cds_service.store import feedback as feedback_module

    real_row = feedback_module.FeedbackStore._row
    calls = []

    def failing_row(item, key, received):
        calls.append(key)
        row = real_row(item, key, received)
        if len(calls) == 2:
            row.outcome_timestamp = row.outcome_timestamp.replace(tzinfo=None)  # refused when the row is written
        return row

    monkeypatch.setattr(feedback_module.FeedbackStore, "_row", staticmethod(failing_row))
    app.extensions[STORE_KEY].gate.cooldown = 0.0
    resp = app.test_client().post(URL, json={"feedback": [item(), item(card="c2")]})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert len(calls) == 2 and _count(app) == 0
