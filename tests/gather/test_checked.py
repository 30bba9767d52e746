"""The checked reader (``gather.checked``) keeps its promise: whenever ``read_checked`` (or ``read_observation``)
accepts a resource, (a) ``fhir.resources`` R4B accepts it too, and (b) the facts reader of its type
(``observation_fact``, ``condition_fact``, ``procedure_fact``, ``immunization_fact``, ``allergy_fact``,
``medication_fact``; for Conditions also the stage summaries cardiac criteria read) reads the same fact from the
checked ``JsonNode`` tree as from the model (and the tree holds the same values as the model, element by
element). Checked on every resource of the checked types in the fixtures, Synthea and the benchmark record, on
generated mutations of fixture resources, on every single character, on tricky dates and numbers, and through
``build_record``. The reader must also never raise, whatever the JSON (it declines), and never change its input.

Two disagreements these tests found are pinned by regression tests below: a list or object where a string is
expected (``{"valueString": ["a"]}``) made ``read_observation`` raise ``TypeError: unhashable type``, and an
integer decimal too large for a float (``10**309``) was accepted, so ``observation_fact`` raised OverflowError on
the checked tree where the model's Decimal gives ``inf``. A third, found by the mutations of the other types: a lone
surrogate (``"\ud800"``, which json.loads makes; orjson refuses it) was accepted in a string where pydantic refuses
it as no valid unicode string.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from builders import AT
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.observation import Observation
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cds_service.config import default_knowledge
from cds_service.errors import InputError
from cds_service.facts.clinical import (
    allergy_fact,
    codings_of,
    condition_fact,
    immunization_fact,
    observation_fact,
    procedure_fact,
)
from cds_service.facts.medications import medication_fact
from cds_service.gather import checked
from cds_service.gather.bundles import expand_paths, group_by_patient, read_path
from cds_service.gather.checked import KNOWN_TYPES, RESOURCES, JsonNode, read_checked, read_observation
from cds_service.gather.compiled import read_observation_bytes, struct_of
from cds_service.gather.lazy import HEAD, LazyObservation, parse_request
from cds_service.gather.record import DataProblem, build_record, observation_codings, relevant_to
from cds_service.hooks.json_body import parse_json_body
from cds_service.pipeline import screen

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
SYNTHEA = Path(os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ROOT.parent / "shared" / "synthea"))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
from _common import aml_record  # noqa: E402 - the benchmarks' generated records

SETTINGS = settings(max_examples=500, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- loading ----------------------------------------------------------------------------------------------------

def _patients(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for path in expand_paths(paths):
        for source, resources, urls in read_path(path):
            for raw in group_by_patient(resources, urls, source):
                out.append((raw.patient_ref, raw.resources))
    return out


def _medications(resources: list[Any]) -> dict[str, Any]:
    """The Medication models of a record by id, as ``Facts`` gives them to ``medication_fact``."""
    models = (Medication.model_validate(r) for r in resources
              if isinstance(r, dict) and r.get("resourceType") == "Medication")
    return {m.id: m for m in models if m.id}


def _resources(paths: list[Path], rtype: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource, the Medication models of its file) for every resource of that type."""
    out = []
    for path in expand_paths(paths):
        for _source, resources, _urls in read_path(path):
            medications = _medications(resources)
            out.extend((r, medications) for r in resources if isinstance(r, dict) and r.get("resourceType") == rtype)
    return out


def _observations(paths: list[Path]) -> list[dict[str, Any]]:
    return [raw for raw, _medications in _resources(paths, "Observation")]


def _distinct(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({orjson.dumps(r, option=orjson.OPT_SORT_KEYS): r for r in resources}.values())


FIXTURE_PATIENTS = _patients([FIXTURES])
FIXTURE_OBSERVATIONS = _observations([FIXTURES])
# Distinct fixture Observations, the starting points of the mutations.
SAMPLE = _distinct(FIXTURE_OBSERVATIONS)
# The other checked resource types.
OTHER_TYPES = ("Condition", "Procedure", "MedicationAdministration", "Immunization", "AllergyIntolerance",
               "MedicationRequest", "MedicationStatement")
# A Medication the mutated MedicationAdministrations may reference (Medication/med1).
MEDICATIONS = _medications([{"resourceType": "Medication", "id": "med1", "code": {"coding": [
    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3041", "display": "cytarabine"}]}}])
_ME = {"reference": "Patient/p1"}
_SNOMED = "http://snomed.info/sct"
# Valid resources using the elements the corpus does not (so that the mutations start from them too).
HANDMADE: list[dict[str, Any]] = [
    {"resourceType": "Condition", "id": "hf1", "meta": {"versionId": "2", "lastUpdated": "2026-09-01T10:00:00Z",
                                                       "tag": [{"system": "https://smarthealthit.org/tags",
                                                                "code": "synthea-5-2019"}]},
     "identifier": [{"system": "urn:oid:1.2.3", "value": "c-17"}],
     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                    "code": "active"}]},
     "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                        "code": "confirmed"}]},
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                               "code": "encounter-diagnosis"}]}],
     "severity": {"text": "severe"}, "bodySite": [{"text": "heart"}],
     "code": {"coding": [{"system": _SNOMED, "code": "84114007", "display": "Heart failure (disorder)"}],
              "text": "Heart failure"},
     "subject": {"reference": "urn:uuid:0b8e6b3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c"},
     "encounter": {"reference": "Encounter/e1"}, "onsetPeriod": {"start": "2025-01", "end": "2025-02-03"},
     "recordedDate": "2025-02-03T10:00:00+01:00", "recorder": {"reference": "Practitioner/pr1", "display": "Dr X"},
     "asserter": {"display": "the patient"},
     "stage": [{"summary": {"coding": [{"system": _SNOMED, "code": "420913000",
                                        "display": "New York Heart Association Classification - Class III"}]},
                "type": {"text": "NYHA"}, "assessment": [{"reference": "Observation/o1"}]}],
     "evidence": [{"code": [{"text": "dyspnoea"}], "detail": [{"reference": "Observation/o1"}]}],
     "note": [{"authorString": "Dr X", "time": "2025-02-03", "text": "Echo: EF 30%."}]},
    {"resourceType": "Condition", "id": "c2", "code": {"text": "Childhood asthma"}, "subject": _ME,
     "onsetString": "childhood", "abatementPeriod": {"start": "2001", "end": "2004-06"},
     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                    "code": "resolved"}]}},
    {"resourceType": "Procedure", "id": "pr1", "status": "completed", "subject": _ME,
     "identifier": [{"use": "official", "value": "P-1"}], "basedOn": [{"reference": "ServiceRequest/s1"}],
     "category": {"coding": [{"system": _SNOMED, "code": "387713003", "display": "Surgical procedure"}]},
     "code": {"coding": [{"system": _SNOMED, "code": "232717009", "display": "Coronary artery bypass grafting"}]},
     "performedString": "in 2019", "performer": [{"function": {"text": "surgeon"}, "actor": {"display": "Dr Y"}}],
     "location": {"display": "Theatre 2"}, "reasonCode": [{"text": "angina"}], "bodySite": [{"text": "heart"}],
     "outcome": {"text": "successful"}, "note": [{"text": "uneventful"}], "usedCode": [{"text": "graft"}],
     "followUp": [{"text": "clinic in 6 weeks"}], "complication": [{"text": "none"}]},
    {"resourceType": "Procedure", "id": "pr2", "status": "in-progress", "subject": _ME, "code": {"text": "x"},
     "performedPeriod": {"start": "2026-09-20T08:00:00Z"}, "encounter": {"reference": "Encounter/e1"}},
    {"resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
     "medicationReference": {"reference": "Medication/med1", "display": "cytarabine"}, "subject": _ME,
     "effectivePeriod": {"start": "2026-09-01T08:00:00Z", "end": "2026-09-01T10:00:00Z"},
     "performer": [{"function": {"text": "nurse"}, "actor": {"reference": "Practitioner/pr1"}}],
     "reasonReference": [{"reference": "Condition/c1"}], "request": {"reference": "MedicationRequest/mr1"},
     "note": [{"text": "given"}], "context": {"reference": "Encounter/e1"},
     "dosage": {"text": "200 mg/m2 over 2 h", "route": {"text": "IV"}, "site": {"text": "left arm"},
                "method": {"text": "infusion"}, "dose": {"value": 340, "unit": "mg"},
                "rateQuantity": {"value": 170, "unit": "mg/h", "system": "http://unitsofmeasure.org",
                                 "code": "mg/h"}}},
    {"resourceType": "MedicationAdministration", "id": "ma2", "status": "in-progress",
     "medicationReference": {"reference": "Medication/unknown"}, "subject": _ME,
     "effectiveDateTime": "2026-09-02", "statusReason": [{"text": "x"}]},
    {"resourceType": "Immunization", "id": "im1", "status": "completed", "patient": _ME,
     "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}], "text": "flu"},
     "occurrenceString": "last autumn", "recorded": "2026-01-02", "primarySource": False,
     "reportOrigin": {"text": "patient"}, "lotNumber": "A1", "expirationDate": "2027-01",
     "manufacturer": {"display": "Acme"}, "site": {"text": "left arm"}, "route": {"text": "IM"},
     "doseQuantity": {"value": 0.5, "unit": "mL"}, "performer": [{"actor": {"reference": "Practitioner/pr1"}}],
     "note": [{"text": "no reaction"}], "isSubpotent": False, "reasonCode": [{"text": "season"}]},
    {"resourceType": "Immunization", "id": "im2", "status": "entered-in-error", "patient": _ME,
     "vaccineCode": {"text": "zoster"}, "occurrenceDateTime": "2026-09-01", "expirationDate": "2027-02-28"},
    {"resourceType": "AllergyIntolerance", "id": "al1", "patient": _ME, "type": "intolerance",
     "category": ["medication", "food"], "criticality": "high",
     "code": {"coding": [{"system": _SNOMED, "code": "294505008", "display": "Allergy to amoxicillin"}]},
     "onsetPeriod": {"start": "2010"}, "recordedDate": "2026-01-02T10:00:00Z", "lastOccurrence": "2024-05",
     "asserter": {"reference": "Practitioner/pr1"}, "note": [{"text": "rash"}],
     "reaction": [{"substance": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                             "code": "723"}]},
                   "manifestation": [{"text": "urticaria"}], "description": "rash", "onset": "2024-05-03",
                   "severity": "mild", "exposureRoute": {"text": "oral"}, "note": [{"text": "settled"}]}]},
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order", "subject": _ME,
     "identifier": [{"system": "urn:oid:1.2.3", "value": "rx-1"}], "category": [{"text": "outpatient"}],
     "priority": "routine", "reportedBoolean": False, "medicationReference": {"reference": "Medication/med1"},
     "encounter": {"reference": "Encounter/e1"}, "authoredOn": "2026-08-11T09:30:00+02:00",
     "requester": {"reference": "Practitioner/pr1"}, "reasonCode": [{"text": "AML"}], "note": [{"text": "x"}],
     "courseOfTherapyType": {"text": "continuous"}, "groupIdentifier": {"value": "g1"},
     "dosageInstruction": [{"sequence": 1, "text": "2 x 100 mg daily", "patientInstruction": "with food",
                            "additionalInstruction": [{"text": "with food"}], "asNeededBoolean": False,
                            "route": {"text": "oral"}, "method": {"text": "swallow"}, "site": {"text": "mouth"},
                            "timing": {"event": ["2026-08-11"], "code": {"text": "BID"},
                                       "repeat": {"boundsPeriod": {"start": "2026-08-11"}, "frequency": 2,
                                                  "frequencyMax": 3, "period": 1, "periodMax": 1.5,
                                                  "periodUnit": "d", "count": 28, "duration": 0.5,
                                                  "durationUnit": "h", "dayOfWeek": ["mon", "thu"],
                                                  "when": ["MORN", "EVE"], "offset": 30}},
                            "doseAndRate": [{"type": {"text": "ordered"},
                                             "doseQuantity": {"value": 100, "unit": "mg",
                                                              "system": "http://unitsofmeasure.org", "code": "mg"},
                                             "rateRange": {"low": {"value": 1}, "high": {"value": 2}}}],
                            "maxDosePerAdministration": {"value": 200, "unit": "mg"}}],
     "dispenseRequest": {"validityPeriod": {"start": "2026-08-11", "end": "2026-09-11"},
                         "numberOfRepeatsAllowed": 0, "quantity": {"value": 56}, "performer": {"display": "x"}},
     "substitution": {"allowedBoolean": True, "reason": {"text": "x"}}},
    {"resourceType": "MedicationRequest", "id": "mr2", "status": "on-hold", "intent": "plan", "subject": _ME,
     "medicationCodeableConcept": {"text": "prednisone"}, "reportedReference": {"reference": "Patient/p1"},
     "dosageInstruction": [{"asNeededCodeableConcept": {"text": "pain"}, "timing": {"repeat": {
         "boundsRange": {"low": {"value": 1}}, "frequency": 1, "period": 8, "periodUnit": "h"}},
         "doseAndRate": [{"doseRange": {"low": {"value": 5, "unit": "mg"}}}]}],
     "dispenseRequest": {"validityPeriod": {"end": "2026-09-11"}},
     "substitution": {"allowedCodeableConcept": {"text": "no"}}},
    {"resourceType": "MedicationStatement", "id": "ms1", "status": "active", "subject": _ME,
     "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                               "code": "8640", "display": "prednisone"}]},
     "effectivePeriod": {"start": "2026-08-01"}, "dateAsserted": "2026-09-01T10:00:00Z",
     "informationSource": {"reference": "Patient/p1"}, "category": {"text": "community"},
     "reasonCode": [{"text": "GvHD"}], "derivedFrom": [{"reference": "MedicationRequest/mr1"}],
     "statusReason": [{"text": "x"}], "note": [{"text": "x"}],
     "dosage": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                 "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "mg"}}]}]},
    {"resourceType": "MedicationStatement", "id": "ms2", "status": "completed", "subject": _ME,
     "medicationReference": {"reference": "Medication/med1"}, "effectiveDateTime": "2025-03"},
    {"resourceType": "AllergyIntolerance", "id": "al2", "patient": _ME, "code": {"text": "penicillin"},
     "onsetString": "as a child", "verificationStatus": {"coding": [
         {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "refuted"}]}},
]
# Distinct fixture resources of the other types, and the hand-made ones: the starting points of their mutations.
OTHER_SAMPLE = _distinct([raw for rtype in OTHER_TYPES for raw, _m in _resources([FIXTURES], rtype)] + HANDMADE)


# --- comparing the checked tree with the model -------------------------------------------------------------------

def _field_names(model_class: Any) -> dict[str, str]:
    """JSON element name (alias or name) -> attribute name of a fhir.resources class."""
    return {(field.alias or name): name for name, field in model_class.model_fields.items()} | {
        name: name for name in model_class.model_fields}


def _facts(res: Any, rtype: str, medications: dict[str, Any]) -> Any:
    """What the criteria read from a resource of that type: its facts reader (for a Condition, also the stage
    summaries ``criteria.cardiac`` reads from the record's Condition objects)."""
    if rtype == "Observation":
        return observation_fact(res)
    if rtype == "Condition":
        return condition_fact(res), tuple(codings_of(stage.summary) for stage in getattr(res, "stage", None) or ())
    if rtype == "Procedure":
        return procedure_fact(res)
    if rtype == "Immunization":
        return immunization_fact(res)
    if rtype == "AllergyIntolerance":
        return allergy_fact(res)
    return medication_fact(res, medications)


def _outcome(value: Any, rtype: str = "Observation", medications: dict[str, Any] | None = None) -> tuple:
    """The facts read from a checked tree or a model, or the exception it raises (the same one is as good)."""
    try:
        return ("fact", _facts(value, rtype, MEDICATIONS if medications is None else medications))
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed
        return ("raised", type(exc).__name__, str(exc))


def _same(view: Any, model: Any, where: str = "") -> None:
    """The checked value holds what the model holds, element by element."""
    if isinstance(view, JsonNode):
        assert model is not None and hasattr(type(model), "model_fields"), where
        names = _field_names(type(model))
        for key, value in view.__dict__.items():
            if key == "resourceType":  # not a field of fhir.resources models: checked by the model itself
                assert model.get_resource_type() == value, where
                continue
            _same(value, getattr(model, names[key]), f"{where}.{key}")
        # Nothing the model holds is missing from the checked tree.
        set_by_model = {type(model).model_fields[n].alias or n for n in model.model_fields_set
                        if getattr(model, n) is not None}
        assert set_by_model <= view.__dict__.keys(), (where, set_by_model - view.__dict__.keys())
    elif isinstance(view, list):
        assert isinstance(model, list) and len(view) == len(model), where
        for i, (v, m) in enumerate(zip(view, model, strict=True)):
            _same(v, m, f"{where}[{i}]")
    elif type(view) in (int, float) and isinstance(model, Decimal):  # a decimal: kept as its JSON number
        assert Decimal(str(view)) == model, (where, view, model)
    elif isinstance(view, datetime):
        assert type(model) is datetime, (where, view, model)
        assert view == model and view.utcoffset() == model.utcoffset(), (where, view, model)
        assert view.isoformat() == model.isoformat(), (where, view, model)
    else:
        assert type(view) is type(model) or (type(view) is str and isinstance(model, str)), (where, view, model)
        assert view == model, (where, view, model)


def _lazy_agrees(raw: Any) -> None:
    """gather.lazy (the hook's request decoder) hands the reader the same resource: prefetched as a Bundle entry,
    an Observation left raw decodes to the dict parse_json_body builds, and before that has its head, codings
    and code-filter answer; a request parse_json_body refuses is refused too."""
    try:
        blob = orjson.dumps(raw)
    except TypeError:  # orjson.JSONEncodeError: no JSON request carries it (an int beyond 64 bits...)
        return
    body = b'{"prefetch":{"k":{"resourceType":"Bundle","entry":[{"resource":' + blob + b"}]}}}"
    try:
        expected = parse_json_body(body)["prefetch"]["k"]["entry"][0]["resource"]
    except InputError:
        with pytest.raises(InputError):
            parse_request(body, parse_json_body)
        return
    got = parse_request(body, parse_json_body)["prefetch"]["k"]["entry"][0]["resource"]
    if isinstance(got, LazyObservation):
        assert got.codings == observation_codings(expected), raw
        assert {k: dict.get(got, k) for k in HEAD if k in expected} == {k: expected[k] for k in HEAD if k in expected}
        assert LAZY_RELEVANCE(got) == LAZY_RELEVANCE(expected), raw
        assert got._plain is None, "the code filter decoded it"
        got = got.plain()
        LAZY_SEEN["lazy"] = LAZY_SEEN.get("lazy", 0) + 1
    assert type(got) is type(expected) and got == expected, raw


LAZY_SEEN: dict[str, int] = {}
LAZY_RELEVANCE = relevant_to(default_knowledge().tables)
COMPILED_SEEN: dict[str, int] = {}


def _tree(node: Any) -> Any:
    """A checked JsonNode or a gather.compiled struct as plain values: each present element, with the type of
    every leaf (a date is not a datetime, an int not a float) and a datetime's offset."""
    if isinstance(node, JsonNode):
        return type(node).__name__, {k: _tree(v) for k, v in node.__dict__.items()}
    if isinstance(node, msgspec.Struct):
        return type(node).__name__, {f: _tree(getattr(node, f)) for f in node.__struct_fields__
                                     if getattr(node, f) is not None}
    if isinstance(node, list):
        return [_tree(v) for v in node]
    return type(node).__name__, node.isoformat() if isinstance(node, datetime) else node


def _compiled_agrees(raw: Any, view: Any) -> None:
    """gather.compiled keeps the checked reader's promise: an Observation it reads from its JSON bytes is one the
    checked reader accepts (``view``), with the same tree and the same fact."""
    if not isinstance(raw, dict) or raw.get("resourceType") != "Observation":
        return
    try:
        blob = orjson.dumps(raw)
    except TypeError:  # orjson.JSONEncodeError: no JSON request carries it
        return
    got = read_observation_bytes(blob)
    if got is None:
        COMPILED_SEEN["declined"] = COMPILED_SEEN.get("declined", 0) + 1
        return
    assert view is not None, f"gather.compiled accepted what the checked reader declines: {raw!r}"
    assert _tree(got) == _tree(view), raw
    assert _outcome(got) == _outcome(view), raw
    COMPILED_SEEN["accepted"] = COMPILED_SEEN.get("accepted", 0) + 1


def _verdict(raw: Any, medications: dict[str, Any] | None = None) -> str:
    """"accepted" (and the promise kept) or "declined"; the reader raising fails the test. ``medications``: the
    record's Medication models (default ``MEDICATIONS``). The lazy front end is checked on it too."""
    _lazy_agrees(raw)
    snapshot = copy.deepcopy(raw)
    view = read_checked(raw)
    assert raw == snapshot, "read_checked changed its input"
    observation = read_observation(raw)
    assert raw == snapshot, "read_observation changed its input"
    rtype = raw.get("resourceType") if isinstance(raw, dict) else None
    # read_observation answers as read_checked for an Observation, and declines anything else.
    assert observation == view if rtype == "Observation" else observation is None, raw
    _compiled_agrees(raw, view)
    if view is None:
        return "declined"
    assert isinstance(view, JsonNode) and type(view).__name__ == rtype, (view, rtype)
    try:
        model = RESOURCES[rtype].model.model_validate(raw)  # (a)
    except (ValidationError, TypeError, ValueError) as exc:
        pytest.fail(f"read_checked accepted what fhir.resources refuses: {raw!r}\n{exc}")
    assert _outcome(view, rtype, medications) == _outcome(model, rtype, medications), raw  # (b)
    _same(view, model, rtype)
    return "accepted"


# --- 1. the known types -------------------------------------------------------------------------------------------

def test_every_known_element_is_a_field_of_its_model():
    assert {t.model_path for t in KNOWN_TYPES} >= {"observation.Observation", "coding.Coding"}
    assert set(RESOURCES) == {"Observation", *OTHER_TYPES}
    assert all(spec in KNOWN_TYPES and spec.model.get_resource_type() == name for name, spec in RESOURCES.items())
    for known in KNOWN_TYPES:
        names = _field_names(known.model)
        for element in known.elements:
            if element == "resourceType":  # a resource's type: not a field, the class says it
                assert known.model.get_resource_type() == known.name, known.name
                continue
            assert element in names, f"{known.name}.{element} is no field of {known.model.__name__}"
        for element in known.required | frozenset().union(*known.choices, *known.one_required):
            assert element in known.elements, f"{known.name}.{element}"


def test_the_model_requires_what_the_reader_requires():
    """Every element and [x] group fhir.resources requires is required by the reader too (a resource without it
    is declined, not read as a checked tree the model would refuse)."""
    for known in KNOWN_TYPES:
        model = known.model
        names = _field_names(model)
        required = {field.alias or name for name, field in model.model_fields.items() if field.is_required()}
        construct = model.model_construct()
        required |= {names.get(element, element) for element, _ext in construct.get_required_fields()}
        assert required <= known.required, (known.name, required - known.required)
        one_of_many = construct.get_one_of_many_fields() if hasattr(construct, "get_one_of_many_fields") else {}
        for stem, group in one_of_many.items():
            mandatory = any((model.model_fields[n].json_schema_extra or {}).get("one_of_many_required")
                            for n in group)
            ours = frozenset(group) & known.elements.keys()
            if mandatory and ours:
                assert ours in known.one_required, (known.name, stem)
            elif len(ours) > 1:
                assert ours in known.choices or ours in known.one_required, (known.name, stem)


# --- 2. the corpus ------------------------------------------------------------------------------------------------

def _typed_corpus(rtype: str) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
    bench = aml_record(1_000)
    corpus = {"fixtures": _resources([FIXTURES], rtype),
              "bench": [(r, _medications(bench)) for r in bench if r.get("resourceType") == rtype]}
    if SYNTHEA.is_dir():
        corpus["synthea"] = _resources(sorted(SYNTHEA.glob("*.json")), rtype)
    return corpus


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_corpus_of_the_other_types_keeps_the_promise_and_mostly_takes_the_fast_path(rtype):
    """(a) and (b) on every resource of the type in the corpus, and at least 90% of them accepted."""
    totals = {"accepted": 0, "declined": 0}
    for name, resources in _typed_corpus(rtype).items():
        if not resources:
            print(f"{name}: no {rtype}")
            continue
        counts = {"accepted": 0, "declined": 0}
        for raw, medications in resources:
            counts[_verdict(raw, medications)] += 1
        print(f"{name}: {len(resources)} {rtype}, {counts['accepted']} accepted, {counts['declined']} declined")
        for k in totals:
            totals[k] += counts[k]
    print(f"corpus {rtype}: {totals}")
    assert totals["accepted"] >= 0.90 * (totals["accepted"] + totals["declined"]), totals
    if rtype != "MedicationStatement":  # no corpus has one: the hand-made ones and the mutations test it
        assert totals["accepted"] > 0, totals


def test_the_hand_made_resources_are_accepted():
    """The mutations of the other types also start from these: they must be on the fast path."""
    for raw in HANDMADE:
        assert _verdict(raw) == "accepted", raw

def _corpus() -> dict[str, list[dict[str, Any]]]:
    corpus = {"fixtures": FIXTURE_OBSERVATIONS,
              "bench": [r for r in aml_record(1_000) if r.get("resourceType") == "Observation"]}
    if SYNTHEA.is_dir():
        corpus["synthea"] = _observations(sorted(SYNTHEA.glob("*.json")))
    return corpus


def test_corpus_keeps_the_promise_and_mostly_takes_the_fast_path():
    totals = {"accepted": 0, "declined": 0}
    for name, observations in _corpus().items():
        assert observations, name
        counts = {"accepted": 0, "declined": 0}
        for raw in observations:
            counts[_verdict(raw)] += 1
        print(f"{name}: {len(observations)} Observations, {counts['accepted']} accepted, "
              f"{counts['declined']} declined")
        for k in totals:
            totals[k] += counts[k]
    print(f"corpus: {totals}, compiled: {COMPILED_SEEN}")
    assert totals["accepted"] >= 0.95 * (totals["accepted"] + totals["declined"]), totals
    # The compiled reader takes nearly all of them too (else the hook would rarely use it).
    assert COMPILED_SEEN.get("accepted", 0) >= 0.9 * totals["accepted"], (COMPILED_SEEN, totals)


# --- 3. mutations -------------------------------------------------------------------------------------------------

def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


def _get(root: Any, path: tuple) -> Any:
    for step in path:
        root = root[step]
    return root


def _set(root: Any, path: tuple, value: Any) -> None:
    _get(root, path[:-1])[path[-1]] = value


ELEMENT_NAMES = sorted({name for t in KNOWN_TYPES for name in t.elements})
OTHER_NAMES = ["extension", "modifierExtension", "_status", "_valueString", "text", "contained", "valueRatio",
               "valuePeriod", "valueDateTime", "valueTime", "valueSampledData", "effectiveTiming", "language",
               "implicitRules", "fhir_comments", "value_quantity", "resource_type", "Status", "", "onsetAge",
               "onsetRange", "abatementAge", "abatementBoolean", "performedAge", "performedRange", "rateRatio",
               "protocolApplied", "education", "reaction", "timing", "doseAndRate", "_occurrenceDateTime",
               "_category", "medication", "effectiveInstant", "stage", "summary", "manifestation", "patient",
               "subject", "occurrenceString", "performedString"]
TRICKY_STRINGS = [
    "", " ", "  ", "\t", "\n", "\r\n", "\x00", "\x1c", "\x1f", "\x7f", "\x85", "\xa0", "\u1680", "\u2000", "\u2028",
    "\u2029", "\u202f", "\u3000", "\ufeff", "\u200b", "a b", "a  b", "a\tb", " a", "a ", "a\nb", "é", "\U0001f600",
    "final", "preliminary", "done", "Observation", "Patient", "Patient/p1", "patient/p1", "#c1", "Patient/",
    "urn:uuid:0b8e6b3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c", "urn:oid:1.2.3", "http://loinc.org", "http://unitsofmeasure.org",
    "mg/dL", "10*9/L", "<", "<=", ">=", ">", "ad", "usual", "1.5", "-0", "1e5", "true", "null", "2026", "2026-02",
    "2026-02-28", "2026-02-29", "2026-02-30", "2026-13", "2026-1-2", "0000", "0001-01-01", "2026-01-02T10:00:00Z",
    "2026-01-02T10:00:00+14:00", "2026-01-02T10:00:00+14:30", "2026-01-02T10:00:00-00:00", "2016-12-31T23:59:60Z",
    "2026-01-02T24:00:00Z", "2026-01-02T10:00:00.1234567Z", "2026-01-02T10:00:00", "2026-01-02T10:00Z",
    "2026-01-02 10:00:00Z", "2026-01-02t10:00:00z", "2026-02-30T10:00:00Z", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
]
_strings = st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=10),
                     st.text(st.characters(codec="ascii"), max_size=10),
                     st.text(st.characters(categories=["Zs", "Zl", "Zp", "Cc", "Cf"]), min_size=1, max_size=3))
_numbers = st.one_of(st.integers(), st.integers(min_value=-10 ** 40, max_value=10 ** 40), st.floats(),
                     st.sampled_from([0, -1, 2 ** 31 - 1, 2 ** 31, -2 ** 31, -2 ** 31 - 1, 2 ** 53 + 1, 2 ** 63,
                                      2 ** 64, 10 ** 30, 10 ** 309, -10 ** 309, 1e-7, -0.0, 1e20, 1e308, 5e-324]),
                     st.booleans())
_keys = st.one_of(st.sampled_from(ELEMENT_NAMES + OTHER_NAMES), st.text(max_size=6))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), _strings, _numbers),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(_keys, kids, max_size=3)),
    max_leaves=6)


@dataclass(frozen=True)
class Pool:
    """Where mutations start (``samples``, by group: a group is drawn first, so each type is mutated as often)
    and what they graft: subtrees of real resources, well-formed values
    put where they do not belong or where they do (``donors``), and the same by the element they are found under:
    another real value of the same element, often accepted (``by_key``)."""

    samples: list[list[dict[str, Any]]]
    donors: list[Any]
    by_key: dict[str, list[Any]]


def _pool(samples: list[list[dict[str, Any]]], donor_sources: list[dict[str, Any]]) -> Pool:
    donors = list({orjson.dumps(_get(o, p)): _get(o, p) for o in donor_sources for p in _paths(o)[1:]}.values())
    by_key: dict[str, dict[bytes, Any]] = {}
    for o in donor_sources:
        for p in _paths(o)[1:]:
            if isinstance(p[-1], str):
                by_key.setdefault(p[-1], {})[orjson.dumps(_get(o, p))] = _get(o, p)
    return Pool(samples, donors, {key: list(values.values()) for key, values in by_key.items()})


OBSERVATION_POOL = _pool([SAMPLE], SAMPLE)
# The other types, grafted with subtrees of every type (a Period from an Observation into a Procedure...).
OTHER_POOL = _pool([[r for r in OTHER_SAMPLE if r["resourceType"] == rtype] for rtype in OTHER_TYPES],
                   OTHER_SAMPLE + SAMPLE)


@st.composite
def _tweaked(draw: st.DrawFn, value: Any) -> Any:
    """A value close to ``value``: a character inserted, dropped or changed; a number moved or retyped."""
    if isinstance(value, str):
        i = draw(st.integers(0, len(value)))
        char = draw(st.one_of(st.sampled_from([" ", "\t", "\n", "\x00", "\xa0", "\u2028", "Z", "0", "9", ":", "-",
                                               ".", "+", "/", "#"]), st.characters()))
        how = draw(st.sampled_from(["insert", "drop", "change", "pad", "upper"]))
        if how == "insert" or not value:
            return value[:i] + char + value[i:]
        i = min(i, len(value) - 1)
        if how == "drop":
            return value[:i] + value[i + 1:]
        if how == "change":
            return value[:i] + char + value[i + 1:]
        if how == "pad":
            return draw(st.sampled_from([" ", "\n", "\t", "\xa0"])) + value
        return value.upper()
    if type(value) in (int, float):
        how = draw(st.sampled_from(["str", "neg", "float", "int", "scale", "bool"]))
        scale = draw(st.integers(-12, 40)) if how == "scale" else 0
        try:  # (an int tweaked twice may be too large for a float: then it stays as it is)
            if how == "str":
                return str(value)
            if how == "neg":
                return -value
            if how == "float":
                return float(value)
            if how == "int":
                return int(value) if type(value) is int or math.isfinite(value) else 0
            if how == "scale":
                return value * 10 ** scale
        except OverflowError:
            return value
        return bool(value)
    return draw(JSON_VALUES)


# Weighted towards the mutations that often leave a valid-looking Observation (so that many are accepted and the
# promise is checked on them), but every kind is drawn often.
MUTATIONS = ["replace", "tweak", "tweak", "tweak", "donor", "same", "same", "delete", "delete", "add", "rename",
             "wrap", "unwrap"]


@st.composite
def mutated(draw: st.DrawFn, pool: Pool) -> Any:
    raw = copy.deepcopy(draw(st.sampled_from(draw(st.sampled_from(pool.samples)))))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        if not isinstance(raw, dict):
            break
        paths = _paths(raw)
        kind = draw(st.sampled_from(MUTATIONS))
        if kind == "add":
            path = draw(st.sampled_from([p for p in paths if isinstance(_get(raw, p), dict)] or [()]))
            key = draw(_keys)
            value = draw(st.one_of(JSON_VALUES, st.sampled_from(pool.donors)))
            if isinstance(_get(raw, path), dict):
                _get(raw, path)[key] = copy.deepcopy(value)
            note(f"add {path} {key!r} = {value!r}")
            continue
        if kind == "tweak":  # a leaf: a string or a number
            paths = [p for p in paths if isinstance(_get(raw, p), (str, int, float))] or paths
        elif kind == "same":  # an element another Observation has too
            paths = [p for p in paths if p and p[-1] in pool.by_key] or paths
        path = draw(st.sampled_from(paths[1:] if paths[0] == () else paths))
        old = _get(raw, path)
        parent = _get(raw, path[:-1])
        if kind == "replace":
            new = draw(JSON_VALUES)
        elif kind == "tweak":
            new = draw(_tweaked(old))
        elif kind == "donor":
            new = copy.deepcopy(draw(st.sampled_from(pool.donors)))
        elif kind == "same":
            new = copy.deepcopy(draw(st.sampled_from(pool.by_key.get(path[-1], pool.donors))))
        elif kind == "wrap":
            new = [old]
        elif kind == "unwrap":
            new = old[0] if isinstance(old, list) and old else draw(JSON_VALUES)
        elif kind == "delete":
            del parent[path[-1]]
            note(f"delete {path}")
            continue
        else:  # rename
            if not isinstance(parent, dict):
                continue
            key = draw(_keys)
            parent[key] = parent.pop(path[-1])
            note(f"rename {path} -> {key!r}")
            continue
        _set(raw, path, new)
        note(f"{kind} {path}: {old!r} -> {new!r}")
    return raw


VERDICTS: dict[str, int] = {}


@SETTINGS
@given(mutated(OBSERVATION_POOL))
def test_mutations_keep_the_promise(raw):
    """(a) + (b) on every accepted mutation: a fhir-invalid mutation is never accepted; none makes it raise."""
    verdict = _verdict(raw)
    VERDICTS[verdict] = VERDICTS.get(verdict, 0) + 1


def test_mutations_were_accepted_and_declined():
    """The mutation test ran both ways: some mutations accepted (promise checked), some declined; and through
    the lazy front end."""
    if not VERDICTS:
        pytest.skip("run with test_mutations_keep_the_promise")
    print(f"mutations: {VERDICTS}, lazy: {LAZY_SEEN}, compiled: {COMPILED_SEEN}")
    assert LAZY_SEEN.get("lazy", 0) >= 100, LAZY_SEEN
    assert COMPILED_SEEN.get("accepted", 0) >= 30 and COMPILED_SEEN.get("declined", 0) >= 30, COMPILED_SEEN
    assert VERDICTS.get("accepted", 0) >= 30 and VERDICTS.get("declined", 0) >= 30, VERDICTS


OTHER_VERDICTS: dict[tuple[str, str], int] = {}


@settings(SETTINGS, max_examples=2_000)
@given(mutated(OTHER_POOL))
def test_mutations_of_the_other_types_keep_the_promise(raw):
    """The same for Conditions, Procedures, MedicationAdministrations, Immunizations and AllergyIntolerances
    (a mutation may also turn one into another type, or into none)."""
    verdict = _verdict(raw)
    rtype = raw.get("resourceType") if isinstance(raw, dict) else None
    key = (rtype if isinstance(rtype, str) and rtype in RESOURCES else "other", verdict)
    OTHER_VERDICTS[key] = OTHER_VERDICTS.get(key, 0) + 1


def test_mutations_of_the_other_types_were_accepted_and_declined():
    """Each of the other types had mutations accepted (promise checked) and declined."""
    if not OTHER_VERDICTS:
        pytest.skip("run with test_mutations_of_the_other_types_keep_the_promise")
    print(f"mutations: {dict(sorted(OTHER_VERDICTS.items()))}")
    for rtype in OTHER_TYPES:
        assert OTHER_VERDICTS.get((rtype, "accepted"), 0) >= 10, (rtype, OTHER_VERDICTS)
        assert OTHER_VERDICTS.get((rtype, "declined"), 0) >= 10, (rtype, OTHER_VERDICTS)


# --- 4. single characters -----------------------------------------------------------------------------------------

def _accepts(reader: Any, value: str) -> bool:
    try:
        reader(value)
    except checked._Decline:
        return False
    return True


def _chars() -> list[str]:
    return [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]


def test_every_character_the_string_reader_takes_is_a_valid_fhir_string():
    accepted = refused = 0
    wrong = []
    for char in _chars():
        for value in (char, f" {char} "):
            if not _accepts(checked._string, value):
                continue
            accepted += 1
            try:
                CodeableConcept.model_validate({"text": value})
            except ValidationError:
                refused += 1
                wrong.append(value)
    print(f"string reader: {accepted} accepted")
    assert not wrong, [hex(ord(v.strip(" ") or " ")) for v in wrong[:20]]
    assert accepted > 60_000  # what it declines are whitespace and control characters only


def test_a_lone_surrogate_is_declined_in_every_string():
    """Regression: "\ud800Relapsing..." in a Coding.display was accepted; pydantic refuses it."""
    for code_point in range(0xD800, 0xE000):
        char = chr(code_point)
        for reader in (checked._string, checked._term, checked._code, checked._uri, checked._id):
            assert not _accepts(reader, char) and not _accepts(reader, f"a{char}b"), (reader, hex(code_point))
    for raw in (_with("Condition", {"code": {"coding": [{"system": _SNOMED, "code": "1", "display": "\ud800x"}]}}),
                {**copy.deepcopy(_BASE), "note": [{"text": "x\udfff"}]}):
        assert _verdict(raw) == "declined"
        with pytest.raises(ValidationError):
            RESOURCES[raw["resourceType"]].model.model_validate(raw)


@pytest.mark.parametrize("reader, element", [(checked._code, "code"), (checked._uri, "system")])
def test_every_character_the_code_and_uri_readers_take_is_valid(reader, element):
    accepted = 0
    wrong = []
    for char in _chars():
        for value in (char, f"a{char}b"):
            if not _accepts(reader, value):
                continue
            accepted += 1
            try:
                Coding.model_validate({element: value})
            except ValidationError:
                wrong.append(value)
    print(f"{element} reader: {accepted} accepted")
    assert not wrong, wrong[:20]
    assert accepted >= 2 * 94  # printable ASCII, alone and between letters


# --- 5. dates -------------------------------------------------------------------------------------------------------

DATES = ["2026", "2026-02", "2026-02-28", "2026-02-29", "2026-02-30", "2026-13", "2026-00", "2024-02-29",
         "2026-01-02T10:00Z", "2026-01-02T10:00:00Z", "2026-01-02T10:00:00.1Z", "2026-01-02T10:00:00.123456Z",
         "2026-01-02T10:00:00.1234567Z", "2016-12-31T23:59:60Z", "2026-01-02T24:00:00Z", "2026-01-02T10:00:00+14:00",
         "2026-01-02T10:00:00+14:30", "2026-01-02T10:00:00-00:00", "2026-01-02T10:00:00+05:30",
         "2026-01-02T10:00:00-13:59", "2026-01-02T10:00:00", " 2026-01-02", "2026-01-02 ", "0000-01-01", "0001-01-01",
         "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30T10:00:00Z", "2026-01-02T10:00:00.Z",
         "2026-01-02T10:00:00,1Z", "2026-01-02T10:00:00+0100", "20260102", "2026-W01", "２０２６"]
# Plainly valid values the fast path must take (else it would rarely run).
ACCEPTED_DATES = {("effectiveDateTime", v) for v in ("2026", "2026-02", "2026-02-28", "2026-01-02T10:00:00Z",
                                                      "2026-01-02T10:00:00.123456Z", "2026-01-02T10:00:00+05:30")}
ACCEPTED_DATES |= {("issued", "2026-01-02T10:00:00Z"), ("issued", "2026-01-02T10:00:00.1Z")}
_BASE = {"resourceType": "Observation", "id": "o1", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]}, "subject": {"reference": "Patient/p1"},
         "effectiveDateTime": "2026-09-20T08:00:00Z", "valueQuantity": {"value": 30, "unit": "U/L"}}


@pytest.mark.parametrize("field", ["effectiveDateTime", "issued", "effectiveInstant", "effectivePeriod.start"])
@pytest.mark.parametrize("value", DATES)
def test_tricky_dates_are_declined_or_read_as_the_model_reads_them(field, value):
    raw = copy.deepcopy(_BASE)
    if field != "effectiveDateTime":
        del raw["effectiveDateTime"]
    if field == "effectivePeriod.start":
        raw["effectivePeriod"] = {"start": value, "end": "2026-09-30"}
    else:
        raw[field] = value
    verdict = _verdict(raw)  # also: same type and value, element by element (_same)
    if (field, value) in ACCEPTED_DATES:
        assert verdict == "accepted"
    if verdict == "accepted":
        view, model = read_observation(raw), Observation.model_validate(raw)
        if field == "effectivePeriod.start":
            view, model = view.effectivePeriod, model.effectivePeriod
            field = "start"
        v, m = getattr(view, field), getattr(model, field)
        assert type(v) is type(m) and v == m and (str(v) == str(m) or isinstance(v, datetime)), (v, m)
        assert isinstance(v, (str, date))


# --- 6. decimals and integers ----------------------------------------------------------------------------------------

DECIMALS = [0, -0.0, 1e-7, 1e20, 10 ** 30, True, False, "1.5", 1.50, 2 ** 63, 2 ** 64, -(2 ** 70), 10 ** 309,
            -(10 ** 309), 1e308, 5e-324, float("inf"), float("nan"), None, [], {}, [1.5]]
# Plainly valid values the fast path must take.
ACCEPTED_DECIMALS = [0, -0.0, 1e-7, 1e20, 1.50, -7, 2 ** 53 + 1, 1e308, 5e-324]


@pytest.mark.parametrize("value", DECIMALS, ids=repr)
@pytest.mark.parametrize("where", ["valueQuantity", "referenceRange.low", "component.valueQuantity"])
def test_tricky_decimals_are_declined_or_read_as_the_model_reads_them(where, value):
    raw = copy.deepcopy(_BASE)
    if where == "valueQuantity":
        raw["valueQuantity"]["value"] = value
    elif where == "referenceRange.low":
        raw["referenceRange"] = [{"low": {"value": value, "unit": "U/L"}, "high": {"value": 40, "unit": "U/L"}}]
    else:
        raw["component"] = [{"code": {"text": "x"}, "valueQuantity": {"value": value}}]
    verdict = _verdict(raw)
    if any(type(value) is type(v) and value == v for v in ACCEPTED_DECIMALS):
        assert verdict == "accepted"
    if verdict == "accepted":
        view = Observation.model_validate(raw)
        assert observation_fact(view).quantity is not None or where != "valueQuantity"


@pytest.mark.parametrize("value", DECIMALS, ids=repr)
@pytest.mark.parametrize("where", ["period", "duration", "doseQuantity"])
def test_tricky_decimals_in_a_dosage_are_declined_or_read_as_the_model_reads_them(where, value):
    """Timing.repeat.period and duration, Dosage.doseAndRate.doseQuantity.value: the dose and doses per day
    medication_fact computes from them (or what it raises) are the same."""
    raw = _with("MedicationRequest", {})
    dosage = raw["dosageInstruction"][0]
    if where == "doseQuantity":
        dosage["doseAndRate"][0]["doseQuantity"]["value"] = value
    else:
        dosage["timing"]["repeat"][where] = value
    verdict = _verdict(raw)
    if any(type(value) is type(v) and value == v for v in ACCEPTED_DECIMALS):
        assert verdict == "accepted"


@pytest.mark.parametrize("value", [0, 1, 2 ** 31 - 1, 2 ** 31, -1, True, 1.0, "1", None], ids=repr)
@pytest.mark.parametrize("where", ["frequency", "count", "offset"])
def test_tricky_positive_and_unsigned_ints_are_declined_or_read_as_the_model_reads_them(where, value):
    raw = _with("MedicationRequest", {})
    raw["dosageInstruction"][0]["timing"]["repeat"][where] = value
    verdict = _verdict(raw)
    lowest = 0 if where == "offset" else 1
    assert (verdict == "accepted") == (type(value) is int and lowest <= value < 2 ** 31), verdict


def test_a_decimal_beyond_float_range_is_read_as_by_the_model():
    """Regression: 10**309 was accepted and observation_fact overflowed on it (the model gives inf)."""
    raw = copy.deepcopy(_BASE)
    raw["valueQuantity"]["value"] = 10 ** 309
    assert _verdict(raw) == "declined"
    [obs] = _record_of(raw).of_type("Observation")
    assert observation_fact(obs).quantity.value == math.inf


@pytest.mark.parametrize("value", [0, 2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 - 1, True, False, 1.0, "1", None],
                         ids=repr)
def test_tricky_integers_are_declined_or_read_as_the_model_reads_them(value):
    raw = copy.deepcopy(_BASE)
    del raw["valueQuantity"]
    raw["valueInteger"] = value
    verdict = _verdict(raw)
    assert (verdict == "accepted") == (type(value) is int and -2 ** 31 <= value < 2 ** 31), verdict


# --- 7. build_record, checked or not --------------------------------------------------------------------------------

def _nodes(record: Any) -> dict[str, int]:
    """Checked nodes in a record, by resource type."""
    counts = {rtype: sum(isinstance(r, JsonNode) for r in record.of_type(rtype)) for rtype in RESOURCES}
    assert not isinstance(record.patient, JsonNode)
    return {rtype: n for rtype, n in counts.items() if n}


def test_build_record_checked_screens_as_plain_on_every_fixture_patient():
    knowledge = default_knowledge()
    assert len(FIXTURE_PATIENTS) >= 30
    nodes: dict[str, int] = {}
    for ref, resources in FIXTURE_PATIENTS:
        fast = build_record(ref, resources, checked=True)
        plain = build_record(ref, resources, checked=False)
        assert screen(fast, AT).to_json() == screen(plain, AT).to_json(), ref
        assert fast.problems == plain.problems, ref
        assert not _nodes(plain)
        for rtype, n in _nodes(fast).items():
            nodes[rtype] = nodes.get(rtype, 0) + n
        # And with the date horizon, which parses Observations through the checked reader too.
        keep = relevant_to(knowledge.tables, at=AT, rules=knowledge.rules)
        horizon_fast = build_record(ref, resources, keep=keep, checked=True)
        horizon_plain = build_record(ref, resources, keep=keep, checked=False)
        assert screen(horizon_fast, AT).to_json() == screen(horizon_plain, AT).to_json(), ref
    print(f"checked nodes in the fixture records: {nodes}")
    present = {r["resourceType"] for _ref, resources in FIXTURE_PATIENTS for r in resources} & set(RESOURCES)
    assert set(nodes) == present and len(present) >= 7, nodes  # every checked type there was read checked


def test_build_record_checked_screens_as_plain_on_the_bench_record():
    resources = aml_record(1_000)
    fast = build_record("Patient/p1", resources, checked=True)
    plain = build_record("Patient/p1", resources, checked=False)
    assert screen(fast, AT).to_json() == screen(plain, AT).to_json()
    nodes = _nodes(fast)
    assert nodes["Observation"] > 900 and nodes["MedicationAdministration"] == 17, nodes
    assert set(nodes) == {r["resourceType"] for r in resources} & set(RESOURCES), nodes


def test_build_record_checked_screens_as_plain_on_the_hand_made_resources():
    """A NYHA class III stage on a heart-failure Condition (E10a reads the record's Condition objects), a
    MedicationAdministration of a referenced Medication, and the rest: the same screening either way."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01", "gender": "female"}
    medication = {"resourceType": "Medication", "id": "med1", "code": {"coding": [
        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3041", "display": "cytarabine"}]}}
    resources = [patient, medication, *copy.deepcopy(HANDMADE)]
    fast = build_record("Patient/p1", resources, checked=True)
    plain = build_record("Patient/p1", resources, checked=False)
    assert _nodes(fast) == {rtype: sum(r["resourceType"] == rtype for r in HANDMADE) for rtype in OTHER_TYPES}
    fast_json, plain_json = screen(fast, AT).to_json(), screen(plain, AT).to_json()
    assert fast_json == plain_json
    assert "NYHA class 3 (stage)" in orjson.dumps(fast_json).decode()  # the stage was read


# --- 8. what the checker declines still goes through fhir.resources --------------------------------------------------

def _record_of(observation: dict[str, Any]):
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01", "gender": "female"}
    return build_record("Patient/p1", [patient, observation], checked=True)


@pytest.mark.parametrize("change", [{"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
                                    {"_status": {"id": "s1"}}, {"effectiveDateTime": "2016-12-31T23:59:60Z"},
                                    # fhir.resources does not check a code against its value set: "done" is a
                                    # valid code, the checker declines it and the model takes it.
                                    {"status": "done"}])
def test_a_declined_observation_is_still_a_model(change):
    raw = {**copy.deepcopy(_BASE), **change}
    assert read_observation(raw) is None
    record = _record_of(raw)
    [obs] = record.of_type("Observation")
    assert isinstance(obs, Observation) and not isinstance(obs, JsonNode)
    assert not record.problems


@pytest.mark.parametrize("change", [{"status": ""}, {"status": "fi nal\t"}, {"valueQuantity": {"value": "abc"}},
                                    {"effectiveDateTime": "2026-02-30"}, {"code": []}, {"status": None},
                                    {"valueString": "x"}, {"effectiveInstant": "2026-01-02"}])
def test_an_invalid_observation_is_still_a_data_problem(change):
    raw = {**copy.deepcopy(_BASE), **change}
    assert read_observation(raw) is None
    record = _record_of(raw)
    assert not record.of_type("Observation")
    [problem] = record.problems
    assert isinstance(problem, DataProblem) and problem.reference == "Observation/o1"


_OTHER_BASES = {
    "Condition": {"resourceType": "Condition", "id": "x1", "subject": _ME, "code": {"text": "x"},
                  "onsetDateTime": "2026-01-02"},
    "Procedure": {"resourceType": "Procedure", "id": "x1", "status": "completed", "subject": _ME,
                  "code": {"text": "x"}, "performedDateTime": "2026-01-02"},
    "MedicationAdministration": {"resourceType": "MedicationAdministration", "id": "x1", "status": "completed",
                                 "subject": _ME, "medicationCodeableConcept": {"text": "x"},
                                 "effectiveDateTime": "2026-01-02"},
    "Immunization": {"resourceType": "Immunization", "id": "x1", "status": "completed", "patient": _ME,
                     "vaccineCode": {"text": "x"}, "occurrenceDateTime": "2026-01-02"},
    "AllergyIntolerance": {"resourceType": "AllergyIntolerance", "id": "x1", "patient": _ME, "code": {"text": "x"},
                           "recordedDate": "2026-01-02"},
    "MedicationRequest": {"resourceType": "MedicationRequest", "id": "x1", "status": "active", "intent": "order",
                          "subject": _ME, "medicationCodeableConcept": {"text": "x"}, "authoredOn": "2026-01-02",
                          "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1,
                                                                       "periodUnit": "d"}},
                                                 "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}]},
    "MedicationStatement": {"resourceType": "MedicationStatement", "id": "x1", "status": "active", "subject": _ME,
                            "medicationCodeableConcept": {"text": "x"}, "effectiveDateTime": "2026-01-02"},
}
# Valid for fhir.resources, declined by the checked reader: the model reads them.
_DECLINED_VALID = [
    {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}, {"text": {"status": "generated",
                                                                              "div": "<div>x</div>"}},
    {"contained": [{"resourceType": "Medication", "id": "m1", "code": {"text": "x"}}]}, {"language": "en"},
    {"implicitRules": "http://example.org/rules"},
    {"identifier": [{"value": "1", "assigner": {"display": "x"}}]}, {"meta": {"security": [{"code": "R"}],
                                                                      "tag": [{"code": "t"}], "source": "#a",
                                                                      "extension": []}},
]
_DECLINED_BY_TYPE = {
    "Condition": [{"onsetAge": {"value": 40, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
                   "onsetDateTime": None}, {"onsetDateTime": "2016-12-31T23:59:60Z"}],
    "Procedure": [{"status": "done"}, {"performedRange": {"low": {"value": 1}}, "performedDateTime": None}],
    "MedicationAdministration": [{"medicationReference": {"reference": "#m1"}, "medicationCodeableConcept": None},
                                 {"dosage": {"rateRatio": {"numerator": {"value": 1}}}}],
    "Immunization": [{"protocolApplied": [{"doseNumberPositiveInt": 1}]},
                     {"occurrenceDateTime": "2016-12-31T23:59:60Z"}],
    # fhir.resources takes a null in a list of primitives (its extension may sit in _category).
    "AllergyIntolerance": [{"category": ["medication", "drug"]}, {"category": [None]},
                           {"reaction": [{"manifestation": [{"text": "x"}], "severity": "bad"}]}],
    "MedicationRequest": [{"dosageInstruction": [{"timing": {"repeat": {"timeOfDay": ["08:00:00"]}}}]},
                          {"dosageInstruction": [{"maxDosePerPeriod": {"numerator": {"value": 1}}}]},
                          {"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "d"}}},
                          {"dosageInstruction": [{"timing": {"repeat": {"periodUnit": "day"}}}]},
                          {"dosageInstruction": [{"timing": {"repeat": {"frequency": 1.0}}}]},
                          # pydantic's lax mode reads "yes" as true: the checked reader takes JSON booleans only.
                          {"reportedBoolean": "yes"}],
    "MedicationStatement": [{"status": "taken"}, {"dosage": [{"timing": {"repeat": {"boundsDuration": {
        "value": 5, "unit": "d"}}}}]}],
}
# Invalid for fhir.resources too: data problems either way.
_INVALID_BY_TYPE = {
    "Condition": [{"subject": None}, {"onsetDateTime": "2026-02-30"}, {"onsetString": "x"}, {"code": []}],
    "Procedure": [{"status": None}, {"performedDateTime": "2026-01-02T10:00"}, {"performedString": "x"}],
    "MedicationAdministration": [{"effectiveDateTime": None}, {"medicationReference": {"reference": "Medication/m"}},
                                 {"status": ""}],
    "Immunization": [{"occurrenceDateTime": None}, {"occurrenceString": "x"}, {"vaccineCode": None},
                     {"expirationDate": "2027-02-30"}],
    "AllergyIntolerance": [{"patient": None}, {"reaction": [{"severity": "mild"}]}, {"category": "food"}],
    "MedicationRequest": [{"intent": None}, {"medicationCodeableConcept": None},
                          {"dosageInstruction": [{"timing": {"repeat": {"frequency": 0}}}]},
                          {"substitution": {"reason": {"text": "x"}}}],
    "MedicationStatement": [{"subject": None}, {"effectivePeriod": {"start": "2026-01-02"}},
                            {"dosage": [{"sequence": 1.5}]}],
}


def _with(rtype: str, change: dict[str, Any]) -> dict[str, Any]:
    raw = {**copy.deepcopy(_OTHER_BASES[rtype]), **copy.deepcopy(change)}
    return {k: v for k, v in raw.items() if v is not None}


def _record_with(resource: dict[str, Any]):
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01", "gender": "female"}
    return build_record("Patient/p1", [patient, resource], checked=True)


@pytest.mark.parametrize("rtype", OTHER_TYPES)
def test_the_other_types_base_resources_are_read_checked(rtype):
    raw = _with(rtype, {})
    assert _verdict(raw) == "accepted"
    [res] = _record_with(raw).of_type(rtype)
    assert isinstance(res, JsonNode) and type(res).__name__ == rtype


@pytest.mark.parametrize("rtype, change", [(rtype, change) for rtype in OTHER_TYPES
                                           for change in _DECLINED_VALID + _DECLINED_BY_TYPE[rtype]])
def test_a_declined_resource_of_the_other_types_is_still_a_model(rtype, change):
    raw = _with(rtype, change)
    assert read_checked(raw) is None
    record = _record_with(raw)
    assert not record.problems, record.problems
    [res] = record.of_type(rtype)
    assert isinstance(res, RESOURCES[rtype].model) and not isinstance(res, JsonNode)


@pytest.mark.parametrize("rtype, change", [(rtype, change) for rtype in OTHER_TYPES
                                           for change in _INVALID_BY_TYPE[rtype]])
def test_an_invalid_resource_of_the_other_types_is_still_a_data_problem(rtype, change):
    raw = _with(rtype, change)
    assert read_checked(raw) is None
    record = _record_with(raw)
    assert not record.of_type(rtype)
    [problem] = record.problems
    assert problem.reference == f"{rtype}/x1"


@pytest.mark.parametrize("raw", [
    {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Medication", "id": "m1", "code": {"text": "x"}},
    {"resourceType": "DiagnosticReport", "id": "d1", "status": "final", "code": {"text": "x"}},
    {"resourceType": ["Condition"]}, {"resourceType": {"a": 1}}, {"resourceType": None}, {}, [], "Condition", None,
], ids=repr)
def test_read_checked_leaves_the_other_resource_types_to_fhir_resources(raw):
    assert read_checked(raw) is None


@pytest.mark.parametrize("field", ["Condition.onsetDateTime", "Condition.recordedDate",
                                   "Condition.abatementPeriod.end", "Procedure.performedDateTime",
                                   "MedicationAdministration.effectiveDateTime", "Immunization.occurrenceDateTime",
                                   "Immunization.expirationDate", "AllergyIntolerance.recordedDate",
                                   "AllergyIntolerance.onsetDateTime"])
@pytest.mark.parametrize("value", DATES)
def test_tricky_dates_of_the_other_types_are_declined_or_read_as_the_model_reads_them(field, value):
    rtype, *path = field.split(".")
    raw = _with(rtype, {})
    if path == ["abatementPeriod", "end"]:
        raw["abatementPeriod"] = {"end": value}
    else:
        raw[path[0]] = value
    verdict = _verdict(raw)  # same type and value, element by element
    if field != "Immunization.expirationDate" and ("effectiveDateTime", value) in ACCEPTED_DATES:
        assert verdict == "accepted"
    if field == "Immunization.expirationDate" and value in ("2026", "2026-02", "2026-02-28", "2024-02-29"):
        assert verdict == "accepted"
    if verdict == "accepted":
        model = RESOURCES[rtype].model.model_validate(raw)
        v, m = read_checked(raw), model
        for step in path:
            v, m = getattr(v, step), getattr(m, step)
        assert type(v) is type(m) and v == m, (v, m)


@pytest.mark.parametrize("change", [{"valueString": ["a"]}, {"code": {"text": {"a": 1}}}, {"id": ["o1"]},
                                    {"subject": {"reference": ["Patient/p1"]}}])
def test_a_list_where_a_string_belongs_is_a_data_problem(change):
    """Regression: read_observation raised TypeError (unhashable type) instead of declining."""
    raw = {**copy.deepcopy(_BASE), **change}
    if "valueString" in change:
        del raw["valueQuantity"]
    assert read_observation(raw) is None
    record = _record_of(raw)
    assert not record.of_type("Observation")
    assert len(record.problems) == 1 and record.problems[0].resource_type == "Observation"


def test_a_checked_node_shows_its_element_names_but_never_its_values():
    raw = {"resourceType": "Observation", "id": "secret-id", "status": "final",
           "code": {"text": "Jane Doe's ALT"}, "valueString": "born 1970-01-02"}
    node = checked.read_observation(raw)
    assert node is not None
    text = repr(node)
    assert "Observation(" in text and "valueString" in text
    assert "secret-id" not in text and "Jane" not in text and "1970" not in text


def test_the_listed_fields_are_the_installed_models_fields():
    """checked_fields.json (which spares start-up the model imports) lists exactly each model's elements: after
    a fhir.resources upgrade this fails until scripts/build_checked_fields.py is run."""
    import json

    from cds_service.gather.checked import _FIELDS_FILE, checked_fields_table

    assert json.loads(_FIELDS_FILE.read_text(encoding="utf-8")) == checked_fields_table()


def test_building_the_readers_imports_no_model():
    import subprocess
    import sys

    code = ("import sys; from cds_service.gather.checked import prepare_readers; prepare_readers(); "
            "print(sorted(m for m in sys.modules if m.startswith('fhir.resources.R4B.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- gather.compiled ----------------------------------------------------------------------------------------------

def _compiled_types(spec: Any = checked.OBSERVATION) -> list[Any]:
    """The checked types an Observation holds, itself first."""
    out = [spec]
    for read, _repeats in spec.elements.values():
        if isinstance(read, checked._Type) and all(read is not t for t in out):
            out += [t for t in _compiled_types(read) if all(t is not o for o in out)]
    return out


def test_the_compiled_structs_have_the_checked_types_elements_and_read_the_others_as_none():
    checked.prepare_readers()
    for spec in _compiled_types():
        struct = struct_of(spec)
        assert struct.__name__ == spec.name
        assert set(struct.__struct_fields__) == set(spec.elements), spec.name
        node_class = type(spec.read(_minimal(spec)))
        for name in vars(node_class):
            if not name.startswith("__"):
                assert name in struct.__struct_fields__ or getattr(struct, name) is None, (spec.name, name)


def _minimal(spec: Any) -> dict[str, Any]:
    """The smallest element of a type the checked reader takes (its required elements, minimal)."""
    samples = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "text": "x"}
    return {name: samples[name] for name in spec.required} or {next(iter(spec.elements)): _leaf(spec)}


def _leaf(spec: Any) -> Any:
    read, repeats = next(iter(spec.elements.values()))
    value: Any = _minimal(read) if isinstance(read, checked._Type) else \
        "x" if not hasattr(read, "allowed") else read.allowed[0]
    if read in (checked._date_time, checked._instant, checked._date):
        value = "2026-01-02T10:00:00Z" if read is not checked._date else "2026-01-02"
    elif read in (checked._integer, checked._positive_int, checked._unsigned_int, checked._decimal):
        value = 1
    elif read is checked._boolean:
        value = True
    elif read is checked._reference_string:
        value = "Patient/p1"
    return [value] if repeats else value


@pytest.mark.parametrize("text", ["a\\u0000b", "caf\\u00e9", "\\u00a0", "a\\nb"])
def test_an_escape_sends_the_observation_to_the_python_reader(text):
    blob = orjson.dumps(_BASE)[:-1] + b',"note":[{"text":"' + text.encode() + b'"}]}'
    assert read_observation_bytes(blob) is None
    assert read_observation_bytes(orjson.dumps(_BASE)) is not None


@pytest.mark.parametrize("change", [{"note": [{"text": "\u00a0"}]}, {"note": [{"text": "\u3000\u2028"}]},
                                    {"note": [{"text": "\x7f"}]}, {"code": {}}, {"valueString": ""},
                                    {"valueQuantity": {"value": 2 ** 63}}, {"id": "a" * 65},
                                    {"subject": {"reference": "patient/p1"}}, {"valueQuantity": {"code": " mg"}},
                                    {"code": {"coding": [{"system": "http://loinc .org", "code": "1"}]}},
                                    {"effectiveDateTime": "2016-12-31T23:59:60Z"},
                                    {"valueInteger": 1, "valueString": "1"}])
def test_what_the_python_reader_would_check_string_by_string_is_declined_by_the_compiled_one(change):
    raw = {**copy.deepcopy(_BASE), **change}
    assert read_observation_bytes(orjson.dumps(raw)) is None
    _verdict(raw)


def test_a_compiled_observation_shows_its_element_names_but_never_its_values():
    got = read_observation_bytes(orjson.dumps(_BASE))
    assert repr(got) == "Observation(resourceType, id, status, code, subject, effectiveDateTime, valueQuantity)"
    assert "1742-6" not in repr(got.code) and "30" not in repr(got.valueQuantity)
