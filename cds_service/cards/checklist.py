"""The text checklist of ``trialscreen screen --format text``: what a research coordinator works through.

    Patient/ts01-patient  POTENTIAL CANDIDATE  blocking: none  to check: 8  sign-offs: 8
    ...one summary line per patient, then the legend, then per patient:

    == Patient/ts01-patient: potential candidate (NCT06880354, evaluated 2026-12-03 09:00 UTC)
    BLOCKING   none
    TO CHECK   Repeat 7 tests older than 28 days (last 2026-09-27): ECOG, ALT/AST, ...
                 I6    ECOG 0-2: No ECOG performance status result in the 28 days before 2026-12-03; ...
                       - Observation/ts01-ecog-1: ECOG Performance Status score (2026-09-27, too old to count)
    SIGN-OFF   8 investigator sign-offs at the screening visit (I4, I5, ...)
    KEY VALUES 52 years · Relapsing acute myeloid leukemia (2026-09-06) · ...
    MET        30: I1 I2 I3 ...

The open items are grouped as on the card (``steps.next_steps``). Evidence is trimmed to what decided the result
(the stale, preliminary or blocking data, at most two lines per criterion); ``verbose`` shows every criterion's
reason and all of its evidence. Dates are days (the evaluation time keeps its hour), coded values their display.
No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from cds_service.cards.card import kinds_text
from cds_service.cards.detail import blocking, met
from cds_service.cards.report import format_when
from cds_service.cards.steps import key_values, next_steps, open_items, signoffs
from cds_service.cards.text import day, plain, value_text
from cds_service.criteria.result import CriterionResult, Evidence
from cds_service.facts.codes import CodeTables
from cds_service.pipeline import Screening
from cds_service.rules import TrialRules

__all__ = ["LEGEND", "summary_line", "format_patient", "format_checklist"]

LEGEND = ("Legend: BLOCKING rules the patient out (an inclusion not met, or an exclusion present) | TO CHECK the "
          "record cannot decide: order or check what the line says | SIGN-OFF only the investigator can confirm | "
          "MET an inclusion met or an exclusion ruled out")
_STATUS = {"potential-candidate": "POTENTIAL CANDIDATE", "ineligible": "INELIGIBLE", "not-applicable": "NOT APPLICABLE"}
_TAG = 11  # width of the section tags
_INDENT = " " * (_TAG + 2)
_MAX_EVIDENCE = 2
_DECIDING = ("too old", "preliminary", "uln", "positive", "negative", "review", "date", "active")


def _ids(items: Iterable[CriterionResult]) -> str:
    return ", ".join(c.id for c in items) or "none"


def summary_line(s: Screening, rules: TrialRules) -> str:
    """One line per patient: status, blocking ids, items to check, sign-offs (and "incomplete" when data is
    missing)."""
    data, attest = open_items(s.criteria, rules)
    line = (f"{s.patient}  {_STATUS.get(s.status, s.status.upper())}  blocking: {_ids(blocking(s.criteria))}  "
            f"to check: {len(data)}  sign-offs: {len(attest)}")
    return line + ("  INCOMPLETE (not retrieved: " + kinds_text(s.not_retrieved) + ")" if s.not_retrieved else "")


def _short_display(display: str | None) -> str:
    # "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma" -> "Alanine aminotransferase"
    return re.split(r" \[| \((?:disorder|procedure|component of)\b", display or "", maxsplit=1)[0]


def _evidence_line(e: Evidence, tables: CodeTables | None, verbose: bool) -> str:
    value = value_text(e.value, e.unit, e.note, tables)
    what = plain(e.display if verbose else _short_display(e.display), tables)
    text = ": ".join(p for p in (what, value) if p)
    extras = [day(e.date)] if e.date is not None else []
    note = plain(e.note or "", tables)
    if note and note not in text:
        extras.append(note)
    return f"- {e.reference}" + (f": {text}" if text else "") + (f" ({', '.join(extras)})" if extras else "")


def _deciding(c: CriterionResult, verbose: bool) -> Sequence[Evidence]:
    """The evidence that decided ``c`` (verbose: all of it)."""
    if verbose:
        return c.evidence
    picked = [e for e in c.evidence if any(k in str(e.note or "").lower() for k in _DECIDING)]
    return (picked or list(c.evidence))[:_MAX_EVIDENCE]


def _criterion(c: CriterionResult, rules: TrialRules, tables: CodeTables | None, verbose: bool,
               indent: str = _INDENT) -> list[str]:
    try:
        label = rules.criterion(c.id).label
    except KeyError:
        label = c.id
    until = f" [until {c.until.isoformat()}]" if c.until is not None else ""
    lines = [f"{indent}{c.id:<5} {label}{until}: {plain(c.reason, tables)}"]
    lines += [f"{indent}      {_evidence_line(e, tables, verbose)}" for e in _deciding(c, verbose)]
    return lines


def _tagged(tag: str, text: str) -> str:
    return f"{tag:<{_TAG}} {text}"


def format_patient(s: Screening, rules: TrialRules, *, tables: CodeTables | None = None,
                   verbose: bool = False) -> str:
    """One patient's checklist, grouped as the card is."""
    status = _STATUS.get(s.status, s.status).lower()
    lines = [f"== {s.patient}: {status} ({s.trial}, evaluated {format_when(s.evaluated_at)})"]
    if s.not_retrieved:
        lines.append(_tagged("INCOMPLETE", f"{kinds_text(s.not_retrieved)} could not be retrieved; the criteria "
                                           "that rest on them are undecided"))
        lines += [f"{_INDENT}{kind}: {plain(why)}" for kind, why in sorted(s.not_retrieved.items())]
    blocked = blocking(s.criteria)
    lines.append(_tagged("BLOCKING", f"{len(blocked)}" if blocked else "none"))
    for c in blocked:
        lines += _criterion(c, rules, tables, verbose)
    data, attest = open_items(s.criteria, rules)
    by_id = {c.id: c for c in data}
    if data and s.status == "ineligible" and not verbose:
        # As on the card: nothing to order for a patient the trial excludes (--verbose lists the open items).
        lines.append(_tagged("TO CHECK", f"{len(data)} open item{'s' if len(data) != 1 else ''}, not listed: the "
                                         "patient is ineligible (--verbose lists them)"))
    elif data and s.status != "not-applicable":
        first = True
        for step in next_steps(data, rules):
            lines.append(_tagged("TO CHECK" if first else "", step.text))
            first = False
            for cid in step.ids:
                lines += _criterion(by_id[cid], rules, tables, verbose)
    sign = signoffs(attest)
    if sign:
        lines.append(_tagged("SIGN-OFF", sign))
        if verbose:
            for c in attest:
                lines += _criterion(c, rules, tables, verbose)
    values = key_values(s.criteria, s.evaluated_at, tables)
    if values:
        lines.append(_tagged("KEY VALUES", " · ".join(values)))
    fine = met(s.criteria)
    if verbose:
        lines.append(_tagged("MET", str(len(fine))))
        for c in fine:
            lines += _criterion(c, rules, tables, verbose)
    else:
        lines.append(_tagged("MET", f"{len(fine)}: " + " ".join(c.id for c in fine)))
    for p in s.problems:
        lines.append(_tagged("DATA", f"{p.reference} could not be read: {plain(p.message)}"))
    return "\n".join(lines)


def format_checklist(screenings: Sequence[Screening], rules: TrialRules, *, tables: CodeTables | None = None,
                     verbose: bool = False) -> str:
    """The whole checklist: a summary line per patient, the legend, then each patient's checklist."""
    head = [summary_line(s, rules) for s in screenings]
    blocks = [format_patient(s, rules, tables=tables, verbose=verbose) for s in screenings]
    return "\n".join(head) + "\n\n" + LEGEND + "\n\n" + "\n\n".join(blocks) + "\n"
