"""What to do next, grouped by cause, and the key values: the short content of a card and a checklist.

Open items (UNKNOWN criteria the record could settle) are grouped by why they are open, so that seven labs that
are all too old read as one step, not seven:

    Repeat 6 tests older than 28 days (last 2026-09-27): ALT/AST, bilirubin, creatinine + weight, ...
    Order 2 tests with no result on record: HIV Ab, HCV Ab
    Await the final result of 1 test (only a preliminary one so far): bilirubin
    Confirm with the patient: pregnancy, family planning
    Check in the record (2): GvHD activity (E6), DLI date (E2e)

Each test is named by the rule file's ``step`` (two criteria with the same step, I7d and E10e, are one
echocardiogram). Attestations (open for every patient) are only counted and listed by id: the investigator signs
them off at the screening visit. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cds_service.cards.text import age_in_years, day, plain, value_text
from cds_service.criteria.result import CriterionResult, Result
from cds_service.facts.codes import CodeTables
from cds_service.rules import CriterionInfo, TrialRules

__all__ = ["Step", "cause_of", "next_steps", "open_items", "signoffs", "key_values", "STALE", "MISSING",
           "PRELIMINARY", "NO_ULN", "PATIENT", "REVIEW"]

STALE, MISSING, PRELIMINARY, NO_ULN, PATIENT, REVIEW = "stale", "missing", "preliminary", "no-uln", "patient", "review"
_ORDER = (STALE, MISSING, PRELIMINARY, NO_ULN, PATIENT, REVIEW)
_WINDOW = re.compile(r"in the (\d+) days before")
_LATEST = re.compile(r"the latest[^()]*\((\d{4}-\d{2}(?:-\d{2})?)")
_NONE_RECORDED = re.compile(r"^(?:[^:]*cannot be computed: )?no (?:[\w-]+ ){0,4}(?:result|reading|ecg)\b")
_SENTENCE = re.compile(r"(?<=[a-z0-9)%])\.\s+(?=[A-Z])")  # "e.g. alopecia" ends no sentence
_CRCL = re.compile(r"creatinine clearance ([\d.]+) mL/min")


@dataclass(frozen=True)
class Step:
    """One next step: its cause, the sentence shown, the criteria it settles and the distinct tests it names."""

    cause: str
    text: str
    ids: tuple[str, ...]
    tests: tuple[str, ...]


def _info(rules: TrialRules, cid: str) -> CriterionInfo | None:
    try:
        return rules.criterion(cid)
    except KeyError:
        return None


def _step_name(rules: TrialRules, cid: str) -> str:
    info = _info(rules, cid)
    return (info.step or info.label) if info else cid


def _confirm_name(rules: TrialRules, cid: str) -> str:
    info = _info(rules, cid)
    return info.confirm if info is not None and info.confirm else _step_name(rules, cid)


def open_items(criteria: Iterable[CriterionResult], rules: TrialRules) -> tuple[list[CriterionResult],
                                                                               list[CriterionResult]]:
    """The UNKNOWN criteria: (those the record can settle, attestations the investigator signs off)."""
    unknown = [c for c in criteria if c.result is Result.UNKNOWN]
    attest = [c for c in unknown if (info := _info(rules, c.id)) is not None and info.attestation]
    return [c for c in unknown if c not in attest], attest


def cause_of(c: CriterionResult) -> str:
    """Why an open criterion is open, read from its reason and evidence notes."""
    reason = c.reason.lower()
    notes = " ".join(str(e.note or "").lower() for e in c.evidence)
    if reason.startswith("needs confirmation") or reason.rstrip(".").endswith("to confirm") and \
            "confirm with" not in reason:
        return PATIENT
    if "too old" in notes or "too old to count" in reason or "is older than" in reason:
        return STALE
    if "preliminary" in reason:
        return PRELIMINARY
    if "no reference range upper limit" in reason or "no usable uln" in notes:
        return NO_ULN
    if _NONE_RECORDED.match(reason):
        return MISSING
    return REVIEW


def _last_date(c: CriterionResult) -> str:
    dates = [day(e.date) for e in c.evidence if e.date is not None and "too old" in str(e.note or "")]
    dates += _LATEST.findall(plain(c.reason))
    return max(dates) if dates else ""


def _names(items: Sequence[CriterionResult], rules: TrialRules) -> tuple[str, ...]:
    seen: list[str] = []
    for c in items:
        name = _step_name(rules, c.id)
        if name not in seen:
            seen.append(name)
    return tuple(seen)


def _tests(n: int) -> str:
    return f"{n} test{'s' if n != 1 else ''}"


def next_steps(items: Sequence[CriterionResult], rules: TrialRules) -> list[Step]:
    """The open items the record can settle, as steps grouped by cause (in a fixed order of causes)."""
    groups: dict[str, list[CriterionResult]] = {}
    for c in items:
        groups.setdefault(cause_of(c), []).append(c)
    steps: list[Step] = []
    stale = groups.get(STALE, [])
    windows: dict[str, list[CriterionResult]] = {}
    for c in stale:
        m = _WINDOW.search(c.reason)
        windows.setdefault(m.group(1) if m else "", []).append(c)
    for window, group in sorted(windows.items(), key=lambda kv: int(kv[0] or 0)):
        names = _names(group, rules)
        last = max((d for d in (_last_date(c) for c in group) if d), default="")
        older = f" older than {window} days" if window else " too old to count"
        when = f" (last {last})" if last else ""
        steps.append(Step(STALE, f"Repeat {_tests(len(names))}{older}{when}: {', '.join(names)}",
                          tuple(c.id for c in group), names))
    texts = {
        MISSING: lambda n, names: f"Order {_tests(n)} with no recent result on record: {names}",
        PRELIMINARY: lambda n, names: f"Await the final result of {_tests(n)} (only preliminary so far): {names}",
        NO_ULN: lambda n, names: f"Repeat {_tests(n)} with the lab's reference range (no ULN recorded): {names}",
    }
    for cause in (MISSING, PRELIMINARY, NO_ULN):
        group = groups.get(cause, [])
        if group:
            names = _names(group, rules)
            steps.append(Step(cause, texts[cause](len(names), ", ".join(names)), tuple(c.id for c in group), names))
    patient = groups.get(PATIENT, [])
    if patient:
        names = tuple(dict.fromkeys(_confirm_name(rules, c.id) for c in patient))
        steps.append(Step(PATIENT, "Confirm with the patient: " + ", ".join(names), tuple(c.id for c in patient),
                          ()))
    review = groups.get(REVIEW, [])
    if review:
        listed = ", ".join(f"{_step_name(rules, c.id)} ({c.id})" for c in review)
        steps.append(Step(REVIEW, f"Check in the record ({len(review)}): {listed}", tuple(c.id for c in review), ()))
    return steps


def signoffs(attestations: Sequence[CriterionResult]) -> str | None:
    """"8 investigator sign-offs at the screening visit (I4, I5, ...)"; None when there are none."""
    if not attestations:
        return None
    n = len(attestations)
    ids = []
    for c in attestations:
        # The support data past an attestation's generic first sentence ("Current dose 30 mg/day") is kept; a
        # sentence saying nothing is recorded ("No current systemic corticosteroid is recorded"), or a long one, is not.
        parts = _SENTENCE.split(c.reason.strip(), maxsplit=1)
        extra = parts[1].strip().rstrip(".") if len(parts) == 2 else ""
        ids.append(f"{c.id}: {plain(extra)}" if extra and not extra.startswith("No ") and len(extra) <= 40 else c.id)
    return f"{n} investigator sign-off{'s' if n != 1 else ''} at the screening visit ({', '.join(ids)})"


def _strip_kind(display: str) -> str:
    return re.sub(r"\s*\((disorder|finding|morphologic abnormality)\)$", "", display)


def _stale(e: object) -> str:
    return ", too old" if "too old" in str(getattr(e, "note", "") or "") else ""


def key_values(criteria: Iterable[CriterionResult], at: datetime, tables: CodeTables | None = None) -> list[str]:
    """The values a hematologist looks for first, each as a short phrase: age in years, diagnosis and status,
    blasts, CD38/CLL1, ECOG score, LVEF, CrCl (only those the record holds)."""
    by_id = {c.id: c for c in criteria}
    out: list[str] = []
    i1 = by_id.get("I1")
    if i1 is not None:
        for e in i1.evidence:
            if e.reference.startswith("Patient/") and e.date is not None:
                years = age_in_years(e.date, at)
                out.append(f"{years} years" if years is not None else f"born {day(e.date)}")
                break
    i2 = by_id.get("I2")
    if i2 is not None:
        for e in i2.evidence:
            if e.display:
                status = e.note.removeprefix("coded as ") if e.note and e.note.startswith("coded as") else ""
                # "Relapsing acute myeloid leukemia" says its status already; "AML, NOS" does not
                status = f", {status}" if status and status[:5].lower() not in str(e.display).lower() else ""
                out.append(f"{_strip_kind(plain(e.display, tables))}{status} ({day(e.date)})" if e.date else
                           f"{_strip_kind(plain(e.display, tables))}{status}")
                break
    for c in (by_id.get("I2"), by_id.get("I3")):
        for e in c.evidence if c is not None else ():
            if "blast" in str(e.display or "").lower() and e.value is not None:
                out.append(f"blasts {value_text(e.value, e.unit, e.note, tables)} ({day(e.date)})")
                break
    i3 = by_id.get("I3")
    if i3 is not None:
        for e in i3.evidence:
            marker = str(e.note or "").split(" ")[0]
            if marker in ("CD38", "CLL1") and e.value is not None:
                verdict = " ".join(str(e.note).split(" ")[1:2])
                out.append(f"{marker} {value_text(e.value, e.unit, e.note, tables)} {verdict} ({day(e.date)})"
                           .replace("  ", " "))
    i6 = by_id.get("I6")
    for e in i6.evidence if i6 is not None else ():
        if e.value is not None:
            out.append(f"ECOG {value_text(e.value, e.unit, e.note, tables)} ({day(e.date)}{_stale(e)})")
            break
        if e.date is not None and _stale(e):  # a result too old to count carries no score
            out.append(f"ECOG last scored {day(e.date)} (too old)")
            break
    i7d = by_id.get("I7d")
    for e in i7d.evidence if i7d is not None else ():
        if e.value is not None:
            out.append(f"LVEF {value_text(e.value, e.unit, e.note, tables)} ({day(e.date)}{_stale(e)})")
            break
    i7c = by_id.get("I7c")
    if i7c is not None:
        m = _CRCL.search(i7c.reason)
        if m:
            out.append(f"CrCl {float(m.group(1)):.0f} mL/min")
        else:  # not computable: the creatinine it would rest on, if any
            for e in i7c.evidence:
                if "creatinine" in str(e.display or "").lower() and e.value is not None:
                    out.append(f"creatinine {value_text(e.value, e.unit, e.note, tables)} ({day(e.date)}{_stale(e)})")
                    break
    return out
