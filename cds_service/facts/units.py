"""UCUM unit conversion (through ``ucumvert``, a UCUM grammar over ``pint``) and quantities with comparators.

Values are converted with UCUM semantics, never compared as unit strings. Conversion factors are computed
once per (from, to, molar mass) pair and cached, so the per-value cost is a dict lookup. Conversions between
amount-of-substance and mass units (creatinine umol/L -> mg/dL) use the analyte's molar mass from its value
set; unit pairs a UCUM library treats as different dimensions but a lab treats as the same quantity
(enzyme ``U`` vs ``[IU]``) are declared as aliases in the value set, as data.

Unit strings that are not UCUM codes ("IU/L", "U/l", "mmol/l", "mmHg", "x10^9/L") are read onto UCUM by
:func:`ucum_of_text` from a reviewed table, ``fhir_mappings/units.json`` (read once and validated against its
schema, at start-up by ``config.load_knowledge``, else on first use); :func:`convert` falls back to it when
the string as sent does not convert. A reference range given only as text ("9-50 U/L", "< 40",
"0,3 - 1,2 mg/dl") is read by :func:`parse_range_text`.

An unknown or missing unit gives None (the caller's criterion becomes UNKNOWN), never a guess.
No I/O apart from reading the shipped unit table once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["Quantity", "TextRange", "conversion_factor", "convert", "ucum_of_text", "parse_range_text",
           "load_unit_table", "set_unit_table", "UnitTable"]

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
    if factor is None:
        # Not convertible as sent: read it as a non-UCUM spelling ("IU/L", "mmHg"), then the value set's aliases.
        # Only after the string itself failed, so a valid UCUM code is never re-read.
        mapped = ucum_of_text(from_unit)
        if mapped is not None and mapped != unit:
            mapped = aliases.get(mapped, mapped) if aliases else mapped
            factor = conversion_factor(mapped, to_unit, molar_mass)
    return None if factor is None else value * factor


# --- non-UCUM unit strings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitTable:
    """``fhir_mappings/units.json``: whole-string and per-part spellings (lower-case keys) onto UCUM codes."""

    whole: Mapping[str, str]
    atoms: Mapping[str, str]


_table_lock = threading.Lock()
_table: UnitTable | None = None


def load_unit_table(path: Any = None) -> UnitTable:
    """Read and validate the unit table (the shipped one by default). Raises ConfigurationError if invalid."""
    import json
    from pathlib import Path

    from cds_service.errors import ConfigurationError
    from cds_service.shipped import shipped_dir

    path = Path(path) if path is not None else shipped_dir("fhir_mappings") / "units.json"
    schema_path = path.parent / "schema" / "units.schema.json"
    if not schema_path.exists():
        schema_path = shipped_dir("fhir_mappings") / "schema" / "units.schema.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"unit table {path}: cannot be read: {exc}") from exc
    from cds_service.validation import schema_errors

    errors = schema_errors(schema, data)
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigurationError(f"unit table {path}: invalid at {where}: {error.message}")
    return UnitTable(dict(data["whole"]), dict(data["atoms"]))


def set_unit_table(table: UnitTable) -> None:
    """Use ``table`` from now on (``config.load_knowledge`` installs the validated table at start-up)."""
    global _table
    with _table_lock:
        _table = table
    ucum_of_text.cache_clear()


def _unit_table() -> UnitTable:
    global _table
    with _table_lock:
        if _table is None:
            _table = load_unit_table()
    return _table


_PARTS = re.compile(r"([/.])")


def _key(text: str) -> str:
    return re.sub(r"\s+", "", text.strip()).replace("\u00b5", "u").replace("\u03bc", "u").lower()


@lru_cache(maxsize=1024)
def ucum_of_text(text: str | None) -> str | None:
    """The UCUM code a unit string means, or None when it cannot be read.

    A whole-string spelling from the table first (case-insensitive: "IU/L", "iu/l" -> ``[IU]/L``); else each
    part between "/" and "." through the table's atoms ("U/l" -> ``U/L``, "MMOL/L" -> ``mmol/L``); else the
    string itself when it is valid UCUM. A result that is not valid UCUM is None.
    """
    if not text or not text.strip():
        return None
    table = _unit_table()
    key = _key(text)
    candidate = table.whole.get(key)
    if candidate is None:
        pieces = _PARTS.split(key)
        mapped = []
        for piece in pieces:
            if piece in ("/", ".") or piece == "":
                mapped.append(piece)
                continue
            atom = table.atoms.get(piece)
            if atom is None:
                mapped = []
                break
            mapped.append(atom)
        candidate = "".join(mapped) if mapped else text.strip()
    return candidate if _parse(candidate) is not None else None


@dataclass(frozen=True)
class TextRange:
    """A reference range read from text: its bounds (either may be open) in the unit the text gives."""

    low: Quantity | None
    high: Quantity | None


_NUM = r"([-+]?\d+(?:[.,]\d+)?)"
_RANGE_TEXT = re.compile(rf"^\s*{_NUM}\s*(?:-|\u2013|\u2014|to|bis|\.\.)\s*{_NUM}\s*(.*?)\s*$", re.IGNORECASE)
_BOUND_TEXT = re.compile(rf"^\s*(<=|>=|<|>|\u2264|\u2265|up to|max\.?|min\.?)\s*{_NUM}\s*(.*?)\s*$",
                         re.IGNORECASE)


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def parse_range_text(text: str | None) -> TextRange | None:
    """A reference range written as text: "9-50 U/L", "0,3 - 1,2 mg/dl", "< 40 U/L", ">= 60", "up to 5".

    The unit (None if the text gives none) is kept as written: conversion reads it with UCUM semantics
    (:func:`convert`). An upper bound "< 40" is the ULN 40 (the limit of the normal range). Anything else
    (words, several ranges, sex-specific text) is None: a range is never guessed.
    """
    if not text:
        return None
    m = _RANGE_TEXT.match(text)
    if m:
        low, high = _number(m.group(1)), _number(m.group(2))
        if low > high:
            return None
        unit = m.group(3) or None
        if unit is not None and ucum_of_text(unit) is None:
            return None
        return TextRange(Quantity(low, unit), Quantity(high, unit))
    m = _BOUND_TEXT.match(text)
    if m:
        op = m.group(1).lower().rstrip(".")
        value = _number(m.group(2))
        unit = m.group(3) or None
        if unit is not None and ucum_of_text(unit) is None:
            return None
        q = Quantity(value, unit)
        if op in ("<", "<=", "\u2264", "up to", "max"):
            return TextRange(None, q)
        return TextRange(q, None)
    return None


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
