"""The Markdown ``detail`` of a card: what blocks, what is still to confirm and how, the key values, and
which data could not be retrieved.

Text that may come from the EHR's records (displays, values, notes) is escaped, so a record cannot inject
Markdown or HTML into the card. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from cds_service.criteria.result import CriterionResult, Evidence, Result
from cds_service.rules import TrialRules

__all__ = ["md", "blocking", "unknowns", "met", "split_open", "is_attestation", "evidence_text", "blocking_section",
           "confirm_section", "key_values_section", "not_retrieved_section", "met_section", "KEY_VALUES"]

# The values a hematologist looks at first, in this order: (criterion id, label).
KEY_VALUES: tuple[tuple[str, str], ...] = (
    ("I1", "Age"),
    ("I3", "Blasts / CLL1 / CD38"),
    ("I7a", "ALT / AST"),
    ("I7b", "Bilirubin"),
    ("I7c", "Creatinine clearance (Cockcroft-Gault)"),
    ("I7d", "LVEF"),
    ("I6", "ECOG"),
)
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")
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


def _label(rules: TrialRules, criterion_id: str) -> str:
    try:
        return rules.criterion(criterion_id).label
    except KeyError:
        return criterion_id


def _resolve(rules: TrialRules, criterion_id: str) -> str | None:
    try:
        return rules.criterion(criterion_id).resolve or None
    except KeyError:
        return None


def _day(value: object) -> str:
    """A dateTime shown as its day ("2026-09-27T07:30:00+00:00" -> "2026-09-27"); other dates as they are."""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:10] if len(text) > 10 and text[10] == "T" else text


def evidence_text(e: Evidence) -> str:
    """One datum as a person reads it: "ALT 41 U/L (2026-09-20; 1.0 x ULN)"."""
    head = " ".join(str(p) for p in (e.value, e.unit) if p is not None and str(p) != "")
    what = e.display or ""
    text = f"{what}: {head}" if what and head else (what or head or e.reference)
    extras = [_day(e.date)] if e.date is not None else []
    if e.note:
        extras.append(e.note)
    return md(text) + (f" ({md('; '.join(extras))})" if extras else "")


def blocking_section(items: list[CriterionResult], rules: TrialRules, *, title: str = "Blocking") -> str:
    """What makes the patient ineligible, with its reason and the date a window passes."""
    if not items:
        return f"**{title}:** nothing found."
    lines = [f"**{title} ({len(items)}):**"]
    for c in items:
        until = f" Not eligible until **{c.until.isoformat()}**." if c.until is not None else ""
        lines.append(f"- **{c.id}** {md(_label(rules, c.id))}: {md(c.reason)}{until}")
    return "\n".join(lines)


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


def _beyond_first_sentence(reason: str) -> str:
    """An attestation's reason past its generic first sentence (e.g. the current steroid dose behind I8)."""
    # A sentence ends at ". " followed by a capital letter ("e.g. alopecia" does not end one).
    parts = _SENTENCE_END.split(reason, maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""


def confirm_section(items: list[CriterionResult], rules: TrialRules, *, title: str = "To check") -> str | None:
    """The open items: first those the record can settle, each with its reason and how to resolve it (the rule
    file's ``resolve`` text); then, on one short list, what only the investigator can confirm (they are open for
    every patient, so they must not drown the items a clinician can act on)."""
    data, attest = split_open(items, rules)
    blocks = []
    if data:
        lines = [f"**{title} ({len(data)}):**"]
        for c in data:
            resolve = _resolve(rules, c.id)
            how = f" *To resolve:* {md(resolve)}" if resolve else ""
            lines.append(f"- **{c.id}** {md(_label(rules, c.id))}: {md(c.reason)}{how}")
        blocks.append("\n".join(lines))
    if attest:
        lines = [f"**Investigator to confirm at the screening visit ({len(attest)}):**"]
        for c in attest:
            extra = _beyond_first_sentence(c.reason)
            lines.append(f"- **{c.id}** {md(_label(rules, c.id))}" + (f": {md(extra)}" if extra else ""))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else None


def key_values_section(criteria: Iterable[CriterionResult]) -> str | None:
    """The key values with their dates, read from the evidence of the criteria that rest on them."""
    by_id = {c.id: c for c in criteria}
    lines = []
    for cid, label in KEY_VALUES:
        c = by_id.get(cid)
        if c is None:
            continue
        values = "; ".join(evidence_text(e) for e in c.evidence) if c.evidence else "none usable recorded"
        lines.append(f"- {md(label)} ({cid}, {c.result.value}): {values}")
    return "**Key values:**\n" + "\n".join(lines) if lines else None


def not_retrieved_section(not_retrieved: dict[str, str]) -> str | None:
    """The kinds of data that could not be retrieved, and why."""
    if not not_retrieved:
        return None
    lines = ["**Data not retrieved** (criteria that depend on it could not be decided):"]
    for kind, why in sorted(not_retrieved.items()):
        lines.append(f"- {md(kind)}: {md(why)}")
    return "\n".join(lines)


def met_section(items: list[CriterionResult]) -> str | None:
    """The ids of the criteria that pass (an exclusion "not met" passes)."""
    if not items:
        return None
    return f"**Passed ({len(items)}, inclusions met and exclusions absent):** " + ", ".join(c.id for c in items)
