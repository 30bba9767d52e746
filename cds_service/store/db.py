"""The database behind the store: URL from settings, engine, and Alembic migrations run at start-up.

SQLite is the default (``<state_dir>/trialscreen.sqlite3``, created on first start); PostgreSQL is used when
``TRIALSCREEN_DATABASE_URL`` is set (``postgresql://...`` is run with the psycopg 3 driver). The schema is
brought to the newest revision by :func:`migrate` (``alembic upgrade head``), once per start, under a lock
so several workers or replicas starting together do not race each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url

from cds_service.config import Settings
from cds_service.errors import ConfigurationError

__all__ = ["SQLITE_FILENAME", "database_url", "make_engine", "migrate", "head_revision",
           "current_revision", "writable_file_check"]

SQLITE_FILENAME = "trialscreen.sqlite3"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x7472_6961_6C73  # "trials": one advisory lock id for TrialScreen's migrations


def database_url(settings: Settings) -> URL:
    """The database URL: ``settings.database_url`` if set, else the SQLite file under ``settings.state_dir``."""
    if settings.database_url.strip():
        try:
            url = make_url(settings.database_url.strip())
        except Exception as exc:  # sqlalchemy raises ArgumentError for a malformed URL
            raise ConfigurationError(f"TRIALSCREEN_DATABASE_URL is not a database URL: {exc}") from None
        if url.drivername in ("postgres", "postgresql"):  # psycopg 3 is the driver we ship
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ConfigurationError(f"TRIALSCREEN_DATABASE_URL: unsupported database {url.get_backend_name()!r}"
                                     " (use postgresql:// or sqlite:///)")
        return url
    path = Path(settings.state_dir).expanduser().resolve() / SQLITE_FILENAME
    return URL.create("sqlite", database=str(path))


def _sqlite_pragmas(busy_ms: int) -> Callable[[object, object], None]:
    def on_connect(dbapi_connection: object, _record: object) -> None:
        cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cur.execute(f"PRAGMA busy_timeout = {busy_ms}")  # gunicorn workers share the file: wait, but not long
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()
    return on_connect


def writable_file_check(url: URL) -> Callable[[], None] | None:
    """For a SQLite file: a check that the file still opens for writing (OSError if not); None otherwise.

    In WAL mode every connection memory-maps the ``-shm`` file, and once the file system refuses writes
    (remounted read-only, files made immutable) the next touch of that mapping, even closing the connection,
    kills the process with SIGBUS. The store's gate runs this check (a few microseconds) before each operation,
    so the fault is an ordinary error and the pooled connections are left alone until it is over.
    """
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None

    def check() -> None:
        os.close(os.open(path, os.O_WRONLY))
    return check


def _reopen_after_failure(context: ExceptionContext) -> None:
    """Treat a failed SQLite operation like a lost connection, so the pool opens the file afresh next time.

    A connection opened while its folder was read-only stays read-only even once the folder is writable again
    (SQLite falls back to read-only at open), and one that saw a disk error may keep its state: neither must
    outlive the fault.
    """
    if isinstance(context.original_exception, sqlite3.OperationalError):
        context.is_disconnect = True


def _pg_options(url: URL, timeout_ms: int | None) -> str:
    """The libpq ``options`` of ``url`` plus the server-side statement and lock timeouts."""
    given = url.query.get("options", "")
    given = given if isinstance(given, str) else " ".join(given)
    if timeout_ms is None:
        return given
    return f"{given} -c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}".strip()


def make_engine(url: URL | str, *, timeout: float | None = 1.0) -> Engine:
    """An engine for ``url`` whose every wait is bounded by about ``timeout`` seconds.

    PostgreSQL: ``connect_timeout`` (psycopg waits at least 2 s), ``statement_timeout`` and ``lock_timeout``,
    ``tcp_user_timeout`` (a connection whose packets go unacknowledged is dropped) and the pool's checkout
    timeout. SQLite: the busy timeout and the pool timeout; the file's folder is created and WAL mode switched on.
    ``timeout=None`` is for migrations at start-up: they may wait for another replica's migration lock.
    """
    url = make_url(url) if isinstance(url, str) else url
    wait = timeout if timeout is not None else 30.0
    wait_ms = max(1, int(wait * 1000))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": wait}, pool_timeout=wait)
        event.listen(engine, "connect", _sqlite_pragmas(wait_ms))
        event.listen(engine, "handle_error", _reopen_after_failure)
        return engine
    connect_args: dict[str, object] = {"connect_timeout": max(1, math.ceil(wait)), "tcp_user_timeout": wait_ms}
    options = _pg_options(url, wait_ms if timeout is not None else None)
    if options:
        connect_args["options"] = options
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=wait,
                         connect_args=connect_args)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships at least one revision
        raise ConfigurationError("no database migrations found")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """For SQLite: an exclusive lock on a file beside the database while migrating (other processes wait)."""
    db = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate-lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine) -> str:
    """Bring the database schema to the newest revision (``alembic upgrade head``); return that revision.

    Idempotent and safe when several processes start together: PostgreSQL takes a transaction-scoped
    advisory lock, SQLite a file lock, and a database already at head is left untouched.
    """
    head = head_revision()
    with _file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if current_revision(conn) == head:
            return head
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
