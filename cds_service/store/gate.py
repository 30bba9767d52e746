"""A hard bound on every database operation a request waits for, and a short pause after a failure.

The drivers' own timeouts (``connect_timeout``, ``statement_timeout``, ``tcp_user_timeout``, the pool timeout,
SQLite's busy timeout; see ``store.db``) end most waits, but not all of them: psycopg never waits less than 2 s
to connect, a server that stopped answering on an established connection (a paused process, a half-open
route) is never timed out by the kernel while it still acknowledges packets, and a hung disk blocks SQLite.
So :class:`StoreGate` runs each operation on its own daemon thread and waits at most ``timeout`` seconds for
it; a late operation is left to finish (or fail) on its own, and the caller gets :class:`StoreUnavailable`.

After a failure of the database itself (not a value it refused) the gate stays shut for ``cooldown`` seconds:
calls fail at once instead of each paying the timeout again while the database is down. Readiness probes
(``probe=True``) go through regardless, so ``/readyz`` always measures, and a probe that succeeds opens the
gate again. At most ``max_in_flight`` abandoned operations may still be running; beyond that the gate refuses
at once, so a dead database cannot pile up threads. An optional ``precheck`` runs before each operation
(for SQLite: the file still opens for writing; see ``store.db.writable_file_check``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DisconnectionError, InterfaceError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cds_service.errors import StoreUnavailable

__all__ = ["StoreGate"]

log = logging.getLogger("trialscreen.store")
T = TypeVar("T")
# The database or its disk is failing (down, unreachable, read-only, full, timed out): shut the gate. Other
# database errors (a value it refuses) concern one call only, so one caller cannot shut it for everyone.
_OUTAGE = (OperationalError, InterfaceError, InternalError, DisconnectionError, PoolTimeout, OSError)


class StoreGate:
    """Run database operations with a time bound; shut for ``cooldown`` seconds after a failure."""

    def __init__(self, timeout: float, *, cooldown: float = 2.0, max_in_flight: int = 8,
                 clock: Callable[[], float] = time.monotonic, precheck: Callable[[], None] | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.precheck = precheck  # run before each operation, on its thread (store.db.writable_file_check)
        self.cooldown = cooldown
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._shut_until = float("-inf")

    def after_fork(self) -> None:
        """In a forked worker: a fresh lock and no operations in flight (the master's threads did not follow)."""
        self._lock = threading.Lock()
        self._in_flight = 0
        self._shut_until = float("-inf")

    @property
    def shut(self) -> bool:
        """True while the gate refuses calls because the database failed less than ``cooldown`` seconds ago."""
        return self._clock() < self._shut_until

    def run(self, what: str, operation: Callable[[], T], *, probe: bool = False) -> T:
        """``operation()``'s result; StoreUnavailable when the gate is shut, the operation fails with a
        database or OS error, or it has not finished within ``timeout`` seconds.

        ``what`` names the operation in the error and the log line (never any data).
        """
        if not probe and self.shut:
            raise StoreUnavailable(f"{what}: the database failed less than {self.cooldown:g} s ago")
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                self._shut_until = self._clock() + self.cooldown
                raise StoreUnavailable(f"{what}: {self._in_flight} earlier database operations are still waiting")
            self._in_flight += 1
        outcome: dict[str, object] = {}
        done = threading.Event()

        def target() -> None:
            try:
                if self.precheck is not None:
                    self.precheck()
                outcome["value"] = operation()
            except BaseException as exc:  # handed to the waiting caller, who decides what it means
                outcome["error"] = exc
            finally:
                with self._lock:
                    self._in_flight -= 1
                done.set()

        threading.Thread(target=target, name="trialscreen-store", daemon=True).start()
        if not done.wait(self.timeout):
            self._fail(what, "timeout")
            raise StoreUnavailable(f"{what}: no answer from the database within {self.timeout:g} s")
        error = outcome.get("error")
        if isinstance(error, (SQLAlchemyError, OSError)):
            self._fail(what, type(getattr(error, "orig", None) or error).__name__, shut=isinstance(error, _OUTAGE))
            raise StoreUnavailable(f"{what}: the database refused it ({type(error).__name__})") from error
        if isinstance(error, BaseException):
            raise error
        with self._lock:
            self._shut_until = float("-inf")
        return outcome["value"]  # type: ignore[return-value]

    def _fail(self, what: str, error: str, *, shut: bool = True) -> None:
        if shut:
            with self._lock:
                self._shut_until = self._clock() + self.cooldown
        log.error("database operation failed", extra={"where": what, "error": error})
