"""Exclusion criteria about virology results: E12a-E12d ("any positive results of the following virological
test results").

These exclusions are decided by test results, so a missing, unreadable or preliminary result is UNKNOWN ("order
..."), never "none recorded". Results count at any date (``recency_days.virology`` is null) and the latest final
result of each test decides. Reading a result (reference E12): the interpretation, then a coded value, then a
text value (``facts.qualitative``). For HBV DNA and HCV RNA, "detected" means any value above the assay's limit
of detection, "detected, < LLOQ" included: a number above zero, or the lab's detected / not-detected call. A
viral load is never compared against a fixed number, because IU/mL and copies/mL differ by assay.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cds_service.criteria.common import sentence_start
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence, Result, all_of, any_of
from cds_service.facts.clinical import ObservationFact
from cds_service.facts.index import Facts, evidence_of

__all__: list[str] = []

RECENCY = "virology"

_NOT_DETECTED_PREFIXES = ("not detected", "target not detected", "undetected", "tnd", "none detected")
_DETECTED_PREFIXES = ("detected",)


@dataclass(frozen=True)
class _Test:
    """The latest usable result of one test, read as positive (MET), negative (NOT_MET) or UNKNOWN."""

    result: Result
    phrase: str  # "HBsAg negative on 2026-09-20" / "no HBsAg result"
    evidence: tuple[Evidence, ...]
    obs: ObservationFact | None

    @property
    def missing(self) -> bool:
        return self.obs is None


def _raw_value(obs: ObservationFact) -> str | None:
    if obs.quantity is not None:
        return obs.quantity.display()
    if obs.text:
        return obs.text
    if obs.value_codings:
        system, code = obs.value_codings[0]
        return f"{system}|{code}" if system else code
    if obs.boolean is not None:
        return str(obs.boolean).lower()
    if obs.interpretation:
        return f"interpretation {obs.interpretation[0][1]}"
    return None


def _latest(facts: Facts, value_set: str, what: str, read: Callable[[ObservationFact], Result],
            words: tuple[str, str] = ("positive", "negative"), *, review_blocks_negative: bool = True) -> _Test:
    """The latest final result of a test, read with ``read``.

    A code whose table entry has qualifier ``positive`` states the finding itself ("HBsAg detected"): it reads
    positive unless its value says negative (a contradiction: UNKNOWN). A newer preliminary result that is not
    negative, or an unreadable Observation that may be this test, makes a negative final result UNKNOWN. A
    value-set entry with a review note (a test that cannot rule the infection out on its own) turns a negative
    reading into UNKNOWN.
    """
    sel = facts.results(value_set, RECENCY)
    obs = sel.latest
    # Final results without a date (``facts.results`` sets them aside) cannot be ordered against dated ones: one
    # that is not negative keeps a negative answer open. With no dated result, the most telling undated one is read.
    undated_all = [o for o in facts.observations(value_set)
                   if o.effective is None and not o.preliminary and _has_value(o)]
    undated = [o for o in undated_all if read(o) is not Result.NOT_MET]
    if obs is None and undated_all:
        obs = next((o for o in undated if read(o) is Result.MET), None) or (undated or undated_all)[0]
        undated = [o for o in undated if o is not obs]
    if obs is None:
        ev = tuple(evidence_of(p, note="preliminary result") for p in sel.preliminary[:1])
        if sel.superseded:  # a newer non-final result disagrees with the final one: both are the evidence
            ev = tuple(evidence_of(o, value=_raw_value(o), note=n) for o, n in zip(sel.superseded, (
                "newer, not final: disagrees with the latest final result", "latest final result"), strict=False))
        reason = facts.no_recent_reason(sel, what, RECENCY).rstrip(".")
        gap = facts.gap(("Observation",), value_set)
        if gap:
            reason = f"{reason} ({gap})"
        return _Test(Result.UNKNOWN, reason[0].lower() + reason[1:], ev, None)
    result = read(obs)
    concept = facts.concept(obs, value_set)
    if concept is not None and concept.qualifier == "positive":
        result = Result.MET if result is not Result.NOT_MET else Result.UNKNOWN
    word = {Result.MET: words[0], Result.NOT_MET: words[1]}.get(result, "unreadable")
    when = obs.effective.display() if obs.effective else "an unrecorded date"
    phrase = f"{what} {word} on {when}"
    ev = [evidence_of(obs, value=_raw_value(obs), note=f"{what}: {word}")]
    if review_blocks_negative and result is Result.NOT_MET and concept is not None and concept.review:
        result, phrase = Result.UNKNOWN, f"{phrase} ({concept.review})"
    if result is Result.NOT_MET:
        gap = facts.gap(("Observation",), value_set)
        if gap:
            # An unreadable result of this test may be the newer, positive one.
            result, phrase = Result.UNKNOWN, f"{phrase}, but {gap}"
        elif undated:
            result = Result.UNKNOWN
            phrase = f"{phrase}, but an undated result ({undated[0].ref}) is not negative"
            ev.append(evidence_of(undated[0], value=_raw_value(undated[0]), note="no effective date"))
    if result is Result.NOT_MET:
        newer = [p for p in sel.preliminary
                 if p.effective is not None and (obs.effective is None or p.effective.start > obs.effective.start)
                 and read(p) is not Result.NOT_MET]
        if newer:
            result = Result.UNKNOWN
            phrase = f"{phrase}, but a newer preliminary result ({newer[0].ref}) is not negative: await the final"
            ev.append(evidence_of(newer[0], value=_raw_value(newer[0]), note="preliminary result"))
    if result is Result.UNKNOWN and word == "unreadable":
        q = obs.quantity
        if q is not None and q.comparator in ("<", "<="):
            phrase = (f"{what} {q.display()} on {when} does not say whether it was {words[0]} below the "
                      f"quantification limit or {words[1]}")
        else:
            phrase = f"{what} on {when} cannot be read as {words[0]} or {words[1]}"
    return _Test(result, phrase, tuple(ev), obs)


def _may_follow(later: ObservationFact, earlier: ObservationFact) -> bool:
    """Could ``later`` have been done on or after ``earlier``? (Yes when either date is missing.)"""
    if later.effective is None or earlier.effective is None:
        return True
    return later.effective.end >= earlier.effective.start


def _has_value(obs: ObservationFact) -> bool:
    """Carries a result (a dataAbsentReason with no value is no result)."""
    return obs.absent is None or obs.quantity is not None or bool(obs.value_codings) or bool(obs.components)


def _nucleic_acid(facts: Facts, obs: ObservationFact) -> Result:
    """Detected (MET) / not detected (NOT_MET) / UNKNOWN for a viral DNA or RNA result.

    The lab's call (interpretation, coded or text value, "Detected <20 IU/mL") wins. Otherwise a number above
    zero is detected and zero is not. A bare censored value ("<20 IU/mL") does not say whether virus was detected
    below the quantification limit or not detected at all, so it is UNKNOWN unless the site sets
    ``thresholds.viral_load_below_limit`` to ``not-detected`` (its assays report "<" only for "not detected").
    """
    call = facts.qualitative(replace(obs, quantity=None))
    if call is not Result.UNKNOWN:
        return call
    if obs.text:
        text = obs.text.strip().lower()
        if text.startswith(_NOT_DETECTED_PREFIXES):
            return Result.NOT_MET
        if text.startswith(_DETECTED_PREFIXES):
            return Result.MET
    q = obs.quantity
    if q is None:
        return Result.UNKNOWN
    if q.comparator in ("<", "<="):
        below = facts.rules.thresholds["viral_load_below_limit"]
        return Result.NOT_MET if below == "not-detected" else Result.UNKNOWN
    if q.comparator in (">", ">="):
        return Result.MET
    return Result.MET if q.value > 0 else Result.NOT_MET


def _conditions(facts: Facts, value_set: str, *, any_status: bool, findings: str | None = None
                ) -> tuple[list[Evidence], list[Evidence], list[Evidence]]:
    """(deciding, doubtful, inactive) evidence from diagnosis Conditions of the value set.

    Deciding: confirmed, and active (or any status when ``any_status``: HIV does not resolve). Doubtful:
    unconfirmed, a code marked for review, or no clinicalStatus. Inactive: resolved / inactive (shown only).
    ``findings``: a test value set whose qualifier-``positive`` codes ("HBsAg detected") may be recorded as
    Conditions; they count like a diagnosis.
    """
    deciding: list[Evidence] = []
    doubtful: list[Evidence] = []
    inactive: list[Evidence] = []
    pairs = [(c, value_set) for c in facts.conditions(value_set)]
    if findings is not None:
        pairs += [(c, findings) for c in facts.conditions(findings)
                  if (hit := facts.concept(c, findings)) is not None and hit.qualifier == "positive"]
    for c, vs in pairs:
        status = f"clinicalStatus {c.clinical_status}" if c.clinical_status else "no clinicalStatus"
        concept = facts.concept(c, vs)
        if not c.confirmed:
            doubtful.append(evidence_of(c, note=f"verificationStatus {c.verification}: confirm the diagnosis"))
        elif concept is not None and concept.review:
            doubtful.append(evidence_of(c, note=concept.review))
        elif any_status or c.active is True:
            deciding.append(evidence_of(c, note=status))
        elif c.active is None:
            doubtful.append(evidence_of(c, note=f"{status}: is the infection current?"))
        else:
            inactive.append(evidence_of(c, note=status))
    return deciding, doubtful, inactive


def _names(evidence: Sequence[Evidence]) -> str:
    return ", ".join(e.display or (e.code.rsplit("|", 1)[-1] if e.code else e.reference) for e in evidence[:2])


# --- E12a -----------------------------------------------------------------------------------------------------


@criterion("E12a")
def hiv_antibody_positive(facts: Facts) -> Verdict:
    """"Human immunodeficiency virus antibodies (HIV antibodies)" positive.

    MET: a positive HIV antibody (or Ag/Ab) result not refuted by a negative confirmatory test done on or after
    it; a positive confirmatory test; or a confirmed HIV diagnosis (any status). A reactive screen with a
    negative confirmatory, a confirmatory without its screen, or an inconclusive-HIV Condition (R75) is UNKNOWN
    (review). A negative latest screen is NOT_MET; no result is UNKNOWN (order the test).
    """
    hiv, doubtful, _ = _conditions(facts, "hiv-condition", any_status=True)
    if hiv:
        return met(f"HIV infection recorded ({_names(hiv)}).", *hiv)
    doubtful += [evidence_of(c, note="inconclusive laboratory evidence of HIV: review")
                 for c in facts.conditions("hiv-inconclusive")]
    screen = _latest(facts, "hiv-antibody", "HIV antibody", facts.qualitative)
    conf = _latest(facts, "hiv-confirmatory", "HIV confirmatory test", facts.qualitative)
    if screen.result is Result.MET:
        later_conf = conf.obs is not None and _may_follow(conf.obs, screen.obs)
        if later_conf and conf.result is Result.NOT_MET:
            return unknown(f"Reactive HIV screen ({screen.phrase}) with a negative confirmatory test "
                           f"({conf.phrase}): review (false-positive screen or early infection).",
                           *screen.evidence, *conf.evidence)
        if later_conf and conf.result is Result.UNKNOWN:
            return unknown(f"Reactive HIV screen ({screen.phrase}); {conf.phrase}: review the confirmatory test.",
                           *screen.evidence, *conf.evidence)
        return met(f"{sentence_start(screen.phrase)}.", *screen.evidence, *conf.evidence)
    if conf.result is Result.MET:
        if screen.result is Result.NOT_MET and _may_follow(screen.obs, conf.obs):
            return unknown(f"Positive HIV confirmatory test ({conf.phrase}) but a later negative screen "
                           f"({screen.phrase}): review.", *conf.evidence, *screen.evidence)
        return met(f"{sentence_start(conf.phrase)}.", *conf.evidence, *screen.evidence)
    if doubtful:
        return unknown(f"Possible HIV infection: review {_names(doubtful)} ({_why(doubtful[0])}).", *doubtful,
                       *screen.evidence, *conf.evidence)
    if screen.result is Result.NOT_MET:
        return not_met(f"{sentence_start(screen.phrase)}.", *screen.evidence, *conf.evidence)
    if not screen.missing:
        return unknown(f"{sentence_start(screen.phrase)}: review the report or repeat the test.", *screen.evidence)
    if not conf.missing:
        return unknown(f"Only an HIV confirmatory test on record ({conf.phrase}), whose screening result is "
                       "missing: review, or order an HIV-1/2 antibody test.", *conf.evidence)
    return unknown(f"{sentence_start(screen.phrase)}: order an HIV-1/2 antibody test.", *screen.evidence)


# --- E12b -----------------------------------------------------------------------------------------------------


@criterion("E12b")
def hepatitis_b_positive(facts: Facts) -> Verdict:
    """"Hepatitis B surface antigen (HBsAg) positive; Or hepatitis B core antibody (HBcAb) positive, and
    hepatitis B virus (HBV) -DNA copy number higher than the lower limit of detection."

    MET: HBsAg positive; HBcAb positive with HBV DNA detected (any level above the LLOD, "< LLOQ" included); or
    an active chronic hepatitis B diagnosis. NOT_MET: HBsAg negative and either HBcAb negative or HBV DNA not
    detected. Otherwise UNKNOWN, saying which test to order: no HBsAg, HBsAg negative without HBcAb, HBcAb
    positive without HBV DNA. HBV DNA detected with a negative HBcAb is not excluded by the literal text but
    goes to review (occult or seronegative infection).
    """
    hbv, doubtful, inactive = _conditions(facts, "hepatitis-b-condition", any_status=False, findings="hbsag")
    if hbv:
        return met(f"Hepatitis B infection recorded ({_names(hbv)}).", *hbv)
    hbsag = _latest(facts, "hbsag", "HBsAg", facts.qualitative)
    hbcab = _latest(facts, "hbcab", "HBcAb", facts.qualitative)
    dna = _latest(facts, "hbv-dna", "HBV DNA", lambda o: _nucleic_acid(facts, o), ("detected", "not detected"))
    evidence = (*hbsag.evidence, *hbcab.evidence, *dna.evidence)
    if hbsag.result is Result.MET:
        return met(f"{sentence_start(hbsag.phrase)}.", *evidence)
    core = all_of([hbcab.result, dna.result])
    if core is Result.MET:
        return met(f"{sentence_start(hbcab.phrase)} and {dna.phrase}.", *evidence)
    overall = any_of([hbsag.result, core])
    if doubtful:
        return unknown(f"Possible hepatitis B: review {_names(doubtful)} ({_why(doubtful[0])}).", *doubtful,
                       *evidence)
    if hbcab.result is Result.NOT_MET and dna.result is Result.MET:
        return unknown(f"{sentence_start(dna.phrase)} although {hbcab.phrase}: review (occult or seronegative "
                       "hepatitis B).", *evidence)
    if overall is Result.NOT_MET:
        second = hbcab.phrase if hbcab.result is Result.NOT_MET else f"{hbcab.phrase} and {dna.phrase}"
        return not_met(f"{sentence_start(hbsag.phrase)}; {second}.", *evidence, *inactive)
    if hbsag.result is Result.UNKNOWN:
        todo = "order HBsAg (and HBcAb)" if hbsag.missing else "review the HBsAg report"
        return unknown(f"{sentence_start(hbsag.phrase)}: {todo}.", *evidence)
    if hbcab.result is Result.UNKNOWN:
        todo = "order HBcAb" if hbcab.missing else "review the HBcAb report"
        return unknown(f"{sentence_start(hbsag.phrase)}, but {hbcab.phrase}: {todo}.", *evidence)
    todo = "order HBV DNA" if dna.missing else "check the HBV DNA report"
    return unknown(f"{sentence_start(hbsag.phrase)}; {hbcab.phrase}, and {dna.phrase}: {todo}.", *evidence)


# --- E12c -----------------------------------------------------------------------------------------------------


@criterion("E12c")
def hepatitis_c_positive(facts: Facts) -> Verdict:
    """"Hepatitis C virus antibody positive, and hepatitis C virus RNA higher than the lower limit of detection."

    MET: HCV antibody positive with HCV RNA detected, or an active hepatitis C diagnosis. NOT_MET: antibody
    negative, or RNA not detected. UNKNOWN: antibody positive without RNA (order HCV RNA), no antibody result,
    or RNA detected with a negative antibody (not excluded by the literal text, but seronegative infection occurs
    in immunosuppressed patients: review).
    """
    hcv, doubtful, inactive = _conditions(facts, "hepatitis-c-condition", any_status=False)
    if hcv:
        return met(f"Active hepatitis C recorded ({_names(hcv)}).", *hcv)
    ab = _latest(facts, "hcv-antibody", "HCV antibody", facts.qualitative)
    rna = _latest(facts, "hcv-rna", "HCV RNA", lambda o: _nucleic_acid(facts, o), ("detected", "not detected"))
    evidence = (*ab.evidence, *rna.evidence)
    overall = all_of([ab.result, rna.result])
    if overall is Result.MET:
        return met(f"{sentence_start(ab.phrase)} and {rna.phrase}.", *evidence)
    if doubtful:
        return unknown(f"Possible hepatitis C: review {_names(doubtful)} ({_why(doubtful[0])}).", *doubtful,
                       *evidence)
    if rna.result is Result.MET:
        why = "review (seronegative hepatitis C)" if ab.result is Result.NOT_MET else "review the antibody status"
        return unknown(f"{sentence_start(rna.phrase)}; {ab.phrase}: {why}.", *evidence)
    if overall is Result.NOT_MET:
        text = ab.phrase if ab.result is Result.NOT_MET else rna.phrase
        if ab.result is Result.MET:
            text = f"{ab.phrase}, but {rna.phrase}"
        return not_met(f"{sentence_start(text)}.", *evidence, *inactive)
    if ab.result is Result.MET:
        todo = "order HCV RNA" if rna.missing else "check the HCV RNA report"
        return unknown(f"{sentence_start(ab.phrase)} and {rna.phrase}: {todo}.", *evidence)
    todo = "order an HCV antibody test" if ab.missing else "review the HCV antibody report"
    return unknown(f"{sentence_start(ab.phrase)}: {todo}.", *evidence)


# --- E12d -----------------------------------------------------------------------------------------------------


@criterion("E12d")
def treponemal_antibody_positive(facts: Facts) -> Verdict:
    """"Treponema pallidum antibody (TPPA antibody)" positive.

    A treponemal antibody test (TPPA, TPHA, TP immunoassay) decides: positive -> MET (it stays positive after
    cured syphilis, and the text still excludes), negative -> NOT_MET. A non-treponemal test (RPR, VDRL) is not
    TPPA: a positive one without a treponemal result goes to review; none at all -> UNKNOWN (order TPPA).
    """
    trep = _latest(facts, "treponemal-antibody", "Treponema pallidum antibody", facts.qualitative)
    nontrep = _latest(facts, "nontreponemal-test", "RPR/VDRL", facts.qualitative, review_blocks_negative=False)
    if trep.result is Result.MET:
        return met(f"{sentence_start(trep.phrase)}.", *trep.evidence)
    if trep.result is Result.NOT_MET:
        return not_met(f"{sentence_start(trep.phrase)}.", *trep.evidence, *nontrep.evidence)
    if not trep.missing:
        return unknown(f"{sentence_start(trep.phrase)}: review the report or repeat the test.", *trep.evidence,
                       *nontrep.evidence)
    if nontrep.result is Result.MET:
        return unknown(f"{sentence_start(nontrep.phrase)} and {trep.phrase}: order a Treponema pallidum antibody test "
                       "(TPPA) to confirm.", *nontrep.evidence)
    also = f" (a non-treponemal test is not TPPA: {nontrep.phrase})" if not nontrep.missing else ""
    return unknown(f"{sentence_start(trep.phrase)}{also}: order a Treponema pallidum antibody test (TPPA).",
                   *trep.evidence, *nontrep.evidence)


def _why(e: Evidence) -> str:
    """An evidence note inside a sentence (without its own full stop)."""
    return (e.note or "").rstrip(".")
