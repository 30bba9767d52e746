"""The screening report page: a stored screening (its JSON) turned into a printable checklist.

Pure: no I/O besides reading the bundled template, no Flask. :func:`build_report` groups every criterion as a
research coordinator reads it,

* **blocking**: an inclusion not met, or an exclusion that applies (with "until <date>" when it will pass),
* **to confirm**: unknown, with what to check or order (the trial rules' ``resolve`` text),
* **met**: an inclusion met, or an exclusion ruled out,

each with its label from the trial rules, the engine's reason and the evidence (resource, value, unit, date).
:func:`render_report_html` renders that view with ``templates/report.html`` (autoescaped Jinja; no scripts,
no external assets, print styles inline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from cds_service.cards.text import age_in_years, plain, value_text
from cds_service.facts.codes import CodeTables
from cds_service.rules import TrialRules

__all__ = [
    "PatientHeader",
    "patient_header",
    "with_header",
    "HEADER_KEY",
    "EvidenceLine",
    "ReportItem",
    "ReportSection",
    "ReportView",
    "build_report",
    "render_report_html",
    "render_missing_html",
    "format_when",
]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

STATUS_LABELS = {
    "potential-candidate": "Potential candidate",
    "ineligible": "Not eligible",
    "not-applicable": "Not applicable",
}
STATUS_NOTES = {
    "potential-candidate": "Nothing recorded rules the patient out; the items under \"To check\" remain open.",
    "ineligible": "At least one criterion rules the patient out (see \"Blocking\").",
    "not-applicable": "The record holds no diagnosis of acute myeloid leukemia.",
}

# (kind, result) -> (section, what the result means for eligibility)
_PLACEMENT = {
    ("inclusion", "not-met"): ("blocking", "Inclusion not met"),
    ("exclusion", "met"): ("blocking", "Exclusion applies"),
    ("inclusion", "unknown"): ("confirm", "Unknown"),
    ("exclusion", "unknown"): ("confirm", "Unknown"),
    ("inclusion", "met"): ("met", "Inclusion met"),
    ("exclusion", "not-met"): ("met", "Exclusion ruled out"),
}
_SECTIONS = (
    ("blocking", "Blocking", "Criteria that rule the patient out as the record stands."),
    ("confirm", "To check", "Criteria the record cannot decide: check or order what each item says."),
    ("met", "Met", "Inclusion criteria met and exclusion criteria ruled out by the record."),
)


@dataclass(frozen=True)
class EvidenceLine:
    """One piece of evidence as shown: the resource, its value with unit, its date, and any note."""

    reference: str
    value: str
    date: str
    note: str


@dataclass(frozen=True)
class ReportItem:
    """One criterion as shown on the page."""

    id: str
    kind: str
    label: str
    outcome: str
    reason: str
    resolve: str
    until: str
    evidence: tuple[EvidenceLine, ...]


@dataclass(frozen=True)
class ReportSection:
    """One group of criteria (blocking / to confirm / met)."""

    key: str
    title: str
    description: str
    items: tuple[ReportItem, ...]


@dataclass(frozen=True)
class PatientHeader:
    """Who the report is about, as a printed worksheet names them (from the Patient resource)."""

    name: str
    mrn: str
    birth_date: str
    age: str
    sex: str


HEADER_KEY = "patient_header"  # where the stored report keeps the header, beside the screening JSON


def _attr(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _name(patient: Any) -> str:
    names = [n for n in _attr(patient, "name") or [] if n is not None]
    if not names:
        return ""
    # the official name, else the usual one, else the first; a name in use ("old" names are past names)
    ranked = sorted(names, key=lambda n: {"official": 0, "usual": 1}.get(str(_attr(n, "use") or ""), 2))
    best = next((n for n in ranked if _attr(n, "use") != "old"), ranked[0])
    given = " ".join(str(g) for g in _attr(best, "given") or [])
    family = str(_attr(best, "family") or "")
    return " ".join(p for p in (given, family) if p) or str(_attr(best, "text") or "")


def _mrn(patient: Any) -> str:
    ids = [i for i in _attr(patient, "identifier") or [] if i is not None and _attr(i, "value")]
    for ident in ids:
        codings = _attr(_attr(ident, "type"), "coding") or []
        if any(_attr(c, "code") == "MR" for c in codings):
            return str(_attr(ident, "value"))
    return str(_attr(ids[0], "value")) if ids else ""


def patient_header(patient: Any, at: datetime) -> dict[str, str]:
    """The report header from a Patient (a ``fhir.resources`` model or its JSON): name, MRN (the identifier of
    type MR, else the first), birth date, age in years at ``at`` and sex, each "" when not recorded."""
    birth = _attr(patient, "birthDate")
    birth_text = birth.isoformat() if isinstance(birth, date) else str(birth or "")
    years = age_in_years(birth_text, at)
    return {"name": _name(patient), "mrn": _mrn(patient), "birth_date": birth_text,
            "age": f"{years} years" if years is not None else "", "sex": str(_attr(patient, "gender") or "")}


def with_header(screening_json: Mapping[str, Any], header: Mapping[str, str]) -> dict[str, Any]:
    """The JSON a report is stored as: the screening and, under ``patient_header``, who it is about (the report is
    rendered later from the store, when the Patient resource is no longer at hand)."""
    return {**dict(screening_json), HEADER_KEY: dict(header)}


def _header(stored: Any) -> PatientHeader | None:
    if not isinstance(stored, Mapping):
        return None
    return PatientHeader(**{k: str(stored.get(k) or "") for k in ("name", "mrn", "birth_date", "age", "sex")})


@dataclass(frozen=True)
class ReportView:
    """Everything the report page shows, already formatted as text."""

    trial_id: str
    trial_title: str
    short_title: str
    registry_url: str
    status: str
    status_label: str
    status_note: str
    patient: str
    evaluated_at: str
    expires_at: str
    sections: tuple[ReportSection, ...]
    not_retrieved: tuple[tuple[str, str], ...]
    data_problems: tuple[tuple[str, str], ...]
    total: int
    header: PatientHeader | None = None  # None for a report stored before the header was kept

    def section(self, key: str) -> ReportSection:
        """The section with this key (``blocking``, ``confirm`` or ``met``)."""
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)


def format_when(value: str | date | datetime | None) -> str:
    """A date or date-time as a person reads it: ``2026-09-20`` or ``2026-09-20 08:15 UTC``.

    Partial dates (``2025``, ``2025-03``) and anything unparseable are shown as given.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        parsed: datetime | date = value
    elif isinstance(value, date):
        return value.isoformat()
    else:
        text = str(value)
        if ".." in text:  # a period, "start..end": each end as a person reads it
            return " to ".join(format_when(part) or "?" for part in text.split("..", 1))
        if len(text) <= 10:  # a date, possibly partial: nothing to reformat
            return text
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    assert isinstance(parsed, datetime)
    offset = parsed.utcoffset()
    if offset is None:
        zone = ""
    elif offset.total_seconds() == 0:
        zone = " UTC"
    else:
        zone = " " + parsed.strftime("%z")[:3] + ":" + parsed.strftime("%z")[3:]
    return parsed.strftime("%Y-%m-%d %H:%M") + zone


def _value_text(evidence: Mapping[str, Any], tables: CodeTables | None = None) -> str:
    display = evidence.get("display")
    text = value_text(evidence.get("value"), evidence.get("unit"), evidence.get("note"), tables)
    if display and display != text:
        display = plain(display, tables)
        text = f"{display}: {text}" if text else display
    return text


def _evidence(items: Any, tables: CodeTables | None = None) -> tuple[EvidenceLine, ...]:
    out = []
    for e in items if isinstance(items, list) else []:
        if not isinstance(e, Mapping):
            continue
        value = _value_text(e, tables)
        note = plain(e.get("note") or "", tables)
        out.append(EvidenceLine(reference=str(e.get("reference") or ""), value=value,
                                date=format_when(e.get("date")), note="" if note and note in value else note))
    return tuple(out)


def build_report(screening: Mapping[str, Any], rules: TrialRules, *, expires_at: datetime | None = None,
                 tables: CodeTables | None = None) -> ReportView:
    """Group a screening's criteria into blocking / to confirm / met, in the trial's criterion order (attestations
    last). ``screening`` is the stored JSON (with its ``patient_header``); ``tables`` name coded values."""
    order = {c.id: i for i, c in enumerate(rules.criteria)}
    info = {c.id: c for c in rules.criteria}
    criteria = [c for c in screening.get("criteria") or [] if isinstance(c, Mapping)]
    # Trial order, except that attestations (open for every patient) come after the items the record can settle,
    # as on the card.
    criteria.sort(key=lambda c: (bool(info[c["id"]].attestation) if c.get("id") in info else False,
                                 order.get(str(c.get("id")), len(order))))
    grouped: dict[str, list[ReportItem]] = {key: [] for key, _, _ in _SECTIONS}
    for c in criteria:
        cid = str(c.get("id", "?"))
        kind = str(c.get("kind") or (info[cid].kind if cid in info else ""))
        result = str(c.get("result", "unknown"))
        section, outcome = _PLACEMENT.get((kind, result), ("confirm", "Unknown"))
        meta = info.get(cid)
        until = format_when(c.get("until"))
        grouped[section].append(ReportItem(
            id=cid, kind=kind, label=meta.label if meta else cid, outcome=outcome,
            reason=plain(c.get("reason") or "", tables),
            resolve=meta.resolve if (meta and section == "confirm") else "",
            until=until if section == "blocking" else "",
            evidence=_evidence(c.get("evidence"), tables)))
    _say_once(grouped)
    status = str(screening.get("status") or "")
    return ReportView(
        trial_id=str(screening.get("trial") or rules.trial_id),
        trial_title=rules.title,
        short_title=rules.short_title,
        registry_url=rules.registry_url,
        status=status,
        status_label=STATUS_LABELS.get(status, status or "Unknown"),
        status_note=STATUS_NOTES.get(status, ""),
        patient=str(screening.get("patient") or ""),
        evaluated_at=format_when(screening.get("evaluated_at")),
        expires_at=format_when(expires_at),
        sections=tuple(ReportSection(key, title, desc, tuple(grouped[key])) for key, title, desc in _SECTIONS),
        not_retrieved=tuple(sorted((str(k), str(v)) for k, v in (screening.get("not_retrieved") or {}).items())),
        data_problems=_problems(screening.get("data_problems")),
        total=len(criteria),
        header=_header(screening.get(HEADER_KEY)),
    )


_SENTENCE = re.compile(r"(?<=[a-z0-9)%\]])\.\s+(?=[A-Z])")


def _norm(sentence: str) -> str:
    return " ".join(sentence.lower().rstrip(".").split())


def _say_once(grouped: dict[str, list[ReportItem]]) -> None:
    """No sentence twice on the page: in page order, a reason sentence already shown under another criterion is
    left out ("Same finding as I7d." when nothing new is left), and a "to resolve" line that repeats the reason's
    instruction ("Order an echocardiogram ..." twice) or an earlier item's is dropped."""
    seen: dict[str, str] = {}
    for key, _, _ in _SECTIONS:
        items = grouped[key]
        for i, it in enumerate(items):
            sentences = [p for p in _SENTENCE.split(it.reason) if p.strip()]
            fresh = [p for p in sentences if _norm(p) not in seen]
            reason = it.reason
            if len(fresh) < len(sentences):
                firsts = sorted({seen[_norm(p)] for p in sentences if _norm(p) in seen})
                same = f"Same finding as {', '.join(firsts)}."
                reason = " ".join([p.rstrip(".") + "." for p in fresh] + [same]) if fresh else same
            for p in sentences:
                seen.setdefault(_norm(p), it.id)
            resolve = it.resolve
            if resolve:
                words = _norm(resolve).split()[:3]
                if _norm(resolve) in seen or any(_norm(p).split()[:3] == words for p in sentences):
                    resolve = ""
                else:
                    seen[_norm(resolve)] = it.id
            if reason != it.reason or resolve != it.resolve:
                items[i] = replace(it, reason=reason, resolve=resolve)


def _problems(items: Any) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for p in items if isinstance(items, Sequence) and not isinstance(items, str) else []:
        if isinstance(p, Mapping):
            out.append((str(p.get("reference") or ""), str(p.get("message") or "")))
    return tuple(out)


@lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """The Jinja environment of the cards' HTML templates (report page, worklist): autoescaped, strict."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report_html(view: ReportView) -> str:
    """The report page as an HTML document."""
    return template_environment().get_template("report.html").render(view=view, missing=False)


def render_missing_html(trial_id: str = "") -> str:
    """The page shown for an unknown or expired report link (served with status 404)."""
    return template_environment().get_template("report.html").render(view=None, missing=True, trial_id=trial_id)
