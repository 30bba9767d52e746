"""The expected course of an open medication order or statement: how long an "active" record with no end date
can be read as still being taken.

An order is written for a course: the dispense request's expected supply duration, once per fill (the first
and ``numberOfRepeatsAllowed`` refills). A record that says neither is given the trial rules' default course
(``windows.open_order_course_days``). The course starts at the record's start (its bounds or validity period,
else ``authoredOn``; a statement's effective start, else ``dateAsserted``), so its end is a fixed date: a
criterion that reads "still taken" up to that end gives an ``until`` that does not move with the evaluation
time. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.facts.dates import DateRange
from cds_service.facts.medications import MedicationFact, start_of_period
from cds_service.facts.units import convert

__all__ = ["Course", "expected_course", "resource_of"]


@dataclass(frozen=True)
class Course:
    """The assumed course of an open record: from ``start`` to ``end``, and how its length was found."""

    start: datetime
    end: datetime
    how: str

    def range(self) -> DateRange:
        """When the last dose may have been given (any instant of the course)."""
        return DateRange(self.start, self.end, f"{self.start.date().isoformat()}..{self.end.date().isoformat()}")


def resource_of(record: Any, ref: str) -> Any | None:
    """The record's resource ``Type/id`` (the parsed model), or None."""
    rtype, _, rid = ref.partition("/")
    return next((r for r in record.of_type(rtype) if getattr(r, "id", None) == rid), None)


def _supply_days(resource: Any) -> float | None:
    """The dispense request's expected supply duration in days (UCUM time units), or None."""
    dispense = getattr(resource, "dispenseRequest", None)
    duration = getattr(dispense, "expectedSupplyDuration", None) if dispense is not None else None
    value = getattr(duration, "value", None) if duration is not None else None
    if value is None or float(value) <= 0:
        return None
    unit = getattr(duration, "code", None) or getattr(duration, "unit", None)
    # Durations are UCUM time units (FHIR constrains Duration.code to them); "days" etc. are read through units
    days = convert(float(value), unit, "d", aliases=_TIME_WORDS)
    return days if days and days > 0 else None


# Common spellings of time units that are not UCUM codes (FHIR's Duration.unit is free text)
_TIME_WORDS = {"day": "d", "days": "d", "Day": "d", "Days": "d", "week": "wk", "weeks": "wk", "month": "mo",
               "months": "mo", "hour": "h", "hours": "h"}


def _repeats(resource: Any) -> int:
    dispense = getattr(resource, "dispenseRequest", None)
    n = getattr(dispense, "numberOfRepeatsAllowed", None) if dispense is not None else None
    return int(n) if isinstance(n, int) and n > 0 else 0


def expected_course(fact: MedicationFact, resource: Any | None, default_days: int) -> Course | None:
    """The course of an open order or statement (None when the record has no date to start it from).

    Length: expected supply duration x (1 + repeats allowed) when the order states a supply duration; else
    ``default_days`` x (1 + repeats allowed).
    """
    if fact.period is None:
        return None
    start = start_of_period(fact.period).start
    if fact.source == "MedicationStatement" and fact.recorded is not None:
        # a statement asserts use as of its date: the course runs from the later of its start and that date
        start = max(start, fact.recorded.start)
    repeats = _repeats(resource) if fact.source == "MedicationRequest" and resource is not None else 0
    supply = _supply_days(resource) if fact.source == "MedicationRequest" and resource is not None else None
    fills = 1 + repeats
    if supply is not None:
        days = supply * fills
        how = f"expected supply {supply:g} days" + (f" x {fills} fills" if fills > 1 else "")
    else:
        days = float(default_days * fills)
        how = f"default course {default_days} days" + (f" x {fills} fills" if fills > 1 else "") + \
            " (windows.open_order_course_days)"
    return Course(start, start + timedelta(days=days), how)
