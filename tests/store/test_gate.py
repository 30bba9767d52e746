"""``StoreGate``: every database wait bounded, a pause after a failure, readiness probes always measured; and the
driver timeouts of ``make_engine`` against a PostgreSQL address that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from cds_service.errors import StoreUnavailable
from cds_service.store.db import make_engine
from cds_service.store.gate import StoreGate


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _fail() -> None:
    raise OperationalError("INSERT ...", {}, Exception("disk I/O error"))


def test_a_result_comes_back():
    assert StoreGate(1.0).run("test", lambda: 42) == 42


def test_a_slow_operation_is_abandoned_after_the_timeout():
    release = threading.Event()
    gate = StoreGate(0.2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="within 0.2 s"):
        gate.run("slow", lambda: release.wait(30))
    assert time.monotonic() - started < 5  # 0.2 s plus scheduling, never the operation's 30 s
    release.set()


def test_a_database_error_becomes_store_unavailable_and_shuts_the_gate_for_the_cooldown():
    clock = Clock()
    gate = StoreGate(1.0, cooldown=2.0, clock=clock)
    with pytest.raises(StoreUnavailable, match="OperationalError") as caught:
        gate.run("write", _fail)
    assert isinstance(caught.value.__cause__, OperationalError)
    assert gate.shut
    calls = []
    with pytest.raises(StoreUnavailable, match="failed less than 2 s ago"):
        gate.run("write", lambda: calls.append(1))
    assert calls == []  # refused without touching the database
    clock.t += 2.5
    assert not gate.shut and gate.run("write", lambda: "again") == "again"


def test_a_probe_goes_through_a_shut_gate_and_its_success_opens_it():
    clock = Clock()
    gate = StoreGate(1.0, clock=clock)
    with pytest.raises(StoreUnavailable):
        gate.run("write", _fail)
    assert gate.run("probe", lambda: "ok", probe=True) == "ok"
    assert not gate.shut


def test_other_errors_are_bugs_and_pass_through_unchanged():
    gate = StoreGate(1.0)
    with pytest.raises(KeyError):
        gate.run("bug", lambda: {}["x"])
    assert not gate.shut


def test_abandoned_operations_are_capped():
    release = threading.Event()
    gate = StoreGate(0.05, cooldown=0.0, max_in_flight=2)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="within"):
            gate.run("stuck", lambda: release.wait(30))
    with pytest.raises(StoreUnavailable, match="still waiting"):
        gate.run("stuck", lambda: release.wait(30))
    release.set()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never sends a byte (a PostgreSQL that stopped answering)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_a_silent_postgresql_costs_about_the_store_timeout(silent_server):
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test", timeout=1.0)
    gate = StoreGate(1.0)

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            gate.run("select", select_one)
        assert time.monotonic() - started < 3  # the gate's 1 s, not psycopg's 2 s minimum or TCP's minutes
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="failed less than"):
            gate.run("select", select_one)
        assert time.monotonic() - started < 0.5  # while the gate is shut, nothing waits at all
    finally:
        engine.dispose()


def test_postgresql_sessions_get_statement_and_lock_timeouts_and_keep_the_urls_own_options(pg_schema_url):
    engine = make_engine(pg_schema_url, timeout=1.5)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "1500ms"
            assert conn.execute(text("SHOW search_path")).scalar().startswith("ts_test_")  # the URL's options
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()


def test_migrations_get_no_statement_timeout(pg_schema_url):
    engine = make_engine(pg_schema_url, timeout=None)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        engine.dispose()


def test_sqlite_waits_for_a_lock_at_most_the_store_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", timeout=0.5)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 500
    finally:
        engine.dispose()


def test_a_value_the_database_refuses_is_503_for_that_call_only():
    from sqlalchemy.exc import DataError

    def refuse() -> None:
        raise DataError("INSERT ...", {}, Exception("invalid byte sequence"))

    gate = StoreGate(1.0)
    with pytest.raises(StoreUnavailable, match="DataError"):
        gate.run("write", refuse)
    assert not gate.shut and gate.run("write", lambda: "next call") == "next call"
