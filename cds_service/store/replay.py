"""The jti replay guard shared by every worker and replica: used token ids in the database.

``TokenVerifier`` asks ``first_use(iss, jti, expires_at)`` after a token's signature and claims are verified.
The answer comes from one INSERT into ``cds_used_jti``, whose unique (iss, jti) constraint makes the first
use win on whichever replica it lands; every later use fails with an IntegrityError and is a replay. Rows
are kept until the token (plus the verifier's leeway) has expired, then purged: the row of the same id just
before inserting (an id may be reused once its token is dead), and all expired rows at most once a minute
per process. Works the same on SQLite and PostgreSQL.

When the database cannot record the id (down, unreachable, read-only, full, or slower than the store timeout),
``first_use`` raises ``StoreUnavailable`` and the call is refused with 503 and ``Retry-After``: an id that
could not be recorded cannot be refused later, so the token is not accepted (docs/security.md, "Replays when
the database is down").
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from cds_service.store.gate import StoreGate
from cds_service.store.models import UsedTokenId

__all__ = ["DbReplayGuard", "MAX_ID_LENGTH"]

MAX_ID_LENGTH = 255  # the column width; longer ids are stored as their SHA-256


def _fit(value: str) -> str:
    """``value`` itself when it fits the column, else ``sha256:<hex>`` (still unique, still comparable)."""
    if len(value) <= MAX_ID_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class DbReplayGuard:
    """A ``ReplayGuard`` (see ``cds_service.security.auth``) backed by the store's database."""

    def __init__(self, engine: Engine, *, now: Callable[[], float] = time.time,
                 purge_every_seconds: float = 60.0, gate: StoreGate | None = None) -> None:
        self._sessions = sessionmaker(engine)
        self._gate = gate or StoreGate(1.0)
        self._now = now
        self._purge_every = purge_every_seconds
        self._last_purge = float("-inf")
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record (iss, jti) until ``expires_at`` (epoch seconds); False when it is already recorded: a replay.

        Raises StoreUnavailable when the id could not be recorded within the store timeout.
        """
        return self._gate.run("replay check", lambda: self._record(iss, jti, expires_at))

    def _record(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self._now()
        now_dt = datetime.fromtimestamp(now, UTC)
        iss_key, jti_key = _fit(iss), _fit(jti)
        self._maybe_purge(now, now_dt)
        with self._sessions() as session:
            # an expired row of the same id no longer protects anything: let the id be used again
            session.execute(delete(UsedTokenId).where(UsedTokenId.iss == iss_key, UsedTokenId.jti == jti_key,
                                                      UsedTokenId.expires_at <= now_dt))
            session.add(UsedTokenId(iss=iss_key, jti=jti_key, expires_at=datetime.fromtimestamp(expires_at, UTC)))
            try:
                session.commit()
            except IntegrityError:  # the unique (iss, jti): someone, somewhere, used it first
                session.rollback()
                return False
        return True

    def purge_expired(self) -> int:
        """Delete every expired row now; return how many were deleted."""
        now_dt = datetime.fromtimestamp(self._now(), UTC)
        with self._sessions.begin() as session:
            result = session.execute(delete(UsedTokenId).where(UsedTokenId.expires_at <= now_dt))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _maybe_purge(self, now: float, now_dt: datetime) -> None:
        with self._lock:
            if now - self._last_purge < self._purge_every:
                return
            self._last_purge = now
        with self._sessions.begin() as session:
            session.execute(delete(UsedTokenId).where(UsedTokenId.expires_at <= now_dt))
