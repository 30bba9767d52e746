"""``GET /cds-services``: the discovery document (CDS Hooks 2.0.1), listing the one patient-view service."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import ServiceState, json_response, state

__all__ = ["bp", "SERVICE_ID", "HOOK", "service_description"]

bp = Blueprint("discovery", __name__)

SERVICE_ID = "trialscreen-nct06880354"
HOOK = "patient-view"


def service_description(svc: ServiceState) -> dict[str, Any]:
    """The discovery entry of the screening service."""
    rules = svc.knowledge.rules
    return {
        "hook": HOOK,
        "id": SERVICE_ID,
        "title": f"Clinical trial screening: {rules.trial_id}",
        "description": (f"Screens the patient against every eligibility criterion of {rules.trial_id} "
                        f"({rules.title}) and shows a card when the patient may be a candidate, with what is "
                        "still to confirm and how."),
        "prefetch": discovery_prefetch(svc.templates),
        "usageRequirements": ("Intended for hematology/oncology users. Grant read access to Patient, Condition, "
                              "Observation, Procedure, MedicationRequest, MedicationStatement, "
                              "MedicationAdministration, Medication, Immunization and AllergyIntolerance, or "
                              "satisfy every prefetch template."),
    }


@bp.get("/cds-services")
def discovery() -> Response:
    """The services this CDS service offers."""
    return json_response({"services": [service_description(state(current_app))]})
