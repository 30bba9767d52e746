"""The database behind the store: URL from settings, engine, and Alembic migrations run at start-up.

SQLite is the default (``<state_dir>/trialscreen.sqlite3``, created on first start); PostgreSQL is used when
``TRIALSCREEN_DATABASE_URL`` is set (``postgresql://...`` is run with the psycopg 3 driver). The schema is
brought to the newest revision by :func:`migrate` (``alembic upgrade head``), once per start, under a lock
so several workers or replicas starting together do not race each other.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from cds_service.config import Settings
from cds_service.errors import ConfigurationError

__all__ = ["SQLITE_FILENAME", "database_url", "make_engine", "migrate", "head_revision", "current_revision"]

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


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA busy_timeout = 10000")  # gunicorn workers share the file: wait rather than fail
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def make_engine(url: URL | str) -> Engine:
    """An engine for ``url``; for SQLite the file's folder is created and WAL mode switched on."""
    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


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
