"""Exclusion criteria (other): E17, E18, E19. Each function's docstring quotes the protocol sentence it implements.

This module does no I/O.
"""

from __future__ import annotations

from cds_service.criteria.common import attestation
from cds_service.criteria.registry import Verdict, criterion, met, unknown
from cds_service.criteria.result import Evidence, Result
from cds_service.facts.clinical import ObservationFact
from cds_service.facts.derived import pregnancy_test
from cds_service.facts.index import Facts, evidence_of

__all__: list[str] = []

# Value-set ids (fhir_mappings/value-sets/<id>.json).
PREGNANCY_STATUS = "pregnancy-status"  # the observation codes (LOINC 82810-3)
PREGNANT = "pregnant"  # its "pregnant" answers (SNOMED 77386006)
PREGNANCY_CONDITION = "pregnancy-condition"  # Z33.1, Z34.x, Z3A.x, O-chapter
BREASTFEEDING_STATUS = "breastfeeding-status"  # LOINC 63895-7
BREASTFEEDING = "breastfeeding"  # "currently breast-feeding" answers and conditions (Z39.1)


@criterion("E17")
def pregnant_nursing_or_planning_children(facts: Facts) -> Verdict:
    """"Pregnant women or nursing women who do not agree to give up breastfeeding, men and women who plan to have
    children during the study period or within 2 years after receiving the study treatment."

    MET when pregnancy is documented: the latest pregnancy-status Observation (``hcg`` recency window) says
    pregnant, the latest hCG in that window is positive, or a confirmed active pregnancy Condition exists.
    Breastfeeding is UNKNOWN (it excludes only if she does not agree to stop). Every other patient is UNKNOWN too:
    the plan to have children within 2 years applies to men and women alike and only the patient can state it.
    So E17 is MET or UNKNOWN, never NOT_MET; a male or documented non-childbearing patient is still asked about
    family planning.
    """
    family = "family-planning intentions (no plan to have children during the study or for 2 years after " \
             "treatment) to confirm with the patient"
    if facts.sex == "male":
        return unknown(f"Needs confirmation by the study team: {family}.",
                       Evidence(facts.patient_ref, value="male", note="sex"))
    pregnant: list[Evidence] = []
    why: list[str] = []
    doubt: list[Evidence] = []
    known: list[str] = []
    status = _latest_status(facts, PREGNANCY_STATUS)
    if status is not None:
        if facts.codes_in(status.value_codings, PREGNANT) is not None:
            pregnant.append(evidence_of(status, note="pregnancy status: pregnant"))
            why.append(f"pregnancy status 'pregnant' on {status.effective.display()}")
        else:
            doubt.append(evidence_of(status, note="pregnancy status"))
            known.append(f"pregnancy status recorded on {status.effective.display()} is not 'pregnant'")
    test = pregnancy_test(facts)
    if test.call is Result.MET:
        pregnant.extend(test.evidence)
        why.append(f"hCG positive on {test.obs.effective.display()}")
    elif test.call is Result.NOT_MET:
        doubt.extend(test.evidence)
        known.append(f"hCG negative on {test.obs.effective.display()}")
    for c in facts.conditions(PREGNANCY_CONDITION):
        concept = facts.concept(c, PREGNANCY_CONDITION)
        if concept is not None and concept.review and c.active is not False:
            # Delivery / puerperium codes: recently pregnant rather than pregnant now.
            doubt.append(evidence_of(c, note=f"review: {concept.review}"))
            known.append(f"{c.display or c.ref} needs review ({concept.review})")
        elif c.active is True and c.confirmed:
            pregnant.append(evidence_of(c, note="active pregnancy condition"))
            why.append(f"active pregnancy condition {c.display or c.ref}")
        elif c.active is not False:
            doubt.append(evidence_of(c, note="pregnancy condition: status unclear"))
            known.append(f"a pregnancy condition ({c.display or c.ref}) has an unclear status")
    if pregnant:
        return met(f"Pregnancy is documented: {'; '.join(why)}.", *pregnant)
    nursing = _breastfeeding(facts)
    if nursing:
        return unknown("Breastfeeding is documented: she is excluded unless she agrees to stop breastfeeding; also "
                       f"{family}.", *nursing, *doubt)
    context = f" ({'; '.join(known)})" if known else ""
    return unknown(f"Needs confirmation by the study team: pregnancy, breastfeeding and {family}{context}.", *doubt)


def _latest_status(facts: Facts, value_set: str) -> ObservationFact | None:
    """The latest final status Observation of the set within the ``hcg`` recency window."""
    return facts.results(value_set, "hcg").latest


def _breastfeeding(facts: Facts) -> list[Evidence]:
    out = []
    status = _latest_status(facts, BREASTFEEDING_STATUS)
    if status is not None and facts.codes_in(status.value_codings, BREASTFEEDING) is not None:
        out.append(evidence_of(status, note="breastfeeding"))
    for c in facts.conditions(BREASTFEEDING):
        if c.active is not False:
            concept = facts.concept(c, BREASTFEEDING)
            note = f"review: {concept.review}" if concept is not None and concept.review else "breastfeeding"
            out.append(evidence_of(c, note=note))
    return out


@criterion("E18")
def unresolved_prior_toxicity(facts: Facts) -> Verdict:
    """"Acute side effects caused by previous treatment did not return to grade 1 or below (except those that the
    investigators judged to have no safety risk)."

    FHIR R4 has no standard CTCAE grade; Condition.severity is not a CTCAE grade. Investigator assessment.
    """
    return attestation("acute toxicities of prior treatment have recovered to CTCAE grade 1 or below (except those "
                       "the investigator judges to carry no safety risk, e.g. alopecia).")


@criterion("E19")
def investigator_judgement(facts: Facts) -> Verdict:
    """"According to the investigator's judgment, conditions that interfere with the subject's participation in the
    entire trial, confound the trial results, or make participation not in the best interest of the subject."

    Investigator judgement: no record can decide it.
    """
    return attestation("no condition that would interfere with participation, confound the results or make "
                       "participation not in the patient's best interest (investigator judgement).")
