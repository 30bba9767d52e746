"""Computed facts that show their inputs: Cockcroft-Gault creatinine clearance and the current daily
prednisone-equivalent corticosteroid dose.

A computed value is only as good as its inputs, so each result carries the Evidence of every input (resource
reference, value, unit, date) and, when it cannot be computed, one sentence saying which input is missing.

Cockcroft-Gault (I7c), as in the original publication, with actual body weight:

    CrCl (mL/min) = (140 - age) x weight_kg / (72 x SCr_mg/dL)   (x 0.85 for a female patient)

* SCr: the latest final serum creatinine within the ``labs`` recency window, converted to mg/dL through UCUM
  and the value set's molar mass (umol/L / 88.4). A code the value set flags for review (whole-blood creatinine)
  is used only as a reason for UNKNOWN. eGFR (mL/min/1.73 m2) and measured 24-h clearance are never used (value
  set ``egfr-not-crcl``); a lab-reported Cockcroft-Gault value is shown as a cross-check, never used (labs may
  use ideal body weight).
* Weight: the measured body weight closest to the SCr, within ``recency_days.weight_for_crcl_max_days_from_
  creatinine`` days of it (whole calendar days, either side), converted to kg ([lb_av], g). A stated
  (self-reported) weight alone is UNKNOWN (review flag in the value set).
* Age: completed years at the SCr date (a partial birth date gives every age it allows).
* Sex: ``facts.sex`` (birth-sex extension, else gender); unknown -> both the male and female values are given.

Censored inputs keep their direction: SCr "<0.4 mg/dL" gives a CrCl *above* the computed value. The result is a
set of estimates (one per possible sex and age); a threshold decides only if every estimate agrees.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta

from cds_service.criteria.result import Evidence, Result
from cds_service.facts.clinical import ObservationFact
from cds_service.facts.dates import DateRange
from cds_service.facts.index import Facts, evidence_of
from cds_service.facts.medications import MedicationFact, daily_dose_mg
from cds_service.facts.units import Quantity, convert

__all__ = [
    "CREATININE",
    "WEIGHT",
    "STEROIDS",
    "Estimate",
    "CreatinineClearance",
    "creatinine_clearance",
    "cockcroft_gault",
    "SteroidDose",
    "current_steroid_dose",
    "HCG",
    "PregnancyTest",
    "pregnancy_test",
]

CREATININE = "creatinine"
WEIGHT = "body-weight"
EGFR = "egfr-not-crcl"
REPORTED_CRCL = "creatinine-clearance-reported"
STEROIDS = "systemic-corticosteroids"
SYSTEMIC_ROUTES = "systemic-routes"
NON_SYSTEMIC_ROUTES = "non-systemic-routes"

_MG_DL = "mg/dL"
_KG = "kg"
_ML_MIN = "mL/min"


def cockcroft_gault(age_years: float, weight_kg: float, scr_mg_dl: float, female: bool,
                    female_factor: float = 0.85) -> float:
    """Creatinine clearance in mL/min by Cockcroft-Gault (actual body weight)."""
    crcl = (140 - age_years) * weight_kg / (72 * scr_mg_dl)
    return crcl * female_factor if female else crcl


@dataclass(frozen=True)
class Estimate:
    """One Cockcroft-Gault value, for one possible sex and age (several when sex or birth date are uncertain)."""

    sex: str
    age_years: int
    value: Quantity  # mL/min, with a comparator when an input was censored

    def display(self) -> str:
        return f"{self.value.comparator or ''}{self.value.value:.1f} mL/min ({self.sex}, age {self.age_years})"


@dataclass(frozen=True)
class CreatinineClearance:
    """A computed CrCl with the evidence of every input, or why it could not be computed (``missing``)."""

    estimates: tuple[Estimate, ...]
    evidence: tuple[Evidence, ...]
    missing: str | None = None

    def above(self, limit: float) -> Result:
        """Is CrCl > limit? MET only if every estimate says so, NOT_MET only if none does."""
        if self.missing is not None or not self.estimates:
            return Result.UNKNOWN
        answers = {e.value.greater_than(limit) for e in self.estimates}
        if answers == {True}:
            return Result.MET
        if answers == {False}:
            return Result.NOT_MET
        return Result.UNKNOWN

    def display(self) -> str:
        return "; ".join(e.display() for e in self.estimates)


def _in_unit(facts: Facts, obs: ObservationFact, value_set: str, unit: str) -> Quantity | None:
    """The observation's value in ``unit`` (through the value set's canonical unit and molar mass)."""
    q = facts.value_in(obs, value_set)
    if q is None or q.unit == unit:
        return q
    vs = facts.tables[value_set]
    value = convert(q.value, q.unit, unit, molar_mass=vs.molar_mass, aliases=vs.unit_aliases)
    return None if value is None else Quantity(value, unit, q.comparator)


def _review(facts: Facts, fact: object, value_set: str) -> str | None:
    concept = facts.concept(fact, value_set)
    return concept.review if concept is not None and concept.review else None


def _usable_review_free(facts: Facts, items: tuple[ObservationFact, ...] | list[ObservationFact],
                        value_set: str) -> tuple[list[ObservationFact], list[ObservationFact]]:
    """Split results into those that can be used as they are and those whose code the value set flags for review."""
    plain, review = [], []
    for obs in items:
        concept = facts.concept(obs, value_set)
        (review if concept is not None and concept.review else plain).append(obs)
    return plain, review


def _day_span(a: DateRange, b: DateRange) -> int:
    """The largest number of calendar days between any day of ``a`` and any day of ``b``."""
    return max(abs((a.end.date() - b.start.date()).days), abs((b.end.date() - a.start.date()).days))


def _ages_at(birth: DateRange, when: DateRange) -> list[int]:
    # Completed years between calendar dates, for every day the (possibly partial) dates can denote.
    ages = {relativedelta(w.date(), b.date()).years for w in (when.start, when.end) for b in (birth.start, birth.end)}
    return sorted(ages)


_UP = {">", ">="}
_DOWN = {"<", "<="}


def _direction(scr_comparator: str | None, weight_comparator: str | None) -> tuple[bool, str | None]:
    """The comparator of the CrCl from its inputs' comparators: (ok, comparator); not ok if they pull apart.

    CrCl falls as SCr rises and rises with weight, so SCr "<" and weight ">" both make CrCl ">".
    """
    parts = []
    if scr_comparator in _DOWN:
        parts.append(">" if scr_comparator == "<" else ">=")
    elif scr_comparator in _UP:
        parts.append("<" if scr_comparator == ">" else "<=")
    if weight_comparator in _UP | _DOWN:
        parts.append(weight_comparator)
    if not parts:
        return True, None
    if all(p in _UP for p in parts):
        return True, ">" if ">" in parts else ">="
    if all(p in _DOWN for p in parts):
        return True, "<" if "<" in parts else "<="
    return False, None


def creatinine_clearance(facts: Facts) -> CreatinineClearance:
    """Cockcroft-Gault creatinine clearance from the record, with its inputs as evidence."""
    sel = facts.results(CREATININE, "labs")
    plain, review = _usable_review_free(facts, sel.current, CREATININE)
    if not plain:
        if review:
            concept = facts.concept(review[0], CREATININE)
            why = concept.review if concept is not None else "review"
            return CreatinineClearance((), (evidence_of(review[0], note=why),),
                                       f"the only recent creatinine ({review[0].ref}) needs review: {why}")
        ev = tuple(evidence_of(o, note="preliminary") for o in sel.preliminary[:1])
        if sel.stale is not None:
            ev += (evidence_of(sel.stale, note="too old to count"),)
        why = facts.no_recent_reason(sel, "serum creatinine", "labs").rstrip(".")
        egfr = facts.observations(EGFR)
        if egfr:
            ev += (evidence_of(egfr[0], note="not a Cockcroft-Gault clearance: not used"),)
            why += " (an eGFR or measured clearance is recorded, but it is not a Cockcroft-Gault clearance)"
        return CreatinineClearance((), ev, why)
    scr = plain[0]
    scr_q = _in_unit(facts, scr, CREATININE, _MG_DL)
    original = scr.quantity.display() if scr.quantity is not None else "no value"
    if scr_q is None:
        return CreatinineClearance((), (evidence_of(scr),),
                                   f"the creatinine value of {scr.ref} ({original}) has a missing or "
                                   "unconvertible unit")
    if scr_q.value <= 0:
        return CreatinineClearance((), (evidence_of(scr),), f"the creatinine value of {scr.ref} is not positive")
    scr_ev = evidence_of(scr, value=f"{scr_q.display()}", note=f"serum creatinine as recorded: {original}")
    evidence: list[Evidence] = [scr_ev]

    # Weight measured closest to the creatinine, within the configured number of days.
    max_days = facts.rules.recency_days["weight_for_crcl_max_days_from_creatinine"]
    weights = []
    for w in facts.observations(WEIGHT):
        if w.preliminary or w.effective is None or w.effective.start > facts.at:
            continue
        kg = _in_unit(facts, w, WEIGHT, _KG)
        if kg is None or kg.value <= 0:
            continue
        weights.append((w, kg))
    if not weights:
        return CreatinineClearance((), tuple(evidence), "no usable body weight is recorded")
    near = [(w, kg) for w, kg in weights if _day_span(w.effective, scr.effective) <= max_days]
    if not near:
        closest = min(weights, key=lambda p: _day_span(p[0].effective, scr.effective))[0]
        evidence.append(evidence_of(closest, note=f"more than {max_days} days from the creatinine"))
        return CreatinineClearance((), tuple(evidence),
                                   f"no body weight within {max_days} days of the creatinine of "
                                   f"{scr.effective.display()} (closest: {closest.effective.display()})")
    measured = [p for p in near if not _review(facts, p[0], WEIGHT)]
    if not measured:
        stated = near[0][0]
        evidence.append(evidence_of(stated, note=f"review: {_review(facts, stated, WEIGHT)}"))
        return CreatinineClearance((), tuple(evidence), f"the only body weight near the creatinine ({stated.ref}) "
                                   f"needs review: {_review(facts, stated, WEIGHT)}")
    weight, kg = min(measured, key=lambda p: (_day_span(p[0].effective, scr.effective),
                                              -p[0].effective.start.timestamp()))
    recorded = weight.quantity.display() if weight.quantity else ""
    evidence.append(evidence_of(weight, value=kg.display(), note=f"body weight; as recorded: {recorded}"))

    # Age at the creatinine date.
    birth = facts.birth_date
    if birth is None:
        return CreatinineClearance((), tuple(evidence), "the patient's date of birth is not recorded")
    ages = _ages_at(birth, scr.effective)
    age_text = "-".join(str(a) for a in ages)
    evidence.append(Evidence(facts.patient_ref, value=f"age {age_text} on {scr.effective.display()}",
                             date=birth.display(), note="birthDate; age at the creatinine date"))

    # Sex: unknown -> both.
    sex = facts.sex
    sexes = [sex] if sex in ("male", "female") else ["male", "female"]
    evidence.append(Evidence(facts.patient_ref, value=sex or "unknown",
                             note="sex for Cockcroft-Gault" if sex else
                             "sex unknown: computed for both male and female"))

    ok, comparator = _direction(scr_q.comparator, kg.comparator)
    if not ok:
        return CreatinineClearance((), tuple(evidence),
                                   "the creatinine and weight are censored in opposite directions")
    factor = facts.rules.thresholds["crcl_female_factor"]
    estimates = tuple(
        Estimate(s, a, Quantity(cockcroft_gault(a, kg.value, scr_q.value, s == "female", factor), _ML_MIN,
                                comparator))
        for s in sexes for a in ages
    )
    reported = facts.results(REPORTED_CRCL, "labs").latest
    if reported is not None:
        # A lab-reported Cockcroft-Gault value is shown for cross-checking only: labs may use ideal body weight.
        evidence.append(evidence_of(reported, note="lab-reported Cockcroft-Gault, cross-check only (not used)"))
    return CreatinineClearance(estimates, tuple(evidence))


# --- corticosteroids ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteroidDose:
    """Current systemic corticosteroid exposure in prednisone-equivalent mg/day.

    ``total_mg`` sums the records whose daily dose could be computed (None when there are none);
    ``undetermined`` lists current steroid records whose dose, timing or equivalence factor is not stated.
    """

    total_mg: float | None
    parts: tuple[Evidence, ...]
    undetermined: tuple[Evidence, ...]

    @property
    def any_current(self) -> bool:
        return bool(self.parts or self.undetermined)


def _route(facts: Facts, fact: MedicationFact) -> str:
    """"systemic", "non-systemic" or "unknown" (a route in neither table). No route stated: systemic (noted)."""
    if not fact.route:
        return "systemic"
    if facts.codes_in(fact.route, NON_SYSTEMIC_ROUTES) is not None:
        return "non-systemic"
    if facts.codes_in(fact.route, SYSTEMIC_ROUTES) is not None:
        return "systemic"
    return "unknown"


def _current(fact: MedicationFact, at: datetime) -> bool:
    """An order or statement in force at ``at``, or an administration within the 24 hours before it."""
    if fact.period is None:
        return fact.ongoing
    if fact.source == "MedicationAdministration":
        return at - timedelta(days=1) < fact.period.end <= at or (fact.ongoing and fact.period.start <= at)
    if fact.period.start > at:
        return False
    return fact.ongoing or fact.period.end >= at


def current_steroid_dose(facts: Facts) -> SteroidDose:
    """Prednisone-equivalent daily dose of the systemic corticosteroids in use at ``facts.at``.

    Per drug the best source wins (administrations in the last 24 hours > statements > orders), so an order
    and its administrations are not counted twice. Equivalence factors come from the value set
    (``prednisone_factor``: dexamethasone 6.67, methylprednisolone 1.25, hydrocortisone 0.25...).
    """
    by_drug: dict[str, list[tuple[int, MedicationFact, Any]]] = {}
    rank = {"MedicationAdministration": 0, "MedicationStatement": 1, "MedicationRequest": 2}
    undetermined: list[Evidence] = []
    for fact in facts.medications(STEROIDS):
        route = _route(facts, fact)
        if route == "non-systemic" or not _current(fact, facts.at):
            continue
        if route == "unknown":
            undetermined.append(evidence_of(fact, note="current corticosteroid by a route not known to be systemic"))
            continue
        concept = facts.concept(fact, STEROIDS)
        key = f"{concept.system}|{concept.code}" if concept is not None else fact.ref
        by_drug.setdefault(key, []).append((rank.get(fact.source, 9), fact, concept))
    total = 0.0
    counted = False
    parts: list[Evidence] = []
    for items in by_drug.values():
        best = min(r for r, _f, _c in items)
        chosen = [(f, c) for r, f, c in items if r == best]
        for fact, concept in chosen:
            factor = concept.prednisone_factor if concept is not None else None
            if fact.source == "MedicationAdministration":
                mg = convert(fact.dose.value, fact.dose.unit, "mg") if fact.dose is not None else None
                per = "given in the last 24 hours"
            else:
                mg = daily_dose_mg(fact)
                per = "per day"
            if fact.flagged:
                undetermined.append(evidence_of(fact, note="statement of intended use: confirm"))
                continue
            if mg is None or factor is None:
                what = "dose or frequency not stated"
                if factor is None:
                    what = concept.review if concept is not None and concept.review else "no equivalence factor"
                undetermined.append(evidence_of(fact, note=f"current corticosteroid, {what}"))
                continue
            pred = mg * factor
            total += pred
            counted = True
            route_note = "" if fact.route else "; no route stated, counted as systemic"
            parts.append(evidence_of(fact, value=f"{pred:.1f}", unit="mg/day prednisone-equivalent",
                                     note=f"{mg:g} mg {per} x {factor:g} ({fact.display or 'corticosteroid'})"
                                          f"{route_note}"))
    return SteroidDose(total if counted else None, tuple(parts), tuple(undetermined))


# --- pregnancy test ----------------------------------------------------------------------------------------------

HCG = "hcg"


@dataclass(frozen=True)
class PregnancyTest:
    """The latest recent hCG result and its call: MET = positive, NOT_MET = negative, UNKNOWN = no call.

    ``missing`` says why there is no usable result (none, stale or preliminary only).
    """

    call: Result
    obs: ObservationFact | None
    evidence: tuple[Evidence, ...]
    missing: str | None = None


def pregnancy_test(facts: Facts) -> PregnancyTest:
    """The latest hCG within the ``hcg`` recency window, read as positive or negative.

    The lab's own call (interpretation, coded or text value) decides first; a bare quantity is compared with
    the same Observation's reference-range upper limit (the lab's cut-off). Without either there is no call.
    """
    sel = facts.results(HCG, "hcg")
    obs = sel.latest
    if obs is None:
        ev = tuple(evidence_of(o, note="preliminary") for o in sel.preliminary[:1])
        if sel.stale is not None:
            ev += (evidence_of(sel.stale, note="too old to count"),)
        return PregnancyTest(Result.UNKNOWN, None, ev, facts.no_recent_reason(sel, "hCG", "hcg"))
    call = facts.qualitative(obs)
    note = None
    if call is Result.UNKNOWN and obs.quantity is not None:
        cutoff, _why = facts.uln(obs, HCG)
        value = facts.value_in(obs, HCG)
        if cutoff is not None and value is not None:
            above = value.greater_than(cutoff.value)
            call = Result.of(above)
            note = f"lab cut-off {cutoff.display()}"
    if call is Result.UNKNOWN:
        note = "no positive/negative call and no cut-off to compare with"
    label = {Result.MET: "positive", Result.NOT_MET: "negative", Result.UNKNOWN: "undetermined"}[call]
    return PregnancyTest(call, obs, (evidence_of(obs, note=f"hCG {label}" + (f"; {note}" if note else "")),))
