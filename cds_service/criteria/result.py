"""The tri-state criterion result and its combination tables.

Every criterion is MET, NOT_MET or UNKNOWN. Missing data is UNKNOWN until evidence (or a retrieved record
with nothing in it) says otherwise. ``Result`` refuses to be used as a bool, so nobody writes ``if result:``
and silently turns UNKNOWN into "no".

Combination tables (Kleene's strong three-valued logic), each cell tested in ``tests/criteria/test_result.py``:

    all_of   | MET      NOT_MET  UNKNOWN        any_of   | MET   NOT_MET  UNKNOWN
    ---------+--------------------------        ---------+---------------------
    MET      | MET      NOT_MET  UNKNOWN        MET      | MET   MET      MET
    NOT_MET  | NOT_MET  NOT_MET  NOT_MET        NOT_MET  | MET   NOT_MET  UNKNOWN
    UNKNOWN  | UNKNOWN  NOT_MET  UNKNOWN        UNKNOWN  | MET   UNKNOWN  UNKNOWN

This module does no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

__all__ = ["Result", "all_of", "any_of", "negate", "Evidence", "CriterionResult"]


class Result(enum.Enum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"

    def __bool__(self) -> bool:
        raise TypeError("Result is tri-state: compare with Result.MET / NOT_MET / UNKNOWN explicitly")

    @classmethod
    def of(cls, value: bool | None) -> Result:
        """Map True/False/None to MET/NOT_MET/UNKNOWN."""
        if value is None:
            return cls.UNKNOWN
        return cls.MET if value else cls.NOT_MET


def all_of(results: Iterable[Result]) -> Result:
    """Conjunction: NOT_MET wins, then UNKNOWN; MET only if every part is MET (an empty list is MET)."""
    seen_unknown = False
    for r in results:
        if r is Result.NOT_MET:
            return Result.NOT_MET
        if r is Result.UNKNOWN:
            seen_unknown = True
    return Result.UNKNOWN if seen_unknown else Result.MET


def any_of(results: Iterable[Result]) -> Result:
    """Disjunction: MET wins, then UNKNOWN; NOT_MET only if every part is NOT_MET (an empty list is NOT_MET)."""
    seen_unknown = False
    for r in results:
        if r is Result.MET:
            return Result.MET
        if r is Result.UNKNOWN:
            seen_unknown = True
    return Result.UNKNOWN if seen_unknown else Result.NOT_MET


def negate(result: Result) -> Result:
    """MET <-> NOT_MET; UNKNOWN stays UNKNOWN."""
    return {Result.MET: Result.NOT_MET, Result.NOT_MET: Result.MET}.get(result, Result.UNKNOWN)


def _iso(value: date | datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


@dataclass(frozen=True)
class Evidence:
    """One datum a result rests on: the resource it came from, its value, unit and date."""

    reference: str
    value: Any = None
    unit: str | None = None
    date: date | datetime | str | None = None
    code: str | None = None
    display: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference}
        for key in ("value", "unit", "code", "display", "note"):
            v = getattr(self, key)
            if v is not None:
                out[key] = v
        if self.date is not None:
            out["date"] = _iso(self.date)
        return out


@dataclass(frozen=True)
class CriterionResult:
    """The verdict on one leaf criterion, with a one-sentence reason and the evidence it rests on.

    ``until`` is set on a MET time-window exclusion (a washout, "within N weeks") to the first date on
    which the window has passed, so the card can say "not eligible until ...".
    """

    id: str
    kind: str  # "inclusion" | "exclusion"
    result: Result
    reason: str
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)
    until: date | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "result": self.result.value,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.until is not None:
            out["until"] = self.until.isoformat()
        return out
