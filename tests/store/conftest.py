"""Store fixtures: one database per backend, SQLite (a temp file) and PostgreSQL (a fresh schema).

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, database ``test``; user ``postgres``, else ``root``;
``TRIALSCREEN_TEST_PG_URL`` overrides). Each test session works in its own schema ``ts_test_<random>``, dropped
at the end, so runs never see each other's rows. Unreachable server: skip, except when ``CI`` is true (fail).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from cds_service.config import Settings
from cds_service.store import Store, open_store

_PG_CANDIDATES = ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://root@127.0.0.1:5432/test")


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _reachable_pg_url() -> tuple[URL | None, str]:
    candidates = [os.environ["TRIALSCREEN_TEST_PG_URL"]] if os.environ.get("TRIALSCREEN_TEST_PG_URL") else []
    errors = []
    for raw in [*candidates, *_PG_CANDIDATES]:
        url = make_url(raw)
        if url.drivername in ("postgres", "postgresql"):
            url = url.set(drivername="postgresql+psycopg")
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url, ""
        except OperationalError as exc:
            errors.append(f"{url.render_as_string(hide_password=True)}: {str(exc.orig).strip()[:200]}")
        finally:
            engine.dispose()
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema made for this test session (dropped afterwards)."""
    url, why = _reachable_pg_url()
    if url is None:
        msg = f"PostgreSQL at 127.0.0.1:5432 is not reachable ({why})"
        if _ci():
            pytest.fail(f"{msg}; CI must run the PostgreSQL store tests")
        pytest.skip(msg)
    schema = f"ts_test_{secrets.token_hex(6)}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Clock:
    """A settable clock for expiry tests."""

    def __init__(self) -> None:
        self.now = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a fresh database of each backend (PostgreSQL: the session schema, emptied first)."""
    if request.param == "sqlite":
        def make(**kw: object) -> Settings:
            return Settings(state_dir=tmp_path / "state", **kw)
        return make
    url = request.getfixturevalue("pg_schema_url")
    engine = create_engine(url)
    with engine.begin() as conn:  # one schema per session: empty our tables between tests
        for table in ("screening_report", "cds_feedback", "cds_used_jti"):
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()

    def make_pg(**kw: object) -> Settings:
        return Settings(database_url=url, state_dir=tmp_path / "unused", **kw)
    return make_pg


@pytest.fixture
def store(backend: Callable[..., Settings], clock: Clock) -> Iterator[Store]:
    s = open_store(backend(), clock=clock)
    try:
        yield s
    finally:
        s.close()
