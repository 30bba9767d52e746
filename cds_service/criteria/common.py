"""Patterns several criteria share, so each criterion reads like its protocol sentence.

* ``attestation``: a criterion only a clinician can answer (UNKNOWN with what to confirm).
* ``none_recorded``: the record was retrieved and holds no match: NOT_MET "none recorded", unless a kind of
  data could not be retrieved or a resource could not be read (then UNKNOWN).
* ``event_in_window``: an exclusion decided by dated events "within N days/months before <anchor>", with the
  date on which a MET result will pass (``until``), partial dates evaluated at both ends, and undated events
  left UNKNOWN.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from dateutil.relativedelta import relativedelta

from cds_service.criteria.registry import Verdict, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result
from cds_service.facts.dates import in_window
from cds_service.facts.index import Facts, evidence_of


def sentence_start(text: str) -> str:
    """Upper-case the first letter only ("CABG" stays "CABG", unlike str.capitalize)."""
    return text[:1].upper() + text[1:]


__all__ = ["sentence_start", "attestation", "none_recorded", "event_in_window", "window_start", "CONDITION",
           "PROCEDURE", "MEDICATION_KINDS", "IMMUNIZATION", "ALLERGY", "OBSERVATION"]

CONDITION = ("Condition",)
PROCEDURE = ("Procedure",)
IMMUNIZATION = ("Immunization",)
ALLERGY = ("AllergyIntolerance",)
OBSERVATION = ("Observation",)
MEDICATION_KINDS = ("MedicationAdministration", "MedicationStatement", "MedicationRequest")


def attestation(what: str) -> Verdict:
    """A criterion no record can decide: UNKNOWN, saying what the clinician must confirm."""
    return unknown(f"Needs confirmation by the study team: {what}")


def none_recorded(facts: Facts, kinds: Sequence[str], value_sets: Iterable[str], what: str,
                  *evidence: Evidence) -> Verdict:
    """NOT_MET "none recorded" when every kind was retrieved and readable; UNKNOWN otherwise."""
    for vs in value_sets:
        gap = facts.gap(kinds, vs)
        if gap:
            return unknown(f"Cannot rule out {what}: {gap}.", *evidence)
    return not_met(f"None recorded: no {what} in the retrieved record.", *evidence)


def window_start(facts: Facts, *, days: int | None = None, months: int | None = None) -> datetime:
    if months is not None:
        return facts.at - relativedelta(months=months)
    return facts.days_ago(days or 0)


def event_in_window(
    facts: Facts,
    events: Sequence[Any],
    *,
    what: str,
    kinds: Sequence[str],
    value_sets: Iterable[str],
    days: int | None = None,
    months: int | None = None,
    when: Callable[[Any], Any] = lambda f: f.date,
    window_text: str,
) -> Verdict:
    """Exclusion "received/experienced <what> within <window> before <anchor>".

    MET (with ``until``) if an event is surely inside ``(anchor - window, anchor]``; UNKNOWN if one may be
    (partial date) or has no date; NOT_MET if all are before the window (with their evidence) or if none is
    recorded (reason "none recorded").
    """
    start = window_start(facts, days=days, months=months)
    doubtful: list[Evidence] = []
    before: list[Evidence] = []
    latest_inside = None
    inside_ev = None
    for fact in events:
        date = when(fact)
        verdict = in_window(date, start, facts.at)
        if verdict is Result.MET:
            # The latest event decides ``until``; ties are broken by reference so input order never matters.
            if latest_inside is None or (date.end, fact.ref) > (latest_inside, inside_ev.reference):
                latest_inside, inside_ev = date.end, evidence_of(fact)
        elif verdict is Result.UNKNOWN:
            if date is not None and date.start > facts.at:
                continue  # planned / future-dated: not a past event
            doubtful.append(evidence_of(fact, note="date missing or too imprecise for the window"))
        else:
            if date is not None and date.start > facts.at:
                continue
            before.append(evidence_of(fact))
    if latest_inside is not None:
        delta = relativedelta(months=months) if months is not None else relativedelta(days=days or 0)
        until = (latest_inside + delta).date() + relativedelta(days=1)
        # A date known only as an upper bound reads "on or before <date>": no second "on".
        when_text = inside_ev.date if str(inside_ev.date).startswith("on ") else f"on {inside_ev.date}"
        return met(f"{sentence_start(what)} {when_text}, within {window_text}.", inside_ev, until=until)
    if doubtful:
        return unknown(f"{sentence_start(what)} recorded, but its date cannot place it inside or outside "
                       f"{window_text}.", *doubtful)
    if before:
        gap = None
        for vs in value_sets:
            gap = gap or facts.gap(kinds, vs)
        if gap:
            return unknown(f"Only older {what} found, and {gap}.", *before)
        return not_met(f"No {what} within {window_text}; the latest was on {before[0].date}.", *before)
    return none_recorded(facts, kinds, value_sets, f"{what} within {window_text}")
