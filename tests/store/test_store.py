"""The store on SQLite and PostgreSQL: migrations, report tokens and expiry, feedback idempotency."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.store import FeedbackItem, database_url, open_store
from cds_service.store.db import SQLITE_FILENAME, current_revision, head_revision, make_engine, migrate
from cds_service.store.feedback import idempotency_key
from cds_service.store.models import ScreeningReport

SCREENING = {
    "trial": "NCT06880354", "patient": "Patient/pat-alice-0042", "evaluated_at": "2026-10-01T09:00:00+00:00",
    "status": "potential-candidate",
    "criteria": [{"id": "I1", "kind": "inclusion", "result": "met", "reason": "Age 54 at consent.",
                  "evidence": [{"reference": "Patient/pat-alice-0042", "value": 54, "date": "1972-03-04"}]}],
}


# ------------------------------------------------------------------ configuration


def test_default_database_is_sqlite_file_under_state_dir(tmp_path):
    url = database_url(Settings(state_dir=tmp_path / "var"))
    assert url.get_backend_name() == "sqlite"
    assert url.database == str((tmp_path / "var" / SQLITE_FILENAME).resolve())


def test_sqlite_file_and_folder_created_on_first_start(tmp_path):
    state = tmp_path / "not" / "yet"
    store = open_store(Settings(state_dir=state))
    try:
        assert (state / SQLITE_FILENAME).is_file()
    finally:
        store.close()


@pytest.mark.parametrize("raw", ["postgresql://u@h:5432/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"])
def test_postgres_urls_use_psycopg3(raw):
    assert database_url(Settings(database_url=raw)).drivername == "postgresql+psycopg"


@pytest.mark.parametrize("raw", ["mysql://u@h/db", "not a url"])
def test_unsupported_database_url_is_a_configuration_error(raw):
    with pytest.raises(ConfigurationError, match="TRIALSCREEN_DATABASE_URL"):
        database_url(Settings(database_url=raw))


def test_database_url_from_environment(tmp_path):
    settings = Settings.from_env({"TRIALSCREEN_DATABASE_URL": "postgresql://x@y/z"})
    assert database_url(settings).database == "z"


# ------------------------------------------------------------------ migrations (both backends)


def test_migrations_create_tables_at_head(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {"screening_report", "cds_feedback", "alembic_version"} <= tables
    with store.engine.connect() as conn:
        assert current_revision(conn) == head_revision()


def test_migrate_twice_is_a_no_op(store):
    assert migrate(store.engine) == head_revision()
    assert migrate(store.engine) == head_revision()


def test_concurrent_starts_migrate_once(backend, clock):
    settings = backend()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_store(settings, clock=clock).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_ping(store):
    assert store.ping() is True


# ------------------------------------------------------------------ reports (both backends)


def test_create_then_get_returns_the_screening(store):
    token = store.reports.create(SCREENING, timedelta(hours=24))
    assert store.reports.get(token) == SCREENING


def test_token_is_random_urlsafe_and_carries_no_patient_data(store):
    tokens = {store.reports.create(SCREENING, timedelta(hours=1)) for _ in range(20)}
    assert len(tokens) == 20  # the same screening never gives the same token
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
        # Not derived from the patient or the trial: the ids never appear (short substrings such as "pat" can
        # turn up in a random token by chance, so whole identifiers are checked, not fragments).
        assert "pat-alice-0042" not in token and "NCT06880354" not in token


def test_unknown_and_malformed_tokens_give_none(store):
    store.reports.create(SCREENING, timedelta(hours=1))
    assert store.reports.get("A" * 32) is None
    for bad in ("", "x", "../../etc/passwd", "a" * 200, "tok' OR '1'='1", "Patient/pat-alice-0042"):
        assert store.reports.get(bad) is None


def test_report_expires_after_ttl(store, clock):
    token = store.reports.create(SCREENING, timedelta(hours=24))
    clock.advance(hours=23, minutes=59)
    assert store.reports.get(token) == SCREENING
    assert store.reports.expires_at(token) == datetime(2026, 10, 2, 9, 0, tzinfo=UTC)
    clock.advance(minutes=1)  # expires_at itself is already expired
    assert store.reports.get(token) is None
    assert store.reports.expires_at(token) is None


def test_purge_expired_deletes_only_expired_rows(store, clock):
    old = [store.reports.create(SCREENING, timedelta(hours=1)) for _ in range(3)]
    keep = store.reports.create(SCREENING, timedelta(hours=48))
    clock.advance(hours=2)
    assert store.reports.purge_expired() == 3
    assert store.reports.purge_expired() == 0
    assert store.reports.get(keep) == SCREENING
    with store.engine.connect() as conn:
        remaining = {r[0] for r in conn.execute(text("SELECT token FROM screening_report"))}
    assert remaining == {keep} and not set(old) & remaining


def test_creating_a_report_deletes_expired_ones(store, clock):
    store.reports.create(SCREENING, timedelta(minutes=5))
    clock.advance(minutes=10)
    fresh = store.reports.create(SCREENING, timedelta(minutes=5))
    with store.engine.connect() as conn:
        tokens = [r[0] for r in conn.execute(text("SELECT token FROM screening_report"))]
    assert tokens == [fresh]


def test_timestamps_round_trip_as_utc(store, clock):
    clock.now = datetime(2026, 10, 1, 11, 0, tzinfo=UTC).astimezone()  # any zone in, UTC out
    token = store.reports.create(SCREENING, timedelta(hours=2))
    with store.engine.connect() as conn:
        row = conn.execute(ScreeningReport.__table__.select()).one()
    assert row.token == token
    assert row.created_at == datetime(2026, 10, 1, 11, 0, tzinfo=UTC) and row.created_at.tzinfo is not None
    assert row.expires_at == datetime(2026, 10, 1, 13, 0, tzinfo=UTC)


def test_nonpositive_ttl_refused(store):
    with pytest.raises(ValueError):
        store.reports.create(SCREENING, timedelta(0))


def test_screening_json_survives_unicode_and_nesting(store):
    data = json.loads(json.dumps(SCREENING))
    data["criteria"][0]["reason"] = "Âge 54 ≥ 18 — ok"
    token = store.reports.create(data, timedelta(hours=1))
    assert store.reports.get(token) == data


def test_report_ttl_comes_from_settings(backend):
    store = open_store(backend(report_ttl_hours=2.5))
    try:
        assert store.report_ttl == timedelta(hours=2.5)
    finally:
        store.close()


# ------------------------------------------------------------------ feedback (both backends)


def _feedback(**kw: object) -> FeedbackItem:
    base = dict(service_id="nct06880354-screening", card_uuid="0b5e1d7e-1111-4c3a-9d55-2c0a6a1b0001",
                outcome="overridden", outcome_timestamp=datetime(2026, 10, 1, 9, 5, tzinfo=UTC),
                override_reason_code="patient-declined", override_reason_system="https://trialscreen.example/reasons")
    base.update(kw)
    return FeedbackItem(**base)  # type: ignore[arg-type]


def test_feedback_stored_once_per_idempotency_key(store):
    assert store.feedback.add(_feedback()) is True
    assert store.feedback.add(_feedback()) is False  # the same feedback again (a retried request)
    assert store.feedback.add(_feedback(outcome="accepted", override_reason_code=None,
                                        accepted_suggestions=["refer"])) is True
    assert store.feedback.count() == 2
    assert store.feedback.count("other-service") == 0


def test_feedback_explicit_key_and_accepted_suggestions_round_trip(store):
    item = _feedback(outcome="accepted", override_reason_code=None, accepted_suggestions=["s1", "s2"])
    assert store.feedback.add(item, key="client-key-1") is True
    assert store.feedback.add(_feedback(), key="client-key-1") is False
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT accepted_suggestions, outcome_timestamp FROM cds_feedback")).one()
    stored = row[0] if isinstance(row[0], list) else json.loads(row[0])
    assert stored == ["s1", "s2"]


def test_idempotency_key_ignores_suggestion_order_and_time_zone():
    a = _feedback(accepted_suggestions=["b", "a"])
    b = _feedback(accepted_suggestions=["a", "b"],
                  outcome_timestamp=datetime(2026, 10, 1, 9, 5, tzinfo=UTC).astimezone())
    assert idempotency_key(a) == idempotency_key(b)
    assert idempotency_key(a) != idempotency_key(_feedback(card_uuid="other"))


def test_naive_timestamps_are_refused(tmp_path):
    engine = make_engine(database_url(Settings(state_dir=tmp_path)))
    migrate(engine)
    from cds_service.store import ReportStore

    reports = ReportStore(engine, clock=lambda: datetime(2026, 10, 1, 9, 0))
    with pytest.raises(Exception, match="timezone-aware"):
        reports.create(SCREENING, timedelta(hours=1))
    engine.dispose()
