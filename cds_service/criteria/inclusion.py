"""Inclusion criteria I1-I11. Each function's docstring quotes the protocol sentence it implements.

Test-decided inclusions (I6, I7a-e, I9) read the latest final result inside the recency window of their kind
(``recency_days`` in the trial rules); a missing, stale, preliminary, unit-less or range-less result is UNKNOWN
with the reason naming what to order or record, never MET.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dateutil.relativedelta import relativedelta

from cds_service.criteria.common import CONDITION, attestation
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result, all_of
from cds_service.facts.clinical import ComponentFact, ConditionFact, ObservationFact
from cds_service.facts.dates import DateRange
from cds_service.facts.derived import creatinine_clearance, current_steroid_dose, pregnancy_test
from cds_service.facts.index import Facts, evidence_of
from cds_service.facts.units import Quantity

__all__: list[str] = []

# Value-set ids (fhir_mappings/value-sets/<id>.json).
AML = "aml"
APL = "apl"
PML_RARA = "pml-rara"
BLASTS = "bone-marrow-blasts"
DISEASE_STATUS = "disease-status"
CLL1 = "cll1"
CD38 = "cd38"
ECOG = "ecog"
ECOG_ANSWERS = "ecog-answers"
KARNOFSKY = "karnofsky"
ALT = "alt"
AST = "ast"
BILIRUBIN_TOTAL = "bilirubin-total"
BILIRUBIN_DIRECT = "bilirubin-direct"
GILBERT = "gilbert"
OTHER_CONGENITAL = "congenital-hyperbilirubinemia-other"
LVEF = "lvef"
SPO2 = "spo2"
O2_FLOW = "inhaled-oxygen-flow"
O2_CONCENTRATION = "inhaled-oxygen-concentration"
ROOM_AIR = "room-air"
ON_OXYGEN = "on-oxygen"
NON_CHILDBEARING = "non-childbearing"
STEROID_DEPENDENCE = "steroid-dependence"


@dataclass(frozen=True)
class Part:
    """One part of a criterion: its result, a clause for the reason, and the evidence it rests on."""

    result: Result
    text: str
    evidence: tuple[Evidence, ...] = ()


def _evidence(parts: Sequence[Part]) -> tuple[Evidence, ...]:
    return tuple(e for p in parts for e in p.evidence)


def _no_result(facts: Facts, sel, what: str, recency: str) -> Part:  # noqa: ANN001 - a Selection
    """UNKNOWN part for "no usable result", with the stale or preliminary result as evidence."""
    ev = tuple(evidence_of(o, note="disagrees with a result at the same time") for o in sel.conflict)
    ev += tuple(evidence_of(o, note=n) for o, n in zip(sel.superseded, (
        "newer, not final: disagrees with the latest final result", "latest final result"), strict=False))
    ev += tuple(evidence_of(o, note="preliminary") for o in sel.preliminary[:1])
    if sel.stale is not None:
        ev += (evidence_of(sel.stale, note="too old to count"),)
    # Parts are joined into one sentence by the caller: no full stop of its own.
    return Part(Result.UNKNOWN, facts.no_recent_reason(sel, what, recency).rstrip("."), ev)


def _review_note(facts: Facts, fact: object, value_set: str) -> str | None:
    concept = facts.concept(fact, value_set)
    return concept.review if concept is not None and concept.review else None


def _sentence(text: str) -> str:
    """``text`` with a capital first letter and a full stop (the rest untouched: codes and units keep their case)."""
    text = text.strip().rstrip(".")
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _day(obs: ObservationFact) -> str:
    """The result's date for a reason: the calendar day of an exact time, else the date as recorded."""
    if obs.effective is None:
        return "undated"
    return obs.effective.start.date().isoformat() if obs.effective.is_exact else obs.effective.display()


@criterion("I1")
def age_18_to_70_at_consent(facts: Facts) -> Verdict:
    """"At the time of signing the informed consent, 18-70 years old (including the critical value)."

    Age in completed years at consent (taken as ``at``); 70 years 11 months is eligible. A partial birth date
    is evaluated at both ends; if they disagree the result is UNKNOWN.
    """
    t = facts.rules.thresholds
    birth = facts.birth_date
    if facts.patient is None:
        return unknown("No Patient resource in the record, so age cannot be computed.")
    if facts.deceased:
        return not_met("The patient is recorded as deceased.", Evidence(facts.patient_ref, note="deceased"))
    if birth is None:
        return unknown("The patient's date of birth is not recorded.")
    # Completed years between calendar dates: on the 18th birthday the patient is 18 whatever the hour.
    at = facts.at.date()
    ages = {relativedelta(at, birth.start.date()).years, relativedelta(at, birth.end.date()).years}
    ev = Evidence(facts.patient_ref, value=f"born {birth.display()}", date=birth.display(), note="birthDate")
    ok = {t["age_min_years"] <= a <= t["age_max_years"] for a in ages}
    age_text = "-".join(str(a) for a in sorted(ages))
    if ok == {True}:
        return met(f"Age {age_text} at consent is within {t['age_min_years']}-{t['age_max_years']}.", ev)
    if ok == {False}:
        return not_met(f"Age {age_text} at consent is outside {t['age_min_years']}-{t['age_max_years']}.", ev)
    return unknown(f"The partial birth date gives an age of {age_text}, on both sides of the age limit: record the "
                   "full date of birth.", ev)


@criterion("I2")
def relapsed_refractory_aml(facts: Facts) -> Verdict:
    """"Diagnosed with acute myeloid leukemia (except for APL) based on the WHO 2022 criteria and meeting the
    diagnostic criteria for relapsed/refractory AML."

    MET only with a confirmed AML Condition, no APL evidence, and relapse/refractory evidence: a code whose
    value-set entry is qualified ``relapse`` / ``refractory`` (C9x.x2, SNOMED relapsing/refractory AML), an AML
    Condition whose clinicalStatus is relapse/recurrence, or bone-marrow blasts >= 5% dated after a documented
    remission (a remission-qualified AML code or an AML Condition in remission). An AML code alone (C92.00 also
    covers newly diagnosed AML) is UNKNOWN. Refractoriness by counting induction courses is not computed: the
    reason asks the clinician to document it. APL (a confirmed APL Condition or a positive PML::RARA) is NOT_MET.
    """
    apl_ev, apl_doubt = _apl_evidence(facts)
    if apl_ev:
        return not_met("Acute promyelocytic leukemia is recorded; APL is excluded from this trial.", *apl_ev)
    amls = facts.conditions(AML)
    if not amls:
        if apl_doubt:
            return unknown("No AML diagnosis, and a possible APL needs review: " + apl_doubt[0][1] + ".",
                           *(e for e, _ in apl_doubt))
        gap = facts.gap(CONDITION, AML)
        if gap:
            return unknown(f"No acute myeloid leukemia diagnosis found, but {gap}.")
        return not_met("None recorded: no acute myeloid leukemia diagnosis in the retrieved record.")
    usable: list[ConditionFact] = []
    doubtful: list[Evidence] = []
    doubts: list[str] = []
    for c in amls:
        review = _review_note(facts, c, AML)
        if review:
            doubtful.append(evidence_of(c, note=f"review: {review}"))
            doubts.append(f"{c.display or c.ref} needs review ({review})")
        elif not c.confirmed:
            doubtful.append(evidence_of(c, note=f"verification status {c.verification}"))
            doubts.append(f"{c.display or c.ref} is {c.verification}")
        else:
            usable.append(c)
    if not usable:
        return unknown("The AML diagnosis is not confirmed: " + "; ".join(doubts) + ". Confirm the diagnosis and "
                       "document relapsed/refractory status.", *doubtful)
    rr_ev: list[Evidence] = []
    rr_text = ""
    for c in usable:
        concept = facts.concept(c, AML)
        qualifier = concept.qualifier if concept is not None else None
        if qualifier in ("relapse", "refractory"):
            rr_ev.append(evidence_of(c, note=f"coded as {qualifier}"))
            rr_text = rr_text or f"{c.display or c.ref} is coded as {qualifier}"
        elif c.clinical_status in ("relapse", "recurrence"):
            # FHIR clinicalStatus "relapse"/"recurrence": the disease returned after remission.
            rr_ev.append(evidence_of(c, note=f"clinicalStatus {c.clinical_status}"))
            rr_text = rr_text or f"{c.display or c.ref} has clinical status {c.clinical_status}"
    blasts = _relapse_by_blasts(facts, usable)
    if not rr_ev and blasts.result is Result.MET:
        rr_ev, rr_text = list(blasts.evidence), blasts.text
    if rr_ev:
        if apl_doubt:
            return unknown("Relapsed/refractory AML is recorded, but APL cannot be ruled out: " + apl_doubt[0][1]
                           + ".", *rr_ev, *(e for e, _ in apl_doubt))
        return met(f"Relapsed/refractory AML: {rr_text}.", *rr_ev)
    ev = [evidence_of(c) for c in usable] + list(blasts.evidence) + doubtful
    extra = f" {blasts.text}." if blasts.text else ""
    blast_limit = facts.rules.thresholds["relapse_blasts_min_percent"]
    return unknown("AML is recorded but relapsed/refractory status is not documented: document relapse "
                   f"(bone-marrow blasts >= {blast_limit:g}% after complete remission) or refractory disease (no "
                   f"remission after 2 induction courses).{extra}", *ev)


def _apl_evidence(facts: Facts) -> tuple[list[Evidence], list[tuple[Evidence, str]]]:
    """(evidence of APL, [(evidence, why) of possible APL needing review])."""
    sure: list[Evidence] = []
    doubt: list[tuple[Evidence, str]] = []
    for c in facts.conditions(APL):
        review = _review_note(facts, c, APL)
        if review:
            doubt.append((evidence_of(c, note=f"review: {review}"), f"{c.display or c.ref}: {review}"))
        elif not c.confirmed:
            doubt.append((evidence_of(c, note=f"verification status {c.verification}"),
                          f"{c.display or c.ref} is {c.verification}"))
        else:
            sure.append(evidence_of(c, note="APL diagnosis"))
    sel = facts.results(PML_RARA, "markers")
    for obs in sel.current:
        call = facts.qualitative(obs)
        review = _review_note(facts, obs, PML_RARA)
        if call is Result.MET and not review:
            sure.append(evidence_of(obs, note="PML::RARA positive"))
        elif call is Result.MET:
            doubt.append((evidence_of(obs, note=f"review: {review}"), f"{obs.ref} positive: {review}"))
    for obs in sel.preliminary:
        if facts.qualitative(obs) is Result.MET:
            doubt.append((evidence_of(obs, note="preliminary PML::RARA positive"),
                          f"a preliminary PML::RARA result ({obs.ref}) is positive"))
    return sure, doubt


def _remission_dates(facts: Facts, amls: Sequence[ConditionFact]) -> list[tuple[object, DateRange]]:
    """(fact, DateRange) of each documented remission: the date remission was reached (or recorded by).

    A remission-qualified AML code, an AML Condition in clinical status remission, or an mCODE disease-status
    Observation whose value is "in full remission".
    """
    out: list[tuple[object, DateRange]] = []
    for obs in facts.results(DISEASE_STATUS, "markers").current:
        answer = facts.codes_in(obs.value_codings, DISEASE_STATUS)
        if answer is not None and answer.qualifier == "remission":
            out.append((obs, obs.effective))
    for c in amls:
        concept = facts.concept(c, AML)
        if concept is not None and concept.qualifier == "remission":
            # Onset of a "in remission" code is when remission was reached; the recorded date is an upper bound.
            when = c.onset or c.recorded
        elif c.clinical_status == "remission":
            when = c.abatement or c.recorded
        else:
            continue
        if when is not None:
            out.append((c, when))
    return out


def _relapse_by_blasts(facts: Facts, amls: Sequence[ConditionFact]) -> Part:
    """Blasts >= 5% (``thresholds.relapse_blasts_min_percent``) dated after a documented remission (relapse).

    The blast codes' specimen (marrow or blood) is not verified; reappearing blood blasts also define relapse.
    """
    remissions = _remission_dates(facts, amls)
    if not remissions:
        return Part(Result.UNKNOWN, "")
    limit = facts.rules.thresholds["relapse_blasts_min_percent"]
    doubt: list[Evidence] = []
    for obs in facts.observations(BLASTS):
        if obs.preliminary or obs.effective is None or obs.effective.start > facts.at:
            continue
        q = facts.value_in(obs, BLASTS)
        if q is None or q.at_least(limit) is not True:
            continue
        for cond, when in remissions:
            if obs.effective.start > when.end:
                review = _review_note(facts, obs, BLASTS)
                if review:
                    doubt.append(evidence_of(obs, note=f"blasts after remission; review: {review}"))
                    continue
                return Part(Result.MET, f"blasts {q.display()} on {_day(obs)} after the remission "
                            f"documented on {when.display()}",
                            (evidence_of(cond, note="remission"), evidence_of(obs, value=q.display(),
                                                                             note="blasts >= 5% after remission")))
    if doubt:
        return Part(Result.UNKNOWN, "Blasts of >= 5% after remission are recorded with a code that needs review "
                    "(bone marrow or blood?)", tuple(doubt))
    return Part(Result.UNKNOWN, "")


@criterion("I3")
def cll1_or_cd38_positive(facts: Facts) -> Verdict:
    """"Positive expression of CLL1 and/or CD38 in tumor cells."

    The latest CLL1 (CLEC12A) and the latest CD38 result at any date (recency ``markers``). MET if either is
    positive; NOT_MET only if both latest results are negative; otherwise UNKNOWN. A result is positive or negative
    by the lab's call (interpretation, coded or text value). The protocol gives no cut-off, so a bare percentage of
    blasts decides only when ``thresholds.marker_positive_min_percent_of_blasts`` is set (null by default: UNKNOWN
    for the study team to judge). A code the value set flags for review (e.g. tissue IHC rather than blast flow
    cytometry) is UNKNOWN: the gated population must be the leukemic blasts.
    """
    parts = [_marker(facts, CLL1, "CLL1"), _marker(facts, CD38, "CD38")]
    results = [p.result for p in parts]
    ev = _evidence(parts)
    if Result.MET in results:
        positive = " and ".join(p.text for p in parts if p.result is Result.MET)
        return met(f"{positive}.", *ev)
    if results == [Result.NOT_MET, Result.NOT_MET]:
        return not_met(f"{parts[0].text} and {parts[1].text}.", *ev)
    return unknown("No positive CLL1 or CD38 result: " + "; ".join(p.text for p in parts) +
                   ". Order or review blast flow cytometry for CLL1 (CLEC12A) and CD38.", *ev)


def _marker(facts: Facts, value_set: str, name: str) -> Part:
    sel = facts.results(value_set, "markers")
    obs = sel.latest
    if obs is None:
        return _no_result(facts, sel, name, "markers")
    review = _review_note(facts, obs, value_set)
    if review:
        return Part(Result.UNKNOWN, f"{name} result {obs.ref} needs review ({review})",
                    (evidence_of(obs, note=f"review: {review}"),))
    cutoff = facts.rules.thresholds["marker_positive_min_percent_of_blasts"]
    call = Result.UNKNOWN
    how = ""
    if obs.interpretation or obs.value_codings:
        call = facts.qualitative(obs)
    q = facts.value_in(obs, value_set) if obs.quantity is not None else None
    if call is Result.UNKNOWN and q is not None:
        if cutoff is None:
            how = f" ({q.display()} of blasts without a positive/negative call; no cut-off is configured)"
        else:
            call = Result.of(q.at_least(cutoff))
            how = f" ({q.display()} of blasts, cut-off {cutoff:g}%)"
    elif call is Result.UNKNOWN and obs.quantity is None:
        call = facts.qualitative(obs)  # text or boolean value
    label = {Result.MET: "positive", Result.NOT_MET: "negative", Result.UNKNOWN: "not interpretable"}[call]
    text = f"{name} {label} on {_day(obs)}{how}"
    return Part(call, text, (evidence_of(obs, note=f"{name} {label}"),))


@criterion("I4")
def estimated_survival(facts: Facts) -> Verdict:
    """"Estimated survival >=3 months." Investigator judgement: no record can decide it."""
    return attestation("estimated survival of at least 3 months.")


@criterion("I5")
def confirmed_donor(facts: Facts) -> Verdict:
    """"Have a confirmed donor for allogeneic hematopoietic stem cell transplantation." No standard FHIR data."""
    return attestation("a confirmed allogeneic stem-cell donor.")


@criterion("I6")
def ecog_0_to_2(facts: Facts) -> Verdict:
    """"ECOG score of 0~2 during the screening phase."

    The latest ECOG (LOINC 89247-1) within the ``ecog`` recency window, read from valueInteger or a coded answer
    (LA9622-7 ... LA9627-6, the ``value`` of its ``ecog-answers`` entry). A Karnofsky score is never converted.
    """
    limit = facts.rules.thresholds["ecog_max"]
    sel = facts.results(ECOG, "ecog")
    obs = sel.latest
    if obs is None:
        part = _no_result(facts, sel, "ECOG performance status", "ecog")
        kps = facts.results(KARNOFSKY, "ecog").latest if KARNOFSKY in facts.tables else None
        if kps is not None:
            return unknown(f"{part.text} A Karnofsky score is recorded ({_day(kps)}) but is not converted to ECOG: "
                           "record an ECOG score.", *part.evidence, evidence_of(kps, note="Karnofsky, not converted"))
        return unknown(f"{part.text.rstrip('.')}. Record an ECOG performance status.", *part.evidence)
    score = _ecog_score(facts, obs)
    if score is None:
        return unknown(f"The ECOG result of {_day(obs)} ({obs.ref}) has no readable score; record ECOG 0-5.",
                       evidence_of(obs, note="score not readable"))
    ev = evidence_of(obs, value=score, note="ECOG performance status")
    if score <= limit:
        return met(f"ECOG {score} on {_day(obs)} is within 0-{limit}.", ev)
    return not_met(f"ECOG {score} on {_day(obs)} is above {limit}.", ev)


def _ecog_score(facts: Facts, obs: ObservationFact) -> int | None:
    if obs.integer is not None:
        return obs.integer if 0 <= obs.integer <= 5 else None
    if obs.value_codings:
        concept = facts.codes_in(obs.value_codings, ECOG_ANSWERS)
        if concept is not None and concept.value is not None:
            return int(concept.value)
        return None
    q = obs.quantity
    if q is not None and q.comparator is None and float(q.value).is_integer() and 0 <= q.value <= 5 \
            and q.unit in (None, "1", "{score}"):
        return int(q.value)
    return None


def _times_uln(facts: Facts, value_set: str, what: str, max_x: float) -> Part:
    """The latest valid result of ``what`` against ``max_x`` x its own ULN (same Observation, same unit)."""
    sel = facts.results(value_set, "labs")
    obs = sel.latest
    if obs is None:
        return _no_result(facts, sel, what, "labs")
    review = _review_note(facts, obs, value_set)
    if review:
        return Part(Result.UNKNOWN, f"the {what} result {obs.ref} needs review ({review})",
                    (evidence_of(obs, note=f"review: {review}"),))
    value = facts.value_in(obs, value_set)
    if value is None:
        return Part(Result.UNKNOWN, f"the {what} value of {_day(obs)} ({obs.ref}) has a missing or unconvertible "
                    "unit", (evidence_of(obs, note="unit missing or not convertible"),))
    uln, why = facts.uln(obs, value_set)
    if uln is None or uln.value <= 0:
        return Part(Result.UNKNOWN, f"{what}: {why or 'the ULN is not positive'}; the ULN must come from the "
                    "same result", (evidence_of(obs, value=value.display(), note="no usable ULN"),))
    ratio = Quantity(value.value / uln.value, None, value.comparator)
    ok = ratio.at_most(max_x)
    ratio_text = f"{ratio.comparator or ''}{ratio.value:.2f} x ULN"
    note = f"ULN {uln.display()}; {ratio_text} (limit {max_x:g} x ULN)"
    if obs.quantity is not None and obs.quantity.unit != value.unit:
        note += f"; as recorded: {obs.quantity.display()}"
    ev = evidence_of(obs, value=value.display(), note=note)
    text = f"{what} {value.display()} on {_day(obs)} is {ratio_text} (ULN {uln.display()})"
    if ok is None:
        return Part(Result.UNKNOWN, text + ", a censored value that cannot be compared with the limit", (ev,))
    return Part(Result.of(ok), text, (ev,))


def _combine(parts: Sequence[Part], limit_text: str, resolve: str) -> Verdict:
    result = all_of(p.result for p in parts)
    ev = _evidence(parts)
    if result is Result.MET:
        return met(" and ".join(p.text for p in parts) + f": within {limit_text}.", *ev)
    if result is Result.NOT_MET:
        return not_met(" and ".join(p.text for p in parts if p.result is Result.NOT_MET) +
                       f": above {limit_text}.", *ev)
    return unknown(_sentence("; ".join(p.text for p in parts if p.result is Result.UNKNOWN)) + f" {resolve}", *ev)


@criterion("I7a")
def alt_ast_within_2_5_uln(facts: Facts) -> Verdict:
    """"Alanine aminotransferase/aspartate aminotransferase <=2.5x ULN."

    Both the latest valid ALT and the latest valid AST within the ``labs`` recency window must be <= 2.5 x the ULN
    given by the same Observation's referenceRange.high (no built-in ULN). Units are converted (U/L = [IU]/L,
    ukat/L x 60) before the ratio is taken; a missing ULN or unit is UNKNOWN.
    """
    limit = facts.rules.thresholds["alt_ast_max_x_uln"]
    parts = [_times_uln(facts, ALT, "ALT", limit), _times_uln(facts, AST, "AST", limit)]
    return _combine(parts, f"{limit:g} x ULN", "Order ALT and AST with their reference ranges.")


@criterion("I7b")
def bilirubin_within_limit(facts: Facts) -> Verdict:
    """"Total serum bilirubin <=2x ULN, except in subjects with congenital bilirubinemia (direct bilirubin
    <=1.5x ULN in subjects with Gilbert's syndrome)."

    No documented Gilbert syndrome: latest total bilirubin <= 2 x ULN. Confirmed Gilbert syndrome (E80.4): latest
    direct bilirubin <= 1.5 x ULN (no total-bilirubin ceiling is applied: the protocol states none). Gilbert only
    suspected (unconfirmed, provisional) or another congenital hyperbilirubinaemia (Crigler-Najjar, E80.6, review
    entries of the value set): UNKNOWN for the investigator. mg/dL and umol/L are converted (molar mass).
    """
    t = facts.rules.thresholds
    gilbert, doubtful = [], []
    for c in facts.conditions(GILBERT):
        review = _review_note(facts, c, GILBERT)
        if review:
            doubtful.append(evidence_of(c, note=f"review: {review}"))
        elif not c.confirmed:
            doubtful.append(evidence_of(c, note=f"Gilbert syndrome {c.verification}"))
        else:
            gilbert.append(evidence_of(c, note="Gilbert syndrome"))
    for c in facts.conditions(OTHER_CONGENITAL):
        review = _review_note(facts, c, OTHER_CONGENITAL) or "congenital hyperbilirubinaemia other than Gilbert"
        doubtful.append(evidence_of(c, note=f"review: {review}"))
    if gilbert and not doubtful:
        limit = t["bilirubin_direct_max_x_uln_gilbert"]
        part = _times_uln(facts, BILIRUBIN_DIRECT, "direct bilirubin", limit)
        part = Part(part.result, part.text, tuple(gilbert) + part.evidence)
        return _combine([part], f"{limit:g} x ULN (Gilbert syndrome)",
                        "Order direct bilirubin with its reference range.")
    if doubtful:
        return unknown("A possible congenital hyperbilirubinaemia (suspected Gilbert syndrome or another "
                       "congenital form) is recorded: the investigator must decide whether the total (<= 2 x ULN) "
                       "or the direct (<= 1.5 x ULN) bilirubin limit applies.", *doubtful)
    limit = t["bilirubin_total_max_x_uln"]
    return _combine([_times_uln(facts, BILIRUBIN_TOTAL, "total bilirubin", limit)], f"{limit:g} x ULN",
                    "Order total bilirubin with its reference range.")


@criterion("I7c")
def creatinine_clearance_above_45(facts: Facts) -> Verdict:
    """"Serum creatinine clearance > 45mL/min (calculated according to Cockcroft-Gault formula)."

    Cockcroft-Gault from the latest serum creatinine, a body weight within the configured days of it, the age at
    the creatinine date and sex (``facts.derived``); strictly greater than the limit. eGFR is never used. With sex
    unknown both values are computed and must agree.
    """
    limit = facts.rules.thresholds["crcl_min_ml_min_exclusive"]
    crcl = creatinine_clearance(facts)
    if crcl.missing is not None:
        return unknown(f"Cockcroft-Gault creatinine clearance cannot be computed: {crcl.missing}. Order serum "
                       "creatinine and record body weight.", *crcl.evidence)
    result = crcl.above(limit)
    text = f"Cockcroft-Gault creatinine clearance {crcl.display()}"
    if result is Result.MET:
        return met(f"{text} is above {limit:g} mL/min.", *crcl.evidence)
    if result is Result.NOT_MET:
        return not_met(f"{text} is not above {limit:g} mL/min.", *crcl.evidence)
    return unknown(f"{text}: the values fall on both sides of {limit:g} mL/min (sex or age uncertain, or a "
                   "censored creatinine); confirm sex, birth date and creatinine.", *crcl.evidence)


_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)\s*%?\s*$")


@criterion("I7d")
def lvef_at_least_45(facts: Facts) -> Verdict:
    """"Left ventricular ejection fraction (LVEF) >=45%."

    The latest LVEF within the ``lvef`` recency window, >= 45%. A value <= 1 is read as a fraction (x 100, noted in
    the evidence); a text range ("55-60%") uses its lower bound. Several results on the latest date (different
    methods) with different values go to review (UNKNOWN).
    """
    limit = facts.rules.thresholds["lvef_min_percent"]
    sel = facts.results(LVEF, "lvef")
    obs = sel.latest
    if obs is None:
        part = _no_result(facts, sel, "LVEF", "lvef")
        return unknown(f"{part.text.rstrip('.')}. Order an echocardiogram or MUGA scan.", *part.evidence)
    same_day = [o for o in sel.current if o.effective.start.date() == obs.effective.start.date()]
    readings = [(o, _lvef_percent(facts, o)) for o in same_day]
    values = {round(v[0].value, 1) for _o, v in readings if v is not None}
    if len(values) > 1:
        shown = ", ".join(f"{v:g}%" for v in sorted(values))
        return unknown(f"Several LVEF results on {_day(obs)} disagree ({shown}); review which measurement counts.",
                       *(evidence_of(o) for o, _v in readings))
    reading = _lvef_percent(facts, obs)
    if reading is None:
        return unknown(f"The LVEF result of {_day(obs)} ({obs.ref}) has no readable percentage; review the report.",
                       evidence_of(obs, note="value or unit not readable"))
    pct, note = reading
    ev = evidence_of(obs, value=pct.display(), note=note)
    ok = pct.at_least(limit)
    if ok is None:
        return unknown(f"LVEF {pct.display()} on {_day(obs)} cannot be compared with {limit:g}%; review.", ev)
    if ok:
        return met(f"LVEF {pct.display()} on {_day(obs)} is at least {limit:g}%.", ev)
    return not_met(f"LVEF {pct.display()} on {_day(obs)} is below {limit:g}%.", ev)


def _lvef_percent(facts: Facts, obs: ObservationFact) -> tuple[Quantity, str] | None:
    """The LVEF in %, and a note on how it was read."""
    if obs.text:
        m = _RANGE.match(obs.text)
        if m:
            return Quantity(float(m.group(1)), "%"), f"text range {obs.text!r}: lower bound used"
    q = obs.quantity
    if q is None:
        return None
    if 0 < q.value <= 1:
        # A fraction (0.55) whatever the unit says: an LVEF of 1% is not a clinical value.
        return Quantity(q.value * 100, "%", q.comparator), f"recorded as the fraction {q.display()}; x 100"
    pct = facts.value_in(obs, LVEF)
    if pct is None or pct.unit != "%":
        return None
    return pct, "LVEF"


@criterion("I7e")
def spo2_on_room_air(facts: Facts) -> Verdict:
    """"Basal finger oxygen saturation >=92% in room air."

    The latest finger pulse-oximetry SpO2 within the ``spo2`` recency window (arterial blood-gas saturation is
    flagged for review in the value set and is UNKNOWN). MET only if SpO2 >= 92% AND room air is documented: in the
    same Observation (a component or value: inhaled O2 flow 0, inhaled O2 concentration 21%, "breathing room air")
    or in an Observation with the same effective time. Below 92% is NOT_MET whatever the oxygen context: on oxygen
    the room-air value could only be lower, so "below 92% on room air" holds either way. >= 92% on oxygen or with
    no documented context is UNKNOWN ("record SpO2 on room air").
    """
    limit = facts.rules.thresholds["spo2_min_percent"]
    sel = facts.results(SPO2, "spo2")
    finger = [o for o in sel.current if not _review_note(facts, o, SPO2)]
    if not finger:
        if sel.current:
            obs = sel.current[0]
            review = _review_note(facts, obs, SPO2)
            return unknown(f"Only an SpO2 that needs review is recorded ({review}, {_day(obs)}); record finger pulse "
                           "oximetry on room air.", evidence_of(obs, note=f"review: {review}"))
        part = _no_result(facts, sel, "SpO2", "spo2")
        return unknown(f"{part.text.rstrip('.')}. Record finger pulse oximetry on room air.", *part.evidence)
    obs = finger[0]
    q = facts.value_in(obs, SPO2)
    if q is None:
        return unknown(f"The SpO2 of {_day(obs)} ({obs.ref}) has a missing or unconvertible unit; record SpO2 in %.",
                       evidence_of(obs, note="unit missing or not convertible"))
    context, context_ev = _oxygen_context(facts, obs)
    ev = (evidence_of(obs, value=q.display(), note=f"SpO2; {context or 'oxygen context not documented'}"),
          *context_ev)
    ok = q.at_least(limit)
    if ok is None:
        return unknown(f"SpO2 {q.display()} on {_day(obs)} cannot be compared with {limit:g}%; record SpO2 on room "
                       "air.", *ev)
    if not ok:
        return not_met(f"SpO2 {q.display()} on {_day(obs)} is below {limit:g}% "
                       f"({context or 'oxygen context not documented'}).", *ev)
    if context == "room air":
        return met(f"SpO2 {q.display()} on room air on {_day(obs)} is at least {limit:g}%.", *ev)
    if context is None:
        return unknown(f"SpO2 {q.display()} on {_day(obs)}, but room air is not documented: record SpO2 on room "
                       "air.", *ev)
    return unknown(f"SpO2 {q.display()} on {_day(obs)} was measured {context}: record SpO2 on room air.", *ev)


def _oxygen_context(facts: Facts, obs: ObservationFact) -> tuple[str | None, tuple[Evidence, ...]]:
    """"room air", "on supplemental oxygen" or None, from the SpO2 Observation or a same-time Observation."""
    own = _context_of(facts, [obs, *obs.components])
    if own is not None:
        return own, ()
    for other in facts.all_of_kind("Observation"):
        if other.ref == obs.ref or other.preliminary or other.effective is None or \
                other.effective.start != obs.effective.start:
            continue
        found = _context_of(facts, [other, *other.components])
        if found is not None:
            return found, (evidence_of(other, note=f"same-time oxygen context: {found}"),)
    return None, ()


def _context_of(facts: Facts, items: Sequence[ObservationFact | ComponentFact]) -> str | None:
    on_air = on_o2 = False
    for item in items:
        if item.value_codings:
            if ROOM_AIR in facts.tables and facts.codes_in(item.value_codings, ROOM_AIR) is not None:
                on_air = True
            if ON_OXYGEN in facts.tables and facts.codes_in(item.value_codings, ON_OXYGEN) is not None:
                on_o2 = True
        if item.quantity is None:
            continue
        if facts.codes_in(item.codings, O2_FLOW) is not None:
            flow = facts.value_in(item, O2_FLOW)
            if flow is not None and flow.comparator is None:
                on_air, on_o2 = on_air or flow.value == 0, on_o2 or flow.value > 0
        elif facts.codes_in(item.codings, O2_CONCENTRATION) is not None:
            fio2 = facts.value_in(item, O2_CONCENTRATION)
            if fio2 is not None and fio2.comparator is None:
                # 21% is room air; a fraction (0.21) is accepted too.
                pct = fio2.value * 100 if fio2.value <= 1 else fio2.value
                on_air, on_o2 = on_air or abs(pct - 21) < 0.5, on_o2 or pct >= 21.5
    if on_air and on_o2:
        return None  # contradictory: not documented
    if on_air:
        return "room air"
    if on_o2:
        return "on supplemental oxygen"
    return None


@criterion("I8")
def can_stop_corticosteroids(facts: Facts) -> Verdict:
    """"The ability to discontinue corticosteroids (dexamethasone >=3mg/day or other equivalent dose of hormones)
    from day -7 and continue until 30 days after CAR T cell infusion."

    Forward-looking investigator judgement: always UNKNOWN. As support data the reason gives the current systemic
    corticosteroid dose in prednisone equivalents (``facts.derived.current_steroid_dose``) against the protocol's
    dexamethasone 3 mg/day = prednisone 20 mg/day, with the orders, statements or administrations as evidence.
    """
    limit = facts.rules.thresholds["steroid_daily_prednisone_equivalent_mg"]
    dose = current_steroid_dose(facts)
    ask = ("Needs confirmation by the study team: corticosteroids can be stopped from day -7 to day +30 of the "
           "infusion.")
    # Conditions that make stopping hard (adrenal insufficiency, long-term steroid use): flags for the reviewer.
    flags = [c for c in facts.conditions(STEROID_DEPENDENCE) if c.active is not False]
    flag_ev = [evidence_of(c, note=f"review: {_review_note(facts, c, STEROID_DEPENDENCE) or 'steroid dependence'}")
               for c in flags]
    flag_text = ""
    if flags:
        flag_text = " Also recorded: " + ", ".join(c.display or c.ref for c in flags) + \
            " (stopping steroids may be hard)."
    if not dose.any_current:
        return unknown(f"{ask} No current systemic corticosteroid is recorded.{flag_text}", *flag_ev)
    parts = []
    if dose.total_mg is not None:
        above = "at or above" if dose.total_mg >= limit else "below"
        parts.append(f"current systemic corticosteroids {dose.total_mg:.1f} mg/day prednisone-equivalent, {above} "
                     f"the {limit:g} mg/day (dexamethasone 3 mg/day) level")
    if dose.undetermined:
        parts.append(f"{len(dose.undetermined)} current corticosteroid record(s) without a computable daily dose")
    return unknown(f"{ask} Support data: " + "; ".join(parts) + f".{flag_text}", *dose.parts, *dose.undetermined,
                   *flag_ev)


@criterion("I9")
def negative_hcg_and_contraception(facts: Facts) -> Verdict:
    """"Pregnant women of childbearing potential should be negative for HCG tests during screening and baseline.
    Male subjects must agree not to donate sperm for at least two years after the infusion. Male subjects and his
    sexual partner with childbearing potential must agree to use highly effective contraception for at least 2
    years after the infusion."

    Read as women of childbearing potential (WOCBP): female (``facts.sex``) with no confirmed non-childbearing
    Condition or Procedure (hysterectomy, bilateral oophorectomy, tubal ligation, menopause: value set
    ``non-childbearing``). No age rule is applied: only coded evidence counts.

    I9 can never be MET from the record: the baseline hCG is taken just before infusion (a future event), and the
    sperm-donation and contraception agreements are commitments the patient makes to the study team. So the result
    is UNKNOWN for every patient, with the reason saying what remains, unless a recent hCG is positive in a patient
    who is not male (NOT_MET). A male patient's hCG is not a pregnancy test and does not decide.
    """
    sex = facts.sex
    test = pregnancy_test(facts)
    if test.call is Result.MET and sex != "male":
        return not_met(f"hCG positive on {_day(test.obs)}.", *test.evidence)
    agreement = "the agreement to use highly effective contraception for 2 years after infusion"
    if sex == "male":
        return unknown("Needs confirmation by the study team: hCG does not apply to a male patient; he must agree "
                       "not to donate sperm and (with his partner) to use highly effective contraception for 2 years "
                       "after infusion.",
                       Evidence(facts.patient_ref, value="male", note="sex"))
    non_cb = _non_childbearing(facts)
    if sex == "female" and non_cb:
        return unknown("Needs confirmation by the study team: hCG does not apply (documented non-childbearing "
                       f"potential); confirm {agreement} as it applies.", *non_cb)
    who = "a woman of childbearing potential" if sex == "female" else \
        "a patient of unrecorded sex (record sex; treated as possibly of childbearing potential)"
    sex_ev = Evidence(facts.patient_ref, value=sex or "unknown", note="sex")
    if test.call is Result.NOT_MET:
        return unknown(f"hCG negative on {_day(test.obs)} ({who}); baseline hCG and {agreement} to confirm.",
                       *test.evidence, sex_ev)
    if test.obs is not None:
        return unknown(f"The hCG of {_day(test.obs)} has no positive/negative call ({who}); repeat or review the "
                       f"hCG, then confirm baseline hCG and {agreement}.", *test.evidence, sex_ev)
    return unknown(f"{test.missing} Order hCG ({who}); then confirm baseline hCG and {agreement}.",
                   *test.evidence, sex_ev)


def _non_childbearing(facts: Facts) -> list[Evidence]:
    """Confirmed, codable evidence that a woman cannot become pregnant (conditions and completed procedures)."""
    out = []
    for c in facts.conditions(NON_CHILDBEARING):
        if c.confirmed and not _review_note(facts, c, NON_CHILDBEARING):
            out.append(evidence_of(c, note="non-childbearing potential"))
    for p in facts.procedures(NON_CHILDBEARING):
        if p.status == "completed" and not _review_note(facts, p, NON_CHILDBEARING):
            out.append(evidence_of(p, note="non-childbearing potential"))
    return out


@criterion("I10")
def agrees_to_follow_up(facts: Facts) -> Verdict:
    """"Agree to follow-up in accordance with the protocol and the informed consent form." Attestation."""
    return attestation("the patient agrees to protocol follow-up.")


@criterion("I11")
def signs_consent(facts: Facts) -> Verdict:
    """"Voluntarily sign the ICF." Consent happens after screening; attestation."""
    return attestation("the patient voluntarily signs the informed consent form.")
