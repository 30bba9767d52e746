"""Database tables: screening reports (behind opaque link tokens) and CDS Hooks feedback.

The schema itself is created and changed only by the Alembic migrations in ``migrations/versions``; these
classes describe it for queries. Every timestamp is stored in UTC (see :class:`UtcDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "ScreeningReport", "Feedback", "UsedTokenId", "UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC on every backend.

    SQLite has no time zones, so the value is stored there as naive UTC and made aware again on reading;
    PostgreSQL stores ``timestamp with time zone``. Naive datetimes are refused: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of TrialScreen's tables."""


class ScreeningReport(Base):
    """One stored screening result, reachable by an opaque random token until it expires.

    The token is random (``secrets.token_urlsafe``) and says nothing about the patient; the screening JSON
    (the engine's ``Screening.to_json()``, with the ``patient_header`` the report page shows: name, MRN, birth date,
    age, sex) is the only patient data, and it is deleted once expired.
    """

    __tablename__ = "screening_report"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    screening: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (Index("ix_screening_report_expires_at", "expires_at"),)


class Feedback(Base):
    """One CDS Hooks feedback item (a card accepted or overridden), stored once per idempotency key."""

    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), nullable=False)
    service_id: Mapped[str] = mapped_column(String(128), nullable=False)
    card_uuid: Mapped[str] = mapped_column(String(128), nullable=False)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)  # accepted | overridden
    override_reason_code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    override_reason_system: Mapped[str | None] = mapped_column(String(512), nullable=True)
    override_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    outcome_timestamp: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_cds_feedback_idempotency_key"),
        Index("ix_cds_feedback_service_outcome_ts", "service_id", "outcome_timestamp"),
        Index("ix_cds_feedback_card_uuid", "card_uuid"),
    )


class UsedTokenId(Base):
    """A CDS client JWT id (``jti``) already used, kept until the token expires so a replay is refused.

    Shared by every worker and replica through the database: the unique (iss, jti) pair makes the first
    INSERT win and any later one fail, wherever it runs. Expired rows are purged (``store.replay``).
    """

    __tablename__ = "cds_used_jti"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    iss: Mapped[str] = mapped_column(String(255), nullable=False)
    jti: Mapped[str] = mapped_column(String(255), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("iss", "jti", name="uq_cds_used_jti_iss_jti"),
        Index("ix_cds_used_jti_expires_at", "expires_at"),
    )
