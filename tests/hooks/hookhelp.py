"""Helpers for the CDS Hooks service tests: request bodies and prefetch objects."""

from __future__ import annotations

import uuid
from typing import Any

from builders import PID, SCT, condition, patient

from cds_service.hooks.app import state
from cds_service.hooks.discovery import SERVICE_ID

SERVICE_URL = f"/cds-services/{SERVICE_ID}"
HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
AML = ("http://snomed.info/sct", "91861009")


def templates_of(app) -> dict[str, str]:
    return {t.key: t.kind for t in state(app).templates}


def searchset(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r.get('id', 'x')}",
                       "resource": r, "search": {"mode": "match"}} for r in resources]}


def full_prefetch(app, *resources: dict, overrides: dict | None = None) -> dict[str, Any]:
    """A complete prefetch: each resource under the first key of its type, every other key null."""
    keys = templates_of(app)
    by_kind: dict[str, list[dict]] = {}
    for r in resources:
        by_kind.setdefault(r["resourceType"], []).append(r)
    out: dict[str, Any] = {}
    for key, kind in keys.items():
        if kind == "Patient":
            out[key] = by_kind.get("Patient", [None])[0]
        elif kind in by_kind:
            out[key] = searchset(*by_kind.pop(kind))
        else:
            out[key] = None
    out.update(overrides or {})
    return out


def hook_body(prefetch: dict | None = None, *, patient_id: str = PID, hook_instance: str = HOOK_INSTANCE,
              **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": hook_instance,
                            "context": {"patientId": patient_id, "userId": "Practitioner/example"}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def aml_patient(*more: dict) -> list[dict]:
    """A woman of 56 with AML (a potential candidate with much still to confirm), plus ``more`` resources."""
    return [patient(birth="1970-05-01"), condition(SCT, AML[1], onset="2025-01-10"), *more]


def new_instance() -> str:
    return str(uuid.uuid4())
