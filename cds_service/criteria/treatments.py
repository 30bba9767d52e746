"""Exclusion criteria about prior and recent treatments: E1, E2a-E2e, E4, E5, E15, E16.

Each function's docstring quotes the protocol sentence it implements. This module does no I/O.

The apheresis date (the anchor of E2a, E2c, E2d, E2e and E16) is in the future at screening, so every window
is measured back from ``facts.at``: a result is *as of* that date, and a MET result says from when (``until``)
the window will have passed. A patient who passes today can still fail on the real apheresis date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from cds_service.criteria.common import (
    ALLERGY,
    CONDITION,
    IMMUNIZATION,
    MEDICATION_KINDS,
    PROCEDURE,
    event_in_window,
    none_recorded,
    sentence_start,
    window_start,
)
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result
from cds_service.facts.clinical import ConditionFact, ProcedureFact
from cds_service.facts.codes import Concept
from cds_service.facts.courses import expected_course, resource_of
from cds_service.facts.dates import DateRange, in_window
from cds_service.facts.index import Facts, evidence_of
from cds_service.facts.medications import (
    Contribution,
    DoseItem,
    MedicationFact,
    below_threshold_from,
    cumulative_dose,
    end_of_period,
    first_date_after,
    is_open,
    last_dose_range,
    start_of_period,
    washout_window,
)

__all__: list[str] = []

_PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
_SOURCE_TEXT = {"MedicationAdministration": "administrations", "MedicationStatement": "statements",
                "MedicationRequest": "orders"}


# --- shared helpers ----------------------------------------------------------------------------------------

def _as_of(facts: Facts) -> str:
    return facts.at.date().isoformat()


def _provisional(facts: Facts) -> str:
    return f"as of {_as_of(facts)}; provisional until the apheresis date is known"


def _last_performed(facts: Facts) -> Callable[[Any], DateRange | None]:
    """``when`` for event_in_window on procedures: the last day of a period (the last fraction / infusion).

    A period with no end is still running if the procedure is in progress (its last instant is now); if it is
    completed, it ended on an unrecorded date between its start and now.
    """

    def when(fact: Any) -> DateRange | None:
        period = fact.date
        if period is None:
            return None
        start = start_of_period(period)
        if not is_open(period):
            end = end_of_period(period) or period
            if end.start > facts.at >= start.start:
                return DateRange(facts.at, facts.at, period.text)  # started, due to end later: ongoing now
            return end
        if start.start > facts.at:
            return start  # planned: event_in_window skips future-dated events
        if getattr(fact, "status", None) == "in-progress":
            return DateRange(facts.at, facts.at, period.text)
        return DateRange(start.start, facts.at, period.text)

    return when


def _latest_possible(fact: ConditionFact) -> DateRange | None:
    """For an undated history / status diagnosis: the latest date the underlying event can have had.

    The event happened on or before the diagnosis was recorded (``recordedDate``) and on or before the onset
    of the history / status it describes, so either is an upper bound (reference 1.1): it can prove "old
    enough", never "recent enough".
    """
    bounds = [d for d in (fact.recorded, fact.onset) if d is not None]
    if not bounds:
        return None
    return min(bounds, key=lambda d: d.end)


def _undated_history(facts: Facts, conditions: Sequence[ConditionFact], start: datetime
                     ) -> tuple[list[Evidence], list[Evidence]]:
    """Split undated history / status diagnoses into (provably before ``start``, possibly inside the window)."""
    old: list[Evidence] = []
    open_: list[Evidence] = []
    for c in conditions:
        bound = _latest_possible(c)
        if bound is not None and bound.end <= start:
            old.append(evidence_of(c, note=f"recorded by {bound.display()}: the event was before the window"))
        else:
            open_.append(evidence_of(c, note="no date for the event itself"))
    return old, open_


def _names(facts: Facts, value_set: str) -> str:
    """The distinct displays of a value set's entries without a review flag, as an English list."""
    seen: list[str] = []
    for c in facts.tables[value_set].concepts:
        if c.review is None and c.display not in seen:
            seen.append(c.display)
    if len(seen) <= 1:
        return "".join(seen)
    return ", ".join(seen[:-1]) + " or " + seen[-1]


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


# --- E1 ----------------------------------------------------------------------------------------------------

@criterion("E1")
def allergy_to_study_drug(facts: Facts) -> Verdict:
    """"Known allergy to any of the drug ingredients to be used in this study."

    An active, non-refuted AllergyIntolerance whose substance (code or reaction substance) is a study-drug
    ingredient (``study-drug-ingredients``: fludarabine, cyclophosphamide, tocilizumab) is MET; an allergy to a
    review-flagged entry (DMSO, the likely cryoprotectant) is UNKNOWN. With no such allergy the result is
    NOT_MET, and the reason says that the CAR-T product's excipients (DMSO, albumin, dextran-40: composition
    not public, RxNorm codes unverified) must still be checked by the study team.

    An empty allergy list without a "no known allergy" assertion: the reference asks for UNKNOWN, but the
    project's issue decides that a retrieved record with no match is "none recorded", so it is NOT_MET
    "None recorded ...". Allergy data not retrieved (or an unreadable allergy) is UNKNOWN.
    """
    ingredients = _names(facts, "study-drug-ingredients")
    excipients = ("CAR-T product excipients (DMSO, albumin, dextran-40) must still be checked by the study "
                  "team")
    hits = facts.allergies("study-drug-ingredients")
    sure = [a for a in hits if facts.concept(a, "study-drug-ingredients").review is None]
    if sure:
        a = sure[0]
        return met(f"Allergy to {facts.concept(a, 'study-drug-ingredients').display} recorded ({a.ref}), a "
                   f"study-drug ingredient.", *(evidence_of(x) for x in sure))
    if hits:
        reviews = {facts.concept(a, "study-drug-ingredients").review for a in hits}
        return unknown(f"Allergy to a possible product excipient recorded: {' '.join(sorted(reviews))}",
                       *(evidence_of(a, note="review") for a in hits))
    gap = facts.gap(ALLERGY, "study-drug-ingredients")
    if gap:
        return unknown(f"Cannot rule out an allergy to {ingredients}: {gap}.")
    nka = facts.allergies("no-known-allergy")
    if nka:
        return not_met(f"No allergy to {ingredients}: 'no known allergy' is recorded; {excipients}.",
                       *(evidence_of(a) for a in nka))
    others = facts.all_of_kind("AllergyIntolerance")
    if others:
        count = _plural(len(others), "recorded allergy", "recorded allergies")
        return not_met(f"No allergy to {ingredients} among {count}; {excipients}.",
                       *(evidence_of(a) for a in others))
    verdict = none_recorded(facts, ALLERGY, ("study-drug-ingredients",), f"allergy to {ingredients}")
    return replace(verdict, reason=verdict.reason.rstrip(".") + f" (the allergy list is empty, with no 'no known "
                                                                 f"allergy' entry); {excipients}.")


# --- E2a ---------------------------------------------------------------------------------------------------

def _route_class(facts: Facts, fact: MedicationFact) -> str:
    """"systemic", "non-systemic", "missing" (no route recorded) or "other" (a route to review)."""
    if not fact.route:
        # No route recorded: the product's dose form may say (an oral tablet is systemic, a cream is not).
        return {"systemic": "systemic", "non-systemic": "non-systemic"}.get(fact.form_route or "", "missing")
    if facts.codes_in(fact.route, "systemic-routes") is not None:
        return "systemic"
    if facts.codes_in(fact.route, "non-systemic-routes") is not None:
        return "non-systemic"
    return "other"


def _contribution_evidence(c: Contribution) -> Evidence:
    note = c.how
    if c.item.note:
        note += f"; {c.item.note}"
    if c.why_doubtful:
        note += f"; not counted: {c.why_doubtful}"
    value = None if c.mg is None else round(c.mg, 2)
    return evidence_of(c.item.fact, value=value, unit="mg prednisone-equivalent" if value is not None else None,
                       note=note)


@criterion("E2a")
def corticosteroids_70mg_in_7_days(facts: Facts) -> Verdict:
    """"Received a cumulative dose of prednisone (or equivalent corticosteroids) >= 70 mg within 7 days prior
    to apheresis."

    Sum of dose x ``prednisone_factor`` (``systemic-corticosteroids``) over ``(at - 7 days, at]``
    (``windows.steroid_days``, ``thresholds.steroid_cumulative_prednisone_equivalent_mg``). Systemic routes
    only: a ``non-systemic-routes`` record is left out, a record with no route is counted with a note, any
    other route goes to review. Per drug the best source wins: administrations, else statements, else orders
    (an order's daily dose x the days of the window it covers, used only when no administration of that drug
    reaches the window). MET sets ``until`` to the first date on which the doses still in the window fall below
    70 mg, assuming no further doses. Records whose dose, date, route or factor cannot be counted make a
    below-threshold total UNKNOWN if they could reach 70 mg. No steroid at all is "none recorded".
    """
    threshold = facts.rules.thresholds["steroid_cumulative_prednisone_equivalent_mg"]
    days = facts.rules.windows["steroid_days"]
    start = facts.days_ago(days)
    window_text = f"the {days} days before {_as_of(facts)}"
    items: list[DoseItem] = []
    left_out: list[Evidence] = []
    steroids = facts.medications("systemic-corticosteroids")
    for f in steroids:
        concept = facts.concept(f, "systemic-corticosteroids")
        route = _route_class(facts, f)
        if route == "non-systemic":
            left_out.append(evidence_of(f, note="not counted: non-systemic route"))
            continue
        note = "route not recorded: counted as systemic" if route == "missing" else None
        if f.dose_note:
            note = f"{note}; dose {f.dose_note}" if note else f"dose {f.dose_note}"
        doubt = None
        if route == "other":
            doubt = "its route is not a recognised systemic route (review)"
        elif concept.review:
            doubt = concept.review
        elif f.flagged:
            doubt = "a statement of intent, not of use"
        # One group per drug for the source preference; a catch-all entry (ATC H02AB) can cover many drugs.
        drug = concept.display if concept.match != "prefix" else f"{concept.display}:{f.ref}"
        items.append(DoseItem(f, drug, concept.prednisone_factor, note, doubt))
    cum = cumulative_dose(items, start, facts.at)
    total = cum.total
    sources = ", ".join(sorted({f"{_SOURCE_TEXT.get(s, s)} ({d.split(':')[0]})" for d, s in cum.sources.items()}))
    evidence = [_contribution_evidence(c) for c in (*cum.counted, *cum.doubtful)] + left_out
    amount = f"{total:g} mg prednisone-equivalent"
    if total >= threshold:
        until = below_threshold_from(cum.counted, threshold, timedelta(days=days))
        running = "; the date assumes the ongoing order stops now" if any(
            c.item.fact.ongoing for c in cum.counted) else ""
        return met(f"Systemic corticosteroids of {amount} in {window_text} (>= {threshold:g} mg; from "
                   f"{sources}; {_provisional(facts)}{running}).", *evidence, until=until)
    if cum.doubtful:
        extra = cum.possible_extra
        if extra is None or total + extra >= threshold:
            why = "; ".join(sorted({c.why_doubtful or "" for c in cum.doubtful}))
            return unknown(f"{sentence_start(amount)} counted in {window_text}, below {threshold:g} mg, but "
                           f"{_plural(len(cum.doubtful), 'corticosteroid record')} could not be counted ({why}): "
                           f"check the doses ({_provisional(facts)}).", *evidence)
    gap = facts.gap(MEDICATION_KINDS, "systemic-corticosteroids")
    if gap:
        return unknown(f"{sentence_start(amount)} counted in {window_text}, but {gap} ({_provisional(facts)}).",
                       *evidence)
    if not steroids:
        verdict = none_recorded(facts, MEDICATION_KINDS, ("systemic-corticosteroids",),
                                f"systemic corticosteroid in {window_text}")
        return replace(verdict, reason=verdict.reason.rstrip(".") + f" ({_provisional(facts)}).")
    if not evidence:
        latest = steroids[0]
        evidence = [evidence_of(latest, note="before the window")]
    source_text = f" (from {sources})" if sources else ""
    return not_met(f"Systemic corticosteroids of {amount} in {window_text}{source_text}, below {threshold:g} mg "
                   f"({_provisional(facts)}).", *evidence)


# --- E2b ---------------------------------------------------------------------------------------------------

@criterion("E2b")
def comorbidity_needing_immunosuppression(facts: Facts) -> Verdict:
    """"Based on the investigator's assessment, there is a comorbidity that requires the use of systemic
    corticosteroids (>= 70 mg total dose of prednisone or equivalent) or other immunosuppressive medications
    within 12 weeks after the study treatment."

    Investigator judgement about the future: always UNKNOWN. The reason lists the flags the record holds, with
    evidence: active (or activity not recorded) named autoimmune disease (``autoimmune-named``), active GvHD
    (``gvhd``), steroid-dependence diagnoses (``steroid-dependence``), and immunosuppressants
    (``immunosuppressants``) that are ongoing or were last given within ``windows.immunosuppressant_active_days``.
    """
    flags: list[str] = []
    evidence: list[Evidence] = []
    for vs, label in (("autoimmune-named", "active autoimmune disease"), ("gvhd", "active GvHD"),
                      ("steroid-dependence", "steroid-dependence diagnosis")):
        found = [c for c in facts.conditions(vs) if c.active is not False]
        if found:
            flags.append(f"{label} ({len(found)})")
            evidence += [evidence_of(c, note=label if c.active else f"{label}? clinical status not recorded")
                         for c in found]
    recent_days = facts.rules.windows["immunosuppressant_active_days"]
    recent_start = facts.days_ago(recent_days)
    current = []
    for m in facts.medications("immunosuppressants"):
        last = last_dose_range(m, facts.at)
        if last is not None and last.start > facts.at:
            continue  # planned
        if m.ongoing or last is None or in_window(last, recent_start, facts.at) is not Result.NOT_MET:
            current.append(m)
    if current:
        flags.append(f"current immunosuppressant ({len(current)})")
        evidence += [evidence_of(m, note="ongoing" if m.ongoing else f"given within {recent_days} days or undated")
                     for m in current]
    what = ("whether a comorbidity will need systemic corticosteroids (>= 70 mg prednisone-equivalent) or other "
            "immunosuppressants within 12 weeks after treatment")
    if flags:
        return unknown(f"Investigator to assess {what}; flags in the record: {', '.join(flags)}.", *evidence)
    return unknown(f"Investigator to assess {what}; no flag (active autoimmune disease, active GvHD, steroid "
                   f"dependence, current immunosuppressant) in the record.")


# --- E2c ---------------------------------------------------------------------------------------------------

def _drug_name(concept: Any, fact: MedicationFact) -> str:
    """The drug a record is about: its ingredients when a class entry (an ATC group such as L01) matched it."""
    if concept.match == "prefix" and fact.ingredients:
        return " / ".join(fact.ingredients)
    return concept.display


def _named(concept: Any, fact: MedicationFact) -> Any:
    """The value-set entry, displayed as the record's drug (see ``_drug_name``)."""
    name = _drug_name(concept, fact)
    return concept if name == concept.display else replace(concept, display=name)


def _half_life(concept: Any, fact: MedicationFact) -> float | None:
    """The value-set entry's half-life, else the ingredient's (fhir_mappings/medications, with its source);
    a product of several ingredients takes the longest, so its window is never too short."""
    if concept.half_life_hours is not None:
        return concept.half_life_hours
    if fact.drug is None:
        return None
    known = [i.ingredient.half_life_hours for i in fact.drug.ingredients]
    if not known or any(h is None for h in known):
        return None
    return max(h for h in known if h is not None)


def _washout(facts: Facts, half_life_hours: float | None) -> tuple[timedelta, str]:
    w = facts.rules.windows
    return washout_window(half_life_hours, max_days=w["washout_max_days"], half_lives=w["washout_half_lives"],
                          rule=w["washout_rule"])


@criterion("E2c")
def anti_tumour_therapy_within_washout(facts: Facts) -> Verdict:
    """"Received systemic anti-tumor therapy within 14 days before apheresis or within five half-lives of the
    drug, whichever was shorter, including but not limited to cytotoxic therapy, targeted therapy, or an
    investigational drug treatment."

    Per drug (``anti-tumor-drugs``), W = min(14 days, 5 x ``half_life_hours``), read literally: "whichever was
    shorter" (``windows.washout_rule: shorter``; "longer" gives max(), the more common protocol wording and a
    sponsor question; ``washout_max_days``, ``washout_half_lives``). Unknown half-life: 14 days, and the reason
    says "half-life unknown: 14 days used". MET if the last dose falls in ``(at - W, at]`` (``until`` = the
    first date after last dose + W), or if an active order / statement has no end date (assumed still taken).
    An open record that is completed or stopped with no end date, and started before the last administration of
    the same drug, is taken as covered by the administrations (they record what was given); otherwise its last
    dose may be any day up to now. An active order or statement with no end date is not taken as ongoing
    forever: it is read as taken through its expected course (``facts.courses``: expected supply duration x
    fills, else ``windows.open_order_course_days``), so ``until`` is a fixed date; a course that ended before
    the washout window goes to review (the order is still active: confirm no dose since). Intrathecal
    chemotherapy (``intrathecal-chemotherapy``) within 14 days, a
    review-flagged drug (ATRA, arsenic), a date too imprecise to place, or a medication recorded only as text
    within 14 days is UNKNOWN. Investigational drugs (ResearchSubject) are not in the record model.
    """
    max_window = timedelta(days=facts.rules.windows["washout_max_days"])
    hits: list[tuple[Any, Evidence, str]] = []  # (until, evidence, reason part)
    doubtful: list[Evidence] = []
    doubts: list[str] = []  # what kind of doubt, for the reason
    before: list[Evidence] = []
    meds = facts.medications("anti-tumor-drugs")
    last_admin: dict[str, datetime] = {}
    for m in meds:
        if m.source == "MedicationAdministration" and m.period is not None:
            drug = _drug_name(facts.concept(m, "anti-tumor-drugs"), m)
            last_admin[drug] = max(last_admin.get(drug, m.period.start), m.period.start)
    for m in meds:
        concept = _named(facts.concept(m, "anti-tumor-drugs"), m)
        window, how = _washout(facts, _half_life(concept, m))
        start = facts.at - window
        last = last_dose_range(m, facts.at)
        if last is not None and last.start > facts.at:
            continue  # planned, not received
        if m.ongoing:
            if concept.review:
                doubtful.append(evidence_of(m, note=f"ongoing; {concept.review}"))
                doubts.append(f"{concept.display} (review: does it count?)")
                continue
            course = None if m.source == "MedicationAdministration" else expected_course(
                m, resource_of(facts.record, m.ref), facts.rules.windows["open_order_course_days"])
            if course is None:  # an infusion in progress, or an undated record: given now
                until = first_date_after(facts.at, window)
                hits.append((until, evidence_of(m, note=f"no end date: assumed still taken; window {how}"),
                             f"{concept.display} is ongoing ({m.ref} has no end date: assumed still taken; "
                             f"washout {how})"))
                continue
            # Not "ongoing" forever: taken through its expected course, whose end is a fixed date
            end_day = course.end.date().isoformat()
            if course.end > start:
                until = first_date_after(course.end, window)
                state = "runs" if course.end >= facts.at else "ran"
                hits.append((until, evidence_of(m, note=f"no end date: assumed taken through its expected course "
                                                        f"to {end_day} ({course.how}); window {how}"),
                             f"{concept.display} is active with no end date ({m.ref}): its expected course {state} "
                             f"to {end_day} ({course.how}; washout {how})"))
            else:
                doubtful.append(evidence_of(m, note=f"active with no end date; its expected course ended {end_day} "
                                                    f"({course.how}): confirm no dose since"))
                doubts.append(f"{concept.display} (an active order past its expected course, which ended {end_day})")
            continue
        if last is None:
            doubtful.append(evidence_of(m, note="undated: confirm the date of the last dose"))
            doubts.append(f"undated {concept.display}")
            continue
        if (m.source != "MedicationAdministration" and is_open(m.period)
                and concept.display in last_admin and m.period.start <= last_admin[concept.display]):
            continue  # covered by the administrations of the same drug
        inside = in_window(last, start, facts.at)
        if inside is Result.MET:
            if concept.review:
                doubtful.append(evidence_of(m, note=f"within {how}; {concept.review}"))
                doubts.append(f"{concept.display} (review: does it count?)")
                continue
            until = first_date_after(last.end, window)
            hits.append((until, evidence_of(m, note=f"last dose {last.display()}; window {how}"),
                         f"{concept.display} last given {last.display()} ({m.ref}), within its washout of {how}"))
        elif inside is Result.UNKNOWN:
            note = "end date not recorded" if is_open(m.period) else "date too imprecise for the window"
            doubtful.append(evidence_of(m, note=f"{note}; window {how}"))
            doubts.append(f"{concept.display} ({note})")
        else:
            before.append(evidence_of(m, note=f"last dose {last.display()}; window {how}"))
    for p in facts.procedures("intrathecal-chemotherapy"):
        when = _last_performed(facts)(p)
        if when is not None and when.start > facts.at:
            continue
        if in_window(when, facts.at - max_window, facts.at) is not Result.NOT_MET:
            doubtful.append(evidence_of(p, note="intrathecal chemotherapy: which drug, and its intrathecal "
                                               "half-life (cytarabine 100-236 h), decide the window"))
            doubts.append("intrathecal chemotherapy")
    for m in facts.all_of_kind("Medication"):
        if m.codings or m.ingredients or not m.display:
            continue
        last = last_dose_range(m, facts.at)
        if m.ongoing or last is None or (last.start <= facts.at and
                                         in_window(last, facts.at - max_window, facts.at) is not Result.NOT_MET):
            doubtful.append(evidence_of(m, note="recorded as text only: is it anti-tumour therapy?"))
            doubts.append(f"a regimen recorded as text only ({m.display!r})")
    if hits:
        hits.sort(key=lambda h: h[0], reverse=True)
        return met(f"{sentence_start(hits[0][2])}; {_provisional(facts)}.", *(h[1] for h in hits), until=hits[0][0])
    if doubtful:
        found = "; ".join(dict.fromkeys(doubts))
        return unknown(f"Anti-tumour therapy may fall within its washout before {_as_of(facts)}: {found}; "
                       f"confirm the drug and the date of the last dose.", *doubtful)
    gap = facts.gap(MEDICATION_KINDS, "anti-tumor-drugs")
    if gap:
        return unknown(f"Cannot rule out recent anti-tumour therapy: {gap}.", *before)
    if before:
        return not_met(f"No anti-tumour therapy within its washout before {_as_of(facts)}; every last dose is "
                       f"older ({_provisional(facts)}).", *before)
    return none_recorded(facts, MEDICATION_KINDS, ("anti-tumor-drugs",), "systemic anti-tumour therapy")


# --- E2d, E2e ----------------------------------------------------------------------------------------------

@criterion("E2d")
def radiotherapy_within_4_weeks(facts: Facts) -> Verdict:
    """"Received radiotherapy 4 weeks before apheresis." (read as: within 4 weeks before apheresis)

    Radiotherapy (``radiotherapy``) procedures, and Z51.0 encounter diagnoses dated by their onset, whose last
    fraction (``performedPeriod`` end, not the course start) is in ``(at - 28 days, at]``
    (``windows.radiotherapy_days``) are MET. An undated history code (Z92.3, ``radiotherapy-history-undated``)
    proves radiotherapy at some time but not when: it cannot make the result MET, and it cannot rule out the
    window either, so when it is the only radiotherapy evidence the result is UNKNOWN. It is set aside when its
    recorded date (an upper bound of the treatment date) is before the window, or when dated radiotherapy
    records exist to account for it.
    """
    days = facts.rules.windows["radiotherapy_days"]
    window_text = f"the {days} days before {_as_of(facts)}"
    events = [*facts.procedures("radiotherapy"), *facts.conditions("radiotherapy")]
    verdict = event_in_window(facts, events, what="radiotherapy", kinds=PROCEDURE + CONDITION,
                              value_sets=("radiotherapy",), days=days, when=_last_performed(facts),
                              window_text=window_text)
    if verdict.result is not Result.NOT_MET:
        return verdict
    history = facts.conditions("radiotherapy-history-undated")
    if not history:
        return verdict
    old, open_ = _undated_history(facts, history, window_start(facts, days=days))
    if open_ and not events:
        return unknown(f"Personal history of irradiation recorded without a date, and no dated radiotherapy: "
                       f"confirm the date of the last fraction ({_provisional(facts)}).", *open_)
    if events:
        return replace(verdict, evidence=verdict.evidence + tuple(old + open_))
    return not_met(f"Radiotherapy history recorded, but it predates {window_text}.", *old)


@criterion("E2e")
def dli_within_6_weeks(facts: Facts) -> Verdict:
    """"Received donor lymphocyte infusion within 6 weeks before apheresis."

    A DLI procedure (``dli``) whose (last) date is in ``(at - 42 days, at]`` (``windows.dli_days``) is MET, with
    ``until``. DLI mentioned only in notes is not in the record model.
    """
    days = facts.rules.windows["dli_days"]
    return event_in_window(facts, facts.procedures("dli"), what="donor lymphocyte infusion", kinds=PROCEDURE,
                           value_sets=("dli",), days=days, when=_last_performed(facts),
                           window_text=f"the {days} days before {_as_of(facts)}")


# --- E4 ----------------------------------------------------------------------------------------------------

@criterion("E4")
def prior_gene_modified_cell_therapy(facts: Facts) -> Verdict:
    """"Have previously received CAR-T therapy, CAR-NK therapy or any other genetically modified cell therapy."

    Any evidence, ever (``car-t-history``): a personal-history diagnosis, a CAR-T / gene-modified cell
    procedure, or a CAR-T product given. Review entries (other / unspecified cellular therapy, harvest or
    preparation codes that may be this study's own) are UNKNOWN, as are an unconfirmed diagnosis and a product
    ordered or intended but not documented as given. CAR-NK has no standard code; trial participation recorded
    only as text is not in the record model.
    """
    vs = "car-t-history"
    sure: list[Evidence] = []
    doubtful: list[Evidence] = []
    listed = facts.medications(vs)
    # Gene-modified cell products the value set has no code for (CRISPR-edited or lentiviral CD34+ products,
    # TCR-T cells) are recognised by their ingredient's class (fhir_mappings/medications).
    by_class = [m for m in facts.all_of_kind("Medication") if m not in listed and m.drug is not None
                and "gene-modified-cell-therapy" in m.drug.classes]
    for fact in (*facts.conditions(vs), *facts.procedures(vs), *listed, *by_class):
        concept = facts.concept(fact, vs) if fact not in by_class else None
        if concept is None:
            concept = _class_concept(fact)
        date = getattr(fact, "date", None)
        if isinstance(fact, ProcedureFact) and date is not None and date.start > facts.at:
            continue  # planned
        if concept.review:
            doubtful.append(evidence_of(fact, note=concept.review))
        elif isinstance(fact, ConditionFact) and not fact.confirmed:
            doubtful.append(evidence_of(fact, note=f"verification status {fact.verification}"))
        elif isinstance(fact, MedicationFact) and (
                fact.flagged or (fact.source == "MedicationRequest" and fact.status != "completed")):
            doubtful.append(evidence_of(fact, note=f"{fact.source} {fact.status}: not documented as given"))
        else:
            sure.append(evidence_of(fact))
    if sure:
        first = sure[0]
        return met(f"Prior CAR-T or gene-modified cell therapy recorded ({first.display or first.code}, "
                   f"{first.reference}).", *sure)
    if doubtful:
        return unknown("Cellular therapy recorded that may be CAR-T or gene-modified (or was not documented as "
                       "given): confirm with the study team.", *doubtful)
    return none_recorded(facts, CONDITION + PROCEDURE + MEDICATION_KINDS, (vs,),
                         "CAR-T, CAR-NK or gene-modified cell therapy")


def _class_concept(fact: MedicationFact) -> Any:
    """A stand-in value-set entry for a medication recognised by drug class only."""
    return Concept(system="", code="", display=" / ".join(fact.ingredients), status="verified", value_set="")


# --- E5 ----------------------------------------------------------------------------------------------------

@criterion("E5")
def allo_hsct_within_6_months(facts: Facts) -> Verdict:
    """"Received allogeneic hematopoietic stem cell transplantation within 6 months before screening phase."

    An allogeneic HSCT procedure (``allo-hsct``, entries without a review flag) dated in
    ``(at - 6 calendar months, at]`` (``windows.allo_hsct_months``) is MET with ``until``. A transplant whose
    code does not say allogeneic (review entries, e.g. SNOMED 234336002) in the window is UNKNOWN (check the
    donor type). A transplant-status diagnosis without a procedure date (``hsct-status-undated``: Z94.84,
    Z94.81, T86.0x) is UNKNOWN unless a dated transplant procedure accounts for it or its recorded date proves
    the transplant older than the window. Autologous transplants only (``autologous-hsct``) are NOT_MET.
    """
    months = facts.rules.windows["allo_hsct_months"]
    window_text = f"the {months} months before {_as_of(facts)}"
    when = _last_performed(facts)
    allo = facts.procedures("allo-hsct")
    sure = [p for p in allo if facts.concept(p, "allo-hsct").review is None]
    review = [p for p in allo if facts.concept(p, "allo-hsct").review is not None]
    verdict = event_in_window(facts, sure, what="allogeneic stem-cell transplant", kinds=PROCEDURE,
                              value_sets=("allo-hsct",),
                              months=months, when=when, window_text=window_text)
    if verdict.result is Result.MET:
        return verdict
    unspecified = event_in_window(facts, review, what="stem-cell transplant of unrecorded donor type",
                                  kinds=PROCEDURE, value_sets=("allo-hsct",), months=months, when=when,
                                  window_text=window_text)
    if unspecified.result is not Result.NOT_MET:
        return unknown(unspecified.reason + " Check whether it was allogeneic.", *unspecified.evidence)
    if verdict.result is Result.UNKNOWN:
        return verdict
    autologous = facts.procedures("autologous-hsct")
    dated = [p for p in (*allo, *autologous) if when(p) is not None]
    status = facts.conditions("hsct-status-undated")
    old_status, open_status = _undated_history(facts, status, window_start(facts, months=months))
    if open_status and not dated:
        return unknown(f"Stem-cell transplant status recorded without a transplant date: confirm whether an "
                       f"allogeneic HSCT took place within {window_text}.", *open_status)
    status_ev = tuple(old_status + open_status)
    if sure or review:
        # Every allogeneic (or unspecified) transplant is older than the window.
        if verdict.evidence or unspecified.evidence:
            return not_met(f"No allogeneic stem-cell transplant within {window_text}; the latest was on "
                           f"{(verdict.evidence or unspecified.evidence)[0].date}.",
                           *verdict.evidence, *unspecified.evidence, *status_ev)
        return replace(verdict, evidence=verdict.evidence + status_ev)
    if autologous:
        return not_met("Only autologous stem-cell transplants recorded (not an exclusion).",
                       *(evidence_of(p) for p in autologous), *status_ev)
    if status:
        return not_met(f"Stem-cell transplant status recorded, but the transplant predates {window_text}.",
                       *status_ev)
    return verdict


# --- E15 ---------------------------------------------------------------------------------------------------

@criterion("E15")
def live_vaccine_within_4_weeks(facts: Facts) -> Verdict:
    """"Received live attenuated vaccine within 4 weeks prior to screening."

    Completed Immunizations whose vaccine code is a live attenuated vaccine (CVX / ATC table ``live-vaccines``)
    dated in ``(screening - 28 days, screening]``. A vaccine of ambiguous type ("zoster, unspecified": live or
    recombinant) in the window makes the result UNKNOWN rather than "none".
    """
    days = facts.rules.windows["live_vaccine_days"]
    window_text = f"the {days} days before screening"
    verdict = event_in_window(
        facts, facts.immunizations("live-vaccines"), what="live attenuated vaccine",
        kinds=IMMUNIZATION, value_sets=("live-vaccines",), days=days, window_text=window_text,
    )
    if verdict.result is not Result.NOT_MET:
        return verdict
    ambiguous = event_in_window(
        facts, facts.immunizations("vaccines-ambiguous"), what="vaccine of unspecified type",
        kinds=IMMUNIZATION, value_sets=("vaccines-ambiguous",), days=days, window_text=window_text,
    )
    if ambiguous.result is Result.MET:
        return unknown(ambiguous.reason + " Confirm whether it was a live vaccine.", *ambiguous.evidence)
    return verdict


# --- E16 ---------------------------------------------------------------------------------------------------

def _is_biopsy(facts: Facts, p: ProcedureFact) -> bool:
    """A biopsy (``biopsy``), or an ICD-10-PCS medical-surgical code whose 7th-character qualifier is X
    (Diagnostic), which a prefix table cannot express."""
    if facts.concept(p, "biopsy") is not None:
        return True
    for system, code in p.codings:
        if facts.tables.normalise_system(system) == _PCS and len(code) == 7 and code[0] == "0" and code[6] == "X":
            return True
    return False


def _surgery_in_window(facts: Facts, procedures: Iterable[ProcedureFact], what: str, days: int,
                       window_text: str) -> Verdict:
    return event_in_window(facts, list(procedures), what=what, kinds=PROCEDURE, value_sets=("surgical-procedure",),
                           days=days, when=_last_performed(facts), window_text=window_text)


@criterion("E16")
def major_surgery_within_4_weeks(facts: Facts) -> Verdict:
    """"Receipt of major surgery within 4 weeks prior to apheresis or a plan to receive surgeries during the
    study (except for diagnostic biopsy)."

    "Major" has no standard code, so a surgical procedure (``surgical-procedure``, on code or category) in
    ``(at - 28 days, at]`` (``windows.surgery_days``) that is not a biopsy is UNKNOWN: the clinician decides
    whether it was major. If a site adds a ``major-surgery`` table of clearly major procedures, those are MET
    (none is shipped: the reference verifies none). Biopsies only (``biopsy``, or an ICD-10-PCS diagnostic
    qualifier X) are NOT_MET. Planned surgery (ServiceRequest, Appointment) is not in the record model, so it is
    not checked, and the NOT_MET reason says so.
    """
    days = facts.rules.windows["surgery_days"]
    window_text = f"the {days} days before {_as_of(facts)}"
    planned = "planned surgery is not in the retrieved record and must be confirmed by the study team"
    if "major-surgery" in facts.tables:
        major = [p for p in facts.procedures("major-surgery") if not _is_biopsy(facts, p)]
        verdict = _surgery_in_window(facts, major, "major surgery", days, window_text)
        if verdict.result is Result.MET:
            return verdict
    surgical = facts.procedures("surgical-procedure")
    non_biopsy = [p for p in surgical if not _is_biopsy(facts, p)]
    verdict = _surgery_in_window(facts, non_biopsy, "surgical procedure", days, window_text)
    if verdict.result is Result.MET:
        return unknown(f"{verdict.reason} Review whether it was major surgery.", *verdict.evidence)
    if verdict.result is Result.UNKNOWN:
        return verdict
    biopsies = [p for p in surgical if _is_biopsy(facts, p)]
    biopsy_verdict = _surgery_in_window(facts, biopsies, "biopsy", days, window_text)
    if biopsy_verdict.result is Result.MET and not non_biopsy:
        return not_met(f"Only diagnostic biopsy within {window_text} (excepted); {planned}.",
                       *biopsy_verdict.evidence)
    if non_biopsy or biopsy_verdict.result is Result.MET:
        ev = verdict.evidence + (biopsy_verdict.evidence if biopsy_verdict.result is Result.MET else ())
        return not_met(f"{verdict.reason.rstrip('.')}; {planned}.", *ev)
    return replace(verdict, reason=f"{verdict.reason.rstrip('.')}; {planned}.")
