"""Small builders of FHIR R4 resources for tests: readable, realistic, and dated relative to ``AT``.

    screen_of(patient(birth="1970-05-01"), condition(SCT, "91861009"), at=AT)

Every builder returns a plain dict (raw FHIR JSON), so tests exercise the same parsing as real input.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.gather.record import build_record
from cds_service.pipeline import Screening, screen

AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
PID = "p1"

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

_ids = itertools.count(1)


def days_ago(n: float, at: datetime = AT) -> str:
    """An ISO dateTime ``n`` days before ``at``."""
    return (at - timedelta(days=n)).isoformat()


def date_ago(n: float, at: datetime = AT) -> str:
    """An ISO date ``n`` days before ``at``."""
    return (at - timedelta(days=n)).date().isoformat()


def cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def patient(birth: str | None = "1970-05-01", gender: str = "female", pid: str = PID, **extra: Any) -> dict:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender}
    if birth:
        res["birthDate"] = birth
    res.update(extra)
    return res


def condition(system: str, code: str, *, onset: str | None = None, clinical: str | None = "active",
              verification: str | None = "confirmed", pid: str = PID, **extra: Any) -> dict:
    res: dict[str, Any] = {"resourceType": "Condition", "id": _id("cond"), "code": cc(system, code),
                           "subject": {"reference": f"Patient/{pid}"}}
    if clinical:
        res["clinicalStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        res["verificationStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
    if onset:
        res["onsetDateTime"] = onset
    res.update(extra)
    return res


def observation(system: str, code: str, *, value: float | None = None, unit: str | None = None,
                date: str | None = None, high: float | None = None, low: float | None = None,
                status: str = "final", comparator: str | None = None, pid: str = PID, **extra: Any) -> dict:
    res: dict[str, Any] = {"resourceType": "Observation", "id": _id("obs"), "status": status,
                           "code": cc(system, code), "subject": {"reference": f"Patient/{pid}"},
                           "effectiveDateTime": date or days_ago(2)}
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit:
            q.update({"unit": unit, "system": UCUM, "code": unit})
        if comparator:
            q["comparator"] = comparator
        res["valueQuantity"] = q
    if high is not None or low is not None:
        rr: dict[str, Any] = {}
        if low is not None:
            rr["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            rr["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        res["referenceRange"] = [rr]
    res.update(extra)
    return res


def coded_observation(system: str, code: str, value_system: str, value_code: str, *, date: str | None = None,
                      status: str = "final", pid: str = PID, **extra: Any) -> dict:
    res = observation(system, code, date=date, status=status, pid=pid)
    res["valueCodeableConcept"] = cc(value_system, value_code)
    res.update(extra)
    return res


def procedure(system: str, code: str, *, performed: str | None = None, status: str = "completed",
              pid: str = PID, **extra: Any) -> dict:
    res: dict[str, Any] = {"resourceType": "Procedure", "id": _id("proc"), "status": status,
                           "code": cc(system, code), "subject": {"reference": f"Patient/{pid}"}}
    if performed:
        res["performedDateTime"] = performed
    res.update(extra)
    return res


def immunization(cvx: str, *, date: str, status: str = "completed", system: str = CVX, pid: str = PID) -> dict:
    return {"resourceType": "Immunization", "id": _id("imm"), "status": status,
            "vaccineCode": cc(system, cvx), "patient": {"reference": f"Patient/{pid}"},
            "occurrenceDateTime": date}


def medication_administration(system: str, code: str, *, date: str, dose_mg: float | None = None,
                              route: str | None = "26643006", status: str = "completed", pid: str = PID) -> dict:
    res: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": _id("ma"), "status": status,
                           "medicationCodeableConcept": cc(system, code),
                           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date}
    if dose_mg is not None or route:
        dosage: dict[str, Any] = {}
        if dose_mg is not None:
            dosage["dose"] = {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}
        if route:
            dosage["route"] = cc(SCT, route)
        res["dosage"] = dosage
    return res


def medication_request(system: str, code: str, *, start: str, end: str | None = None, status: str = "active",
                       dose_mg: float | None = None, per_day: int = 1, route: str | None = "26643006",
                       pid: str = PID) -> dict:
    bounds: dict[str, Any] = {"start": start}
    if end:
        bounds["end"] = end
    dosage: dict[str, Any] = {"timing": {"repeat": {"boundsPeriod": bounds, "frequency": per_day,
                                                    "period": 1, "periodUnit": "d"}}}
    if dose_mg is not None:
        dosage["doseAndRate"] = [{"doseQuantity": {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}}]
    if route:
        dosage["route"] = cc(SCT, route)
    return {"resourceType": "MedicationRequest", "id": _id("mr"), "status": status, "intent": "order",
            "medicationCodeableConcept": cc(system, code), "subject": {"reference": f"Patient/{pid}"},
            "authoredOn": start, "dosageInstruction": [dosage]}


def medication_statement(system: str, code: str, *, start: str, end: str | None = None, status: str = "completed",
                         pid: str = PID) -> dict:
    period: dict[str, Any] = {"start": start}
    if end:
        period["end"] = end
    return {"resourceType": "MedicationStatement", "id": _id("ms"), "status": status,
            "medicationCodeableConcept": cc(system, code), "subject": {"reference": f"Patient/{pid}"},
            "effectivePeriod": period}


def allergy(system: str, code: str, *, clinical: str = "active", verification: str = "confirmed",
            pid: str = PID) -> dict:
    return {"resourceType": "AllergyIntolerance", "id": _id("alg"),
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", clinical),
            "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                     verification),
            "code": cc(system, code), "patient": {"reference": f"Patient/{pid}"}, "recordedDate": date_ago(100)}


def record_of(*resources: dict, not_retrieved: dict[str, str] | None = None, pid: str = PID):
    return build_record(f"Patient/{pid}", list(resources), not_retrieved=not_retrieved)


def screen_of(*resources: dict, at: datetime = AT, not_retrieved: dict[str, str] | None = None,
              pid: str = PID) -> Screening:
    """Screen a record made of these resources (a bundle given to the command: everything retrieved)."""
    return screen(record_of(*resources, not_retrieved=not_retrieved, pid=pid), at)


def result_of(criterion_id: str, *resources: dict, at: datetime = AT,
              not_retrieved: dict[str, str] | None = None):
    """The CriterionResult of one criterion for a record made of these resources."""
    return screen_of(*resources, at=at, not_retrieved=not_retrieved).criterion(criterion_id)


AML = (SCT, "91861009")
AML_RELAPSE_CM = (ICD10CM, "C92.02")
