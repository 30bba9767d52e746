"""Normalised facts: each FHIR resource the criteria can use, reduced to what the rules read.

Status filters (reference section 1.3) are applied here, once, so no criterion sees an entered-in-error,
refuted, cancelled or not-done resource:

* Condition: verificationStatus refuted / entered-in-error dropped; ``active`` is True for clinicalStatus
  active / recurrence / relapse, False for inactive / remission / resolved, None when absent.
* Observation: final / amended / corrected are results; preliminary and registered are kept but flagged (not
  final); everything else dropped. A referenceRange given only as text is read (``units.parse_range_text``).
* Procedure: completed (and in-progress, flagged); not-done / entered-in-error / stopped-before-start dropped.
* Immunization: completed only (not-done is not a vaccination).
* AllergyIntolerance: clinicalStatus active (or absent) and not refuted / entered-in-error.
* Medications: see ``facts.medications``.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cds_service.facts.dates import DateRange, parse_fhir_date
from cds_service.facts.units import Quantity, parse_range_text

__all__ = [
    "Coding",
    "ConditionFact",
    "ObservationFact",
    "ComponentFact",
    "ProcedureFact",
    "ImmunizationFact",
    "AllergyFact",
    "codings_of",
    "condition_fact",
    "observation_fact",
    "procedure_fact",
    "immunization_fact",
    "allergy_fact",
    "parse_value_string",
    "choice_date",
    "period_range",
]

Coding = tuple[str, str]


def codings_of(concept: Any) -> tuple[Coding, ...]:
    """(system, code) pairs of a CodeableConcept model (or a list of them)."""
    if concept is None:
        return ()
    if isinstance(concept, list):
        return tuple(c for item in concept for c in codings_of(item))
    return tuple((c.system or "", c.code) for c in (concept.coding or ()) if c.code)


def _first_code(concept: Any) -> str | None:
    codes = codings_of(concept)
    return codes[0][1] if codes else None


def _display(concept: Any) -> str | None:
    if concept is None:
        return None
    for c in concept.coding or ():
        if c.display:
            return c.display
    return concept.text


def _status_code(concept: Any) -> str | None:
    return _first_code(concept)


def choice_date(resource: Any, stem: str) -> DateRange | None:
    """Read a date-valued choice element (``onset[x]``, ``effective[x]``...) into a DateRange."""
    value = getattr(resource, f"{stem}DateTime", None)
    if value is not None:
        return parse_fhir_date(value)
    instant = getattr(resource, f"{stem}Instant", None)
    if instant is not None:
        return parse_fhir_date(instant)
    return period_range(getattr(resource, f"{stem}Period", None))


def period_range(period: Any) -> DateRange | None:
    """A FHIR Period as a DateRange; an open period (no end) is marked by a trailing ".." in its text."""
    if period is None:
        return None
    start, end = parse_fhir_date(period.start), parse_fhir_date(period.end)
    if start and end:
        return DateRange(start.start, end.end, f"{start.display()}..{end.display()}")
    if start:
        # An open period: the event started then and may be ongoing.
        return DateRange(start.start, start.end, start.display() + "..")
    return end


@dataclass(frozen=True)
class ConditionFact:
    ref: str
    codings: tuple[Coding, ...]
    display: str | None
    active: bool | None
    clinical_status: str | None
    verification: str | None
    onset: DateRange | None
    abatement: DateRange | None
    recorded: DateRange | None

    @property
    def confirmed(self) -> bool:
        """Not flagged as unconfirmed / provisional / differential (those go to review)."""
        return self.verification in (None, "confirmed")

    @property
    def date(self) -> DateRange | None:
        return self.onset


def condition_fact(res: Any) -> ConditionFact | None:
    verification = _status_code(res.verificationStatus)
    if verification in {"refuted", "entered-in-error"}:
        return None
    clinical = _status_code(res.clinicalStatus)
    active = {"active": True, "recurrence": True, "relapse": True,
              "inactive": False, "remission": False, "resolved": False}.get(clinical or "")
    abatement = choice_date(res, "abatement")
    if clinical is None and abatement is not None:
        active = False
    return ConditionFact(
        ref=f"Condition/{res.id}",
        codings=codings_of(res.code),
        display=_display(res.code),
        active=active,
        clinical_status=clinical,
        verification=verification,
        onset=choice_date(res, "onset"),
        abatement=abatement,
        recorded=parse_fhir_date(res.recordedDate),
    )


_VALUE_STRING = re.compile(r"^\s*(<=|>=|<|>|=)?\s*([-+]?\d+(?:[.,]\d+)?)\s*([^\d\s].*)?$")


def parse_value_string(text: str | None) -> Quantity | None:
    """Read a number out of a lab's text value such as "<0.5", "> 1000 IU/mL" or "12.5"."""
    if not text:
        return None
    m = _VALUE_STRING.match(text)
    if not m:
        return None
    value = float(m.group(2).replace(",", "."))
    unit = (m.group(3) or "").strip() or None
    return Quantity(value, unit, m.group(1) if m.group(1) not in (None, "=") else None)


def _quantity(q: Any) -> Quantity | None:
    if q is None or q.value is None:
        return None
    unit = q.code if q.code and (q.system in (None, "http://unitsofmeasure.org")) else None
    unit = unit or q.unit
    return Quantity(float(q.value), unit, q.comparator)


@dataclass(frozen=True)
class ComponentFact:
    codings: tuple[Coding, ...]
    quantity: Quantity | None
    value_codings: tuple[Coding, ...]
    text: str | None
    interpretation: tuple[Coding, ...]
    absent: str | None


@dataclass(frozen=True)
class ObservationFact:
    ref: str
    status: str
    codings: tuple[Coding, ...]
    display: str | None
    effective: DateRange | None
    quantity: Quantity | None
    value_codings: tuple[Coding, ...]
    text: str | None
    integer: int | None
    boolean: bool | None
    interpretation: tuple[Coding, ...]
    absent: str | None
    ranges: tuple[tuple[Quantity | None, Quantity | None, tuple[Coding, ...]], ...]  # (low, high, appliesTo)
    components: tuple[ComponentFact, ...] = field(default_factory=tuple)
    specimen: str | None = None
    method_codings: tuple[Coding, ...] = ()

    @property
    def preliminary(self) -> bool:
        """Not final: preliminary, or registered (issue 9: a newer one that disagrees leaves the test open)."""
        return self.status in ("preliminary", "registered")

    @property
    def date(self) -> DateRange | None:
        return self.effective


def _component(c: Any) -> ComponentFact:
    quantity = _quantity(c.valueQuantity)
    if quantity is None and c.valueString:
        quantity = parse_value_string(c.valueString)
    return ComponentFact(
        codings=codings_of(c.code),
        quantity=quantity,
        value_codings=codings_of(c.valueCodeableConcept),
        text=c.valueString,
        interpretation=codings_of(c.interpretation),
        absent=_first_code(c.dataAbsentReason),
    )


_RESULT_STATUSES = {"final", "amended", "corrected", "preliminary", "registered"}


def _range(r: Any) -> tuple[Quantity | None, Quantity | None, tuple[Coding, ...]]:
    """(low, high, appliesTo) of a referenceRange; a range given only as text ("9-50 U/L") is read from it."""
    low, high = _quantity(r.low), _quantity(r.high)
    if low is None and high is None and r.text:
        parsed = parse_range_text(r.text)
        if parsed is not None:
            low, high = parsed.low, parsed.high
    return low, high, codings_of(r.appliesTo)


def observation_fact(res: Any) -> ObservationFact | None:
    status = res.status
    if status not in _RESULT_STATUSES:
        return None  # cancelled, entered-in-error, unknown: not a result (registered is kept, as not final)
    quantity = _quantity(res.valueQuantity)
    if quantity is None and res.valueString:
        quantity = parse_value_string(res.valueString)
    ranges = tuple(_range(r) for r in (res.referenceRange or ()))
    effective = choice_date(res, "effective")
    return ObservationFact(
        ref=f"Observation/{res.id}",
        status=status,
        codings=codings_of(res.code),
        display=_display(res.code),
        effective=effective,
        quantity=quantity,
        value_codings=codings_of(res.valueCodeableConcept),
        text=res.valueString,
        integer=res.valueInteger,
        boolean=res.valueBoolean,
        interpretation=codings_of(res.interpretation),
        absent=_first_code(res.dataAbsentReason),
        ranges=ranges,
        components=tuple(_component(c) for c in (res.component or ())),
        specimen=res.specimen.reference if res.specimen is not None else None,
        method_codings=codings_of(res.method),
    )


@dataclass(frozen=True)
class ProcedureFact:
    ref: str
    codings: tuple[Coding, ...]
    category: tuple[Coding, ...]
    display: str | None
    status: str
    performed: DateRange | None

    @property
    def date(self) -> DateRange | None:
        return self.performed


def procedure_fact(res: Any) -> ProcedureFact | None:
    if res.status not in {"completed", "in-progress"}:
        return None
    performed = choice_date(res, "performed")
    if performed is None and res.performedString is None:
        performed = None
    return ProcedureFact(
        ref=f"Procedure/{res.id}",
        codings=codings_of(res.code),
        category=codings_of(res.category),
        display=_display(res.code),
        status=res.status,
        performed=performed,
    )


@dataclass(frozen=True)
class ImmunizationFact:
    ref: str
    codings: tuple[Coding, ...]
    display: str | None
    occurrence: DateRange | None

    @property
    def date(self) -> DateRange | None:
        return self.occurrence


def immunization_fact(res: Any) -> ImmunizationFact | None:
    if res.status != "completed":
        return None
    return ImmunizationFact(
        ref=f"Immunization/{res.id}",
        codings=codings_of(res.vaccineCode),
        display=_display(res.vaccineCode),
        occurrence=choice_date(res, "occurrence"),
    )


@dataclass(frozen=True)
class AllergyFact:
    ref: str
    codings: tuple[Coding, ...]
    display: str | None
    recorded: DateRange | None
    reaction_substances: tuple[Coding, ...] = ()

    @property
    def all_codings(self) -> tuple[Coding, ...]:
        return self.codings + self.reaction_substances

    @property
    def date(self) -> DateRange | None:
        return self.recorded


def allergy_fact(res: Any) -> AllergyFact | None:
    if _status_code(res.verificationStatus) in {"refuted", "entered-in-error"}:
        return None
    if _status_code(res.clinicalStatus) in {"inactive", "resolved"}:
        return None
    substances: Iterable[Coding] = ()
    if res.reaction:
        substances = tuple(c for r in res.reaction for c in codings_of(r.substance))
    return AllergyFact(
        ref=f"AllergyIntolerance/{res.id}",
        codings=codings_of(res.code),
        display=_display(res.code),
        recorded=parse_fhir_date(res.recordedDate) or parse_fhir_date(res.onsetDateTime),
        reaction_substances=tuple(substances),
    )
