"""Inclusion criteria I1-I11. Each function's docstring quotes the protocol sentence it implements.

This module does no I/O.
"""

from __future__ import annotations

from dateutil.relativedelta import relativedelta

from cds_service.criteria.common import attestation
from cds_service.criteria.registry import Verdict, criterion, met, not_met, unknown
from cds_service.criteria.result import Evidence
from cds_service.facts.index import Facts

__all__: list[str] = []


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
    at = facts.at
    ages = {relativedelta(at, birth.start).years, relativedelta(at, birth.end).years}
    ev = Evidence(facts.patient_ref, value=f"born {birth.display()}", date=birth.display(), note="birthDate")
    ok = {t["age_min_years"] <= a <= t["age_max_years"] for a in ages}
    age_text = "-".join(str(a) for a in sorted(ages))
    if ok == {True}:
        return met(f"Age {age_text} at consent is within {t['age_min_years']}-{t['age_max_years']}.", ev)
    if ok == {False}:
        return not_met(f"Age {age_text} at consent is outside {t['age_min_years']}-{t['age_max_years']}.", ev)
    return unknown(f"The partial birth date gives an age of {age_text}, on both sides of the age limit.", ev)


@criterion("I4")
def estimated_survival(facts: Facts) -> Verdict:
    """"Estimated survival >=3 months." Investigator judgement: no record can decide it."""
    return attestation("estimated survival of at least 3 months.")


@criterion("I5")
def confirmed_donor(facts: Facts) -> Verdict:
    """"Have a confirmed donor for allogeneic hematopoietic stem cell transplantation." No standard FHIR data."""
    return attestation("a confirmed allogeneic stem-cell donor.")


@criterion("I10")
def agrees_to_follow_up(facts: Facts) -> Verdict:
    """"Agree to follow-up in accordance with the protocol and the informed consent form." Attestation."""
    return attestation("the patient agrees to protocol follow-up.")


@criterion("I11")
def signs_consent(facts: Facts) -> Verdict:
    """"Voluntarily sign the ICF." Consent happens after screening; attestation."""
    return attestation("the patient voluntarily signs the informed consent form.")
