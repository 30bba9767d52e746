"""TrialScreen's database: screening reports behind link tokens, and CDS Hooks feedback.

    store = open_store(settings)          # engine + migrations (alembic upgrade head)
    token = store.reports.create(screening.to_json(), timedelta(hours=24))
    store.reports.get(token)              # -> dict, or None when unknown / expired
    store.reports.purge_expired()         # -> number deleted

SQLite by default (``<state_dir>/trialscreen.sqlite3``), PostgreSQL with ``TRIALSCREEN_DATABASE_URL``.
Request handlers reach the database through ``store.gate`` (``store.gate.run(what, operation)``), which bounds
every wait by ``TRIALSCREEN_STORE_TIMEOUT_SECONDS`` and turns a failure into ``StoreUnavailable``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cds_service.config import Settings
from cds_service.errors import ConfigurationError, StoreUnavailable
from cds_service.store.db import database_url, make_engine, migrate, writable_file_check
from cds_service.store.feedback import FeedbackItem, FeedbackStore
from cds_service.store.gate import StoreGate
from cds_service.store.models import UsedTokenId
from cds_service.store.reports import ReportStore

__all__ = ["Store", "open_store", "ReportStore", "FeedbackStore", "FeedbackItem", "StoreGate", "database_url",
           "migrate", "MIN_FREE_BYTES"]

MIN_FREE_BYTES = 1 << 20  # a SQLite folder with less free space than this is "full": writes will soon fail
_PROBE_ISS = "trialscreen:readyz"  # the readiness probe's row in cds_used_jti (inserted and deleted at once)


@dataclass
class Store:
    """The engine and the two stores built on it, plus the report lifetime from the settings."""

    engine: Engine
    reports: ReportStore
    feedback: FeedbackStore
    report_ttl: timedelta
    gate: StoreGate = field(default_factory=lambda: StoreGate(1.0))

    def ping(self) -> bool:
        """True when the database answers a trivial query within the store timeout."""
        def select_one() -> None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        try:
            self.gate.run("ping", select_one, probe=True)
        except StoreUnavailable:
            return False
        return True

    def writable(self) -> str:
        """"ok" when a row can be written and committed within the store timeout, else why not (for /readyz).

        The probe inserts and deletes one already-expired row of ``cds_used_jti`` in one committed transaction:
        a read-only file system, a full disk or a read-only PostgreSQL fails it where ``SELECT 1`` would pass.
        """
        free = _free_bytes(self.engine.url)
        if free is not None and free < MIN_FREE_BYTES:
            return f"disk full ({free} bytes free)"

        def write_probe() -> None:
            with Session(self.engine) as session, session.begin():
                jti = secrets.token_hex(8)
                session.add(UsedTokenId(iss=_PROBE_ISS, jti=jti, expires_at=datetime(1970, 1, 1, tzinfo=UTC)))
                session.flush()
                session.execute(delete(UsedTokenId).where(UsedTokenId.iss == _PROBE_ISS, UsedTokenId.jti == jti))
        try:
            self.gate.run("readiness write probe", write_probe, probe=True)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            why = type(getattr(cause, "orig", None) or cause).__name__ if cause is not None else "timeout"
            return f"cannot write ({why})"
        return "ok"

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()


def _free_bytes(url: URL) -> int | None:
    """Free bytes in a SQLite file's folder (None for PostgreSQL: its disk is the server's to watch)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    try:
        st = os.statvfs(Path(url.database).parent)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _startup_error(settings: Settings, url: URL, exc: Exception) -> ConfigurationError:
    """One readable line naming the setting to fix (never a password, never a traceback)."""
    orig = getattr(exc, "orig", None) or exc
    reason = (getattr(orig, "strerror", None) or str(orig) or type(orig).__name__).strip().splitlines()[0][:300]
    if url.get_backend_name() == "sqlite":
        where = Path(url.database or "").parent
        return ConfigurationError(f"TRIALSCREEN_STATE_DIR: cannot write the SQLite store in {where} ({reason}); "
                                  "give the service a writable folder, or set TRIALSCREEN_DATABASE_URL")
    shown = url.render_as_string(hide_password=True)
    return ConfigurationError(f"TRIALSCREEN_DATABASE_URL: cannot use the database {shown} ({reason})")


def open_store(settings: Settings, *, migrate_schema: bool = True,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Store:
    """Connect to the configured database, bring its schema to head, and return the stores.

    A database that cannot be reached or written at start-up is a ConfigurationError naming the setting to fix.
    """
    url = database_url(settings)
    timeout = settings.store_timeout_seconds
    try:
        if migrate_schema:
            # Migrations get their own engine without statement timeouts: they may wait for another replica's lock.
            migration_engine = make_engine(url, timeout=None)
            try:
                migrate(migration_engine)
            finally:
                migration_engine.dispose()
        engine = make_engine(url, timeout=timeout)
    except (OSError, SQLAlchemyError) as exc:
        raise _startup_error(settings, url, exc) from None
    return Store(engine=engine, reports=ReportStore(engine, clock=clock), feedback=FeedbackStore(engine, clock=clock),
                 report_ttl=timedelta(hours=settings.report_ttl_hours),
                 gate=StoreGate(timeout, precheck=writable_file_check(url)))
