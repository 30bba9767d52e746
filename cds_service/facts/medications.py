"""Medication exposures from MedicationAdministration, MedicationStatement and MedicationRequest.

Status filters (reference section 1.3): administrations completed or in-progress; requests active, completed,
stopped or on-hold (cancelled / draft = not given; entered-in-error dropped); statements active, completed or
stopped (intended is kept but flagged; not-taken and entered-in-error dropped). For dose windows the best source
wins: administration > statement > request ("orders are not administrations").

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.facts.clinical import Coding, codings_of
from cds_service.facts.dates import DateRange, parse_fhir_date
from cds_service.facts.units import Quantity, convert

__all__ = ["MedicationFact", "medication_fact", "SOURCE_RANK", "daily_dose_mg", "overlap_days"]

SOURCE_RANK = {"MedicationAdministration": 0, "MedicationStatement": 1, "MedicationRequest": 2}

_KEEP_STATUS = {
    "MedicationAdministration": {"completed", "in-progress"},
    "MedicationRequest": {"active", "completed", "stopped", "on-hold"},
    "MedicationStatement": {"active", "completed", "stopped", "intended"},
}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30.4375, "a": 365.25}


@dataclass(frozen=True)
class MedicationFact:
    ref: str
    source: str  # resource type
    status: str
    codings: tuple[Coding, ...]  # the medication's own codes and its ingredients' codes
    display: str | None
    period: DateRange | None  # when it was given / taken / valid
    ongoing: bool  # an active order or statement with no end
    dose: Quantity | None  # one dose
    doses_per_day: float | None
    route: tuple[Coding, ...]
    recorded: DateRange | None = None  # authoredOn / dateAsserted: an upper bound, never an event date

    @property
    def date(self) -> DateRange | None:
        return self.period

    @property
    def last_date(self) -> datetime | None:
        """The latest instant the drug may have been given (the period's end)."""
        return self.period.end if self.period else None

    @property
    def flagged(self) -> bool:
        return self.status == "intended"


def _resolve_medication(res: Any, medications: Mapping[str, Any]) -> tuple[tuple[Coding, ...], str | None]:
    concept = getattr(res, "medicationCodeableConcept", None)
    if concept is not None:
        return codings_of(concept), concept.text or next((c.display for c in concept.coding or () if c.display),
                                                         None)
    ref = getattr(res, "medicationReference", None)
    if ref is None or not ref.reference:
        return (), None
    target = ref.reference
    med = None
    if target.startswith("#"):
        for contained in res.contained or ():
            if getattr(contained, "id", None) == target[1:]:
                med = contained
    else:
        key = target.rsplit("/", 1)[-1] if "/" in target else target
        key = key.removeprefix("urn:uuid:")
        med = medications.get(key)
    if med is None:
        return (), ref.display
    codes = list(codings_of(getattr(med, "code", None)))
    for ing in getattr(med, "ingredient", None) or ():
        codes.extend(codings_of(getattr(ing, "itemCodeableConcept", None)))
    display = None
    if getattr(med, "code", None) is not None:
        display = med.code.text or next((c.display for c in med.code.coding or () if c.display), None)
    return tuple(codes), display or ref.display


def _dose_of(dosage: Any) -> tuple[Quantity | None, float | None, tuple[Coding, ...]]:
    if dosage is None:
        return None, None, ()
    route = codings_of(getattr(dosage, "route", None))
    dose = None
    per_day = None
    q = getattr(dosage, "dose", None)  # MedicationAdministration.dosage.dose
    if q is None:
        for dr in getattr(dosage, "doseAndRate", None) or ():
            if dr.doseQuantity is not None:
                q = dr.doseQuantity
                break
    if q is not None and q.value is not None:
        dose = Quantity(float(q.value), q.code or q.unit)
    timing = getattr(dosage, "timing", None)
    rep = timing.repeat if timing is not None else None
    if rep is not None and rep.frequency and rep.period and rep.periodUnit in _PERIOD_DAYS:
        per_day = float(rep.frequency) / (float(rep.period) * _PERIOD_DAYS[rep.periodUnit])
    return dose, per_day, route


def medication_fact(res: Any, medications: Mapping[str, Any]) -> MedicationFact | None:
    rtype = res.__resource_type__ if hasattr(res, "__resource_type__") else type(res).__name__
    status = res.status
    if status not in _KEEP_STATUS.get(rtype, ()):
        return None
    codes, display = _resolve_medication(res, medications)
    recorded = None
    if rtype == "MedicationAdministration":
        period = _effective(res)
        dose, per_day, route = _dose_of(res.dosage)
        ongoing = status == "in-progress"
    elif rtype == "MedicationStatement":
        period = _effective(res)
        dosage = (res.dosage or [None])[0]
        dose, per_day, route = _dose_of(dosage)
        ongoing = status == "active" and (period is None or period.text.endswith(".."))
        recorded = parse_fhir_date(res.dateAsserted)
    else:  # MedicationRequest
        dosage = (res.dosageInstruction or [None])[0]
        dose, per_day, route = _dose_of(dosage)
        period = None
        bounds = None
        if dosage is not None and dosage.timing is not None and dosage.timing.repeat is not None:
            bounds = dosage.timing.repeat.boundsPeriod
        validity = res.dispenseRequest.validityPeriod if res.dispenseRequest is not None else None
        for p in (bounds, validity):
            if p is not None and (p.start or p.end):
                start, end = parse_fhir_date(p.start), parse_fhir_date(p.end)
                if start and end:
                    period = DateRange(start.start, end.end, f"{start.display()}..{end.display()}")
                elif start:
                    period = DateRange(start.start, start.end, start.display() + "..")
                break
        recorded = parse_fhir_date(res.authoredOn)
        if period is None and recorded is not None:
            # Only the order date is known: the drug was given on or after it (if at all).
            period = DateRange(recorded.start, recorded.end, recorded.display() + "..")
        ongoing = status in {"active", "on-hold"} and (period is None or period.text.endswith(".."))
    return MedicationFact(
        ref=f"{rtype}/{res.id}",
        source=rtype,
        status=status,
        codings=codes,
        display=display,
        period=period,
        ongoing=ongoing,
        dose=dose,
        doses_per_day=per_day,
        route=route,
        recorded=recorded,
    )


def _effective(res: Any) -> DateRange | None:
    if getattr(res, "effectiveDateTime", None) is not None:
        return parse_fhir_date(res.effectiveDateTime)
    period = getattr(res, "effectivePeriod", None)
    if period is not None:
        start, end = parse_fhir_date(period.start), parse_fhir_date(period.end)
        if start and end:
            return DateRange(start.start, end.end, f"{start.display()}..{end.display()}")
        if start:
            return DateRange(start.start, start.end, start.display() + "..")
        return end
    return None


def daily_dose_mg(fact: MedicationFact) -> float | None:
    """Milligrams per day of an order or statement, from its dose and timing; None when not stated."""
    if fact.dose is None or fact.doses_per_day is None:
        return None
    mg = convert(fact.dose.value, fact.dose.unit, "mg")
    return None if mg is None else mg * fact.doses_per_day


def overlap_days(period: DateRange, start: datetime, end: datetime, open_until: datetime) -> float:
    """Days of ``(start, end]`` covered by ``period`` (an open period runs to ``open_until``)."""
    p_end = open_until if period.text.endswith("..") else period.end
    lo, hi = max(period.start, start), min(p_end, end)
    if hi <= lo:
        return 0.0
    return (hi - lo) / timedelta(days=1)


def by_source_rank(facts: Iterable[MedicationFact]) -> list[MedicationFact]:
    return sorted(facts, key=lambda f: SOURCE_RANK.get(f.source, 9))
