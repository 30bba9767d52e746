"""The one entry point: ``screen(record, at)``, used alike by the hook, the command line and the benchmarks.

    record (gathered) -> Facts (normalised, indexed) -> criteria (evaluated) -> Screening (for cards / JSON)

No I/O happens here: the record has been gathered already and the knowledge (code tables, trial rules) was
loaded at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import evaluate
from cds_service.criteria.result import CriterionResult
from cds_service.criteria.status import overall_status
from cds_service.facts.dates import ensure_aware
from cds_service.facts.index import Facts
from cds_service.gather.record import DataProblem, PatientRecord

__all__ = ["Screening", "screen"]


@dataclass(frozen=True)
class Screening:
    """The verdict on one patient for the trial: overall status, every leaf criterion, and data problems."""

    trial: str
    patient: str
    evaluated_at: datetime
    status: str
    criteria: tuple[CriterionResult, ...]
    problems: tuple[DataProblem, ...] = ()
    not_retrieved: dict[str, str] = field(default_factory=dict)
    set_aside: int = 0  # resources not this patient's (by reference), counted as a data problem, never shown

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trial": self.trial,
            "patient": self.patient,
            "evaluated_at": self.evaluated_at.isoformat(),
            "status": self.status,
            "criteria": [c.to_json() for c in self.criteria],
        }
        if self.problems:
            out["data_problems"] = [p.to_json() for p in self.problems]
        if self.not_retrieved:
            out["not_retrieved"] = dict(self.not_retrieved)
        if self.set_aside:
            out["set_aside"] = self.set_aside
        return out

    def criterion(self, criterion_id: str) -> CriterionResult:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)


def screen(record: PatientRecord, at: datetime | None = None, knowledge: Knowledge | None = None) -> Screening:
    """Screen one patient's record for the trial, as of ``at`` (default: now, UTC)."""
    knowledge = knowledge or default_knowledge()
    at = ensure_aware(at) if at is not None else datetime.now(UTC)
    facts = Facts(record, at, knowledge)
    results = tuple(evaluate(facts))
    return Screening(
        trial=knowledge.rules.trial_id,
        patient=record.patient_ref,
        evaluated_at=at,
        status=overall_status(facts, results),
        criteria=results,
        problems=tuple(record.problems),
        not_retrieved=dict(record.not_retrieved),
        set_aside=record.set_aside,
    )
