"""The criterion registry: one function per leaf criterion, registered under its id.

A criterion function takes ``Facts`` and returns a ``Verdict``; the registry adds the id and kind from the trial
rule file, so the list of criteria, their order and their kinds live in data. At start-up
``check_registry`` proves that every criterion in the rule file has exactly one implementation.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from cds_service.criteria.result import CriterionResult, Evidence, Result
from cds_service.errors import ConfigurationError

if TYPE_CHECKING:
    from cds_service.facts.index import Facts
    from cds_service.rules import TrialRules

__all__ = ["Verdict", "met", "not_met", "unknown", "criterion", "REGISTRY", "evaluate", "check_registry"]


@dataclass(frozen=True)
class Verdict:
    result: Result
    reason: str
    evidence: tuple[Evidence, ...] = ()
    until: date | None = None


def met(reason: str, *evidence: Evidence, until: date | None = None) -> Verdict:
    return Verdict(Result.MET, reason, tuple(evidence), until)


def not_met(reason: str, *evidence: Evidence) -> Verdict:
    return Verdict(Result.NOT_MET, reason, tuple(evidence))


def unknown(reason: str, *evidence: Evidence) -> Verdict:
    return Verdict(Result.UNKNOWN, reason, tuple(evidence))


Check = Callable[["Facts"], Verdict]
REGISTRY: dict[str, Check] = {}


def criterion(criterion_id: str) -> Callable[[Check], Check]:
    """Register ``fn`` as the implementation of ``criterion_id``."""

    def register(fn: Check) -> Check:
        if criterion_id in REGISTRY:
            raise ConfigurationError(f"criterion {criterion_id} is implemented twice")
        REGISTRY[criterion_id] = fn
        return fn

    return register


def _load_all() -> None:
    # Importing the modules registers their criteria.
    from cds_service.criteria import (  # noqa: F401
        cardiac,
        disease,
        inclusion,
        other,
        treatments,
        virology,
    )


def check_registry(rules: TrialRules) -> None:
    """Every criterion in the rule file has an implementation, and no implementation is orphaned."""
    _load_all()
    listed = {c.id for c in rules.criteria}
    missing = sorted(listed - REGISTRY.keys())
    extra = sorted(REGISTRY.keys() - listed)
    if missing or extra:
        raise ConfigurationError(f"criteria without implementation: {missing}; implementations not in the "
                                 f"trial rules: {extra}")


def evaluate(facts: Facts) -> list[CriterionResult]:
    """Evaluate every criterion of the trial, in the rule file's order."""
    _load_all()
    out = []
    for info in facts.rules.criteria:
        v = REGISTRY[info.id](facts)
        out.append(CriterionResult(info.id, info.kind, v.result, v.reason, v.evidence, v.until))
    return out
