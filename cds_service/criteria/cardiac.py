"""Exclusion criteria E9 (stroke or seizure) and E10a-E10f (cardiac). Each function's docstring quotes the
protocol sentence it implements.

Shared choices:

* Dated events (E9, E10b) are read from their event dates (Condition.onset, Procedure.performed, Observation
  .effective). A Condition with only a ``recordedDate`` happened on or before it: that can prove "older than the
  window", never "inside it".
* A Condition flagged unconfirmed / provisional / differential, and a code whose value-set entry carries a
  review note, never make an exclusion MET: inside the window they make it UNKNOWN, naming what to review.
* QTcF, blood-pressure means and LVEF are computed in ``facts.ecg``; computed values carry their inputs.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.criteria.common import CONDITION, OBSERVATION, PROCEDURE, event_in_window, none_recorded, window_start
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result, any_of
from cds_service.facts import ecg
from cds_service.facts.clinical import ConditionFact, ObservationFact, codings_of
from cds_service.facts.dates import DateRange, in_window
from cds_service.facts.index import Facts, evidence_of
from cds_service.facts.units import Quantity

__all__: list[str] = []

_EARLIEST = datetime(1800, 1, 1, tzinfo=UTC)
# E10e: the conditions that count as "clinically symptomatic cardiac disease" when active or recent.
_CARDIAC_SETS = ("heart-failure", "cardiomyopathy", "ischemic-cardiomyopathy", "myocardial-infarction",
                 "ventricular-arrhythmia", "av-block-high-grade")


# --- helpers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Event:
    """A fact as a dated event for ``event_in_window``: the date the window rule reads, and how it was read."""

    ref: str
    codings: tuple[tuple[str, str], ...]
    display: str | None
    date: DateRange | None
    fact: Any


def _event(fact: Any) -> _Event:
    date = fact.date
    if date is None and isinstance(fact, ConditionFact) and fact.recorded is not None:
        # Only the date it was recorded: the event happened on or before it (reference 1.1).
        date = DateRange(_EARLIEST, fact.recorded.end, f"on or before {fact.recorded.display()}")
    return _Event(fact.ref, fact.codings, fact.display, date, fact)


def _newest_first(events: Iterable[_Event]) -> list[_Event]:
    return sorted(events, key=lambda e: (e.date is None, -(e.date.end.timestamp() if e.date else 0)))


def _with(verdict: Verdict, *extra: Evidence) -> Verdict:
    """The verdict with more evidence appended (e.g. codes that were considered and did not count)."""
    known = set(verdict.evidence)
    more = tuple(e for e in extra if e not in known)
    return Verdict(verdict.result, verdict.reason, verdict.evidence + more, verdict.until)


def _in_window_or_open(date: DateRange | None, start: datetime, end: datetime) -> bool:
    """Could the date be inside ``(start, end]``? (dated and not surely outside; future dates excluded)"""
    if date is None or date.start > end:
        return False
    return in_window(date, start, end) is not Result.NOT_MET


def _status_note(fact: ConditionFact) -> str | None:
    if not fact.confirmed:
        return f"verification status {fact.verification}: confirm the diagnosis"
    return None


def _sort(review: list[tuple[_Event, str]], definite: list[_Event], fact: Any, note: str | None) -> None:
    """File a fact as a definite event, or as one to review (with what to review)."""
    if note:
        review.append((_event(fact), note))
    else:
        definite.append(_event(fact))


def _name(fact: Any, default: str = "") -> str:
    """How a fact is named in a reason: its display, else its first code."""
    if getattr(fact, "display", None):
        return fact.display
    codings = getattr(fact, "codings", ())
    return codings[0][1] if codings else default or fact.ref


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _join(parts: Sequence[str]) -> str:
    return " ".join(p if p.endswith(".") else p + "." for p in parts)


# --- E9 -----------------------------------------------------------------------------------------------------------
@criterion("E9")
def stroke_or_seizure_within_6_months(facts: Facts) -> Verdict:
    """"Experienced a stroke or seizure within 6 months prior to signing the ICF."

    A stroke (``stroke``) or seizure (``seizure`` Condition, or a seizure Observation not recorded as absent)
    dated in ``(consent - 6 calendar months, consent]`` -> MET with ``until``. Chronic epilepsy (``epilepsy``)
    dates its diagnosis, not a seizure: with no dated seizure in the window it gives UNKNOWN, unless the
    diagnosis itself falls in the window (an encounter-level or new diagnosis: MET). Sequelae / history of stroke
    (``stroke-sequelae``) are not a new event; one dated inside the window asks for the original stroke's date.
    TIA is not a stroke. I62 (other intracranial haemorrhage) and unconfirmed diagnoses go to review.
    """
    months = facts.rules.windows["stroke_seizure_months"]
    window_text = f"the {months} months before consent"
    start = window_start(facts, months=months)
    value_sets = ("stroke", "seizure", "epilepsy", "stroke-sequelae")
    definite: list[_Event] = []
    review: list[tuple[_Event, str]] = []
    for vs in ("stroke", "seizure"):
        for f in facts.conditions(vs):
            concept = facts.concept(f, vs)
            _sort(review, definite, f, (concept.review if concept is not None else None) or _status_note(f))
    for obs in facts.observations("seizure"):
        if facts.qualitative(obs) is Result.NOT_MET:
            continue  # "seizure: absent / no"
        if obs.preliminary:
            review.append((_event(obs), "preliminary Observation"))
        else:
            definite.append(_event(obs))
    chronic: list[ConditionFact] = []
    past: list[Evidence] = []
    for f in facts.conditions("epilepsy"):
        if in_window(f.onset, start, facts.at) is Result.MET:
            # Diagnosed inside the window (encounter-level or new diagnosis): a seizure happened then.
            _sort(review, definite, f, _status_note(f))
        elif f.active is not False or _in_window_or_open(f.abatement, start, facts.at) or \
                _in_window_or_open(f.onset, start, facts.at):
            chronic.append(f)
        else:
            past.append(evidence_of(f, note=f"recorded as {f.clinical_status or 'not active'}, with no seizure "
                                            f"dated in the window"))
    verdict = event_in_window(
        facts, _newest_first(definite), what="stroke or seizure", kinds=CONDITION + OBSERVATION,
        value_sets=value_sets, months=months, window_text=window_text,
    )
    if verdict.result is Result.MET:
        return verdict
    sequelae = list(facts.conditions("stroke-sequelae"))
    for f in sequelae:
        if _in_window_or_open(f.onset, start, facts.at):
            review.append((_event(f), "a sequela or history of stroke dated inside the window: confirm the date "
                                      "of the original stroke"))
    parts: list[str] = []
    evidence: list[Evidence] = []
    if verdict.result is Result.UNKNOWN:
        parts.append(verdict.reason)
        evidence.extend(verdict.evidence)
    doubtful = [(e, note) for e, note in review if _in_window_or_open(e.date, start, facts.at)
                or (e.date is None and e.fact not in sequelae)]
    for e, note in doubtful:
        parts.append(f"{_name(e)} ({e.ref}, {e.date.display() if e.date else 'undated'}) needs review: "
                     f"{note}")
        evidence.append(evidence_of(e, note=note))
    for f in chronic:
        when = f.onset.display() if f.onset else "undated"
        parts.append(f"Epilepsy / seizure disorder is recorded ({f.ref}, onset {when}) but no seizure is dated "
                     f"within {window_text}: confirm the date of the last seizure")
        evidence.append(evidence_of(f, note="chronic diagnosis: its onset is not a recent seizure"))
    ignored = past + [evidence_of(f, note="sequela / history of stroke: not a new event") for f in sequelae
                      if not _in_window_or_open(f.onset, start, facts.at)]
    ignored += [evidence_of(f, note="TIA is not a stroke") for f in facts.conditions("tia")
                if _in_window_or_open(f.onset, start, facts.at)]
    if parts:
        return unknown(_join(parts), *evidence, *ignored)
    return _with(verdict, *ignored)


# --- E10a ---------------------------------------------------------------------------------------------------------
def _nyha_class(facts: Facts, codings: Iterable[tuple[str, str]]) -> int | None:
    concept = facts.codes_in(codings, "nyha-class")
    if concept is None or concept.value is None:
        return None
    return int(concept.value)


def _raw_conditions(facts: Facts) -> dict[str, Any]:
    return {f"Condition/{r.id}": r for r in facts.record.of_type("Condition")}


@criterion("E10a")
def nyha_3_or_4_heart_failure(facts: Facts) -> Verdict:
    """"New York Heart Association (NYHA) Stage III or IV heart failure."

    The current NYHA class comes from a NYHA finding recorded as a Condition (not resolved), the latest NYHA
    Observation (``nyha-observation``, value in ``nyha-class``, within ``recency_days.nyha``), or the stage of a
    current heart-failure Condition. Class III/IV -> MET; only class I/II -> NOT_MET; both -> UNKNOWN
    (conflict). Heart failure without a current class -> UNKNOWN; resolved heart failure -> NOT_MET.
    """
    classes: list[tuple[int, Evidence]] = []
    notes: list[str] = []
    extra: list[Evidence] = []
    blocking: list[str] = []  # what keeps "no NYHA III/IV" open when no current class is known
    doubtful: list[Evidence] = []
    for f in facts.conditions("nyha-class"):
        cls = _nyha_class(facts, f.codings)
        if f.active is False or cls is None:
            extra.append(evidence_of(f, note=f"recorded as {f.clinical_status or 'not current'}"))
        elif not f.confirmed:
            doubtful.append(evidence_of(f, value=f"NYHA class {cls}", note=_status_note(f)))
        else:
            classes.append((cls, evidence_of(f, value=f"NYHA class {cls}")))
    sel = facts.results("nyha-observation", "nyha")
    if sel.latest is not None:
        obs = sel.latest
        cls = _nyha_class(facts, obs.value_codings)
        if cls is None:
            blocking.append(f"The latest NYHA assessment ({obs.ref}) has a value that cannot be read as a class")
            extra.append(evidence_of(obs, note="NYHA value not readable"))
        else:
            classes.append((cls, evidence_of(obs, value=f"NYHA class {cls}")))
    elif sel.stale is not None:
        notes.append(facts.no_recent_reason(sel, "NYHA class", "nyha"))
        extra.append(evidence_of(sel.stale, note="too old to give the current NYHA class"))
        old = _nyha_class(facts, sel.stale.value_codings)
        if old is None or old >= 3:
            blocking.append(f"An older NYHA assessment ({sel.stale.ref}, {sel.stale.effective.display()}) gives "
                            f"{'an unreadable class' if old is None else f'class {old}'}: confirm the current class")
    raw = _raw_conditions(facts)
    hf = facts.conditions("heart-failure")
    current_hf = [f for f in hf if f.active is not False]
    for f in current_hf:
        res = raw.get(f.ref)
        for stage in (getattr(res, "stage", None) or ()):
            cls = _nyha_class(facts, codings_of(stage.summary))
            if cls is not None:
                classes.append((cls, evidence_of(f, value=f"NYHA class {cls} (stage)")))
    hf_ev = [evidence_of(f, note=_status_note(f) or ("not current" if f.active is False else None)) for f in hf]
    high = [ev for cls, ev in classes if cls >= 3]
    low = [ev for cls, ev in classes if cls <= 2]
    if high and low:
        return unknown("Conflicting current NYHA classes are recorded (III/IV and I/II): review the current class.",
                       *high, *low, *hf_ev)
    if high:
        return met("NYHA class III/IV heart failure is documented.", *high, *hf_ev)
    if doubtful:
        return unknown("A NYHA class is recorded but not confirmed: confirm the current NYHA class.", *doubtful,
                       *low, *hf_ev)
    if low:
        return not_met("The current NYHA class is I/II, not III/IV.", *low, *hf_ev, *extra)
    if current_hf:
        return unknown(_join(["Heart failure is recorded without a current NYHA class: record the NYHA class",
                              *notes]), *hf_ev, *extra)
    if blocking:
        return unknown(_join(blocking), *hf_ev, *extra)
    if hf:
        return not_met("Heart failure is recorded only as resolved or inactive; no current NYHA class III/IV.",
                       *hf_ev, *extra)
    verdict = none_recorded(facts, CONDITION + OBSERVATION, ("heart-failure", "nyha-class", "nyha-observation"),
                            "heart failure or NYHA class III/IV")
    return _with(verdict, *extra)


# --- E10b ---------------------------------------------------------------------------------------------------------
@criterion("E10b")
def mi_or_cabg_within_6_months(facts: Facts) -> Verdict:
    """"Myocardial infarction or coronary artery bypass graft (CABG) <= 6 months prior to enrollment."

    MI (``myocardial-infarction`` Condition onset) or CABG (``cabg`` Procedure date) in ``(enrolment - 6 calendar
    months, enrolment]`` -> MET with ``until``. Old MI / bypass-graft status codes (``mi-cabg-undated``) prove an
    earlier event but not when: undated they give UNKNOWN, unless a recorded date shows they are older than the
    window. Older events -> NOT_MET with their evidence.
    """
    months = facts.rules.windows["mi_cabg_months"]
    window_text = f"the {months} months before enrolment"
    start = window_start(facts, months=months)
    value_sets = ("myocardial-infarction", "cabg", "mi-cabg-undated")
    events: list[_Event] = []
    review: list[tuple[_Event, str]] = []
    for vs in ("myocardial-infarction", "mi-cabg-undated"):
        for f in facts.conditions(vs):
            bounded = _onset_bounded(facts, f, start) if vs == "myocardial-infarction" else None
            if bounded is None:
                _sort(review, events, f, _status_note(f))
                continue
            event, note = bounded
            if note is None:
                events.append(event)  # wholly before the window: an older MI
            else:
                review.append((event, note))
    events += [_event(p) for p in facts.procedures("cabg")]
    what = "myocardial infarction or CABG"
    verdict = event_in_window(
        facts, _newest_first(events), what=what, kinds=CONDITION + PROCEDURE,
        value_sets=value_sets, months=months, window_text=window_text,
    )
    if verdict.result is Result.MET:
        return verdict
    doubtful = [(e, n) for e, n in review if e.date is None or _in_window_or_open(e.date, start, facts.at)]
    if doubtful:
        parts = [verdict.reason] if verdict.result is Result.UNKNOWN else []
        parts += [f"{_name(e)} ({e.ref}) needs review: {n}" for e, n in doubtful]
        return unknown(_join(parts), *verdict.evidence, *(evidence_of(e, note=n) for e, n in doubtful))
    return verdict


def _onset_bounded(facts: Facts, fact: ConditionFact, start: datetime) -> tuple[_Event, str | None] | None:
    """An MI Condition with only a recordedDate, dated by its code (``windows.onset_bound_by_code``).

    (event, None) when the bounded onset lies wholly before the window; (event, review note) when it may lie
    inside; None when the fact has an onset, no recordedDate, or no listed code bounds it.
    """
    if fact.date is not None or fact.recorded is None:
        return None
    for rule in facts.rules.windows.get("onset_bound_by_code") or ():
        prefix = rule["prefix"].replace(".", "")
        code = next((c for s, c in fact.codings if s == rule["system"] and c.replace(".", "").upper()
                     .startswith(prefix)), None)
        if code is None:
            continue
        days = rule["days"]
        low = fact.recorded.start - timedelta(days=days)
        text = f"between {low.date().isoformat()} and {fact.recorded.display()}"
        event = _Event(fact.ref, fact.codings, fact.display, DateRange(low, fact.recorded.end, text), fact)
        if fact.recorded.end <= start:
            return event, None
        note = (f"only a recordedDate ({fact.recorded.display()}): {code} is used up to {days} days after onset, "
                f"so it began {text}, {'inside' if low > start else 'overlapping'} the window: confirm the date of "
                "the infarction")
        status = _status_note(fact)
        return event, f"{note}; {status}" if status else note
    return None


# --- E10c ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    result: Result
    reason: str
    evidence: tuple[Evidence, ...]


def _observation_gap(facts: Facts, value_sets: Iterable[str]) -> str | None:
    """Why a result-decided NOT_MET cannot stand: an unreadable Observation that may be a newer result."""
    for vs in value_sets:
        gap = facts.gap(OBSERVATION, vs)
        if gap:
            return gap
    return None


def _newer_preliminary(preliminary: Iterable[ObservationFact], than: DateRange) -> ObservationFact | None:
    """A preliminary result newer than the one deciding: it could change the answer once final."""
    newer = [o for o in preliminary if o.effective is not None and o.effective.start > than.start]
    return max(newer, key=lambda o: o.effective.start) if newer else None


def _qtcf_part(facts: Facts) -> _Part:
    limit = facts.rules.thresholds["qtcf_exclude_at_or_above_ms"]
    days = facts.rules.recency_days["ecg"]
    a = ecg.latest_qtcf(facts, limit, facts.rules.windows["ecg_triplicate_minutes"])
    if a.latest is None:
        sel = a.selection
        if sel.preliminary:
            why = f"only a preliminary ECG result ({sel.preliminary[0].ref})"
        elif sel.stale is not None:
            why = f"the latest ECG ({sel.stale.effective.display()}) is older than {days} days"
        else:
            why = _observation_gap(facts, (ecg.QTCF, ecg.QT)) or "none is recorded"
        stale = tuple(m.evidence("too old to count") for m in sel.stale.items) if sel.stale else ()
        return _Part(Result.UNKNOWN, f"No ECG in the {days} days before {facts.at.date().isoformat()} ({why}): "
                                     f"order a 12-lead ECG for QTcF", stale)
    when = a.latest.effective.display()
    if a.qtcf is not None:
        q = a.qtcf
        r = Result.of(Quantity(q.value, "ms", q.comparator).at_least(limit))
        extra = f" ({q.method})" if q.method != "reported" else ""
        if r is Result.MET:
            text = f"QTcF {q.shown()}{extra} on the ECG of {when} is >= {_fmt(limit)} ms"
        elif r is Result.NOT_MET:
            text = f"QTcF {q.shown()}{extra} on the ECG of {when} is below {_fmt(limit)} ms"
        else:
            text = f"QTcF {q.shown()} on the ECG of {when} cannot be compared with {_fmt(limit)} ms"
        newer = _newer_preliminary(a.selection.preliminary, a.latest.effective)
        gap = _observation_gap(facts, (ecg.QTCF, ecg.QT)) if r is Result.NOT_MET else None
        if gap:
            # An unreadable Observation may be the newer ECG.
            return _Part(Result.UNKNOWN, f"{text}, but {gap}", q.evidence)
        if r is Result.NOT_MET and newer is not None:
            return _Part(Result.UNKNOWN, f"{text}, but a newer preliminary ECG ({newer.ref}, "
                                         f"{newer.effective.display()}) awaits a final result",
                         (*q.evidence, evidence_of(newer, note="preliminary")))
        return _Part(r, text, q.evidence)
    if a.bazett is not None:
        return _Part(Result.NOT_MET, f"No QTcF on the ECG of {when}, but its Bazett QTc is below {_fmt(limit)} ms at "
                                     f"a heart rate above 60/min, so QTcF is below {_fmt(limit)} ms too", a.bazett)
    shown = [m for e in a.ecgs for m in e.items if m.kind in (ecg.QTCB, ecg.QTC_UNSPECIFIED)]
    hint = ""
    if shown:
        hint = f"; its {', '.join(m.what + ' ' + m.shown() for m in shown)} is not a QTcF"
    return _Part(Result.UNKNOWN, f"The ECG of {when} gives no QTcF ({a.why}){hint}: report the QTcF (or QT and "
                                 f"RR) of a 12-lead ECG", tuple(m.evidence() for e in a.ecgs for m in e.items))


def _rhythm_parts(facts: Facts) -> tuple[list[_Part], list[Evidence]]:
    parts: list[_Part] = []
    inactive: list[Evidence] = []
    for f in facts.conditions("av-block-high-grade"):
        concept = facts.concept(f, "av-block-high-grade")
        review = concept.review if concept is not None else None
        name = _name(f, "AV block")
        if f.active is False:
            inactive.append(evidence_of(f, note=f"recorded as {f.clinical_status or 'not active'}"))
        elif review:
            parts.append(_Part(Result.UNKNOWN, f"{name} ({f.ref}) needs review: {review}",
                               (evidence_of(f, note=review),)))
        elif not f.confirmed:
            parts.append(_Part(Result.UNKNOWN, f"{name} ({f.ref}) needs review: {_status_note(f)}",
                               (evidence_of(f, note=_status_note(f)),)))
        elif f.active is None:
            parts.append(_Part(Result.UNKNOWN, f"{name} ({f.ref}) has no clinical status: confirm whether it is "
                                               f"still present", (evidence_of(f, note="clinical status missing"),)))
        else:
            parts.append(_Part(Result.MET, f"Active degree II-III AV block is recorded ({name}, {f.ref})",
                               (evidence_of(f),)))
    for f in facts.conditions("ventricular-arrhythmia"):
        if f.active is False:
            inactive.append(evidence_of(f, note=f"recorded as {f.clinical_status or 'not active'}"))
            continue
        concept = facts.concept(f, "ventricular-arrhythmia")
        review = (concept.review if concept is not None else None) or "confirm whether it requires intervention"
        parts.append(_Part(Result.UNKNOWN, f"{_name(f)} ({f.ref}) needs review: "
                                           f"{review}", (evidence_of(f, note=review),)))
    return parts, inactive


@criterion("E10c")
def severe_rhythm_or_conduction_abnormality(facts: Facts) -> Verdict:
    """"Severe cardiac rhythm or conduction abnormalities, such as ventricular arrhythmia requiring clinical
    intervention, degree II-III atrioventricular block, and electrocardiographic corrected QTcF interval >=480 ms."

    MET if the latest ECG in the ``ecg`` recency window has QTcF >= 480 ms (reported 76634-5, else computed by
    Fridericia from QT and RR / heart rate of the same ECG; mean of a triplicate), or an active, confirmed degree
    II-III AV block is recorded. Mobitz I, ventricular arrhythmia ("requiring intervention" is not coded) and AV
    block of unknown status -> UNKNOWN. No ECG in the window -> UNKNOWN even without rhythm diagnoses.
    """
    qtcf = _qtcf_part(facts)
    rhythm, inactive = _rhythm_parts(facts)
    parts = [qtcf, *rhythm]
    result = any_of(p.result for p in parts)
    chosen = [p for p in parts if p.result is result]
    evidence = [e for p in chosen for e in p.evidence]
    if result is Result.MET:
        return met(_join([p.reason for p in chosen]), *evidence)
    if result is Result.UNKNOWN:
        # The QTcF is shown whatever it says, so the reviewer sees the whole picture.
        shown = chosen if qtcf in chosen else [qtcf, *chosen]
        return unknown(_join([p.reason for p in shown]), *(e for p in shown for e in p.evidence), *inactive)
    for vs in ("av-block-high-grade", "ventricular-arrhythmia"):
        gap = facts.gap(CONDITION, vs)
        if gap:
            return unknown(_join([qtcf.reason, f"Rhythm diagnoses cannot be ruled out: {gap}"]), *evidence)
    return not_met(_join([qtcf.reason, "No active degree II-III AV block or ventricular arrhythmia is recorded"]),
                   *evidence, *inactive)


# --- E10d ---------------------------------------------------------------------------------------------------------
def _lvef_evidence(facts: Facts) -> list[Evidence]:
    results, _why = ecg.latest_lvef(facts)
    return [r.evidence() for r in results]


@criterion("E10d")
def severe_non_ischaemic_cardiomyopathy(facts: Facts) -> Verdict:
    """"History of severe non-ischemic cardiomyopathy."

    Any recorded non-ischaemic cardiomyopathy (``cardiomyopathy`` minus ``ischemic-cardiomyopathy``, any status:
    "history of") -> UNKNOWN: severity is not coded, so a clinician reviews it, with the latest LVEF shown (an
    LVEF < 45% decides E10e). None -> NOT_MET "none recorded".
    """
    found = [f for f in facts.conditions("cardiomyopathy")
             if facts.codes_in(f.codings, "ischemic-cardiomyopathy") is None]
    ischaemic = [evidence_of(f, note="ischaemic cardiomyopathy: not E10d")
                 for f in facts.conditions("ischemic-cardiomyopathy")]
    if found:
        concept = facts.concept(found[0], "cardiomyopathy")
        review = (concept.review if concept is not None else None) or "severity is not coded"
        names = ", ".join(f"{_name(f)} ({f.ref})" for f in found)
        return unknown(f"Non-ischaemic cardiomyopathy is recorded: {names}. Its severity is not coded: review "
                       f"whether it is severe (the latest LVEF is shown).",
                       *(evidence_of(f, note=_status_note(f) or review) for f in found), *_lvef_evidence(facts))
    verdict = none_recorded(facts, CONDITION, ("cardiomyopathy",), "non-ischaemic cardiomyopathy")
    return _with(verdict, *ischaemic)


# --- E10e ---------------------------------------------------------------------------------------------------------
def _recent_cardiac_conditions(facts: Facts) -> list[Evidence]:
    """Cardiac Conditions that began, were active or may have been active in the window (activity unknown)."""
    months = facts.rules.windows["cardiac_symptomatic_months"]
    start = window_start(facts, months=months)
    seen: set[str] = set()
    out: list[Evidence] = []
    for vs in _CARDIAC_SETS:
        for f in facts.conditions(vs):
            if f.ref in seen:
                continue
            why = None
            if in_window(f.onset, start, facts.at) is Result.MET:
                why = f"onset within {months} months"
            elif f.active is True:
                why = "active"
            elif f.active is None:
                why = "clinical status not recorded"
            elif _in_window_or_open(f.abatement, start, facts.at):
                why = f"resolved within {months} months"
            elif f.onset is not None and _in_window_or_open(f.onset, start, facts.at):
                why = f"onset possibly within {months} months"
            if why:
                seen.add(f.ref)
                out.append(evidence_of(f, note=why))
    return out


@criterion("E10e")
def low_lvef_or_symptomatic_cardiac_disease(facts: Facts) -> Verdict:
    """"Cardiac dysfunction (LV <45%), as assessed by echocardiography or multigated acquisition scanning, or
    other clinically symptomatic cardiac disease within 6 months before enrollment."

    The latest LVEF in the ``lvef`` recency window (all results of that day): < 45% -> MET. >= 45% -> NOT_MET
    only if no cardiac Condition (heart failure, cardiomyopathy, MI, ventricular arrhythmia, AV block II-III)
    began, was active, or has an unknown status within 6 months: symptoms are not coded, so such a condition
    gives UNKNOWN for review. No LVEF, or same-day results on both sides of 45% -> UNKNOWN.
    """
    limit = facts.rules.thresholds["lvef_min_percent"]
    months = facts.rules.windows["cardiac_symptomatic_months"]
    results, why = ecg.latest_lvef(facts)
    cardiac = _recent_cardiac_conditions(facts)
    if not results:
        gap = _observation_gap(facts, (ecg.LVEF,))
        return unknown(_join([why, *([gap[0].upper() + gap[1:]] if gap else []), "Order an echocardiogram or MUGA "
                                                                                  "scan"]), *cardiac)
    lvef_ev = [r.evidence() for r in results]
    readable = [r for r in results if r.percent is not None]
    unreadable = [r for r in results if r.percent is None]
    decisions = {Result.of(Quantity(r.percent, "%", r.comparator).less_than(limit)) for r in readable}
    day = results[0].obs.effective.display()
    shown = ", ".join(r.shown() for r in results)
    if decisions == {Result.MET} and not unreadable:
        return met(f"LVEF {shown} on {day} is below {_fmt(limit)}%.", *lvef_ev)
    if unreadable or not decisions:
        return unknown(f"The LVEF of {day} cannot be read ({unreadable[0].note if unreadable else 'no value'}): "
                       f"check the report.", *lvef_ev, *cardiac)
    if len(decisions) > 1:
        return unknown(f"LVEF results of {day} disagree ({shown}) about {_fmt(limit)}%: review which method "
                       f"applies.", *lvef_ev, *cardiac)
    if decisions == {Result.UNKNOWN}:
        return unknown(f"LVEF {shown} on {day} cannot be compared with {_fmt(limit)}%.", *lvef_ev, *cardiac)
    # LVEF >= 45%.
    gap = _observation_gap(facts, (ecg.LVEF,))
    if gap:
        return unknown(f"LVEF {shown} on {day} is at least {_fmt(limit)}%, but {gap}.", *lvef_ev, *cardiac)
    newer = _newer_preliminary(facts.results(ecg.LVEF, "lvef").preliminary, results[0].obs.effective)
    if newer is not None:
        return unknown(f"LVEF {shown} on {day} is at least {_fmt(limit)}%, but a newer preliminary LVEF ({newer.ref}, "
                       f"{newer.effective.display()}) awaits a final result.", *lvef_ev,
                       evidence_of(newer, note="preliminary"), *cardiac)
    # The "other clinically symptomatic cardiac disease" part.
    if cardiac:
        return unknown(f"LVEF {shown} on {day} is at least {_fmt(limit)}%, but a cardiac condition is active or "
                       f"recent within {months} months: review whether it is clinically symptomatic.",
                       *lvef_ev, *cardiac)
    for vs in _CARDIAC_SETS:
        gap = facts.gap(CONDITION, vs)
        if gap:
            return unknown(f"LVEF {shown} on {day} is at least {_fmt(limit)}%, but cardiac disease cannot be ruled "
                           f"out: {gap}.", *lvef_ev)
    return not_met(f"LVEF {shown} on {day} is at least {_fmt(limit)}%, and no cardiac condition is active or began "
                   f"within the {months} months before enrolment.", *lvef_ev)


# --- E10f ---------------------------------------------------------------------------------------------------------
def _readings(n: int) -> str:
    return f"{n} reading{'s' if n != 1 else ''}"


def _bp_part(kind: str, readings: tuple[ecg.Measurement, ...], unusable: list[ecg.Measurement], limit: float,
             n_min: int) -> tuple[Result, str]:
    name = "SBP" if kind == ecg.SYSTOLIC else "DBP"
    if unusable:
        listed = ", ".join(f"{m.ref} {m.shown()!r}" for m in unusable)
        return Result.UNKNOWN, f"{len(unusable)} {name} reading{'s' if len(unusable) != 1 else ''} without a " \
                               f"readable value or mm[Hg] unit ({listed})"
    if len(readings) < n_min:
        return Result.UNKNOWN, f"{len(readings)} {name} reading{'s' if len(readings) != 1 else ''} (at least " \
                               f"{n_min} needed)"
    avg = ecg.to_tenth(ecg.mean(m.value for m in readings))
    sign = ">=" if avg >= limit else "<"
    return Result.of(avg >= limit), f"mean {name} {_fmt(avg)} mm[Hg] over {len(readings)} readings {sign} " \
                                    f"{_fmt(limit)}"


@criterion("E10f")
def uncontrolled_hypertension(facts: Facts) -> Verdict:
    """"Clinically uncontrolled hypertension (systolic blood pressure >=150 mmHg and/or diastolic blood pressure
    >=100mmHg) (based on the mean of >=2 measurements)."

    Over the readings of the latest visit in the ``blood_pressure`` recency window (``windows.bp_visit_hours``),
    or, when that visit has fewer than ``bp_min_readings`` of a kind, over the latest ``bp_min_readings``
    readings in the window across visits (``windows.bp_readings_across_visits: latest``; ``none`` keeps the
    visit's readings alone), the mean SBP and the mean DBP are computed separately: mean SBP >= 150 or mean
    DBP >= 100 -> MET; both below
    -> NOT_MET; fewer than ``bp_min_readings`` readings of a kind that could decide, or an unreadable reading of
    it -> UNKNOWN. A single high reading, or a hypertension diagnosis, is not enough.
    """
    t = facts.rules.thresholds
    n_min = t["bp_min_readings"]
    w = facts.rules.windows
    bp = ecg.screening_blood_pressure(facts, w["bp_visit_hours"], min_readings=n_min,
                                      across_visits=w["bp_readings_across_visits"])
    readings = bp.systolic + bp.diastolic + bp.unusable
    htn = [evidence_of(f, note="a hypertension diagnosis alone does not meet E10f")
           for f in facts.conditions("hypertension")]
    if not readings:
        days = facts.rules.recency_days["blood_pressure"]
        if bp.preliminary:
            why = f"only a preliminary reading ({bp.preliminary[0].ref})"
        elif bp.stale is not None:
            why = f"the latest ({bp.stale.effective.display()}) is too old to count"
        else:
            why = _observation_gap(facts, (ecg.SYSTOLIC, ecg.DIASTOLIC, "bp-panel")) or "none is recorded"
        stale = [bp.stale.evidence("too old to count")] if bp.stale else []
        return unknown(f"No blood-pressure reading in the {days} days before {facts.at.date().isoformat()} ({why}): "
                       f"record at least {n_min} readings.", *stale, *htn)
    sbp_r, sbp_text = _bp_part(ecg.SYSTOLIC, bp.systolic, [m for m in bp.unusable if m.kind == ecg.SYSTOLIC],
                               t["sbp_exclude_at_or_above"], n_min)
    dbp_r, dbp_text = _bp_part(ecg.DIASTOLIC, bp.diastolic, [m for m in bp.unusable if m.kind == ecg.DIASTOLIC],
                               t["dbp_exclude_at_or_above"], n_min)
    evidence = [m.evidence(f"{'systolic' if m.kind == ecg.SYSTOLIC else 'diastolic'} reading") for m in readings]
    evidence += [m.evidence("same value and time as another resource: counted once") for m in bp.duplicates]
    summary = []
    if bp.mean_systolic is not None:
        summary.append(f"mean SBP {_fmt(bp.mean_systolic)} mm[Hg] of {_readings(len(bp.systolic))}")
    if bp.mean_diastolic is not None:
        summary.append(f"mean DBP {_fmt(bp.mean_diastolic)} mm[Hg] of {_readings(len(bp.diastolic))}")
    if summary:
        refs = ", ".join(dict.fromkeys(m.ref for m in bp.systolic + bp.diastolic))
        evidence.insert(0, Evidence(reference=facts.patient_ref, value="; ".join(summary),
                                    date=bp.systolic[0].effective.display() if bp.systolic else None,
                                    display="Blood pressure, mean (computed)",
                                    note=f"computed over {bp.scope}: {refs}"))
    result = any_of([sbp_r, dbp_r])
    newest = max(readings, key=lambda m: m.effective.start)
    scope = f"at the latest visit ({newest.effective.display()})" if \
        w["bp_visit_hours"] is not None and bp.scope.startswith("the readings of the latest visit") \
        else f"over {bp.scope}"
    if result is Result.MET:
        decisive = [txt for r, txt in ((sbp_r, sbp_text), (dbp_r, dbp_text)) if r is Result.MET]
        return met(f"Blood pressure {scope}: {'; '.join(decisive)}.", *evidence)
    gap = _observation_gap(facts, (ecg.SYSTOLIC, ecg.DIASTOLIC, "bp-panel"))
    if result is Result.NOT_MET and gap:
        return unknown(f"Blood pressure {scope}: {sbp_text}; {dbp_text}; but {gap}.", *evidence)
    if result is Result.NOT_MET:
        return not_met(f"Blood pressure {scope}: {sbp_text}; {dbp_text}.", *evidence)
    advice = "check the units of the readings" if bp.unusable else f"record at least {n_min} readings"
    return unknown(f"Blood pressure {scope} cannot decide: {sbp_text}; {dbp_text}; {advice}.", *evidence, *htn)
