"""``trialscreen feedback-report [--since DATE] [--by month|week]``: acceptance and override rates of the cards.

Counts the stored CDS Hooks feedback entries (one per card outcome the EHR reported; a repeated identical
entry is stored once) by period of ``outcomeTimestamp`` (UTC calendar month, or ISO week), with the share
accepted and overridden, and the overrides by reason (the card's override reason codes are shown with
their labels; other codes as ``system|code``; an override without a reason as "(no reason given)").
Grouping is done here, not in SQL, so the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TextIO

from sqlalchemy import Engine, select

from cds_service.config import Settings
from cds_service.store.models import Feedback

__all__ = ["PeriodRates", "feedback_rates", "format_rates", "period_of",
           "NO_REASON"]

NO_REASON = "(no reason given)"


@dataclass
class PeriodRates:
    """Feedback counts of one period (or of all periods: ``period == "all"``)."""

    period: str
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Feedback entries in the period."""
        return self.accepted + self.overridden

    def add(self, outcome: str, reason: str | None) -> None:
        """Count one feedback entry."""
        if outcome == "accepted":
            self.accepted += 1
        else:
            self.overridden += 1
            self.reasons[reason or NO_REASON] += 1


def period_of(moment: datetime, by: str) -> str:
    """``2026-10`` (by month) or ``2026-W40`` (by ISO week) of ``moment`` in UTC."""
    moment = moment.astimezone(UTC)
    if by == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{moment.year}-{moment.month:02d}"


def _reason_label(system: str | None, code: str | None) -> str | None:
    if not code:
        return None
    from cds_service.cards.card import OVERRIDE_REASONS

    for r in OVERRIDE_REASONS:
        if r["code"] == code and (system is None or r.get("system") == system):
            return r["display"]
    return f"{system}|{code}" if system else code


def feedback_rates(engine: Engine, *, since: datetime | None = None, by: str = "month",
                   service_id: str | None = None) -> list[PeriodRates]:
    """Rates per period, oldest first, then a final ``all`` row (absent when there is no feedback)."""
    if by not in ("month", "week"):
        raise ValueError("by must be 'month' or 'week'")
    query = select(Feedback.outcome, Feedback.override_reason_system, Feedback.override_reason_code,
                   Feedback.outcome_timestamp)
    if since is not None:
        query = query.where(Feedback.outcome_timestamp >= since)
    if service_id is not None:
        query = query.where(Feedback.service_id == service_id)
    periods: dict[str, PeriodRates] = {}
    total = PeriodRates("all")
    with engine.connect() as conn:
        for outcome, system, code, at in conn.execute(query):
            reason = _reason_label(system, code) if outcome == "overridden" else None
            key = period_of(at, by)
            periods.setdefault(key, PeriodRates(key)).add(outcome, reason)
            total.add(outcome, reason)
    rows = [periods[k] for k in sorted(periods)]
    return [*rows, total] if rows else []


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def format_rates(rows: Iterable[PeriodRates], *, by: str, since: date | None) -> str:
    """The report as plain text."""
    rows = list(rows)
    head = f"CDS card feedback by {by} (outcome time, UTC)" + (f" since {since.isoformat()}" if since else "")
    if not rows:
        return f"{head}\nNo feedback stored."
    lines = [head, "", f"{'period':<10} {'feedback':>8}  {'accepted':<16} {'overridden':<16}"]
    for r in rows:
        if r.period == "all":
            lines.append("-" * 54)
        lines.append(f"{r.period:<10} {r.total:>8}  {f'{r.accepted} ({_pct(r.accepted, r.total)})':<16} "
                     f"{f'{r.overridden} ({_pct(r.overridden, r.total)})':<16}")
        for reason, n in sorted(r.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    overridden: {reason}: {n} ({_pct(n, r.overridden)} of overrides, "
                         f"{_pct(n, r.total)} of feedback)")
    return "\n".join(line.rstrip() for line in lines)


def _cmd_feedback_report(args: argparse.Namespace) -> int:
    from cds_service.store import open_store

    out: TextIO = sys.stdout
    store = open_store(Settings.from_env())
    try:
        since = datetime(args.since.year, args.since.month, args.since.day, tzinfo=UTC) if args.since else None
        rows = feedback_rates(store.engine, since=since, by=args.by)
    finally:
        store.close()
    print(format_rates(rows, by=args.by, since=args.since), file=out)
    return 0
