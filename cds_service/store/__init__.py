"""TrialScreen's database: screening reports behind link tokens, and CDS Hooks feedback.

    store = open_store(settings)          # engine + migrations (alembic upgrade head)
    token = store.reports.create(screening.to_json(), timedelta(hours=24))
    store.reports.get(token)              # -> dict, or None when unknown / expired
    store.reports.purge_expired()         # -> number deleted

SQLite by default (``<state_dir>/trialscreen.sqlite3``), PostgreSQL with ``TRIALSCREEN_DATABASE_URL``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from cds_service.config import Settings
from cds_service.store.db import database_url, make_engine, migrate
from cds_service.store.feedback import FeedbackItem, FeedbackStore
from cds_service.store.reports import ReportStore

__all__ = ["Store", "open_store", "ReportStore", "FeedbackStore", "FeedbackItem", "database_url", "migrate"]


@dataclass
class Store:
    """The engine and the two stores built on it, plus the report lifetime from the settings."""

    engine: Engine
    reports: ReportStore
    feedback: FeedbackStore
    report_ttl: timedelta

    def ping(self) -> bool:
        """True when the database answers a trivial query (for readiness checks)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # any driver error means "not ready"; the caller reports it
            return False
        return True

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def open_store(settings: Settings, *, migrate_schema: bool = True,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Store:
    """Connect to the configured database, bring its schema to head, and return the stores."""
    engine = make_engine(database_url(settings))
    if migrate_schema:
        migrate(engine)
        # Close the migration's pooled connection: nothing stays open until a request needs the database, so a
        # start-up that fails later (or a gunicorn fork) holds no connection.
        engine.dispose()
    return Store(engine=engine, reports=ReportStore(engine, clock=clock), feedback=FeedbackStore(engine, clock=clock),
                 report_ttl=timedelta(hours=settings.report_ttl_hours))
