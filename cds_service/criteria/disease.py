"""Exclusion criteria about diseases: E3, E6, E7, E8, E11, E13, E14.

Each function's docstring quotes the protocol sentence it implements. These exclusions are decided by
diagnoses, medications and procedures, so "nothing found" is NOT_MET "None recorded" only when the kinds of
data they read were retrieved and readable (``facts.gap``); otherwise UNKNOWN. Shared conventions:

* A Condition flagged unconfirmed / provisional / differential never makes an exclusion MET: it is UNKNOWN
  (review). Refuted and entered-in-error Conditions never reach the criteria (``facts.clinical``).
* A matched code whose value-set entry carries a ``review`` note (a code that is suggestive, not specific) is
  UNKNOWN with that note, never MET on its own.
* "Active" is clinicalStatus active / recurrence / relapse; a Condition without clinicalStatus has unknown
  activity (reference 1.3).

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, timedelta

from dateutil.relativedelta import relativedelta

from cds_service.criteria.common import CONDITION, MEDICATION_KINDS, OBSERVATION, PROCEDURE
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result
from cds_service.facts.clinical import ConditionFact, ObservationFact
from cds_service.facts.index import Facts, evidence_of
from cds_service.facts.medications import MedicationFact

__all__: list[str] = []

# Routes that make a drug non-systemic (inhaled, nasal...) or systemic (oral, IV, IM, SC).
_NON_SYSTEMIC_ROUTES = "non-systemic-routes"
_SYSTEMIC_ROUTES = "systemic-routes"

# Value sets whose codes are this patient's own AML: never "another malignancy" (E8). CNS-involvement codes are
# included because coders record AML in the CNS as secondary neoplasm of brain / meninges (C79.3x); they are
# judged by E11. A lung cancer with brain metastases still has its primary coded, which E8 sees.
_OWN_DISEASE_SETS = ("aml", "apl", "cns-involvement")
# Myeloid precursors (MDS, CMML): usually the antecedent of this AML, so reviewed, not counted as "other".
_PRECURSOR_SET = "myeloid-precursor"


# --- shared helpers -------------------------------------------------------------------------------------------


def _none_recorded(facts: Facts, sources: Iterable[tuple[Sequence[str], str]], what: str,
                   *evidence: Evidence, found: str | None = None) -> Verdict:
    """NOT_MET when every (kinds, value set) source was retrieved and readable; UNKNOWN naming the gap otherwise.

    ``found`` replaces the "None recorded" sentence when the record holds matching items that do not count
    (a resolved infection, a negative CSF result), whose evidence is then given.
    """
    for kinds, value_set in sources:
        gap = facts.gap(kinds, value_set)
        if gap:
            return unknown(f"Cannot rule out {what}: {gap}.", *evidence)
    return not_met(found or f"None recorded: no {what} in the retrieved record.", *evidence)


def _status_text(fact: ConditionFact) -> str:
    return f"clinicalStatus {fact.clinical_status}" if fact.clinical_status else "no clinicalStatus"


def _doubt(facts: Facts, fact: ConditionFact, value_set: str) -> str | None:
    """Why a matching Condition cannot decide on its own (unconfirmed, or a code the tables mark for review)."""
    if not fact.confirmed:
        return f"verificationStatus {fact.verification}: confirm the diagnosis"
    concept = facts.concept(fact, value_set)
    if concept is not None and concept.review:
        return concept.review
    return None


def _label(fact: ConditionFact | ObservationFact | MedicationFact) -> str:
    return fact.display or (fact.codings[0][1] if fact.codings else fact.ref)


def _name(e: Evidence) -> str:
    """What a clinician calls the item: its display, else its code without the system."""
    if e.display:
        return e.display
    if e.code:
        return e.code.rsplit("|", 1)[-1]
    return e.reference


def _route_doubt(facts: Facts, fact: MedicationFact) -> str | None | bool:
    """False: not systemic (inhaled, nasal...); None: systemic (or no route given); str: why the route is unclear.

    A route in neither table (intrathecal, topical, intralesional...) is not assumed systemic: intrathecal
    methotrexate is CNS prophylaxis, not immunosuppression.
    """
    if not fact.route:
        # No route recorded: a non-systemic dose form (ointment, eye drops, inhaler) still says it.
        return False if fact.form_route == "non-systemic" else None
    if _NON_SYSTEMIC_ROUTES in facts.tables and facts.codes_in(fact.route, _NON_SYSTEMIC_ROUTES) is not None:
        return False
    if _SYSTEMIC_ROUTES not in facts.tables or facts.codes_in(fact.route, _SYSTEMIC_ROUTES) is not None:
        return None
    return f"route {fact.route[0][1]} is not a known systemic route: confirm systemic use"


def _recent_medications(facts: Facts, value_set: str, days: int) -> tuple[list[Evidence], list[Evidence]]:
    """Systemic medications in use now: (current, doubtful) evidence.

    Current: an administration within the last ``days`` days (or in progress), or an order / statement that is
    ongoing or whose period ended within the last ``days`` days. Doubtful: an intended-use statement, a record
    starting after ``at`` (planned), a route not known to be systemic, or an undated record (other than an
    active order). Non-systemic routes (inhaled, nasal) are left out.
    """
    since = facts.days_ago(days)
    current: list[Evidence] = []
    doubtful: list[Evidence] = []
    for fact in facts.medications(value_set):
        route = _route_doubt(facts, fact)
        if route is False:
            continue
        kind = {"MedicationAdministration": "administration", "MedicationStatement": "statement",
                "MedicationRequest": "order"}.get(fact.source, fact.source)
        if fact.period is None:
            if fact.ongoing and not fact.flagged and route is None:
                current.append(evidence_of(fact, note=f"{fact.status} {kind}, no dates"))
            else:
                doubtful.append(evidence_of(fact, note=f"{fact.status} {kind} without dates: confirm when and how "
                                                       "it was given"))
            continue
        if fact.period.start > facts.at:
            doubtful.append(evidence_of(fact, note=f"planned {kind} starting {fact.period.display()}"))
            continue
        recent = fact.ongoing or fact.period.end > since
        if not recent:
            continue
        if fact.flagged:
            doubtful.append(evidence_of(fact, note="statement of intended use: confirm"))
        elif isinstance(route, str):
            doubtful.append(evidence_of(fact, note=route))
        elif fact.ongoing:
            current.append(evidence_of(fact, note=f"{fact.status} {kind}, ongoing"))
        else:
            current.append(evidence_of(fact, note=f"{fact.status} {kind}, within the last {days} days"))
    return current, doubtful


def _undated(facts: Facts, value_set: str) -> list[ObservationFact]:
    """Final results without an effective date: ``facts.results`` sets them aside, but "any date" includes them."""
    return [o for o in facts.observations(value_set) if o.effective is None and not o.preliminary
            and (o.absent is None or o.quantity is not None or o.value_codings)]


def _when(obs: ObservationFact) -> str:
    return obs.effective.display() if obs.effective is not None else "an unrecorded date"


def _ev_date(e: Evidence) -> str:
    return str(e.date) if e.date else "an unrecorded date"


def _why(e: Evidence) -> str:
    """An evidence note inside a sentence (without its own full stop)."""
    return (e.note or "").rstrip(".")


def _first_labels(evidence: Sequence[Evidence], limit: int = 2) -> str:
    names = [_name(e) for e in evidence[:limit]]
    more = f" and {len(evidence) - limit} more" if len(evidence) > limit else ""
    return ", ".join(names) + more


# --- E3 -------------------------------------------------------------------------------------------------------


@criterion("E3")
def acute_promyelocytic_leukemia(facts: Facts) -> Verdict:
    """"Acute promyelocytic leukemia was diagnosed."

    MET on any non-refuted APL Condition (any clinical status: history counts) or any positive PML::RARA
    result at any date (molecular remission does not undo the diagnosis). An unconfirmed APL diagnosis, a
    variant or unreadable fusion result, or a preliminary positive is UNKNOWN.
    """
    doubtful: list[Evidence] = []
    for c in facts.conditions("apl"):
        why = _doubt(facts, c, "apl")
        if why:
            doubtful.append(evidence_of(c, note=why))
            continue
        return met(f"Acute promyelocytic leukemia is recorded ({_label(c)}, {_status_text(c)}).",
                   evidence_of(c, note=_status_text(c)))
    sel = facts.results("pml-rara", "markers")
    negatives: list[Evidence] = []
    for obs in (*sel.current, *_undated(facts, "pml-rara")):
        reading = facts.qualitative(obs)
        concept = facts.concept(obs, "pml-rara")
        if reading is Result.MET:
            if concept is not None and concept.review:
                doubtful.append(evidence_of(obs, value="positive", note=concept.review))
                continue
            return met(f"PML::RARA positive on {_when(obs)} ({_label(obs)}).",
                       evidence_of(obs, value="positive", note="PML::RARA fusion detected"))
        if reading is Result.UNKNOWN:
            doubtful.append(evidence_of(obs, note="result cannot be read as positive or negative"))
        else:
            negatives.append(evidence_of(obs, value="negative"))
    for obs in sel.preliminary:
        if facts.qualitative(obs) is not Result.NOT_MET:
            doubtful.append(evidence_of(obs, note="preliminary result: await the final report"))
    if doubtful:
        return unknown("Possible acute promyelocytic leukemia: review "
                       f"{_first_labels(doubtful)} ({_why(doubtful[0])}).", *doubtful, *negatives)
    therapy = _apl_therapy(facts)
    if therapy:
        return unknown("No APL diagnosis recorded, but tretinoin (ATRA) or arsenic trioxide was given: confirm "
                       "PML::RARA status.", *therapy, *negatives)
    found = None
    if negatives:
        found = f"No APL diagnosis recorded; PML::RARA negative on {_ev_date(negatives[0])}."
    return _none_recorded(facts, [(CONDITION, "apl"), (OBSERVATION, "pml-rara")],
                          "acute promyelocytic leukemia diagnosis or PML::RARA-positive result", *negatives,
                          found=found)


def _apl_therapy(facts: Facts) -> list[Evidence]:
    """Tretinoin / arsenic trioxide records (an APL clue), when the tables define them."""
    if "apl-therapy" not in facts.tables:
        return []
    return [evidence_of(m, note="APL-directed therapy") for m in facts.medications("apl-therapy")]


# --- E6 -------------------------------------------------------------------------------------------------------


@criterion("E6")
def active_gvhd_or_immunosuppression(facts: Facts) -> Verdict:
    """"Active graft-versus-host disease (GvHD) at the time of screening or active acute or chronic GvHD within
    4 weeks of enrollment or the need for immunosuppressive drugs."

    MET: GvHD with clinicalStatus active / recurrence / relapse; GvHD that abated on or after
    ``at - windows.gvhd_days``; or a current systemic immunosuppressant (active order or statement, or given
    within ``windows.immunosuppressant_active_days``) in a patient with any GvHD record (even one whose activity
    or coding needs review, e.g. WHO T86.0). An immunosuppressant
    without recorded GvHD is UNKNOWN (its indication may be GvHD, or may not), as is GvHD with unknown activity
    or without an abatement date. Abatement is compared in whole days; when only abated GvHD excludes, ``until``
    is the first day the 4 weeks have passed.
    """
    w = facts.rules.windows
    # Whole days: abated on the day 4 weeks before counts ("on or after T_enrol - 28 d").
    since = facts.days_ago(w["gvhd_days"]).date()
    active: list[Evidence] = []
    doubtful: list[Evidence] = []
    past: list[Evidence] = []
    confirmed_gvhd: list[Evidence] = []
    abated_ends: list[date] = []
    for c in facts.conditions("gvhd"):
        why = _doubt(facts, c, "gvhd")
        if why:
            doubtful.append(evidence_of(c, note=why))
            continue
        confirmed_gvhd.append(evidence_of(c, note=_status_text(c)))
        if c.active is True:
            active.append(evidence_of(c, note=_status_text(c)))
        elif c.active is None:
            doubtful.append(evidence_of(c, note="no clinicalStatus: is the GvHD active?"))
        elif c.abatement is None:
            doubtful.append(evidence_of(c, note=f"{_status_text(c)} without an abatement date: was it active "
                                                f"in the last {w['gvhd_days']} days?"))
        elif c.abatement.start.date() >= since:
            active.append(evidence_of(c, note=f"abated {c.abatement.display()}, within {w['gvhd_days']} days"))
            abated_ends.append(c.abatement.end.date())
        elif c.abatement.end.date() < since:
            past.append(evidence_of(c, note=f"abated {c.abatement.display()}"))
        else:
            doubtful.append(evidence_of(c, note=f"abated {c.abatement.display()}: too imprecise for the "
                                                f"{w['gvhd_days']}-day window"))
    drugs, drugs_doubtful = _recent_medications(facts, "immunosuppressants", w["immunosuppressant_active_days"])
    if active:
        until = None
        if len(abated_ends) == len(active) and not (drugs or drugs_doubtful):
            # Only GvHD that has abated: the exclusion passes gvhd_days after the last abatement.
            until = max(abated_ends) + timedelta(days=w["gvhd_days"] + 1)
        return met(f"Graft-versus-host disease active at screening or within {w['gvhd_days']} days "
                   f"({_why(active[0])}).", *active, *drugs, until=until)
    if drugs and (confirmed_gvhd or doubtful):
        # The protocol excludes "the need for immunosuppressive drugs" in a GvHD patient: a current systemic
        # immunosuppressant with any GvHD record (even one whose activity or coding is unclear, such as WHO
        # T86.0, which is how GvHD is coded in WHO ICD-10) shows that need, so it excludes (reference E6).
        return met(f"Needs immunosuppressive drugs: {_first_labels(drugs)} in a patient with a GvHD record.",
                   *drugs, *confirmed_gvhd, *doubtful)
    if doubtful:
        return unknown(f"Graft-versus-host disease recorded, activity unclear: review {_first_labels(doubtful)} "
                       f"({_why(doubtful[0])}).", *doubtful, *drugs, *drugs_doubtful)
    if drugs:
        return unknown(f"On systemic immunosuppressant {_first_labels(drugs)} with no GvHD recorded: review the "
                       "indication (an immunosuppressant needed for GvHD or another condition excludes).",
                       *drugs, *drugs_doubtful, *past)
    if drugs_doubtful:
        return unknown(f"Immunosuppressant use unclear: review {_first_labels(drugs_doubtful)} "
                       f"({_why(drugs_doubtful[0])}).", *drugs_doubtful, *past)
    found = None
    if past:
        found = (f"GvHD resolved before the {w['gvhd_days']}-day window ({_why(past[0])}) and no current "
                 "immunosuppressant recorded.")
    return _none_recorded(facts, [(CONDITION, "gvhd"), (MEDICATION_KINDS, "immunosuppressants")],
                          "active graft-versus-host disease or current immunosuppressant", *past, found=found)


# --- E7 -------------------------------------------------------------------------------------------------------


@criterion("E7")
def active_infection_on_systemic_treatment(facts: Facts) -> Verdict:
    """"An active infection that requires systemic treatment."

    MET: an active, confirmed infection Condition together with a systemic anti-infective in current use
    (ongoing order or statement, or given within ``windows.anti_infective_active_days``). An active infection
    without recorded treatment is UNKNOWN (does it need systemic treatment?). Resolved / inactive infections
    do not count. A systemic anti-infective without an active infection Condition is never MET: it is usually
    prophylaxis in AML (posaconazole, aciclovir, levofloxacin, co-trimoxazole), but an order rarely says so, so
    by default it goes to review (``windows.anti_infective_without_infection``: review | not-met). A record that
    itself states prophylaxis (its reason, dosage text or note; ``prophylaxis_markers`` in
    ``fhir_mappings/medications``) is prophylaxis, not treatment (``windows.anti_infective_stated_prophylaxis``:
    not-treatment | review): with no active infection the result is NOT_MET, with one it stays UNKNOWN.
    """
    days = facts.rules.windows["anti_infective_active_days"]
    active: list[Evidence] = []
    doubtful: list[Evidence] = []
    resolved: list[Evidence] = []
    for c in facts.conditions("infection"):
        why = _doubt(facts, c, "infection")
        if c.active is False:
            resolved.append(evidence_of(c, note=_status_text(c)))
        elif why:
            doubtful.append(evidence_of(c, note=why))
        elif c.active is None:
            doubtful.append(evidence_of(c, note="no clinicalStatus: is the infection active?"))
        else:
            active.append(evidence_of(c, note=_status_text(c)))
    drugs, drugs_doubtful = _recent_medications(facts, "anti-infectives", days)
    # An order, statement or administration that itself says prophylaxis (its reason, dosage text or note:
    # fhir_mappings/medications prophylaxis_markers) is not treatment of an infection, under the rule
    # windows.anti_infective_stated_prophylaxis = not-treatment (review: such records count like any other).
    stated: list[Evidence] = []
    if facts.rules.windows.get("anti_infective_stated_prophylaxis", "not-treatment") == "not-treatment":
        says = {m.ref: m.prophylaxis for m in facts.medications("anti-infectives") if m.prophylaxis}
        stated = [replace(e, note=f"{e.note}; stated as prophylaxis ({says[e.reference]!r})" if e.note else
                          f"stated as prophylaxis ({says[e.reference]!r})")
                  for e in (*drugs, *drugs_doubtful) if e.reference in says]
        drugs = [e for e in drugs if e.reference not in says]
        drugs_doubtful = [e for e in drugs_doubtful if e.reference not in says]
    if active and drugs:
        return met(f"Active infection ({_first_labels(active)}) under systemic anti-infective treatment "
                   f"({_first_labels(drugs)}).", *active, *drugs)
    if active:
        gap = facts.gap(MEDICATION_KINDS, "anti-infectives")
        tail = f"; {gap}" if gap else ""
        extra = f" ({_first_labels(drugs_doubtful)}: {_why(drugs_doubtful[0])})" if drugs_doubtful else \
            " (no current systemic anti-infective recorded)"
        if stated and not drugs_doubtful:
            extra = f" ({_first_labels(stated)} is stated as prophylaxis, not treatment)"
        return unknown(f"Active infection recorded ({_first_labels(active)}): does it require systemic "
                       f"treatment?{extra}{tail}.", *active, *drugs_doubtful, *stated)
    if doubtful:
        return unknown(f"Possible active infection: review {_first_labels(doubtful)} ({_why(doubtful[0])}).",
                       *doubtful, *drugs, *drugs_doubtful, *stated)
    if drugs or drugs_doubtful:
        shown = drugs or drugs_doubtful
        if facts.rules.windows["anti_infective_without_infection"] == "not-met" and not drugs_doubtful:
            return _none_recorded(
                facts, [(CONDITION, "infection")], "active infection", *shown, *resolved,
                found=f"No active infection recorded; {_first_labels(shown)} taken as prophylaxis "
                      "(windows.anti_infective_without_infection = not-met).")
        return unknown(f"Systemic anti-infective {_first_labels(shown)} in use without a recorded active "
                       "infection: confirm it is prophylaxis, not treatment of an infection.", *shown, *stated,
                       *resolved)
    if stated:
        return _none_recorded(
            facts, [(CONDITION, "infection")], "active infection", *stated, *resolved,
            found=f"No active infection recorded; {_first_labels(stated)} is stated as prophylaxis by the record "
                  "itself (windows.anti_infective_stated_prophylaxis = not-treatment).")
    found = None
    if resolved:
        found = f"No active infection recorded ({_first_labels(resolved)}: {_why(resolved[0])})."
    return _none_recorded(facts, [(CONDITION, "infection"), (MEDICATION_KINDS, "anti-infectives")],
                          "active infection or systemic anti-infective", *resolved, found=found)


# --- E8 -------------------------------------------------------------------------------------------------------


@criterion("E8")
def other_malignancy(facts: Facts) -> Verdict:
    """"Any history of active malignancy (excluding non-melanoma skin cancer, cervical carcinoma in situ,
    bladder cancer, breast cancer, or other similar cancers, with a disease-free survival period of more than
    5 years and no signs of recurrence after curative treatment)."

    Malignancies other than this patient's AML: codes also in ``aml``, ``apl`` or ``cns-involvement`` are the
    AML itself; MDS / CMML (``myeloid-precursor``) is usually its antecedent and goes to review.

    Reading B of the reference: non-melanoma skin cancer and cervical CIS are allowed (NOT_MET, with evidence);
    any other cancer, the listed breast and bladder cancers included, excludes unless disease-free for more than
    ``windows.malignancy_disease_free_years`` years. Active, or abated / diagnosed within that many years -> MET;
    abated longer ago -> UNKNOWN (review curative treatment and no recurrence: never auto-NOT_MET); undated
    history codes (Z85), unknown activity or unconfirmed diagnoses -> UNKNOWN. ``windows.malignancy_listed_
    exceptions`` = A instead sends a listed cancer that is no longer active to review however recent.
    """
    years = facts.rules.windows["malignancy_disease_free_years"]
    reading = facts.rules.windows["malignancy_listed_exceptions"]
    cutoff = facts.at.date() - relativedelta(years=years)
    excluded: list[Evidence] = []
    review: list[Evidence] = []
    allowed: list[Evidence] = []
    for c in facts.conditions("malignancy"):
        if any(vs in facts.tables and facts.concept(c, vs) is not None for vs in _OWN_DISEASE_SETS):
            continue  # the patient's own AML, not "another" malignancy
        precursor = facts.concept(c, _PRECURSOR_SET) if _PRECURSOR_SET in facts.tables else None
        if precursor is not None:
            if precursor.review:
                review.append(evidence_of(c, note=precursor.review))
            continue
        if facts.concept(c, "malignancy-exception-nmsc") is not None:
            allowed.append(evidence_of(c, note="listed exception (non-melanoma skin cancer / cervical CIS)"))
            continue
        why = _doubt(facts, c, "malignancy")
        if why:
            review.append(evidence_of(c, note=why))
            continue
        concept = facts.concept(c, "malignancy")
        if concept is not None and concept.qualifier == "history":
            review.append(evidence_of(c, note=f"personal history of malignancy without dates: confirm > {years} "
                                              "years disease-free after curative treatment"))
            continue
        listed = facts.concept(c, "malignancy-exception-listed") is not None
        verdict, note = _malignancy_timing(c, cutoff, years)
        if verdict is Result.MET and listed and reading == "A" and c.active is not True:
            verdict, note = Result.UNKNOWN, note + "; listed exception (reading A): review"
        if verdict is Result.MET:
            excluded.append(evidence_of(c, note=note))
        else:
            review.append(evidence_of(c, note=note))
    if excluded:
        return met(f"Another malignancy without more than {years} years disease-free: {_first_labels(excluded)} "
                   f"({_why(excluded[0])}).", *excluded, *review)
    if review:
        return unknown(f"Another malignancy to review: {_first_labels(review)} ({_why(review[0])}).",
                       *review, *allowed)
    found = None
    if allowed:
        found = (f"Only an allowed exception recorded: {_first_labels(allowed)} (non-melanoma skin cancer or "
                 "cervical carcinoma in situ).")
    # "other than the AML" only for a patient whose record holds one (E8 is also shown for one who has none)
    has_aml = any(facts.conditions(vs) for vs in ("aml", "apl") if vs in facts.tables)
    what = "malignancy other than the AML" if has_aml else "malignancy"
    return _none_recorded(facts, [(CONDITION, "malignancy")], what, *allowed, found=found)


def _malignancy_timing(c: ConditionFact, cutoff: date, years: int) -> tuple[Result, str]:
    """MET if active or not yet ``years`` years disease-free; UNKNOWN if longer ago, undated or unclear.

    "More than 5 years disease-free" counts whole days: abated exactly 5 years ago (same calendar date) is not
    more than 5 years, so it is still MET.
    """
    if c.active is True:
        return Result.MET, _status_text(c)
    if c.abatement is not None:
        ab = c.abatement
        if ab.start.date() >= cutoff:
            return Result.MET, f"abated {ab.display()}, less than {years} years ago"
        if ab.end.date() < cutoff:
            return Result.UNKNOWN, (f"abated {ab.display()}, more than {years} years ago: confirm curative "
                                    "treatment and no recurrence")
        return Result.UNKNOWN, f"abated {ab.display()}: too imprecise to tell whether more than {years} years ago"
    if c.onset is not None and c.onset.start.date() >= cutoff:
        # Diagnosed within the window: whatever its status, it cannot be more than `years` years disease-free.
        return Result.MET, f"diagnosed {c.onset.display()}, less than {years} years ago ({_status_text(c)})"
    if c.active is None:
        return Result.UNKNOWN, "no clinicalStatus or abatement date: is it active?"
    return Result.UNKNOWN, (f"{_status_text(c)} without an abatement date: confirm more than {years} years "
                            "disease-free")


# --- E11 ------------------------------------------------------------------------------------------------------


@criterion("E11")
def cns_involvement(facts: Facts) -> Verdict:
    """"Active or past central nervous system involvement, or clinical manifestations of central involvement
    in acute myeloid leukemia."

    MET on a confirmed CNS-involvement Condition (any status: past involvement counts) or a positive CSF blast
    result at any date (blasts reported positive, or a count above zero). A blast code the tables flag for
    review (its specimen may not be CSF) makes a positive result UNKNOWN and a negative one uninformative.
    Intrathecal chemotherapy is usually prophylaxis and not evidence of involvement: with a negative CSF result
    and no positive one it is NOT_MET (with that evidence); with no CSF result it goes to review
    (``windows.intrathecal_without_csf``: review | not-met).
    """
    doubtful: list[Evidence] = []
    for c in facts.conditions("cns-involvement"):
        why = _doubt(facts, c, "cns-involvement")
        if why:
            doubtful.append(evidence_of(c, note=why))
            continue
        return met(f"CNS involvement recorded ({_label(c)}, {_status_text(c)}).",
                   evidence_of(c, note=_status_text(c)))
    sel = facts.results("csf-blasts", "markers")
    negatives: list[Evidence] = []
    for obs in (*sel.current, *_undated(facts, "csf-blasts")):
        reading = _csf_reading(facts, obs)
        concept = facts.concept(obs, "csf-blasts")
        if concept is not None and concept.review:
            # A code the tables do not trust to be a CSF test (it may be blood or marrow blasts): a positive
            # goes to review, a negative proves nothing about the CSF.
            if reading is not Result.NOT_MET:
                doubtful.append(evidence_of(obs, note=concept.review))
            continue
        if reading is Result.MET:
            return met(f"Leukemic blasts in the CSF on {_when(obs)}.",
                       evidence_of(obs, note="CSF blasts positive"))
        if reading is Result.UNKNOWN:
            doubtful.append(evidence_of(obs, note="CSF result cannot be read as positive or negative"))
        else:
            negatives.append(evidence_of(obs, note="CSF negative for blasts"))
    for obs in sel.preliminary:
        if _csf_reading(facts, obs) is not Result.NOT_MET:
            doubtful.append(evidence_of(obs, note="preliminary CSF result: await the final report"))
    if doubtful:
        return unknown(f"Possible CNS involvement: review {_first_labels(doubtful)} ({_why(doubtful[0])}).",
                       *doubtful, *negatives)
    intrathecal = [evidence_of(p, note="intrathecal chemotherapy (usually prophylaxis)")
                   for p in facts.procedures("intrathecal-chemotherapy")]
    sources = [(CONDITION, "cns-involvement"), (OBSERVATION, "csf-blasts"), (PROCEDURE, "intrathecal-chemotherapy")]
    if intrathecal:
        if negatives:
            return _none_recorded(facts, sources, "CNS involvement", *negatives, *intrathecal,
                                  found=f"No CNS involvement recorded; CSF negative on {_ev_date(negatives[0])}; "
                                        "intrathecal chemotherapy taken as prophylaxis.")
        if facts.rules.windows["intrathecal_without_csf"] == "not-met":
            return _none_recorded(facts, sources, "CNS involvement", *intrathecal,
                                  found="No CNS involvement recorded; intrathecal chemotherapy taken as prophylaxis "
                                        "(windows.intrathecal_without_csf = not-met).")
        return unknown("Intrathecal chemotherapy given and no CSF result recorded: confirm it was prophylaxis and "
                       "not treatment of CNS involvement (CSF cytology).", *intrathecal)
    found = None
    if negatives:
        found = f"No CNS involvement recorded; CSF negative for blasts on {_ev_date(negatives[0])}."
    return _none_recorded(facts, sources, "CNS involvement or positive CSF result", *negatives, found=found)


def _csf_reading(facts: Facts, obs: ObservationFact) -> Result:
    """Positive / negative / unreadable CSF blast result: a qualitative call first, then a count above zero."""
    reading = facts.qualitative(obs)
    if reading is not Result.UNKNOWN:
        return reading
    q = obs.quantity
    if q is None:
        return Result.UNKNOWN
    if q.comparator in (">", ">="):
        return Result.MET
    return Result.MET if q.value > 0 else Result.NOT_MET


# --- E13 ------------------------------------------------------------------------------------------------------


@criterion("E13")
def pulmonary_fibrosis(facts: Facts) -> Verdict:
    """"There is pulmonary fibrosis."

    MET on a confirmed pulmonary-fibrosis Condition of any clinical status (fibrosis does not regress, so an
    inactive entry still counts). A "resolved" or "remission" status contradicts that and goes to review, as do
    unconfirmed diagnoses and codes that are not always fibrosis (drug-induced ILD).
    """
    doubtful: list[Evidence] = []
    for c in facts.conditions("pulmonary-fibrosis"):
        why = _doubt(facts, c, "pulmonary-fibrosis")
        if why:
            doubtful.append(evidence_of(c, note=why))
        elif c.clinical_status in {"resolved", "remission"}:
            doubtful.append(evidence_of(c, note=f"{_status_text(c)}, but fibrosis does not resolve: review "
                                                "chest imaging"))
        else:
            return met(f"Pulmonary fibrosis recorded ({_label(c)}, {_status_text(c)}).",
                       evidence_of(c, note=_status_text(c)))
    if doubtful:
        return unknown(f"Possible pulmonary fibrosis: review {_first_labels(doubtful)} ({_why(doubtful[0])}).",
                       *doubtful)
    return _none_recorded(facts, [(CONDITION, "pulmonary-fibrosis")], "pulmonary fibrosis")


# --- E14 ------------------------------------------------------------------------------------------------------


@criterion("E14")
def active_autoimmune_disease(facts: Facts) -> Verdict:
    """"With active autoimmune diseases (e.g. systemic lupus erythematosus, rheumatoid arthritis, multiple
    sclerosis, Sjogren's syndrome, etc.)."

    MET on a named disease (SLE, RA, MS, Sjogren) with clinicalStatus active / recurrence / relapse. A named
    disease in remission / inactive / resolved, or without a status, goes to review (is it active, or on
    disease-directed immunosuppression? current immunosuppressants are shown, since their indication may also
    be GvHD); so does an active "etc." autoimmune disease (psoriasis, IBD, autoimmune thyroiditis...), whose
    inclusion is investigator judgement. An inactive "etc." disease is not counted.
    """
    review: list[Evidence] = []
    ignored: list[Evidence] = []
    for c in facts.conditions("autoimmune-named"):
        why = _doubt(facts, c, "autoimmune-named")
        if why:
            review.append(evidence_of(c, note=why))
        elif c.active is True:
            return met(f"Active autoimmune disease recorded ({_label(c)}, {_status_text(c)}).",
                       evidence_of(c, note=_status_text(c)))
        elif c.active is None:
            review.append(evidence_of(c, note="no clinicalStatus: is it active?"))
        else:
            review.append(evidence_of(c, note=f"{_status_text(c)}: confirm it is inactive and not on "
                                              "disease-directed immunosuppression"))
    for c in facts.conditions("autoimmune-other"):
        if any(e.reference == c.ref for e in review):
            continue
        why = _doubt(facts, c, "autoimmune-other")
        if c.active is False:
            ignored.append(evidence_of(c, note=_status_text(c)))
        elif why:
            review.append(evidence_of(c, note=why))
        elif c.active is None:
            review.append(evidence_of(c, note="autoimmune disease without clinicalStatus: is it active?"))
        else:
            review.append(evidence_of(c, note="active autoimmune disease not named by the protocol ('etc.'): "
                                              "investigator to judge"))
    if review:
        # Disease-directed immunosuppression would make a quiet named disease exclude: show what is current.
        days = facts.rules.windows["immunosuppressant_active_days"]
        drugs, drugs_doubtful = _recent_medications(facts, "immunosuppressants", days)
        also = f"; current immunosuppressant: {_first_labels(drugs)}" if drugs else ""
        return unknown(f"Autoimmune disease to review: {_first_labels(review)} ({_why(review[0])}){also}.",
                       *review, *drugs, *drugs_doubtful)
    found = None
    if ignored:
        found = f"No active autoimmune disease recorded ({_first_labels(ignored)}: {_why(ignored[0])})."
    return _none_recorded(facts, [(CONDITION, "autoimmune-named"), (CONDITION, "autoimmune-other")],
                          "active autoimmune disease", *ignored, found=found)
