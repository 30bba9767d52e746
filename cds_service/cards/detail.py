"""Helpers of a card's Markdown ``detail``: escaping, and sorting criteria into blocking / open / met.

Text that may come from the EHR's records (displays, values, notes) is escaped, so a record cannot inject
Markdown or HTML into the card. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from cds_service.criteria.result import CriterionResult, Result
from cds_service.rules import TrialRules

__all__ = ["md", "blocking", "unknowns", "met", "split_open", "is_attestation"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<#|~])")


def md(text: Any) -> str:
    """Plain text made safe for GitHub Markdown (special characters escaped, line breaks flattened)."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", flat)


def blocking(criteria: Iterable[CriterionResult]) -> list[CriterionResult]:
    """Criteria that make the patient ineligible: an inclusion not met or an exclusion met."""
    return [c for c in criteria if (c.kind == "inclusion" and c.result is Result.NOT_MET)
            or (c.kind == "exclusion" and c.result is Result.MET)]


def unknowns(criteria: Iterable[CriterionResult]) -> list[CriterionResult]:
    """Criteria still to confirm."""
    return [c for c in criteria if c.result is Result.UNKNOWN]


def met(criteria: Iterable[CriterionResult]) -> list[CriterionResult]:
    """Criteria that are fine: inclusions met and exclusions not met."""
    return [c for c in criteria if (c.kind == "inclusion" and c.result is Result.MET)
            or (c.kind == "exclusion" and c.result is Result.NOT_MET)]


def is_attestation(rules: TrialRules, criterion_id: str) -> bool:
    """A criterion no record can decide (the rule file's ``attestation: true``)."""
    try:
        return rules.criterion(criterion_id).attestation
    except KeyError:
        return False


def split_open(items: list[CriterionResult], rules: TrialRules) -> tuple[list[CriterionResult],
                                                                         list[CriterionResult]]:
    """Open items a clinician can act on now (order a test, check a date) and investigator attestations."""
    data = [c for c in items if not is_attestation(rules, c.id)]
    return data, [c for c in items if is_attestation(rules, c.id)]


