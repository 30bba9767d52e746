"""FHIR dates as intervals, and the window arithmetic the criteria use.

A FHIR date may be partial (``2024``, ``2024-05``) or a full dateTime. Each is read as the interval of instants
it could mean, so a rule can evaluate both ends: if the ends disagree, the answer is UNKNOWN. A date without a
time zone is taken as UTC (documented choice: FHIR requires a zone on times, and whole days are ambiguous by
at most a day either way). "Within N months" uses calendar months (``relativedelta``), as the issue decides.

This module does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dateutil.relativedelta import relativedelta

from cds_service.criteria.result import Result

__all__ = ["DateRange", "parse_fhir_date", "months_before", "in_window", "ensure_aware"]

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_ONE_US = timedelta(microseconds=1)


def ensure_aware(moment: datetime) -> datetime:
    """Return ``moment`` with a time zone (UTC when it had none)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, order=True)
class DateRange:
    """The instants a (possibly partial) FHIR date can denote: ``start <= t <= end``."""

    start: datetime
    end: datetime
    text: str = ""

    @property
    def is_exact(self) -> bool:
        return self.end - self.start < timedelta(days=1)

    def display(self) -> str:
        """The date as written in the record, for evidence and cards."""
        return self.text or self.start.date().isoformat()

    @classmethod
    def instant(cls, moment: datetime) -> DateRange:
        moment = ensure_aware(moment)
        return cls(moment, moment, moment.isoformat())

    def union(self, other: DateRange) -> DateRange:
        return DateRange(min(self.start, other.start), max(self.end, other.end), self.text or other.text)


def parse_fhir_date(value: object) -> DateRange | None:
    """Parse a FHIR date / dateTime / instant (string, ``date`` or ``datetime``) into a DateRange.

    Returns None for anything unparseable; callers treat that as missing data (UNKNOWN), never as a date.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return DateRange.instant(value)
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return DateRange(start, start + timedelta(days=1) - _ONE_US, value.isoformat())
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _DATE_RE.match(text)
    try:
        if m:
            year = int(m.group(1))
            if m.group(3):
                start = datetime(year, int(m.group(2)), int(m.group(3)), tzinfo=UTC)
                return DateRange(start, start + timedelta(days=1) - _ONE_US, text)
            if m.group(2):
                start = datetime(year, int(m.group(2)), 1, tzinfo=UTC)
                return DateRange(start, start + relativedelta(months=1) - _ONE_US, text)
            start = datetime(year, 1, 1, tzinfo=UTC)
            return DateRange(start, start + relativedelta(years=1) - _ONE_US, text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = ensure_aware(moment)
    return DateRange(moment, moment, text)


def months_before(moment: datetime, months: int) -> datetime:
    """``moment`` minus ``months`` calendar months (31 March - 1 month = 28/29 February)."""
    return moment - relativedelta(months=months)


def in_window(when: DateRange | None, start: datetime, end: datetime) -> Result:
    """Is the event inside the window ``(start, end]``?

    MET when every instant the date can denote is inside, NOT_MET when none is, UNKNOWN when the ends
    disagree or there is no date.
    """
    if when is None:
        return Result.UNKNOWN
    if when.start <= end < when.end:
        # A partial date that straddles the window's end (a date-only lab on the evaluation day, "2026" in
        # 2026): the recorded event has happened, so the instants after the anchor are not possible ones.
        when = DateRange(when.start, end, when.text)
    first_inside = start < when.start <= end
    last_inside = start < when.end <= end
    if first_inside and last_inside:
        return Result.MET
    if when.end <= start or when.start > end:
        return Result.NOT_MET
    return Result.UNKNOWN
