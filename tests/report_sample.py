"""A hand-made screening JSON covering every criterion of the trial rules, for report-page tests.

It has the engine's ``Screening.to_json()`` shape, with one criterion of each kind of outcome: blocking (an
inclusion not met, an exclusion with ``until``), to confirm (unknown) and met, evidence with dates.
"""

from __future__ import annotations

from typing import Any

from cds_service.config import Settings
from cds_service.rules import TrialRules, load_trial_rules

PATIENT = "Patient/ts-report-0007"

_SPECIAL: dict[str, dict[str, Any]] = {
    "I1": {"result": "met", "reason": "Age 56 at consent (born 1970-05-01).",
           "evidence": [{"reference": PATIENT, "value": 56, "unit": "a", "date": "1970-05-01"}]},
    "I3": {"result": "unknown", "reason": "No CLL1 or CD38 flow cytometry result is recorded.", "evidence": []},
    "I7a": {"result": "met", "reason": "ALT 0.8 x ULN and AST 0.6 x ULN on 2026-09-24.",
            "evidence": [{"reference": "Observation/alt-1", "value": 32, "unit": "U/L",
                          "date": "2026-09-24T07:30:00+00:00", "display": "ALT"},
                         {"reference": "Observation/ast-1", "value": 24.5, "unit": "U/L",
                          "date": "2026-09-24T07:30:00+00:00", "note": "ULN 40 U/L"}]},
    "I7d": {"result": "not-met", "reason": "LVEF 38% on 2026-08-12 is below 45%.",
            "evidence": [{"reference": "Observation/lvef-1", "value": 38, "unit": "%", "date": "2026-08-12"}]},
    "E5": {"result": "met", "reason": "Allogeneic HSCT on 2026-07-01, within 6 months before screening.",
           "until": "2027-01-01",
           "evidence": [{"reference": "Procedure/hsct-1", "date": "2026-07-01", "display": "Allo-HSCT"}]},
}


def sample_rules() -> TrialRules:
    """The shipped trial rules."""
    return load_trial_rules(Settings().mappings_dir)


def sample_screening(rules: TrialRules | None = None, status: str = "ineligible") -> dict[str, Any]:
    """A screening with every criterion of ``rules``: the special ones above, others met / ruled out."""
    rules = rules or sample_rules()
    criteria = []
    for c in rules.criteria:
        item: dict[str, Any] = {"id": c.id, "kind": c.kind}
        if c.id in _SPECIAL:
            item.update(_SPECIAL[c.id])
        elif c.kind == "inclusion":
            item.update(result="unknown", reason=f"{c.label}: investigator to confirm.", evidence=[])
        else:
            item.update(result="not-met", reason="None recorded.", evidence=[])
        criteria.append(item)
    return {"trial": rules.trial_id, "patient": PATIENT, "evaluated_at": "2026-10-01T09:00:00+00:00",
            "status": status, "criteria": criteria,
            "not_retrieved": {"MedicationAdministration": "the EHR's prefetch query failed"}}
