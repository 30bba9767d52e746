"""Resources read straight from their raw JSON when they are certainly valid: the hot path of a long record.

A patient with months of daily labs sends thousands of Observations, and ``fhir.resources`` (pydantic)
validation costs 120-250 us each, against a few microseconds to check the few shapes real lab results have.
``read_observation`` accepts an Observation only when every element in it is one it knows, of the right JSON
type, and every primitive matches the FHIR R4 rule for its type, at least as strictly as ``fhir.resources``
checks it (the regular expressions below are those of ``fhir_core.types`` or narrower). It then returns the
resource as ``JsonNode`` objects: read by attribute like the fhir.resources model, with dates, dateTimes and
instants converted the way ``fhir_core`` converts them, so ``facts.clinical.observation_fact`` reads the same
fact from either.

``read_checked`` does the same for every type in ``RESOURCES``: Observation, Condition, Procedure,
MedicationAdministration, Immunization, AllergyIntolerance, MedicationRequest and MedicationStatement (the root
node's class is named as its resourceType, which ``facts.medications.medication_fact`` reads). Patient (its
extensions are read), Medication and DiagnosticReport are left to ``fhir.resources``.

Anything else (an extension, a narrative, a leap second, a Ratio value, a reference to a contained resource, an
empty string...) is declined: the reader returns None and the caller validates the resource with
``fhir.resources`` as before, which accepts it or makes it a data problem. So the checked reader only ever
answers for resources ``fhir.resources`` would accept, with the same content; tests/gather/test_checked.py
compares the two on every resource of these types in the fixtures, Synthea and the benchmark records, and on
generated mutations of them.

This module does no I/O.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["JsonNode", "read_observation", "read_checked", "prepare_readers", "OBSERVATION", "KNOWN_TYPES", "RESOURCES"]


class JsonNode:
    """A checked FHIR element: its JSON object's elements as attributes, the absent ones None, as on a
    ``fhir.resources`` model. Each checked type has its own subclass, whose class attributes are its elements
    (all None): an absent element is then found on the class, cheaply, instead of failing a lookup."""

    __slots__ = ("__dict__",)

    def __repr__(self) -> str:
        # Element names, never values: a repr can end up in a traceback or a log line, and values are patient data.
        return f"{type(self).__name__}({', '.join(self.__dict__)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]


class _Decline(Exception):
    """The resource is outside what the checked reader can vouch for: let fhir.resources decide."""


# --- primitives: each returns the value as fhir_core would hold it, or raises _Decline -------------------------

# Narrower than fhir_core where Python's idea of whitespace (\s) could differ from that of pydantic-core's Rust
# regex engine: codes and URIs are printable ASCII, and a string needs one ASCII character to be sure it matches.
_CODE = re.compile(r"[!-~]+( [!-~]+)*")  # fhir_core Code: "^[^\s]+(\s[^\s]+)*$"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # fhir_core Id allows 255 characters; FHIR R4 says 64
_URI = re.compile(r"[!-~]+")  # fhir_core Uri: "\S*" (even empty)
# fhir_core String: "[ \r\n\t\S]+" searched anywhere in the value; control characters are declined too, and lone
# surrogates (json.loads makes them from "\ud800"; pydantic refuses them as no valid unicode string; orjson, which
# the service parses with, refuses them already).
_STRING = re.compile(r"[ \r\n\t\S]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_ZONE = r"(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
# fhir_core DateTime / Instant, narrowed: no leap second (fhir_core keeps it as a string) and at most 6
# fractional digits (what datetime holds without rounding).
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?" + _ZONE
_PARTIAL_DATE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2]))?")
_FULL_DATE = re.compile(_YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])")
_DATE_TIME = re.compile(_YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])" + _TIME)
_REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}|urn:uuid:[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}"
                        r"-[0-9a-fA-F]{12}")


def _valid_string(value: str) -> bool:
    return _STRING.search(value) is not None and _CONTROL.search(value) is None


def _checking(valid: Callable[[str], bool]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if type(value) is not str or not valid(value):
            raise _Decline
        return value
    return check


# Terminology strings already found valid, by kind: a long record repeats the same code systems, codes, units
# and code displays thousands of times, and a set lookup costs a tenth of a regular expression. Only these are
# remembered, never a string that can be about the patient (ids, references, free text, identifiers): nothing
# of one request stays in the process for the next. Bounded: cleared when full.
_SEEN_LIMIT = 4096


def _remembering(valid: Callable[[str], bool]) -> Callable[[Any], str]:
    seen: set[str] = set()

    def check(value: Any) -> str:
        if type(value) is not str:
            raise _Decline
        if value in seen:
            return value
        if not valid(value):
            raise _Decline
        if len(seen) >= _SEEN_LIMIT:
            seen.clear()
        seen.add(value)
        return value
    return check


def _one_of(*allowed: str) -> Callable[[Any], str]:
    choices = frozenset(allowed)

    def check(value: Any) -> str:
        if type(value) is not str or value not in choices:
            raise _Decline
        return value
    check.allowed = allowed  # type: ignore[attr-defined]  # gather.compiled reads the codes as a Literal
    return check


_string = _checking(_valid_string)  # free text: never remembered
_term = _remembering(_valid_string)  # a code's display, a unit: terminology
_code = _remembering(lambda value: _CODE.fullmatch(value) is not None)
_uri = _remembering(lambda value: _URI.fullmatch(value) is not None)
_id = _checking(lambda value: _ID.fullmatch(value) is not None)
_reference_string = _checking(lambda value: _REFERENCE.fullmatch(value) is not None)


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise _Decline
    return value


def _integer(value: Any) -> int:
    if type(value) is not int or not -2_147_483_648 <= value <= 2_147_483_647:
        raise _Decline
    return value


def _positive_int(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= 2_147_483_647:
        raise _Decline
    return value


def _unsigned_int(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 2_147_483_647:
        raise _Decline
    return value


def _decimal(value: Any) -> int | float:
    # Kept as the JSON number: the facts read float(value), which equals float(Decimal(str(value))), what
    # fhir_core holds. (int and float only: bool is an int in Python and not a FHIR decimal.)
    # Every int, and every finite float, prints as a string that fhir_core's Decimal pattern matches. An int too
    # large for a float is declined (fhir_core's Decimal holds it; float() of the int would overflow).
    if type(value) is int and value.bit_length() <= 64 or type(value) is float and math.isfinite(value):
        return value
    raise _Decline


def _date_time(value: Any) -> str | date | datetime:
    """As fhir_core: a partial date stays a string, a full date becomes a ``date``, a time a ``datetime``."""
    if type(value) is not str:
        raise _Decline
    if len(value) > 10:
        if not _DATE_TIME.fullmatch(value):
            raise _Decline
        return _instant_of(value)
    return _date(value)


def _date(value: Any) -> str | date:
    """A FHIR date, as fhir_core holds it: a partial date stays a string, a full date becomes a ``date``."""
    if type(value) is not str or len(value) > 10:
        raise _Decline
    if _FULL_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:  # 2026-02-30: fhir_core refuses it too
            raise _Decline from None
    if _PARTIAL_DATE.fullmatch(value):
        return value
    raise _Decline


def _instant(value: Any) -> datetime:
    if type(value) is not str or not _DATE_TIME.fullmatch(value):
        raise _Decline
    return _instant_of(value)


def _instant_of(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # an impossible day such as 2026-02-30T10:00:00Z
        raise _Decline from None


# --- complex types --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Type:
    """A FHIR complex type as the checked reader knows it: element name -> (reader, repeats)."""

    name: str
    model_path: str  # "observation.ObservationComponent": module and class in fhir.resources.R4B
    elements: Mapping[str, tuple[Callable[[Any], Any], bool]]
    required: frozenset[str] = frozenset()
    choices: tuple[frozenset[str], ...] = ()  # at most one element of each group (a choice type's [x])
    one_required: tuple[frozenset[str], ...] = ()  # exactly one element of each group (a required [x])

    def build(self) -> None:
        """Make this type's reader (its element types' readers first: see ``_ensure_readers``)."""
        # Every element of the fhir.resources model reads None unless present, as on the model itself. The
        # names come from checked_fields.json (the models' own fields, written by scripts/build_checked_fields.py
        # and compared with the installed fhir.resources by tests/gather/test_checked.py), so building the
        # readers imports no model module (~0.2-0.4 s of a short command, issue 14); a type missing from the
        # file is read from its model.
        listed = _listed_fields().get(self.model_path)
        names = set(listed) if listed is not None else model_field_names(self)
        node_class = type(self.name, (JsonNode,), {"__slots__": (), **dict.fromkeys(names | self.elements.keys())})
        object.__setattr__(self, "read", _reader(self, node_class))

    @property
    def model(self) -> Any:
        """The fhir.resources R4B class this type stands for."""
        module, _, name = self.model_path.rpartition(".")
        return getattr(importlib.import_module(f"fhir.resources.R4B.{module}"), name)

    def __call__(self, node: Any) -> JsonNode:
        _ensure_readers()
        return self.read(node)  # type: ignore[attr-defined, no-any-return]


def model_field_names(spec: _Type) -> set[str]:
    """The JSON names of every element of ``spec``'s fhir.resources model (imports the model)."""
    return {field.alias or name for name, field in spec.model.model_fields.items()}


_FIELDS_FILE = Path(__file__).with_name("checked_fields.json")


@lru_cache(maxsize=1)
def _listed_fields() -> dict[str, list[str]]:
    try:
        return dict(json.loads(_FIELDS_FILE.read_text(encoding="utf-8"))["fields"])
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: every type reads its model
        return {}


def checked_fields_table() -> dict[str, Any]:
    """What checked_fields.json holds: each known type's model path -> its element names, sorted."""
    import fhir.resources

    return {"fhir.resources": fhir.resources.__version__,
            "fields": {spec.model_path: sorted(model_field_names(spec)) for spec in KNOWN_TYPES}}


def _reader(spec: _Type, node_class: type) -> Callable[[Any], JsonNode]:
    """The checking reader of one type, as a closure over plain locals (this runs for every element of every
    Observation kept: attribute lookups on ``spec`` would cost a fifth of it)."""
    single = {k: getattr(read, "read", read) for k, (read, repeats) in spec.elements.items() if not repeats}
    repeated = {k: getattr(read, "read", read) for k, (read, repeats) in spec.elements.items() if repeats}
    required, choices, one_required, new = spec.required, spec.choices, spec.one_required, object.__new__

    def read(node: Any) -> JsonNode:
        if type(node) is not dict or not node:
            raise _Decline
        out: dict[str, Any] = {}
        for key, value in node.items():
            element = single.get(key)
            if element is not None:
                out[key] = element(value)
                continue
            element = repeated.get(key)
            if element is None or type(value) is not list or not value:
                raise _Decline  # an element we do not know (an extension, a narrative...): fhir.resources decides
            out[key] = [element(item) for item in value]
        if required and not required <= node.keys():
            raise _Decline
        for group in choices:
            if len(group & node.keys()) > 1:
                raise _Decline
        for group in one_required:
            if len(group & node.keys()) != 1:
                raise _Decline
        checked = new(node_class)
        checked.__dict__ = out
        return checked
    return read


def _type(name: str, model_path: str, elements: dict[str, Callable[[Any], Any] | list[Callable[[Any], Any]]],
          required: tuple[str, ...] = (), choices: tuple[tuple[str, ...], ...] = (),
          one_required: tuple[tuple[str, ...], ...] = ()) -> _Type:
    """A _Type from {element: reader} where ``[reader]`` marks a repeating element. ``choices``: groups of which
    at most one element may be present; ``one_required``: groups of which exactly one must be (fhir.resources
    refuses a resource without its required [x], e.g. an Immunization without occurrence[x])."""
    table = {key: (spec[0], True) if isinstance(spec, list) else (spec, False) for key, spec in elements.items()}
    return _Type(name, model_path, table, frozenset(required), tuple(frozenset(g) for g in choices),
                 tuple(frozenset(g) for g in one_required))


CODING = _type("Coding", "coding.Coding", {
    "system": _uri, "version": _string, "code": _code, "display": _term, "userSelected": _boolean})
CODEABLE_CONCEPT = _type("CodeableConcept", "codeableconcept.CodeableConcept", {
    "coding": [CODING], "text": _string})
QUANTITY = _type("Quantity", "quantity.Quantity", {
    "value": _decimal, "comparator": _one_of("<", "<=", ">=", ">"), "unit": _term, "system": _uri, "code": _code})
SIMPLE_QUANTITY = _type("Quantity", "quantity.Quantity", {
    "value": _decimal, "unit": _term, "system": _uri, "code": _code})
RANGE = _type("Range", "range.Range", {"low": SIMPLE_QUANTITY, "high": SIMPLE_QUANTITY})
PERIOD = _type("Period", "period.Period", {"start": _date_time, "end": _date_time})
REFERENCE = _type("Reference", "reference.Reference", {
    "reference": _reference_string, "type": _uri, "display": _string})
IDENTIFIER = _type("Identifier", "identifier.Identifier", {
    "use": _one_of("usual", "official", "temp", "secondary", "old"), "type": CODEABLE_CONCEPT, "system": _uri,
    "value": _string, "period": PERIOD})
META = _type("Meta", "meta.Meta", {
    "versionId": _id, "lastUpdated": _instant, "source": _uri, "profile": [_uri], "security": [CODING],
    "tag": [CODING]})
ANNOTATION = _type("Annotation", "annotation.Annotation", {
    "authorString": _string, "authorReference": REFERENCE, "time": _date_time, "text": _string},
    required=("text",), choices=(("authorString", "authorReference"),))
REFERENCE_RANGE = _type("ObservationReferenceRange", "observation.ObservationReferenceRange", {
    "low": SIMPLE_QUANTITY, "high": SIMPLE_QUANTITY, "type": CODEABLE_CONCEPT, "appliesTo": [CODEABLE_CONCEPT],
    "age": RANGE, "text": _string})
_VALUES = {"valueQuantity": QUANTITY, "valueCodeableConcept": CODEABLE_CONCEPT, "valueString": _string,
           "valueBoolean": _boolean, "valueInteger": _integer}
COMPONENT = _type("ObservationComponent", "observation.ObservationComponent", {
    "code": CODEABLE_CONCEPT, **_VALUES, "dataAbsentReason": CODEABLE_CONCEPT,
    "interpretation": [CODEABLE_CONCEPT], "referenceRange": [REFERENCE_RANGE],
}, required=("code",), choices=(tuple(_VALUES),))
_STATUS = _one_of("registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error",
                  "unknown")
OBSERVATION = _type("Observation", "observation.Observation", {
    "resourceType": _one_of("Observation"), "id": _id, "meta": META, "identifier": [IDENTIFIER],
    "basedOn": [REFERENCE], "partOf": [REFERENCE], "status": _STATUS, "category": [CODEABLE_CONCEPT],
    "code": CODEABLE_CONCEPT, "subject": REFERENCE, "focus": [REFERENCE], "encounter": REFERENCE,
    "effectiveDateTime": _date_time, "effectivePeriod": PERIOD, "effectiveInstant": _instant, "issued": _instant,
    "performer": [REFERENCE], **_VALUES, "dataAbsentReason": CODEABLE_CONCEPT,
    "interpretation": [CODEABLE_CONCEPT], "note": [ANNOTATION], "bodySite": CODEABLE_CONCEPT,
    "method": CODEABLE_CONCEPT, "specimen": REFERENCE, "device": REFERENCE, "referenceRange": [REFERENCE_RANGE],
    "hasMember": [REFERENCE], "derivedFrom": [REFERENCE], "component": [COMPONENT],
}, required=("resourceType", "status", "code"),
    choices=(("effectiveDateTime", "effectivePeriod", "effectiveInstant"), tuple(_VALUES)))



def _resource(name: str, elements: dict[str, Callable[[Any], Any] | list[Callable[[Any], Any]]],
              required: tuple[str, ...] = (), choices: tuple[tuple[str, ...], ...] = (),
              one_required: tuple[tuple[str, ...], ...] = ()) -> _Type:
    """A resource type: its resourceType, id, meta and identifiers, then its own elements (no narrative, no
    contained resources, no extensions, no implicitRules or language: those are declined)."""
    return _type(name, f"{name.lower()}.{name}", {
        "resourceType": _one_of(name), "id": _id, "meta": META, "identifier": [IDENTIFIER], **elements,
    }, ("resourceType", *required), choices, one_required)


# Condition ---------------------------------------------------------------------------------------------------
CONDITION_STAGE = _type("ConditionStage", "condition.ConditionStage", {
    "summary": CODEABLE_CONCEPT, "assessment": [REFERENCE], "type": CODEABLE_CONCEPT})
CONDITION_EVIDENCE = _type("ConditionEvidence", "condition.ConditionEvidence", {
    "code": [CODEABLE_CONCEPT], "detail": [REFERENCE]})
_ONSET = ("onsetDateTime", "onsetPeriod", "onsetString")
_ABATEMENT = ("abatementDateTime", "abatementPeriod", "abatementString")
CONDITION = _resource("Condition", {
    "clinicalStatus": CODEABLE_CONCEPT, "verificationStatus": CODEABLE_CONCEPT, "category": [CODEABLE_CONCEPT],
    "severity": CODEABLE_CONCEPT, "code": CODEABLE_CONCEPT, "bodySite": [CODEABLE_CONCEPT], "subject": REFERENCE,
    "encounter": REFERENCE, "onsetDateTime": _date_time, "onsetPeriod": PERIOD, "onsetString": _string,
    "abatementDateTime": _date_time, "abatementPeriod": PERIOD, "abatementString": _string,
    "recordedDate": _date_time, "recorder": REFERENCE, "asserter": REFERENCE, "stage": [CONDITION_STAGE],
    "evidence": [CONDITION_EVIDENCE], "note": [ANNOTATION],
}, required=("subject",), choices=(_ONSET, _ABATEMENT))

# Procedure ---------------------------------------------------------------------------------------------------
PROCEDURE_PERFORMER = _type("ProcedurePerformer", "procedure.ProcedurePerformer", {
    "function": CODEABLE_CONCEPT, "actor": REFERENCE, "onBehalfOf": REFERENCE}, required=("actor",))
_PERFORMED = ("performedDateTime", "performedPeriod", "performedString")
PROCEDURE = _resource("Procedure", {
    "basedOn": [REFERENCE], "partOf": [REFERENCE],
    "status": _one_of("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                      "entered-in-error", "unknown"),
    "statusReason": CODEABLE_CONCEPT, "category": CODEABLE_CONCEPT, "code": CODEABLE_CONCEPT, "subject": REFERENCE,
    "encounter": REFERENCE, "performedDateTime": _date_time, "performedPeriod": PERIOD, "performedString": _string,
    "recorder": REFERENCE, "asserter": REFERENCE, "performer": [PROCEDURE_PERFORMER], "location": REFERENCE,
    "reasonCode": [CODEABLE_CONCEPT], "reasonReference": [REFERENCE], "bodySite": [CODEABLE_CONCEPT],
    "outcome": CODEABLE_CONCEPT, "report": [REFERENCE], "complication": [CODEABLE_CONCEPT],
    "complicationDetail": [REFERENCE], "followUp": [CODEABLE_CONCEPT], "note": [ANNOTATION],
    "usedReference": [REFERENCE], "usedCode": [CODEABLE_CONCEPT],
}, required=("status", "subject"), choices=(_PERFORMED,))

# MedicationAdministration ------------------------------------------------------------------------------------
ADMINISTRATION_PERFORMER = _type("MedicationAdministrationPerformer",
                                 "medicationadministration.MedicationAdministrationPerformer", {
                                     "function": CODEABLE_CONCEPT, "actor": REFERENCE}, required=("actor",))
ADMINISTRATION_DOSAGE = _type("MedicationAdministrationDosage",
                              "medicationadministration.MedicationAdministrationDosage", {
                                  "text": _string, "site": CODEABLE_CONCEPT, "route": CODEABLE_CONCEPT,
                                  "method": CODEABLE_CONCEPT, "dose": SIMPLE_QUANTITY,
                                  "rateQuantity": SIMPLE_QUANTITY})
_MEDICATION = ("medicationCodeableConcept", "medicationReference")
_EFFECTIVE = ("effectiveDateTime", "effectivePeriod")
MEDICATION_ADMINISTRATION = _resource("MedicationAdministration", {
    "instantiates": [_uri], "partOf": [REFERENCE],
    "status": _one_of("in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"),
    "statusReason": [CODEABLE_CONCEPT], "category": CODEABLE_CONCEPT, "medicationCodeableConcept": CODEABLE_CONCEPT,
    "medicationReference": REFERENCE, "subject": REFERENCE, "context": REFERENCE,
    "supportingInformation": [REFERENCE], "effectiveDateTime": _date_time, "effectivePeriod": PERIOD,
    "performer": [ADMINISTRATION_PERFORMER], "reasonCode": [CODEABLE_CONCEPT], "reasonReference": [REFERENCE],
    "request": REFERENCE, "device": [REFERENCE], "note": [ANNOTATION], "dosage": ADMINISTRATION_DOSAGE,
    "eventHistory": [REFERENCE],
}, required=("status", "subject"), one_required=(_MEDICATION, _EFFECTIVE))

# Immunization ------------------------------------------------------------------------------------------------
IMMUNIZATION_PERFORMER = _type("ImmunizationPerformer", "immunization.ImmunizationPerformer", {
    "function": CODEABLE_CONCEPT, "actor": REFERENCE}, required=("actor",))
IMMUNIZATION = _resource("Immunization", {
    "status": _one_of("completed", "entered-in-error", "not-done"), "statusReason": CODEABLE_CONCEPT,
    "vaccineCode": CODEABLE_CONCEPT, "patient": REFERENCE, "encounter": REFERENCE, "occurrenceDateTime": _date_time,
    "occurrenceString": _string, "recorded": _date_time, "primarySource": _boolean, "reportOrigin": CODEABLE_CONCEPT,
    "location": REFERENCE, "manufacturer": REFERENCE, "lotNumber": _string, "expirationDate": _date,
    "site": CODEABLE_CONCEPT, "route": CODEABLE_CONCEPT, "doseQuantity": SIMPLE_QUANTITY,
    "performer": [IMMUNIZATION_PERFORMER], "note": [ANNOTATION], "reasonCode": [CODEABLE_CONCEPT],
    "reasonReference": [REFERENCE], "isSubpotent": _boolean, "subpotentReason": [CODEABLE_CONCEPT],
    "programEligibility": [CODEABLE_CONCEPT], "fundingSource": CODEABLE_CONCEPT,
}, required=("status", "vaccineCode", "patient"), one_required=(("occurrenceDateTime", "occurrenceString"),))

# AllergyIntolerance ------------------------------------------------------------------------------------------
ALLERGY_REACTION = _type("AllergyIntoleranceReaction", "allergyintolerance.AllergyIntoleranceReaction", {
    "substance": CODEABLE_CONCEPT, "manifestation": [CODEABLE_CONCEPT], "description": _string, "onset": _date_time,
    "severity": _one_of("mild", "moderate", "severe"), "exposureRoute": CODEABLE_CONCEPT, "note": [ANNOTATION],
}, required=("manifestation",))
ALLERGY_INTOLERANCE = _resource("AllergyIntolerance", {
    "clinicalStatus": CODEABLE_CONCEPT, "verificationStatus": CODEABLE_CONCEPT,
    "type": _one_of("allergy", "intolerance"), "category": [_one_of("food", "medication", "environment", "biologic")],
    "criticality": _one_of("low", "high", "unable-to-assess"), "code": CODEABLE_CONCEPT, "patient": REFERENCE,
    "encounter": REFERENCE, "onsetDateTime": _date_time, "onsetPeriod": PERIOD, "onsetString": _string,
    "recordedDate": _date_time, "recorder": REFERENCE, "asserter": REFERENCE, "lastOccurrence": _date_time,
    "note": [ANNOTATION], "reaction": [ALLERGY_REACTION],
}, required=("patient",), choices=(_ONSET,))

# Dosage and Timing (MedicationRequest, MedicationStatement) ---------------------------------------------------
# What facts.medications reads (doseAndRate.doseQuantity, timing.repeat frequency / period / periodUnit /
# boundsPeriod) and the plain elements around it; a Duration, a Ratio or a time of day is declined.
_UNITS_OF_TIME = ("s", "min", "h", "d", "wk", "mo", "a")
TIMING_REPEAT = _type("TimingRepeat", "timing.TimingRepeat", {
    "boundsPeriod": PERIOD, "boundsRange": RANGE, "count": _positive_int, "countMax": _positive_int,
    "duration": _decimal, "durationMax": _decimal, "durationUnit": _one_of(*_UNITS_OF_TIME),
    "frequency": _positive_int, "frequencyMax": _positive_int, "period": _decimal, "periodMax": _decimal,
    "periodUnit": _one_of(*_UNITS_OF_TIME), "dayOfWeek": [_one_of("mon", "tue", "wed", "thu", "fri", "sat", "sun")],
    "when": [_code], "offset": _unsigned_int,
}, choices=(("boundsPeriod", "boundsRange"),))
TIMING = _type("Timing", "timing.Timing", {"event": [_date_time], "repeat": TIMING_REPEAT, "code": CODEABLE_CONCEPT})
DOSE_AND_RATE = _type("DosageDoseAndRate", "dosage.DosageDoseAndRate", {
    "type": CODEABLE_CONCEPT, "doseRange": RANGE, "doseQuantity": SIMPLE_QUANTITY, "rateRange": RANGE,
    "rateQuantity": SIMPLE_QUANTITY,
}, choices=(("doseRange", "doseQuantity"), ("rateRange", "rateQuantity")))
DOSAGE = _type("Dosage", "dosage.Dosage", {
    "sequence": _integer, "text": _string, "additionalInstruction": [CODEABLE_CONCEPT],
    "patientInstruction": _string, "timing": TIMING, "asNeededBoolean": _boolean,
    "asNeededCodeableConcept": CODEABLE_CONCEPT, "site": CODEABLE_CONCEPT, "route": CODEABLE_CONCEPT,
    "method": CODEABLE_CONCEPT, "doseAndRate": [DOSE_AND_RATE], "maxDosePerAdministration": SIMPLE_QUANTITY,
    "maxDosePerLifetime": SIMPLE_QUANTITY,
}, choices=(("asNeededBoolean", "asNeededCodeableConcept"),))

# MedicationRequest -------------------------------------------------------------------------------------------
DISPENSE_REQUEST = _type("MedicationRequestDispenseRequest", "medicationrequest.MedicationRequestDispenseRequest", {
    "validityPeriod": PERIOD, "numberOfRepeatsAllowed": _unsigned_int, "quantity": SIMPLE_QUANTITY,
    "performer": REFERENCE})
SUBSTITUTION = _type("MedicationRequestSubstitution", "medicationrequest.MedicationRequestSubstitution", {
    "allowedBoolean": _boolean, "allowedCodeableConcept": CODEABLE_CONCEPT, "reason": CODEABLE_CONCEPT,
}, one_required=(("allowedBoolean", "allowedCodeableConcept"),))
MEDICATION_REQUEST = _resource("MedicationRequest", {
    "status": _one_of("active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                      "unknown"),
    "statusReason": CODEABLE_CONCEPT,
    "intent": _one_of("proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                      "instance-order", "option"),
    "category": [CODEABLE_CONCEPT], "priority": _one_of("routine", "urgent", "asap", "stat"),
    "doNotPerform": _boolean, "reportedBoolean": _boolean, "reportedReference": REFERENCE,
    "medicationCodeableConcept": CODEABLE_CONCEPT, "medicationReference": REFERENCE, "subject": REFERENCE,
    "encounter": REFERENCE, "supportingInformation": [REFERENCE], "authoredOn": _date_time, "requester": REFERENCE,
    "performer": REFERENCE, "performerType": CODEABLE_CONCEPT, "recorder": REFERENCE,
    "reasonCode": [CODEABLE_CONCEPT], "reasonReference": [REFERENCE], "instantiatesUri": [_uri],
    "basedOn": [REFERENCE], "groupIdentifier": IDENTIFIER, "courseOfTherapyType": CODEABLE_CONCEPT,
    "insurance": [REFERENCE], "note": [ANNOTATION], "dosageInstruction": [DOSAGE],
    "dispenseRequest": DISPENSE_REQUEST, "substitution": SUBSTITUTION, "priorPrescription": REFERENCE,
    "detectedIssue": [REFERENCE], "eventHistory": [REFERENCE],
}, required=("status", "intent", "subject"), choices=(("reportedBoolean", "reportedReference"),),
    one_required=(_MEDICATION,))

# MedicationStatement -----------------------------------------------------------------------------------------
MEDICATION_STATEMENT = _resource("MedicationStatement", {
    "basedOn": [REFERENCE], "partOf": [REFERENCE],
    "status": _one_of("active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown",
                      "not-taken"),
    "statusReason": [CODEABLE_CONCEPT], "category": CODEABLE_CONCEPT, "medicationCodeableConcept": CODEABLE_CONCEPT,
    "medicationReference": REFERENCE, "subject": REFERENCE, "context": REFERENCE, "effectiveDateTime": _date_time,
    "effectivePeriod": PERIOD, "dateAsserted": _date_time, "informationSource": REFERENCE,
    "derivedFrom": [REFERENCE], "reasonCode": [CODEABLE_CONCEPT], "reasonReference": [REFERENCE],
    "note": [ANNOTATION], "dosage": [DOSAGE],
}, required=("status", "subject"), choices=(_EFFECTIVE,), one_required=(_MEDICATION,))

# Every checked type, with the fhir.resources R4B class it stands for (a test proves each element exists there).
KNOWN_TYPES: tuple[_Type, ...] = (
    CODING, CODEABLE_CONCEPT, QUANTITY, SIMPLE_QUANTITY, RANGE, PERIOD, REFERENCE, IDENTIFIER, META, ANNOTATION,
    REFERENCE_RANGE, COMPONENT, OBSERVATION, CONDITION_STAGE, CONDITION_EVIDENCE, CONDITION, PROCEDURE_PERFORMER,
    PROCEDURE, ADMINISTRATION_PERFORMER, ADMINISTRATION_DOSAGE, MEDICATION_ADMINISTRATION, IMMUNIZATION_PERFORMER,
    IMMUNIZATION, ALLERGY_REACTION, ALLERGY_INTOLERANCE, TIMING_REPEAT, TIMING, DOSE_AND_RATE, DOSAGE,
    DISPENSE_REQUEST, SUBSTITUTION, MEDICATION_REQUEST, MEDICATION_STATEMENT)
_readers_lock = threading.Lock()
_readers_built = False


def _ensure_readers() -> None:
    """Build every reader once, on first use: a reader's node class lists its model's elements, and importing
    the ~30 fhir.resources modules that name them costs a short command (``trialscreen --help``, ``screen`` of
    one file) a third of its time. KNOWN_TYPES lists each type after the types it holds. The service calls
    ``prepare_readers`` at start-up, so no hook call pays for this."""
    global _readers_built
    if _readers_built:
        return
    with _readers_lock:
        if not _readers_built:
            for spec in KNOWN_TYPES:
                spec.build()
            _readers_built = True


prepare_readers = _ensure_readers

# The resource types the checked reader reads, by resourceType.
RESOURCES: dict[str, _Type] = {t.name: t for t in (OBSERVATION, CONDITION, PROCEDURE, MEDICATION_ADMINISTRATION,
                                                    IMMUNIZATION, ALLERGY_INTOLERANCE, MEDICATION_REQUEST,
                                                    MEDICATION_STATEMENT)}


def read_observation(raw: Mapping[str, Any]) -> JsonNode | None:
    """The Observation as checked ``JsonNode`` objects, or None when ``fhir.resources`` must decide."""
    _ensure_readers()
    try:
        return OBSERVATION.read(raw)  # type: ignore[attr-defined, no-any-return]
    except _Decline:
        return None


def read_checked(raw: Mapping[str, Any]) -> JsonNode | None:
    """The resource as checked ``JsonNode`` objects (the root's class named as its resourceType), or None when
    ``fhir.resources`` must decide: a type the reader does not check (``RESOURCES``) or one it cannot vouch for."""
    rtype = raw.get("resourceType") if type(raw) is dict else None
    spec = RESOURCES.get(rtype) if type(rtype) is str else None  # (a list there is unhashable)
    if spec is None:
        return None
    if not _readers_built:
        _ensure_readers()
    try:
        return spec.read(raw)  # type: ignore[attr-defined, no-any-return]
    except _Decline:
        return None
