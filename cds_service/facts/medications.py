"""Medication exposures from MedicationAdministration, MedicationStatement and MedicationRequest.

Status filters (reference section 1.3): administrations completed or in-progress; requests active, completed,
stopped or on-hold (cancelled / draft = not given; entered-in-error dropped); statements active, completed or
stopped (intended is kept but flagged; not-taken and entered-in-error dropped). For dose windows the best source
wins: administration > statement > request ("orders are not administrations").

The arithmetic the treatment criteria share lives here too: when the last dose may have been given
(``last_dose_range``), a drug's washout window from its half-life (``washout_window``) and the date it has passed
(``first_date_after``), and a factor-weighted cumulative dose over a window with one best source per drug
(``cumulative_dose``, used for prednisone-equivalents) and the date it falls below a threshold
(``below_threshold_from``).

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cds_service.criteria.result import Result
from cds_service.facts.clinical import Coding, choice_date, codings_of, period_range
from cds_service.facts.dates import DateRange, in_window, parse_fhir_date
from cds_service.facts.drug_names import form_route
from cds_service.facts.drugs import DrugMatch, DrugTables
from cds_service.facts.units import Quantity, convert

__all__ = [
    "MedicationFact", "medication_fact", "SOURCE_RANK", "daily_dose_mg", "overlap_days", "by_source_rank",
    "is_open", "start_of_period", "end_of_period", "last_dose_range", "dose_mg", "washout_window",
    "first_date_after", "DoseItem", "Contribution", "CumulativeDose", "cumulative_dose", "below_threshold_from",
]

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
    drug: DrugMatch | None = None  # its ingredients (facts.drugs), however the medication was coded or written
    prophylaxis: str | None = None  # the reason / dosage text / note by which the record itself says prophylaxis
    dose_note: str | None = None  # how the dose in mg was derived from the product ("1 tablet x 4 mg")

    @property
    def ingredients(self) -> tuple[str, ...]:
        return self.drug.names if self.drug is not None else ()

    route_text: str | None = None  # the route written without a code ("IV", "PO", "topical")

    @property
    def form_route(self) -> str | None:
        """"systemic" / "non-systemic" as an uncoded route text ("IV") or else the product's dose form (oral
        tablet, cream) says; None when neither does. Read only when the record has no coded route."""
        said = form_route(self.route_text)
        if said is not None:
            return said
        return self.drug.route if self.drug is not None else None

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


def _displays(concept: Any) -> tuple[tuple[str, str, str | None], ...]:
    if concept is None:
        return ()
    return tuple((c.system or "", c.code or "", c.display) for c in concept.coding or ())


def _medication_texts(res: Any, medications: Mapping[str, Any]
                      ) -> tuple[tuple[str | None, ...], tuple[tuple[str, str, str | None], ...]]:
    """The texts and (system, code, display) triples that name the medication, for the drug resolver."""
    concept = getattr(res, "medicationCodeableConcept", None)
    if concept is not None:
        return (concept.text,), _displays(concept)
    ref = getattr(res, "medicationReference", None)
    if ref is None:
        return (), ()
    med = _referenced(res, ref, medications)
    if med is None:
        return (ref.display,), ()
    code = getattr(med, "code", None)
    triples = list(_displays(code))
    for ing in getattr(med, "ingredient", None) or ():
        triples.extend(_displays(getattr(ing, "itemCodeableConcept", None)))
    return (code.text if code is not None else None, ref.display), tuple(triples)


def _referenced(res: Any, ref: Any, medications: Mapping[str, Any]) -> Any:
    target = ref.reference or ""
    if not target:
        return None
    if target.startswith("#"):
        for contained in res.contained or ():
            if getattr(contained, "id", None) == target[1:]:
                return contained
        return None
    key = target.rsplit("/", 1)[-1] if "/" in target else target
    return medications.get(key.removeprefix("urn:uuid:"))


def _resolve_medication(res: Any, medications: Mapping[str, Any]) -> tuple[tuple[Coding, ...], str | None]:
    concept = getattr(res, "medicationCodeableConcept", None)
    if concept is not None:
        return codings_of(concept), concept.text or next((c.display for c in concept.coding or () if c.display),
                                                         None)
    ref = getattr(res, "medicationReference", None)
    if ref is None or not ref.reference:
        return (), None
    med = _referenced(res, ref, medications)
    if med is None:
        return (), ref.display
    codes = list(codings_of(getattr(med, "code", None)))
    for ing in getattr(med, "ingredient", None) or ():
        codes.extend(codings_of(getattr(ing, "itemCodeableConcept", None)))
    display = None
    if getattr(med, "code", None) is not None:
        display = med.code.text or next((c.display for c in med.code.coding or () if c.display), None)
    return tuple(codes), display or ref.display


def _field(obj: Any, name: str) -> Any:
    """``obj.name``, or None when its type has no such field (the Dosage of a MedicationAdministration has
    ``dose`` and no ``timing``, a Dosage the reverse): a pydantic model's failing getattr costs ~100 us."""
    fields = getattr(type(obj), "model_fields", None)
    if fields is not None and name not in fields:
        return None
    return getattr(obj, name, None)


def _dose_of(dosage: Any) -> tuple[Quantity | None, float | None, tuple[Coding, ...]]:
    if dosage is None:
        return None, None, ()
    route = codings_of(getattr(dosage, "route", None))
    dose = None
    per_day = None
    q = _field(dosage, "dose")  # MedicationAdministration.dosage.dose
    if q is None:
        for dr in _field(dosage, "doseAndRate") or ():
            if dr.doseQuantity is not None:
                q = dr.doseQuantity
                break
    if q is not None and q.value is not None:
        dose = Quantity(float(q.value), q.code or q.unit)
    timing = _field(dosage, "timing")
    rep = timing.repeat if timing is not None else None
    if rep is not None and rep.frequency and rep.period and rep.periodUnit in _PERIOD_DAYS:
        per_day = float(rep.frequency) / (float(rep.period) * _PERIOD_DAYS[rep.periodUnit])
    return dose, per_day, route


def _stated_texts(res: Any, rtype: str) -> tuple[list[str | None], list[Coding]]:
    """Reason, dosage text and note of a medication record: where an order says what it is for."""
    texts: list[str | None] = []
    codings: list[Coding] = []
    reasons = _field(res, "reasonCode") or []
    for r in reasons:
        texts.append(r.text)
        texts.extend(c.display for c in r.coding or ())
        codings.extend(codings_of(r))
    for n in _field(res, "note") or ():
        texts.append(n.text)
    dosages = [res.dosage] if rtype == "MedicationAdministration" else list(
        _field(res, "dosage") or _field(res, "dosageInstruction") or [])
    for d in dosages:
        if d is None:
            continue
        texts.append(_field(d, "text"))
        texts.append(_field(d, "patientInstruction"))
        for extra in _field(d, "additionalInstruction") or ():
            texts.append(extra.text)
    return texts, codings


def _product_dose(dose: Quantity | None, drug: DrugMatch | None) -> tuple[Quantity | None, str | None]:
    """A dose counted in the product's units ("1 tablet") as milligrams of its ingredient, when the product says
    its strength (dexamethasone 4 MG Oral Tablet: 1 tablet = 4 mg)."""
    if dose is None or drug is None or convert(dose.value, dose.unit, "mg") is not None:
        return dose, None
    mg = drug.dose_mg(dose.value, dose.unit)
    if mg is None:
        return dose, None
    one = drug.ingredients[0]
    note = f"{_num(dose.value)} {dose.unit} x {_num(one.strength or 0)} {one.unit} {one.ingredient.name}"
    return Quantity(mg, "mg", dose.comparator), note


def medication_fact(res: Any, medications: Mapping[str, Any], drugs: DrugTables | None = None
                    ) -> MedicationFact | None:
    """The fact of one medication record (None when its status says it was not given / is in error).

    With ``drugs``, the medication is resolved to its ingredients (``facts.drugs``): their RxNorm ingredient
    and ATC codes are added to ``codings`` (after the record's own), so every value set that lists the
    ingredient or its ATC class recognises a product, a brand, a pack or plain text; a dose in the product's
    units becomes milligrams; and a reason or note saying "prophylaxis" is kept (E7).
    """
    rtype = res.__resource_type__ if hasattr(res, "__resource_type__") else type(res).__name__
    status = res.status
    if status not in _KEEP_STATUS.get(rtype, ()):
        return None
    codes, display = _resolve_medication(res, medications)
    drug = prophylaxis = None
    if drugs is not None:
        texts, triples = _medication_texts(res, medications)
        drug = drugs.resolve(codes, texts, triples)
        if drug is not None:
            codes = tuple(dict.fromkeys(codes + drug.codings))
        stated, reason_codes = _stated_texts(res, rtype)
        prophylaxis = drugs.states_prophylaxis(stated, reason_codes)
    recorded = None
    if rtype == "MedicationAdministration":
        period = choice_date(res, "effective")
        dose, per_day, route = _dose_of(res.dosage)
        ongoing = status == "in-progress"
    elif rtype == "MedicationStatement":
        period = choice_date(res, "effective")
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
                # An order's period without a start says nothing about when the drug was first given.
                period = period_range(p) if p.start else None
                break
        recorded = parse_fhir_date(res.authoredOn)
        if period is None and recorded is not None:
            # Only the order date is known: the drug was given on or after it (if at all).
            period = DateRange(recorded.start, recorded.end, recorded.display() + "..")
        ongoing = status in {"active", "on-hold"} and (period is None or period.text.endswith(".."))
    dose, dose_note = _product_dose(dose, drug)
    route_text = None
    if not route:
        dosages = [res.dosage] if rtype == "MedicationAdministration" else list(
            _field(res, "dosage") or _field(res, "dosageInstruction") or [])
        route_text = next((d.route.text for d in dosages if d is not None and _field(d, "route") is not None
                           and d.route.text), None)
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
        drug=drug,
        prophylaxis=prophylaxis,
        dose_note=dose_note,
        route_text=route_text,
    )


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


# --- dose and washout arithmetic (E2a, E2c) ---------------------------------------------------------------


def end_of_period(period: DateRange) -> DateRange | None:
    """The last day of a closed period ("a..b" -> b), the date itself for a single date, None if open."""
    text = period.text
    if ".." not in text:
        return period
    tail = text.split("..", 1)[1]
    if not tail:
        return None
    return parse_fhir_date(tail) or DateRange(period.end, period.end, tail)


def start_of_period(period: DateRange) -> DateRange:
    text = period.text
    if ".." in text:
        head = parse_fhir_date(text.split("..", 1)[0])
        if head is not None:
            return head
    return DateRange(period.start, period.start, text)


def is_open(period: DateRange | None) -> bool:
    """A period with a start and no end (an order or statement still running, or one that never said)."""
    return period is not None and period.text.endswith("..")


def last_dose_range(fact: MedicationFact, at: datetime) -> DateRange | None:
    """The instants at which the last dose of this record may have been given, as of ``at``.

    An administration: its date (or its period's end). A statement or order with an end: the end date, or
    ``at`` itself while a started period is due to end later. With a start and no end, the drug may have been
    given any time from the start until ``at`` (callers decide separately what an *ongoing* record means). None
    when the record has no date.
    """
    period = fact.period
    if period is None:
        return None
    start = start_of_period(period)
    if is_open(period):
        return DateRange(start.start, max(at, start.start), period.text)
    end = end_of_period(period) or period
    if end.start > at >= start.start:
        return DateRange(at, at, period.text)  # started and due to end later: still being given at ``at``
    return end


def dose_mg(fact: MedicationFact) -> float | None:
    """One dose in milligrams (None when not stated or not a mass unit)."""
    if fact.dose is None:
        return None
    return convert(fact.dose.value, fact.dose.unit, "mg")


def washout_window(half_life_hours: float | None, *, max_days: float, half_lives: float,
                   rule: str = "shorter") -> tuple[timedelta, str]:
    """The washout before apheresis for one drug, and how it was chosen.

    ``rule`` "shorter" (the protocol as written: "14 days or five half-lives, whichever was shorter") gives
    ``min(max_days, half_lives x t1/2)``; "longer" gives ``max()``. An unknown half-life gives ``max_days``,
    the longest window either reading can produce.
    """
    cap = timedelta(days=max_days)
    if half_life_hours is None:
        return cap, f"half-life unknown: {_num(max_days)} days used"
    by_half_life = timedelta(hours=half_lives * half_life_hours)
    hl_text = f"{_num(half_lives)} half-lives of {_duration(by_half_life)} (t1/2 {_num(half_life_hours)} h)"
    if rule == "longer":
        chosen = max(cap, by_half_life)
    elif rule == "shorter":
        chosen = min(cap, by_half_life)
    else:
        raise ValueError(f"unknown washout rule {rule!r}")
    if chosen == by_half_life:
        return chosen, hl_text
    return chosen, f"{_num(max_days)} days, {rule} than {hl_text}"


def first_date_after(moment: datetime, window: timedelta) -> date:
    """The first calendar date (UTC) on which ``(date - window, date]`` no longer contains ``moment``.

    That is the first midnight at or after ``moment + window``: the date a washout has passed.
    """
    end = moment + window
    day = end.date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=end.tzinfo)
    return day if end == midnight else day + timedelta(days=1)


def _num(value: float) -> str:
    return f"{value:g}" if abs(value - round(value)) > 1e-9 else str(int(round(value)))


def _duration(delta: timedelta) -> str:
    hours = delta / timedelta(hours=1)
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


@dataclass(frozen=True)
class DoseItem:
    """A record offered to a cumulative sum: its drug (for source preference) and its conversion factor.

    ``doubt`` says why the record might not count at all (a route to review, a statement of intent); such a
    record never adds to the sure total, only to what the total might be.
    """

    fact: MedicationFact
    drug: str
    factor: float | None
    note: str | None = None
    doubt: str | None = None


@dataclass(frozen=True)
class Contribution:
    """What one record adds to a window's cumulative dose (already multiplied by its factor)."""

    item: DoseItem
    mg: float | None  # None: the amount cannot be computed (no dose, no timing, no factor)
    last: datetime | None  # the latest instant of the record inside the window
    how: str  # "1 dose of 10 mg" / "10 mg/day x 3.5 days"
    why_doubtful: str | None = None  # None = surely inside the window and surely given


@dataclass(frozen=True)
class CumulativeDose:
    counted: tuple[Contribution, ...]
    doubtful: tuple[Contribution, ...]
    sources: Mapping[str, str]  # drug -> the resource type whose records were used

    @property
    def total(self) -> float:
        return round(sum(c.mg or 0.0 for c in self.counted), 6)

    @property
    def possible_extra(self) -> float | None:
        """How much the doubtful records could add (None when one of them cannot be quantified)."""
        if any(c.mg is None for c in self.doubtful):
            return None
        return round(sum(c.mg or 0.0 for c in self.doubtful), 6)


def _touches(fact: MedicationFact, start: datetime, end: datetime) -> bool:
    """Could this record have given a dose inside ``(start, end]``? Undated records could."""
    period = fact.period
    if period is None:
        return True
    if period.start > end:
        return False  # planned / future
    if fact.source == "MedicationAdministration" and not is_open(period):
        last = end_of_period(period) or period
        return last.end > start
    if is_open(period):
        return True  # from its start until today, or still running
    return period.end > start


def _period_contribution(item: DoseItem, start: datetime, end: datetime) -> Contribution:
    fact = item.fact
    period = fact.period
    assert period is not None
    daily = daily_dose_mg(fact)
    s_part = start_of_period(period)
    e_part = None if is_open(period) else end_of_period(period)
    # A whole day given as a date counts as the whole day; a month or year can only bound the period.
    loose_start = s_part.start
    tight_start = s_part.start if s_part.is_exact else s_part.end
    if e_part is None:
        loose_end = tight_end = end
    else:
        loose_end = e_part.end
        tight_end = e_part.end if e_part.is_exact else e_part.start
    lo_days = max(0.0, (min(tight_end, end) - max(tight_start, start)) / timedelta(days=1))
    hi_days = max(0.0, (min(loose_end, end) - max(loose_start, start)) / timedelta(days=1))
    last = min(loose_end, end)
    doubt = item.doubt
    if e_part is None and not fact.ongoing:
        doubt = doubt or f"{fact.source} is {fact.status} with no end date: days taken in the window unknown"
    elif hi_days - lo_days > 1e-9:
        doubt = doubt or "its dates are too imprecise to count the days in the window"
    if daily is None or item.factor is None:
        missing = "an equivalence factor" if item.factor is None else "a dose and frequency in mg"
        return Contribution(item, None, last, f"no usable dose ({missing} not recorded)",
                            doubt or f"{missing} not recorded")
    per_day = daily * item.factor
    if doubt:
        return Contribution(item, per_day * hi_days, last, f"{_num(daily)} mg/day x up to {hi_days:.2f} days", doubt)
    return Contribution(item, per_day * lo_days, last, f"{_num(daily)} mg/day x {lo_days:.2f} days")


def _administration_contribution(item: DoseItem, start: datetime, end: datetime) -> Contribution:
    fact = item.fact
    period = fact.period
    when = None if period is None else (end_of_period(period) or period)
    inside = Result.UNKNOWN
    if when is not None:
        inside = in_window(when, start, end)
    mg = dose_mg(fact)
    doubt = item.doubt
    if inside is not Result.MET:
        doubt = doubt or ("undated" if when is None else "its date cannot place it inside or outside the window")
    last = None if when is None else min(when.end, end)
    if mg is None or item.factor is None:
        missing = "an equivalence factor" if item.factor is None else "a dose in mg"
        return Contribution(item, None, last, f"no usable dose ({missing} not recorded)",
                            doubt or f"{missing} not recorded")
    return Contribution(item, mg * item.factor, last, f"1 dose of {_num(mg)} mg", doubt)


def cumulative_dose(items: Iterable[DoseItem], start: datetime, end: datetime) -> CumulativeDose:
    """The factor-weighted dose given in ``(start, end]``, one best source per drug.

    Per drug, only the best kind of record that reaches into the window is used: administrations, else
    statements, else orders ("orders are not administrations"; mixing them would count the same dose twice).
    An administration counts its one dose; a statement or order counts its daily dose times the days of the
    window it covers (fractional days; an ongoing one runs to ``end``). Records whose date, dose, factor or
    status leaves the amount in doubt are returned apart, never added to the sure total.
    """
    by_drug: dict[str, list[DoseItem]] = {}
    for item in items:
        if _touches(item.fact, start, end):
            by_drug.setdefault(item.drug, []).append(item)
    counted: list[Contribution] = []
    doubtful: list[Contribution] = []
    sources: dict[str, str] = {}
    for drug, group in by_drug.items():
        best = min(SOURCE_RANK.get(i.fact.source, 9) for i in group)
        for item in group:
            if SOURCE_RANK.get(item.fact.source, 9) != best:
                continue
            sources[drug] = item.fact.source
            if item.fact.period is None:
                c = Contribution(item, None, None, "undated", item.doubt or "undated")
            elif item.fact.source == "MedicationAdministration":
                c = _administration_contribution(item, start, end)
            else:
                c = _period_contribution(item, start, end)
            (doubtful if c.why_doubtful else counted).append(c)
    counted.sort(key=lambda c: c.last or end)
    return CumulativeDose(tuple(counted), tuple(doubtful), sources)


def below_threshold_from(counted: Iterable[Contribution], threshold: float, window: timedelta) -> date | None:
    """The first date on which the sure doses still inside the window add up to less than ``threshold``.

    Assumes no further doses. Doses leave the window in date order; a statement's or order's days are taken
    to leave with its last day (later than they really do, so the date is never too early).
    """
    items = sorted((c for c in counted if c.mg is not None and c.last is not None), key=lambda c: c.last)
    total = round(sum(c.mg for c in items), 6)
    if total < threshold:
        return None
    for c in items:
        total = round(total - c.mg, 6)
        if total < threshold:
            return first_date_after(c.last, window)
    return None
