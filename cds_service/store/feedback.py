"""CDS Hooks feedback (a card accepted or overridden), stored once per idempotency key.

The HTTP endpoint and its validation belong to the service; this module only stores and reads. The
idempotency key is derived from the feedback's content (:func:`idempotency_key`), so the same feedback sent
twice (a retried request) is stored once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from cds_service.store.models import Feedback

__all__ = ["FeedbackItem", "FeedbackStore", "idempotency_key"]


@dataclass(frozen=True)
class FeedbackItem:
    """One feedback entry as CDS Hooks 2.0 defines it (``card``, ``outcome``, ``acceptedSuggestions``, ...)."""

    service_id: str
    card_uuid: str
    outcome: str  # "accepted" | "overridden"
    outcome_timestamp: datetime
    accepted_suggestions: Sequence[str] = field(default_factory=tuple)
    override_reason_code: str | None = None
    override_reason_system: str | None = None
    override_comment: str | None = None


def idempotency_key(item: FeedbackItem) -> str:
    """A SHA-256 over the feedback's content: equal feedback gives an equal key."""
    canonical = json.dumps({
        "service": item.service_id, "card": item.card_uuid, "outcome": item.outcome,
        "at": item.outcome_timestamp.astimezone(UTC).isoformat(),
        "accepted": sorted(item.accepted_suggestions),
        "reason": [item.override_reason_system, item.override_reason_code], "comment": item.override_comment,
    }, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class FeedbackStore:
    """Store feedback idempotently and count it."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._clock = clock

    def add_all(self, items: Sequence[FeedbackItem]) -> int:
        """Store every new item of ``items`` in one transaction (all or nothing); return how many were new.

        An item whose key is already stored, or repeated within ``items``, is skipped (a retried request). When a
        concurrent request stores one of the same items first, the transaction is rolled back and tried once more.
        """
        keyed: dict[str, FeedbackItem] = {}
        for item in items:
            keyed.setdefault(idempotency_key(item), item)
        for attempt in (1, 2):
            with self._sessions() as session:
                known = set(session.execute(select(Feedback.idempotency_key).where(
                    Feedback.idempotency_key.in_(list(keyed)))).scalars()) if keyed else set()
                new = [(k, item) for k, item in keyed.items() if k not in known]
                received = self._clock()
                session.add_all([self._row(item, k, received) for k, item in new])
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    if attempt == 2:
                        raise
                    continue
                return len(new)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _row(item: FeedbackItem, key: str, received: datetime) -> Feedback:
        return Feedback(
            idempotency_key=key, service_id=item.service_id, card_uuid=item.card_uuid, outcome=item.outcome,
            override_reason_code=item.override_reason_code, override_reason_system=item.override_reason_system,
            override_comment=item.override_comment, accepted_suggestions=list(item.accepted_suggestions),
            outcome_timestamp=item.outcome_timestamp, received_at=received)

    def add(self, item: FeedbackItem, key: str | None = None) -> bool:
        """Store ``item``; True when it was new, False when feedback with the same key was stored before."""
        key = key or idempotency_key(item)
        with self._sessions() as session:
            if session.execute(select(Feedback.id).where(Feedback.idempotency_key == key)).first():
                return False
            session.add(self._row(item, key, self._clock()))
            try:
                session.commit()
            except IntegrityError:  # a concurrent request stored the same feedback first
                session.rollback()
                return False
        return True

    def count(self, service_id: str | None = None) -> int:
        """How many feedback entries are stored (for one service, or all)."""
        query = select(func.count(Feedback.id))
        if service_id is not None:
            query = query.where(Feedback.service_id == service_id)
        with self._sessions() as session:
            return int(session.execute(query).scalar_one())
