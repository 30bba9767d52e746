"""Feedback through the app and ``trialscreen feedback-report``, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.cli import main
from cds_service.config import Settings, load_knowledge
from cds_service.hooks.app import create_app
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.feedback_report import NO_REASON, feedback_rates, format_rates, period_of
from cds_service.hooks.report import STORE_KEY

URL = f"/cds-services/{SERVICE_ID}/feedback"
SYSTEM = "urn:trialscreen:override-reason"


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(Settings.from_env({}))


def _item(card: str, outcome: str, at: str, reason: str | None = None) -> dict:
    item: dict = {"card": card, "outcome": outcome, "outcomeTimestamp": at}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "refer"}]
    elif reason:
        item["overrideReason"] = {"reason": {"system": SYSTEM, "code": reason}}
    return item


FEEDBACK = [
    _item("c1", "accepted", "2026-09-03T10:00:00Z"),
    _item("c2", "overridden", "2026-09-04T10:00:00Z", "patient-declined"),
    _item("c3", "overridden", "2026-09-30T23:30:00-02:00", "already-referred"),  # 1 October in UTC
    _item("c4", "accepted", "2026-10-02T08:00:00Z"),
    _item("c5", "overridden", "2026-10-05T08:00:00Z", "patient-declined"),
    _item("c6", "overridden", "2026-10-06T08:00:00Z"),
    _item("c7", "overridden", "2026-10-07T08:00:00Z", "local-code"),
]


@pytest.fixture
def app(backend, knowledge):
    settings: Settings = backend()
    overrides = {"environ": {}, "knowledge": knowledge, "state_dir": settings.state_dir, "auth_required": False}
    if settings.database_url:
        overrides["database_url"] = settings.database_url
    app = create_app(overrides)
    app.settings_for_cli = settings
    yield app
    app.extensions[STORE_KEY].close()


def test_feedback_stored_once_on_each_backend(app):
    client = app.test_client()
    store = app.extensions[STORE_KEY]
    assert client.post(URL, json={"feedback": FEEDBACK}).status_code == 200
    assert client.post(URL, json={"feedback": FEEDBACK[:3]}).status_code == 200  # retried: nothing new
    assert store.feedback.count() == len(FEEDBACK) == store.feedback.count(SERVICE_ID)


def test_feedback_rates_by_month_and_reason(app):
    app.test_client().post(URL, json={"feedback": FEEDBACK})
    rows = feedback_rates(app.extensions[STORE_KEY].engine, by="month")
    assert [(r.period, r.accepted, r.overridden) for r in rows] == [("2026-09", 1, 1), ("2026-10", 1, 4),
                                                                     ("all", 2, 5)]
    october = rows[1]
    assert dict(october.reasons) == {"Already referred": 1, "Patient declined": 1, NO_REASON: 1,
                                     f"{SYSTEM}|local-code": 1}
    text = format_rates(rows, by="month", since=None)
    assert "2026-10           5  1 (20.0%)" in text and "4 (80.0%)" in text
    assert "overridden: Patient declined: 2 (40.0% of overrides, 28.6% of feedback)" in text


def test_feedback_rates_since_and_by_week(app):
    app.test_client().post(URL, json={"feedback": FEEDBACK})
    rows = feedback_rates(app.extensions[STORE_KEY].engine, by="week", since=datetime(2026, 10, 1, tzinfo=UTC))
    assert [r.period for r in rows] == ["2026-W40", "2026-W41", "all"]
    assert rows[-1].total == 5


def test_feedback_report_command(app, monkeypatch, capsys):
    app.test_client().post(URL, json={"feedback": FEEDBACK})
    settings = app.settings_for_cli
    monkeypatch.setenv("TRIALSCREEN_STATE_DIR", str(settings.state_dir))
    if settings.database_url:
        monkeypatch.setenv("TRIALSCREEN_DATABASE_URL", settings.database_url)
    else:
        monkeypatch.delenv("TRIALSCREEN_DATABASE_URL", raising=False)
    assert main(["feedback-report", "--since", "2026-10-01", "--by", "month"]) == 0
    out = capsys.readouterr().out
    assert "CDS card feedback by month (outcome time, UTC) since 2026-10-01" in out
    assert "2026-09" not in out and "2026-10" in out
    assert main(["feedback-report", "--since", "2027-01-01"]) == 0
    assert "No feedback stored." in capsys.readouterr().out


def test_period_of():
    assert period_of(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "month") == "2026-12"
    assert period_of(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "week") == "2026-W53"
