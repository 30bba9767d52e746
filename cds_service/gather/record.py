"""One patient's record: the FHIR resources we read, parsed into typed models, and what could not be read.

Parsing uses ``fhir.resources.R4B`` models (the package has no separate R4 models; R4B reads R4 JSON for these
resource types). A resource that fails validation is skipped and kept as a ``DataProblem`` with whatever codes
could still be read from its raw JSON, so that a criterion that might have needed it becomes UNKNOWN instead
of "none recorded". ``not_retrieved`` names the kinds of data that could not be fetched at all (failed or
refused queries); criteria that depend on them are UNKNOWN, never "none recorded".

Building a record does no I/O.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

__all__ = ["PatientRecord", "DataProblem", "build_record", "RESOURCE_TYPES", "raw_codings", "KINDS", "relevant_to"]

# The resource types the criteria read, with their fhir.resources module names.
RESOURCE_TYPES: dict[str, str] = {
    "Patient": "patient",
    "Condition": "condition",
    "Observation": "observation",
    "MedicationStatement": "medicationstatement",
    "MedicationRequest": "medicationrequest",
    "MedicationAdministration": "medicationadministration",
    "Procedure": "procedure",
    "Immunization": "immunization",
    "AllergyIntolerance": "allergyintolerance",
    "DiagnosticReport": "diagnosticreport",
    "Medication": "medication",
}
# Kinds of data whose absence can be "none recorded" (everything but Patient and Medication, which are
# read through references).
KINDS = tuple(t for t in RESOURCE_TYPES if t not in {"Patient", "Medication"})

_models: dict[str, Any] = {}


def _model(resource_type: str) -> Any:
    model = _models.get(resource_type)
    if model is None:
        module = importlib.import_module(f"fhir.resources.R4B.{RESOURCE_TYPES[resource_type]}")
        model = _models[resource_type] = getattr(module, resource_type)
    return model


@dataclass(frozen=True)
class DataProblem:
    """A resource that could not be used, and why. ``codings`` are read from the raw JSON where possible."""

    reference: str
    resource_type: str
    message: str
    codings: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "resource_type": self.resource_type, "message": self.message}


@dataclass
class PatientRecord:
    """A patient's resources by type, the kinds that could not be retrieved, and the data problems."""

    patient_ref: str
    patient: Any | None = None
    resources: dict[str, list[Any]] = field(default_factory=dict)
    not_retrieved: dict[str, str] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)

    def of_type(self, resource_type: str) -> list[Any]:
        return self.resources.get(resource_type, [])


# JSON scalars: never walked into. Checked first because an ABC check (``Mapping``) costs ~10x a type check,
# and this walk runs on every resource of a record that does not match on its own code.
_SCALARS = (str, int, float, bool, type(None))
_NOT_WALKED = frozenset({"coding", "text", "extension", "meta"})


def _codings_of(node: Any, out: list[tuple[str, str]], depth: int = 0) -> None:
    """Collect (system, code) pairs from any ``coding`` arrays in raw JSON (bounded depth)."""
    if depth > 6:
        return
    if isinstance(node, dict) or isinstance(node, Mapping):
        codings = node.get("coding")
        if isinstance(codings, list):
            for c in codings:
                if (isinstance(c, dict) or isinstance(c, Mapping)) and isinstance(c.get("code"), str):
                    out.append((str(c.get("system") or ""), c["code"]))
        for key, value in node.items():
            if key in _NOT_WALKED or isinstance(value, _SCALARS):
                continue
            if isinstance(value, (dict, list)) or isinstance(value, Mapping):
                _codings_of(value, out, depth + 1)
    elif isinstance(node, list):
        for item in node[:50]:
            _codings_of(item, out, depth + 1)


def raw_codings(resource: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Every (system, code) pair found in a raw resource's JSON."""
    out: list[tuple[str, str]] = []
    _codings_of(resource, out)
    return tuple(out)


# Kinds kept whatever their codes: the Patient; Medications (read through references); allergies (the list as a
# whole says "reviewed"); and medication resources that name their drug by reference (codes live elsewhere).
_ALWAYS_KEEP = {"Patient", "Medication", "AllergyIntolerance"}


def relevant_to(tables: Any) -> Callable[[Mapping[str, Any]], bool]:
    """A ``keep`` predicate: a resource is parsed only if one of its raw codes is in some value set.

    Full model validation costs ~50 us a resource and most of a real record (vital signs, social history,
    claims) can be of no use to any criterion; reading its codes from the raw JSON first is ~10x cheaper. The
    screening is identical with or without this filter (tests/gather/test_relevance.py proves it on every
    fixture and Synthea record).
    """

    def keep(raw: Mapping[str, Any]) -> bool:
        rtype = raw.get("resourceType")
        if rtype in _ALWAYS_KEEP:
            return True
        if rtype and rtype.startswith("Medication") and "medicationReference" in raw:
            return True
        # Most kept resources match on their own code: try it before walking the whole resource (the walk
        # finds these same codings too, so the answer is the same).
        code = raw.get("code")
        own = code.get("coding") if isinstance(code, Mapping) else None
        if isinstance(own, list) and tables.matching_sets(
                (str(c.get("system") or ""), c["code"]) for c in own
                if isinstance(c, Mapping) and isinstance(c.get("code"), str)):
            return True
        codings = raw_codings(raw)
        # A resource with no code at all (a text-only regimen or diagnosis) is kept: criteria route such
        # entries to review, so dropping it would turn UNKNOWN into "none recorded".
        return not codings or bool(tables.matching_sets(codings))

    return keep


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid resource"
    e = errors[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "__root__")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {e.get('msg', 'invalid')}{more}" if loc else f"{e.get('msg', 'invalid')}{more}"


def build_record(
    patient_ref: str,
    raw_resources: Iterable[Mapping[str, Any]],
    *,
    not_retrieved: Mapping[str, str] | None = None,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
) -> PatientRecord:
    """Parse raw resources into a PatientRecord.

    ``keep`` (optional) pre-selects resources from their raw JSON before the costly model validation; a
    resource it rejects is one no criterion could use. Types the criteria do not read are ignored.
    """
    record = PatientRecord(patient_ref=patient_ref, not_retrieved=dict(not_retrieved or {}))
    for raw in raw_resources:
        rtype = raw.get("resourceType") if isinstance(raw, Mapping) else None
        if rtype not in RESOURCE_TYPES:
            continue
        if keep is not None and rtype != "Patient" and not keep(raw):
            continue
        rid = raw.get("id")
        ref = f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype}/(no id)"
        try:
            model = _model(rtype).model_validate(raw)
        except ValidationError as exc:
            record.problems.append(DataProblem(ref, rtype, _first_error(exc), raw_codings(raw)))
            continue
        except (TypeError, ValueError) as exc:  # fhir.resources raises these for some malformed primitives
            record.problems.append(DataProblem(ref, rtype, str(exc)[:200], raw_codings(raw)))
            continue
        if rtype == "Patient":
            if record.patient is None:
                record.patient = model
            continue
        record.resources.setdefault(rtype, []).append(model)
    return record
