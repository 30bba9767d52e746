"""UCUM unit conversion (through ``ucumvert``, a UCUM grammar over ``pint``) and quantities with comparators.

Values are converted with UCUM semantics, never compared as unit strings. Conversion factors are computed
once per (from, to, molar mass) pair and cached, so the per-value cost is a dict lookup. Conversions between
amount-of-substance and mass units (creatinine umol/L -> mg/dL) use the analyte's molar mass from its value
set; unit pairs a UCUM library treats as different dimensions but a lab treats as the same quantity
(enzyme ``U`` vs ``[IU]``) are declared as aliases in the value set, as data.

An unknown or missing unit gives None (the caller's criterion becomes UNKNOWN), never a guess.
This module does no I/O.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["Quantity", "conversion_factor", "convert"]

_lock = threading.Lock()
_registry: Any = None


def _ureg() -> Any:
    global _registry
    with _lock:
        if _registry is None:
            from ucumvert import PintUcumRegistry  # imported lazily: building the registry takes ~0.7 s

            _registry = PintUcumRegistry()
    return _registry


@lru_cache(maxsize=512)
def _parse(unit: str) -> Any:
    try:
        return _ureg().from_ucum(unit)
    except Exception:  # noqa: BLE001 - ucumvert raises lark and pint errors of many kinds; all mean "unknown unit"
        return None


_ANNOTATION = re.compile(r"\{[^}]*\}")


@lru_cache(maxsize=2048)
def conversion_factor(from_unit: str, to_unit: str, molar_mass: float | None = None) -> float | None:
    """Multiply a value in ``from_unit`` by this to express it in ``to_unit``; None if not convertible.

    UCUM treats annotations (``{1.73_m2}``, ``{beats}``) as the unit 1, so ``mL/min/{1.73_m2}`` would convert
    to ``mL/min`` - exactly the eGFR-for-CrCl mistake. Units whose annotations differ are therefore refused;
    a value set that knows two spellings are the same quantity says so with ``unit_aliases``.
    """
    if from_unit == to_unit:
        return 1.0
    if sorted(_ANNOTATION.findall(from_unit)) != sorted(_ANNOTATION.findall(to_unit)):
        return None
    src, dst = _parse(from_unit), _parse(to_unit)
    if src is None or dst is None:
        return None
    try:
        return float((1 * src).to(dst).magnitude)
    except Exception:  # noqa: BLE001 - pint DimensionalityError and friends
        pass
    if molar_mass:
        mm = molar_mass * _parse("g/mol")
        for q in ((1 * src) * mm, (1 * src) / mm):
            try:
                return float(q.to(dst).magnitude)
            except Exception:  # noqa: BLE001
                continue
    return None


def convert(
    value: float,
    from_unit: str | None,
    to_unit: str,
    *,
    molar_mass: float | None = None,
    aliases: Mapping[str, str] | None = None,
) -> float | None:
    """Convert ``value`` from ``from_unit`` to ``to_unit`` (UCUM codes), or None when that is not possible."""
    if from_unit is None:
        return None
    unit = from_unit.strip()
    if aliases:
        unit = aliases.get(unit, unit)
    factor = conversion_factor(unit, to_unit, molar_mass)
    return None if factor is None else value * factor


@dataclass(frozen=True)
class Quantity:
    """A measured value, possibly censored (``<0.5``): ``comparator`` is one of None, <, <=, >, >=."""

    value: float
    unit: str | None
    comparator: str | None = None

    def display(self) -> str:
        unit = f" {self.unit}" if self.unit and self.unit != "1" else ""
        return f"{self.comparator or ''}{_fmt(self.value)}{unit}"

    def scaled(self, factor: float, unit: str | None) -> Quantity:
        return Quantity(self.value * factor, unit, self.comparator)

    def at_most(self, limit: float) -> bool | None:
        """Is the true value <= limit? None when the comparator leaves it open."""
        return _decide(self, limit, strict=False, upper=True)

    def less_than(self, limit: float) -> bool | None:
        return _decide(self, limit, strict=True, upper=True)

    def at_least(self, limit: float) -> bool | None:
        return _decide(self, limit, strict=False, upper=False)

    def greater_than(self, limit: float) -> bool | None:
        return _decide(self, limit, strict=True, upper=False)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"


def _decide(q: Quantity, limit: float, *, strict: bool, upper: bool) -> bool | None:
    """Tri-state comparison that respects a censored value's comparator."""
    v, comp = q.value, q.comparator
    if upper:  # question: value <= limit (or < limit when strict)?
        ok = (lambda x: x < limit) if strict else (lambda x: x <= limit)
        if comp in (None, "="):
            return ok(v)
        if comp in ("<", "<="):
            # true value is below v: certainly ok if v itself (exclusive for "<") satisfies the bound
            if ok(v) or (comp == "<" and v <= limit):
                return True
            return None
        # ">" / ">=": true value is above v
        if (comp == ">" and v >= limit) or (comp == ">=" and not ok(v)):
            return False
        return None
    ok = (lambda x: x > limit) if strict else (lambda x: x >= limit)
    if comp in (None, "="):
        return ok(v)
    if comp in (">", ">="):
        if ok(v) or (comp == ">" and v >= limit):
            return True
        return None
    if (comp == "<" and v <= limit) or (comp == "<=" and not ok(v)):
        return False
    return None
