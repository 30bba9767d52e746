"""The patient-level status from the leaf results.

* ``not-applicable``: the record holds no acute myeloid leukemia diagnosis of any kind (an APL diagnosis counts
  as AML-family: such a patient is ``ineligible`` through E3, not "not applicable"; an unrecognised code whose
  display names AML or APL counts too, so that its card asks to confirm it).
* ``ineligible``: any inclusion NOT_MET or any exclusion MET.
* ``potential-candidate``: otherwise (every remaining item is met or still to confirm).

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.criteria.result import CriterionResult, Result
from cds_service.facts.index import Facts

__all__ = ["overall_status", "has_aml_family_diagnosis", "NOT_APPLICABLE", "INELIGIBLE", "POTENTIAL"]

NOT_APPLICABLE = "not-applicable"
INELIGIBLE = "ineligible"
POTENTIAL = "potential-candidate"


def has_aml_family_diagnosis(facts: Facts) -> bool:
    """Any non-refuted AML or APL Condition, whatever its clinical status (history included), or a Condition no
    table recognises whose display names AML or APL (the safety net: I2 then asks to confirm it)."""
    if facts.conditions("aml") or facts.conditions("apl"):
        return True
    return facts.unrecognised(("Condition",), "aml") is not None or \
        facts.unrecognised(("Condition",), "apl") is not None


def overall_status(facts: Facts, results: Iterable[CriterionResult]) -> str:
    if not has_aml_family_diagnosis(facts):
        return NOT_APPLICABLE
    for r in results:
        if (r.kind == "inclusion" and r.result is Result.NOT_MET) or (
            r.kind == "exclusion" and r.result is Result.MET
        ):
            return INELIGIBLE
    return POTENTIAL
