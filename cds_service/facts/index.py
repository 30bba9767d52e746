"""``Facts``: a patient's record normalised and indexed once, for every criterion to query.

Each usable resource becomes a fact (``facts.clinical``, ``facts.medications``) and is filed under every value
set its codes belong to, so a criterion's question ("ALT results in the last 28 days") is a dict lookup, not
a scan of the record. The helpers here answer the questions criteria share: which results are recent enough,
a value in the analyte's canonical unit, the upper limit of normal from the same Observation, whether a
qualitative result is positive, and whether a kind of data is missing or unreadable (which turns
"none recorded" into UNKNOWN).

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cds_service.config import Knowledge
from cds_service.criteria.result import Evidence, Result
from cds_service.facts.clinical import (
    AllergyFact,
    ComponentFact,
    ConditionFact,
    ImmunizationFact,
    ObservationFact,
    ProcedureFact,
    allergy_fact,
    condition_fact,
    immunization_fact,
    observation_fact,
    procedure_fact,
)
from cds_service.facts.codes import Concept
from cds_service.facts.dates import DateRange, ensure_aware, parse_fhir_date
from cds_service.facts.drugs import DrugTables
from cds_service.facts.medications import MedicationFact, medication_fact
from cds_service.facts.units import Quantity, convert
from cds_service.gather.record import DataProblem, PatientRecord

__all__ = ["Facts", "Selection", "evidence_of"]

F = TypeVar("F")

_MALE = {"male", "M", "248153007"}
_FEMALE = {"female", "F", "248152002"}
_BIRTHSEX_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


@dataclass(frozen=True)
class Selection:
    """Results for one question: the usable ones newest first, and what was set aside and why."""

    current: tuple[ObservationFact, ...]
    stale: ObservationFact | None  # the newest result that is too old to count
    preliminary: tuple[ObservationFact, ...]
    conflict: tuple[ObservationFact, ...] = ()  # final results at the newest instant that disagree
    # (newer preliminary / registered result, the older final one it disagrees with): the test is open
    superseded: tuple[ObservationFact, ...] = ()

    @property
    def latest(self) -> ObservationFact | None:
        return self.current[0] if self.current else None


def evidence_of(fact: Any, value: Any = None, unit: str | None = None, note: str | None = None) -> Evidence:
    """Evidence pointing at a fact: its reference, date and (given or own) value."""
    date = getattr(fact, "date", None)
    code = None
    codings = getattr(fact, "codings", ())
    if codings:
        code = f"{codings[0][0]}|{codings[0][1]}" if codings[0][0] else codings[0][1]
    if value is None and isinstance(fact, ObservationFact) and fact.quantity is not None:
        value, unit = fact.quantity.display(), None
    return Evidence(
        reference=fact.ref,
        value=value,
        unit=unit,
        date=date.display() if isinstance(date, DateRange) else None,
        code=code,
        display=getattr(fact, "display", None),
        note=note,
    )


class Facts:
    """The normalised, indexed record of one patient, evaluated at ``at``."""

    def __init__(self, record: PatientRecord, at: datetime, knowledge: Knowledge) -> None:
        self.record = record
        self.at = ensure_aware(at)
        self.tables = knowledge.tables
        self.rules = knowledge.rules
        self.drugs = knowledge.drugs
        self.patient_ref = record.patient_ref
        medications = {m.id: m for m in record.of_type("Medication") if m.id}
        self._by_set: dict[str, dict[str, list[Any]]] = {}
        self._all: dict[str, list[Any]] = {}
        self._unrecognised: dict[str, list[Any]] = {}
        builders: dict[str, Callable[[Any], Any]] = {
            "Condition": condition_fact,
            "Observation": observation_fact,
            "Procedure": procedure_fact,
            "Immunization": lambda r: _with_vaccine_codes(immunization_fact(r), self.drugs),
            "AllergyIntolerance": lambda r: _with_ingredients(allergy_fact(r), self.drugs),
            "MedicationAdministration": lambda r: medication_fact(r, medications, self.drugs),
            "MedicationStatement": lambda r: medication_fact(r, medications, self.drugs),
            "MedicationRequest": lambda r: medication_fact(r, medications, self.drugs),
        }
        for rtype, build in builders.items():
            group = "Medication" if rtype.startswith("Medication") else rtype
            for res in record.of_type(rtype):
                fact = build(res)
                if fact is None:
                    continue
                self._all.setdefault(group, []).append(fact)
                codings = fact.all_codings if isinstance(fact, AllergyFact) else fact.codings
                if isinstance(fact, ProcedureFact):
                    codings = codings + fact.category
                for vs in self.tables.matching_sets(codings):
                    self._by_set.setdefault(group, {}).setdefault(vs, []).append(fact)
        # Newest first everywhere, so "latest" is the first item; undated facts last.
        for group in self._by_set.values():
            for items in group.values():
                items.sort(key=_newest_first)

    # --- the patient -------------------------------------------------------------------------------------
    @property
    def patient(self) -> Any | None:
        return self.record.patient

    @property
    def birth_date(self) -> DateRange | None:
        p = self.record.patient
        return parse_fhir_date(p.birthDate) if p is not None and p.birthDate is not None else None

    @property
    def deceased(self) -> bool:
        p = self.record.patient
        return p is not None and (p.deceasedBoolean is True or p.deceasedDateTime is not None)

    @property
    def sex(self) -> str | None:
        """Biological sex for formulas: the US Core birth-sex extension if present, else Patient.gender."""
        p = self.record.patient
        if p is None:
            return None
        for ext in p.extension or ():
            if ext.url == _BIRTHSEX_URL and ext.valueCode in ("F", "M"):
                return "female" if ext.valueCode == "F" else "male"
        return p.gender if p.gender in ("male", "female") else None

    # --- queries by value set ----------------------------------------------------------------------------
    def _facts(self, group: str, value_set: str) -> list[Any]:
        if value_set not in self.tables:
            raise KeyError(f"criterion asks for unknown value set {value_set!r}")
        return self._by_set.get(group, {}).get(value_set, [])

    def conditions(self, value_set: str) -> list[ConditionFact]:
        return self._facts("Condition", value_set)

    def observations(self, value_set: str) -> list[ObservationFact]:
        return self._facts("Observation", value_set)

    def procedures(self, value_set: str) -> list[ProcedureFact]:
        return self._facts("Procedure", value_set)

    def immunizations(self, value_set: str) -> list[ImmunizationFact]:
        return self._facts("Immunization", value_set)

    def allergies(self, value_set: str) -> list[AllergyFact]:
        return self._facts("AllergyIntolerance", value_set)

    def medications(self, value_set: str) -> list[MedicationFact]:
        return self._facts("Medication", value_set)

    def all_of_kind(self, group: str) -> list[Any]:
        return self._all.get(group, [])

    def concept(self, fact: Any, value_set: str) -> Concept | None:
        """The value-set entry a fact matched (for its qualifier, review note, factor or half-life)."""
        codings = fact.all_codings if isinstance(fact, AllergyFact) else fact.codings
        if isinstance(fact, ProcedureFact):
            codings = codings + fact.category
        return self.tables.best_match(codings, value_set)

    def codes_in(self, codings: Iterable[tuple[str, str]], value_set: str) -> Concept | None:
        return self.tables.match_codings(codings, value_set)

    # --- time --------------------------------------------------------------------------------------------
    def days_ago(self, days: float) -> datetime:
        return self.at - timedelta(days=days)

    def recency_start(self, key: str) -> datetime | None:
        """Start of the window in which results of kind ``key`` still count (None = any date)."""
        days = self.rules.recency_days[key]
        return None if days is None else self.days_ago(days)

    # --- results -----------------------------------------------------------------------------------------
    def results(self, value_set: str, recency: str) -> Selection:
        """Usable results of a value set: final/amended/corrected, dated, not after ``at``, within recency."""
        start = self.recency_start(recency)
        current: list[ObservationFact] = []
        preliminary: list[ObservationFact] = []
        stale = None
        for obs in self.observations(value_set):
            if obs.effective is None or obs.effective.start > self.at:
                continue
            if obs.absent is not None and obs.quantity is None and not obs.value_codings and not obs.components:
                continue
            if start is not None and obs.effective.end <= start:
                if stale is None and not obs.preliminary:
                    stale = obs
                continue
            (preliminary if obs.preliminary else current).append(obs)
        # Two final results of one test at the same instant that disagree (a duplicate interface message, a
        # corrected value sent as a new resource): which is right cannot be known, so neither decides and the
        # question stays open (reference 1.2: conflicting data is never resolved by a guess).
        if len(current) > 1 and current[1].effective.start == current[0].effective.start:
            # Same instant and the same test code (two methods, e.g. LVEF by 2D echo and visual estimate, are
            # two measurements that the criterion weighs itself, not a conflict).
            first_codes = set(current[0].codings)
            tied = [o for o in current if o.effective.start == current[0].effective.start
                    and first_codes & set(o.codings)]
            if len(tied) > 1 and len({_value_signature(o) for o in tied}) > 1:
                return Selection((), stale, tuple(preliminary), tuple(tied))
        # A newer preliminary or registered result with a value that disagrees with the latest final one: the
        # final one is no longer the current state and the newer one is not final, so neither decides (issue 9:
        # UNKNOWN, never met on the older value). One that agrees, or has no value yet, leaves the final one.
        if current and preliminary:
            latest = current[0]
            newer = [o for o in preliminary if o.effective.start > latest.effective.start and _has_value(o)
                     and _value_signature(o) != _value_signature(latest)]
            if newer:
                newest = max(newer, key=lambda o: (o.effective.start, o.ref))
                return Selection((), stale, tuple(preliminary), superseded=(newest, latest))
        return Selection(tuple(current), stale, tuple(preliminary))

    def no_recent_reason(self, sel: Selection, what: str, recency: str) -> str:
        """One sentence for "there is no usable result" that says what was found instead."""
        days = self.rules.recency_days[recency]
        window = f" in the {days} days before {self.at.date().isoformat()}" if days is not None else ""
        if sel.superseded:
            new, old = sel.superseded
            return (f"A newer {new.status} {what} result ({new.ref}, {new.effective.display()}) disagrees with the "
                    f"latest final one ({old.ref}, {old.effective.display()}); the test is open until the newer "
                    "result is final.")
        if sel.conflict:
            refs = ", ".join(o.ref for o in sel.conflict)
            return f"The latest {what} results disagree at the same time ({refs}); review which is right."
        if sel.preliminary:
            return f"Only a preliminary {what} result{window} ({sel.preliminary[0].ref}); a final result is needed."
        if sel.stale is not None:
            d = sel.stale.effective.display() if sel.stale.effective else "undated"
            return f"No {what} result{window}; the latest ({d}) is too old to count."
        return f"No {what} result{window}."

    def value_in(self, item: ObservationFact | ComponentFact, value_set: str) -> Quantity | None:
        """The item's value converted to the value set's canonical unit (None if missing or not convertible)."""
        q = item.quantity
        if q is None:
            return None
        vs = self.tables[value_set]
        if vs.unit is None:
            return q
        value = convert(q.value, q.unit, vs.unit, molar_mass=vs.molar_mass, aliases=vs.unit_aliases)
        return None if value is None else Quantity(value, vs.unit, q.comparator)

    def uln(self, obs: ObservationFact, value_set: str) -> tuple[Quantity | None, str | None]:
        """Upper limit of normal from the Observation's own referenceRange.high, in canonical units.

        Returns (uln, None) or (None, why). A range with ``appliesTo`` is used only when it fits the patient's
        sex; several different fitting highs are a conflict (UNKNOWN), never resolved by a guess.
        """
        vs = self.tables[value_set]
        highs: list[Quantity] = []
        sex = self.sex
        for _low, high, applies in obs.ranges:
            if high is None:
                continue
            sex_codes = {c for _s, c in applies} & (_MALE | _FEMALE)
            if sex_codes and not sex_codes & (_MALE if sex == "male" else _FEMALE if sex == "female" else set()):
                continue  # a range for the other sex (or for a sex we do not know)
            unit = high.unit or (obs.quantity.unit if obs.quantity else None)
            value = convert(high.value, unit, vs.unit, molar_mass=vs.molar_mass,
                            aliases=vs.unit_aliases) if vs.unit else high.value
            if value is None:
                return None, f"the reference range of {obs.ref} has a unit that cannot be converted"
            highs.append(Quantity(value, vs.unit))
        if not highs:
            return None, f"{obs.ref} has no reference range upper limit (ULN)"
        if max(h.value for h in highs) - min(h.value for h in highs) > 1e-9:
            return None, f"{obs.ref} has conflicting reference ranges"
        return highs[0], None

    def qualitative(self, item: ObservationFact | ComponentFact) -> Result:
        """Positive (MET), negative (NOT_MET) or undecidable (UNKNOWN) for a presence-type result.

        Order of preference (reference E12): interpretation, then a coded value, then a text value, then a
        boolean, then a censored quantity ("<20 IU/mL" = below the limit of detection = negative).
        """
        for codings in (item.interpretation, item.value_codings):
            if not codings:
                continue
            if self.codes_in(codings, "result-positive") is not None:
                return Result.MET
            if self.codes_in(codings, "result-negative") is not None:
                return Result.NOT_MET
        if item.text:
            text = item.text.strip().lower()
            if text in self.rules.qualitative_text["positive"]:
                return Result.MET
            if text in self.rules.qualitative_text["negative"]:
                return Result.NOT_MET
        boolean = getattr(item, "boolean", None)
        if boolean is not None:
            return Result.of(boolean)
        q = item.quantity
        if q is not None and q.comparator in ("<", "<="):
            return Result.NOT_MET
        return Result.UNKNOWN

    # --- completeness ------------------------------------------------------------------------------------
    def gap(self, kinds: Iterable[str], value_set: str | None = None) -> str | None:
        """Why "none recorded" cannot be said for these kinds of data, or None if it can.

        A kind that could not be retrieved, or a resource of that kind that could not be read and might have
        matched (its codes match the value set, or it had no readable code), leaves the answer open.
        """
        kinds = tuple(kinds)
        for kind in kinds:
            why = self.record.not_retrieved.get(kind)
            if why:
                return f"{kind} data could not be retrieved ({why})"
        for problem in self.record.problems:
            if problem.resource_type not in kinds:
                continue
            if value_set is None or not problem.codings or \
                    self.tables.match_codings(problem.codings, value_set) is not None:
                return f"{problem.reference} could not be read ({problem.message})"
        if value_set is not None:
            suspect = self.unrecognised(kinds, value_set)
            if suspect is not None:
                return suspect
        return None

    def unrecognised(self, kinds: Iterable[str], value_set: str) -> str | None:
        """The safety net: an entry no code table recognises whose display names the value set's concept.

        The tables are terminology, but no table is complete: a local code, a newer SNOMED CT concept or a
        national code system the tables do not hold would otherwise read as "None recorded". The reviewed
        patterns of ``fhir_mappings/safety-net/<value_set>.json`` say which displays name the concept.
        """
        net = self.tables.safety_nets.get(value_set)
        if net is None:
            return None
        for kind in kinds:
            if kind not in net.kinds:
                continue
            group = "Medication" if kind.startswith("Medication") else kind
            for fact in self._unrecognised_facts(group):
                if not fact.ref.startswith(kind + "/") or not net.names(fact.display):
                    continue
                if net.active_only and getattr(fact, "active", None) is False:
                    continue  # a resolved or inactive condition: the criterion reads current disease only
                date = getattr(fact, "date", None)
                if net.within_days is not None and date is not None and \
                        date.end <= self.at - timedelta(days=net.within_days):
                    continue  # dated before every window the criterion reads
                if date is not None and date.start > self.at:
                    continue  # planned or future-dated
                code = f"{fact.codings[0][0]}|{fact.codings[0][1]}" if fact.codings else None
                what = f"unrecognised code {code}" if code else "uncoded entry"
                return f"{what} '{fact.display}' ({fact.ref}) may be {net.concept}: confirm"
        return None

    def _unrecognised_facts(self, group: str) -> list[Any]:
        """Facts of a group none of whose codes any value set holds (computed once per group)."""
        cached = self._unrecognised.get(group)
        if cached is None:
            cached = []
            for fact in self._all.get(group, ()):
                codings = fact.all_codings if isinstance(fact, AllergyFact) else fact.codings
                if not self.tables.matching_sets(codings):
                    cached.append(fact)
            cached.sort(key=_newest_first)
            self._unrecognised[group] = cached
        return cached

    @property
    def problems(self) -> list[DataProblem]:
        return self.record.problems


def _with_vaccine_codes(fact: ImmunizationFact | None, drugs: DrugTables) -> ImmunizationFact | None:
    """A vaccine recorded by name only ("Zostavax", "FluMist") gets the CVX code of that live vaccine."""
    if fact is None or not fact.display:
        return fact
    extra = tuple(c for c in drugs.vaccine_codes(fact.display) if c not in fact.codings)
    return replace(fact, codings=fact.codings + extra) if extra else fact


def _with_ingredients(fact: AllergyFact | None, drugs: DrugTables) -> AllergyFact | None:
    """An allergy coded as a drug product (fludarabine phosphate 50 MG Injection) or a brand is an allergy to its
    ingredients: their RxNorm ingredient and ATC codes are added to the substance codes."""
    if fact is None:
        return None
    match = drugs.resolve(fact.all_codings, (fact.display,), tuple((s, c, None) for s, c in fact.all_codings))
    if match is None:
        return fact
    extra = tuple(c for c in match.codings if c not in fact.all_codings)
    return replace(fact, reaction_substances=fact.reaction_substances + extra) if extra else fact


def _has_value(obs: ObservationFact) -> bool:
    """Whether a result carries a value (a registered result usually has none yet)."""
    return bool(obs.quantity is not None or obs.value_codings or (obs.text or "").strip() or obs.integer is not None
                or obs.boolean is not None or obs.interpretation
                or any(c.quantity is not None or c.value_codings or c.text for c in obs.components))


def _value_signature(obs: ObservationFact) -> tuple[Any, ...]:
    q = obs.quantity
    return (
        (q.value, q.unit, q.comparator) if q is not None else None,
        tuple(sorted(obs.value_codings)),
        (obs.text or "").strip().lower(),
        obs.integer,
        obs.boolean,
        tuple(sorted(obs.interpretation)),
        tuple((c.codings, (c.quantity.value, c.quantity.unit) if c.quantity else None, c.value_codings)
              for c in obs.components),
    )


def _newest_first(fact: Any) -> tuple[int, float, float, str]:
    """Newest first; undated last; ties broken by reference, so the order of the input never matters."""
    date = getattr(fact, "date", None)
    if date is None:
        return (1, 0.0, 0.0, fact.ref)
    return (0, -date.start.timestamp(), -date.end.timestamp(), fact.ref)
