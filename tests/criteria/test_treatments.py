"""E1, E2a-E2e, E4, E5, E15, E16: prior and recent treatments.

Each test evaluates one criterion function on a record built from raw FHIR JSON, at the fixed time AT
(2026-10-01T09:00Z), so the tests do not depend on the other criteria modules or on today's date.
"""

import json
from dataclasses import replace
from datetime import date

import pytest
from builders import (
    AT,
    ATC,
    CPT,
    ICD10CM,
    PCS,
    RXNORM,
    SCT,
    allergy,
    cc,
    condition,
    date_ago,
    days_ago,
    immunization,
    medication_administration,
    medication_request,
    medication_statement,
    patient,
    procedure,
    record_of,
)

import cds_service.criteria.treatments  # noqa: F401  (registers the criteria)
from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import REGISTRY
from cds_service.criteria.result import Result
from cds_service.facts.codes import load_code_tables
from cds_service.facts.index import Facts

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN

# Codes (all from the shipped value sets).
FLUDARABINE, CYCLOPHOSPHAMIDE, TOCILIZUMAB = "24698", "3002", "612865"
DEX, PRED, METHYLPRED = "3264", "8640", "6902"
AZACITIDINE, GILTERITINIB, VENETOCLAX, IDARUBICIN = "1251", "2105806", "1747556", "5650"
ORAL, INHALED = "26643006", "447694001"
LOCAL = "http://example.org/local-codes"  # a site's own codes: in no value set


def verdict(criterion_id, *resources, not_retrieved=None, at=AT, knowledge=None):
    facts = Facts(record_of(patient(), *resources, not_retrieved=not_retrieved), at,
                  knowledge or default_knowledge())
    return REGISTRY[criterion_id](facts)


def with_windows(**changes) -> Knowledge:
    k = default_knowledge()
    return Knowledge(k.tables, replace(k.rules, windows={**k.rules.windows, **changes}))


def refs(v):
    return [e.reference for e in v.evidence]


def period_procedure(system, code, start, end=None, status="completed"):
    res = procedure(system, code, status=status)
    res["performedPeriod"] = {"start": start, **({"end": end} if end else {})}
    return res


# === E1: allergy to a study-drug ingredient ==================================================================

@pytest.mark.parametrize("code", [FLUDARABINE, CYCLOPHOSPHAMIDE, TOCILIZUMAB])
def test_E1_allergy_to_study_drug_is_met(code):
    a = allergy(RXNORM, code)
    v = verdict("E1", a)
    assert v.result is MET
    assert refs(v) == [f"AllergyIntolerance/{a['id']}"]


def test_E1_reaction_substance_matches_too():
    a = allergy(LOCAL, "drug-allergy")
    a["reaction"] = [{"substance": cc(RXNORM, FLUDARABINE), "manifestation": [cc(LOCAL, "rash")]}]
    assert verdict("E1", a).result is MET


@pytest.mark.parametrize(("clinical", "verification"), [
    ("active", "refuted"), ("active", "entered-in-error"), ("resolved", "confirmed"), ("inactive", "confirmed"),
])
def test_E1_refuted_or_inactive_allergy_is_ignored(clinical, verification):
    v = verdict("E1", allergy(RXNORM, FLUDARABINE, clinical=clinical, verification=verification))
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_E1_dmso_allergy_is_unknown_for_review():
    v = verdict("E1", allergy(ATC, "G04BX13"))
    assert v.result is UNKNOWN
    assert "sponsor" in v.reason


def test_E1_no_known_allergy_is_not_met_with_excipient_note():
    v = verdict("E1", allergy(SCT, "716186003"))
    assert v.result is NOT_MET
    assert "no known allergy" in v.reason
    assert "DMSO, albumin, dextran-40" in v.reason


def test_E1_other_allergies_recorded_is_not_met():
    v = verdict("E1", allergy(LOCAL, "peanut"), allergy(LOCAL, "latex"))
    assert v.result is NOT_MET
    assert "2 recorded allergies" in v.reason
    assert "excipients" in v.reason
    assert len(v.evidence) == 2


def test_E1_empty_allergy_list_is_none_recorded():
    v = verdict("E1")
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")
    assert "excipients" in v.reason


def test_E1_allergies_not_retrieved_is_unknown():
    v = verdict("E1", not_retrieved={"AllergyIntolerance": "timeout"})
    assert v.result is UNKNOWN
    assert "timeout" in v.reason


def test_E1_unreadable_allergy_with_study_drug_code_is_unknown():
    bad = allergy(RXNORM, CYCLOPHOSPHAMIDE)
    bad["clinicalStatus"] = "active"  # not a CodeableConcept: the resource cannot be read
    v = verdict("E1", bad)
    assert v.result is UNKNOWN
    assert "could not be read" in v.reason


def test_E1_unrelated_allergy_does_not_hide_a_study_drug_allergy():
    assert verdict("E1", allergy(SCT, "716186003"), allergy(RXNORM, TOCILIZUMAB)).result is MET


# === E2a: >= 70 mg prednisone-equivalent in 7 days ============================================================

def dex(days, mg, **kw):
    return medication_administration(RXNORM, DEX, date=days_ago(days), dose_mg=mg, **kw)


def test_E2a_dexamethasone_10_5_mg_in_7_days_is_met():
    v = verdict("E2a", dex(1, 3.5), dex(2, 3.5), dex(3, 3.5))
    assert v.result is MET  # 10.5 mg x 6.67 = 70.0 mg prednisone-equivalent
    assert "70.0" in v.reason and "as of 2026-10-01" in v.reason
    assert "administrations (dexamethasone)" in v.reason
    # Oldest dose (3 days ago, 09:00) leaves the window 7 days later: 2026-10-05 09:00 -> 2026-10-06.
    assert v.until == date(2026, 10, 6)
    assert {e.unit for e in v.evidence} == {"mg prednisone-equivalent"}


def test_E2a_dexamethasone_10_mg_in_7_days_is_not_met():
    v = verdict("E2a", dex(1, 5), dex(2, 5))
    assert v.result is NOT_MET
    assert "66.7 mg" in v.reason and "as of 2026-10-01" in v.reason
    assert len(v.evidence) == 2


def test_E2a_dose_exactly_7_days_ago_is_outside_the_window():
    assert verdict("E2a", dex(7, 20)).result is NOT_MET


def test_E2a_dose_6_days_ago_is_inside_the_window():
    v = verdict("E2a", dex(6, 20))
    assert v.result is MET
    assert v.until == date(2026, 10, 3)  # 2026-09-25 09:00 + 7 days = 2026-10-02 09:00


def test_E2a_until_is_when_the_remaining_doses_fall_below_70():
    v = verdict("E2a", *(medication_administration(RXNORM, PRED, date=days_ago(d), dose_mg=40) for d in (5, 1)))
    assert v.result is MET
    assert v.until == date(2026, 10, 4)  # without the 5-days-ago dose, 40 mg < 70


def test_E2a_different_steroids_add_up():
    v = verdict("E2a", medication_administration(RXNORM, PRED, date=days_ago(1), dose_mg=40),
                medication_administration(RXNORM, METHYLPRED, date=days_ago(2), dose_mg=24))  # 40 + 30
    assert v.result is MET


def test_E2a_inhaled_route_is_not_counted():
    v = verdict("E2a", dex(1, 20, route=INHALED))
    assert v.result is NOT_MET
    assert any("non-systemic" in (e.note or "") for e in v.evidence)


def test_E2a_route_missing_is_counted_with_a_note():
    v = verdict("E2a", dex(1, 20, route=None))
    assert v.result is MET
    assert "route not recorded" in v.evidence[0].note


def test_E2a_unrecognised_route_is_unknown_when_it_could_reach_70():
    res = dex(1, 20)
    res["dosage"]["route"] = cc(LOCAL, "intra-articular")
    v = verdict("E2a", res)
    assert v.result is UNKNOWN
    assert "route" in v.reason


def test_E2a_unrecognised_route_too_small_to_matter_is_not_met():
    res = dex(1, 1)
    res["dosage"]["route"] = cc(LOCAL, "intra-articular")
    assert verdict("E2a", res).result is NOT_MET


def test_E2a_order_used_when_no_administration_exists():
    v = verdict("E2a", medication_request(RXNORM, PRED, start=date_ago(10), dose_mg=10))
    assert v.result is MET  # 10 mg/day x the 7 days of the window
    assert "orders (prednisone)" in v.reason


def test_E2a_administrations_win_over_orders_of_the_same_drug():
    v = verdict("E2a", dex(1, 1), medication_request(RXNORM, DEX, start=date_ago(10), dose_mg=8))
    assert v.result is NOT_MET
    assert "administrations (dexamethasone)" in v.reason


def test_E2a_steroid_without_dose_is_unknown():
    v = verdict("E2a", dex(1, None))
    assert v.result is UNKNOWN
    assert "check the doses" in v.reason


def test_E2a_steroid_without_equivalence_factor_is_unknown():
    res = medication_administration(ATC, "H02AB13", date=days_ago(1), dose_mg=30)  # deflazacort
    assert verdict("E2a", res).result is UNKNOWN


def test_E2a_no_steroids_is_none_recorded():
    v = verdict("E2a")
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")
    assert "as of 2026-10-01" in v.reason


def test_E2a_steroids_only_before_the_window_is_not_met_with_evidence():
    v = verdict("E2a", dex(20, 40))
    assert v.result is NOT_MET
    assert v.evidence


def test_E2a_administrations_not_retrieved_is_unknown():
    v = verdict("E2a", not_retrieved={"MedicationAdministration": "timeout"})
    assert v.result is UNKNOWN
    assert "timeout" in v.reason


def test_E2a_administrations_not_retrieved_with_small_order_is_unknown():
    v = verdict("E2a", medication_request(RXNORM, PRED, start=date_ago(3), dose_mg=5),
                not_retrieved={"MedicationAdministration": "timeout"})
    assert v.result is UNKNOWN


def test_E2a_orders_reaching_70_are_met_even_without_administrations():
    v = verdict("E2a", medication_request(RXNORM, PRED, start=date_ago(10), dose_mg=20),
                not_retrieved={"MedicationAdministration": "timeout"})
    assert v.result is MET


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_E2a_voided_administration_is_ignored(status):
    v = verdict("E2a", dex(1, 20, status=status))
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_E2a_cancelled_order_is_ignored():
    assert verdict("E2a", medication_request(RXNORM, PRED, start=date_ago(10), dose_mg=20,
                                             status="cancelled")).result is NOT_MET


# === E2b: investigator judgement, with flags ==================================================================

def test_E2b_is_unknown_without_flags():
    v = verdict("E2b")
    assert v.result is UNKNOWN
    assert "no flag" in v.reason


def test_E2b_lists_every_flag_with_evidence():
    v = verdict("E2b",
                condition(SCT, "55464009"),  # SLE, active
                condition(ICD10CM, "D89.811"),  # chronic GvHD, active
                condition(ICD10CM, "E27.1"),  # adrenal insufficiency
                medication_request(RXNORM, "42316", start=date_ago(60)))  # tacrolimus, ongoing
    assert v.result is UNKNOWN
    for flag in ("active autoimmune disease", "active GvHD", "steroid-dependence", "current immunosuppressant"):
        assert flag in v.reason
    assert len(v.evidence) == 4


def test_E2b_resolved_disease_and_old_immunosuppressant_are_not_flags():
    v = verdict("E2b", condition(SCT, "55464009", clinical="resolved"),
                medication_request(RXNORM, "42316", start=date_ago(200), end=date_ago(60), status="completed"))
    assert v.result is UNKNOWN
    assert "no flag" in v.reason and not v.evidence


# === E2c: anti-tumour therapy washout =========================================================================

def admin(code, days, system=RXNORM, **kw):
    return medication_administration(system, code, date=days_ago(days), dose_mg=100, route=None, **kw)


def test_E2c_azacitidine_2_days_ago_is_not_met():
    v = verdict("E2c", admin(AZACITIDINE, 2))  # window 5 x 0.69 h = 3.45 h
    assert v.result is NOT_MET
    assert "3.5 h" in v.evidence[0].note


def test_E2c_azacitidine_2_hours_ago_is_met():
    v = verdict("E2c", admin(AZACITIDINE, 2 / 24))
    assert v.result is MET
    assert v.until == date(2026, 10, 2)


def test_E2c_gilteritinib_10_days_ago_is_met_with_14_day_cap():
    v = verdict("E2c", admin(GILTERITINIB, 10))
    assert v.result is MET
    assert "14 days" in v.reason
    assert v.until == date(2026, 10, 6)  # 2026-09-21 09:00 + 14 days = 2026-10-05 09:00


def test_E2c_gilteritinib_exactly_14_days_ago_is_outside():
    assert verdict("E2c", admin(GILTERITINIB, 14)).result is NOT_MET


def test_E2c_gilteritinib_13_days_ago_is_inside():
    assert verdict("E2c", admin(GILTERITINIB, 13)).result is MET


@pytest.mark.parametrize(("days", "expected"), [(5, MET), (6, NOT_MET)])
def test_E2c_venetoclax_five_half_lives_is_5_4_days(days, expected):
    assert verdict("E2c", admin(VENETOCLAX, days)).result is expected


def test_E2c_atc_coded_drug_uses_the_same_half_life():
    assert verdict("E2c", admin("L01BC07", 2, system=ATC)).result is NOT_MET  # azacitidine by ATC


def test_E2c_unknown_half_life_uses_14_days_and_says_so():
    v = verdict("E2c", admin(IDARUBICIN, 10))
    assert v.result is MET
    assert "half-life unknown: 14 days used" in v.reason


def test_E2c_unknown_half_life_15_days_ago_is_not_met():
    assert verdict("E2c", admin(IDARUBICIN, 15)).result is NOT_MET


def test_E2c_longer_rule_makes_azacitidine_2_days_ago_met():
    v = verdict("E2c", admin(AZACITIDINE, 2), knowledge=with_windows(washout_rule="longer"))
    assert v.result is MET


def test_E2c_active_order_past_its_expected_course_goes_to_review():
    # Issue 9: an active order with no end date was "assumed still taken" for ever, and its until moved with the
    # evaluation time. A 60-day-old venetoclax order with no supply duration has run its default 30-day course
    # (2026-09-01), before the 130 h washout: the order is still active, so confirm no dose since (UNKNOWN), not
    # an exclusion that renews itself every day.
    v = verdict("E2c", medication_request(RXNORM, VENETOCLAX, start=date_ago(60)))
    assert v.result is UNKNOWN
    assert "past its expected course, which ended 2026-09-01" in v.reason and v.until is None


def test_E2c_active_order_within_its_expected_course_is_met_with_a_fixed_until():
    v = verdict("E2c", medication_request(RXNORM, VENETOCLAX, start="2026-09-25"))
    assert v.result is MET
    assert "expected course runs to 2026-10-25" in v.reason
    assert v.until == date(2026, 10, 31)  # 2026-10-25 00:00 + 130 h = 2026-10-30 10:00


def test_E2c_future_order_is_not_received():
    v = verdict("E2c", medication_request(RXNORM, VENETOCLAX, start=date_ago(-5)))
    assert v.result is NOT_MET


def test_E2c_order_ended_20_days_ago_is_not_met():
    v = verdict("E2c", medication_request(RXNORM, GILTERITINIB, start=date_ago(60), end=date_ago(20),
                                          status="completed"))
    assert v.result is NOT_MET
    assert v.evidence


def test_E2c_statement_end_is_the_last_dose():
    v = verdict("E2c", medication_statement(RXNORM, GILTERITINIB, start=date_ago(60), end=date_ago(3)))
    assert v.result is MET


def test_E2c_completed_order_without_end_started_long_ago_is_unknown():
    v = verdict("E2c", medication_request(RXNORM, GILTERITINIB, start=date_ago(60), status="completed"))
    assert v.result is UNKNOWN
    assert "end date not recorded" in v.evidence[0].note


def test_E2c_completed_order_without_end_covered_by_administrations_is_not_met():
    v = verdict("E2c", medication_request(RXNORM, GILTERITINIB, start=date_ago(60), status="completed"),
                admin(GILTERITINIB, 30))
    assert v.result is NOT_MET


def test_E2c_partial_date_straddling_the_window_is_unknown():
    res = medication_administration(RXNORM, GILTERITINIB, date="2026-09", dose_mg=120)
    assert verdict("E2c", res).result is UNKNOWN


def test_E2c_review_flagged_drug_is_unknown():
    v = verdict("E2c", admin("L01XF01", 3, system=ATC))  # tretinoin (ATRA)
    assert v.result is UNKNOWN


def test_E2c_intrathecal_chemotherapy_is_unknown():
    v = verdict("E2c", procedure(PCS, "3E0R305", performed=days_ago(5)))
    assert v.result is UNKNOWN
    assert "intrathecal" in v.reason


def test_E2c_old_intrathecal_chemotherapy_is_not_counted():
    v = verdict("E2c", procedure(PCS, "3E0R305", performed=days_ago(40)))
    assert v.result is NOT_MET


def test_E2c_text_only_regimen_is_unknown():
    res = medication_statement(RXNORM, VENETOCLAX, start=date_ago(5))
    res["medicationCodeableConcept"] = {"text": "VA cycle 2"}
    v = verdict("E2c", res)
    assert v.result is UNKNOWN
    assert "text only" in v.evidence[0].note


def test_E2c_none_recorded():
    v = verdict("E2c")
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_E2c_administrations_not_retrieved_is_unknown():
    assert verdict("E2c", not_retrieved={"MedicationAdministration": "timeout"}).result is UNKNOWN


@pytest.mark.parametrize("status", ["entered-in-error", "not-done"])
def test_E2c_voided_administration_is_ignored(status):
    v = verdict("E2c", admin(GILTERITINIB, 3, status=status))
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


# === E2d: radiotherapy within 4 weeks =========================================================================

def test_E2d_last_fraction_decides_not_the_course_start():
    p = period_procedure(SCT, "1287742003", start=days_ago(40), end=days_ago(10))
    v = verdict("E2d", p)
    assert v.result is MET
    assert v.until == date(2026, 10, 20)  # 2026-09-21 09:00 + 28 days = 2026-10-19 09:00


def test_E2d_course_that_ended_before_the_window_is_not_met():
    v = verdict("E2d", period_procedure(SCT, "1287742003", start=days_ago(60), end=days_ago(30)))
    assert v.result is NOT_MET


def test_E2d_exactly_28_days_ago_is_outside():
    assert verdict("E2d", procedure(CPT, "77385", performed=days_ago(28))).result is NOT_MET


def test_E2d_27_days_ago_is_inside():
    assert verdict("E2d", procedure(CPT, "77385", performed=days_ago(27))).result is MET


def test_E2d_course_in_progress_is_met():
    p = period_procedure(SCT, "1217123003", start=days_ago(60), status="in-progress")
    assert verdict("E2d", p).result is MET


def test_E2d_completed_course_without_end_is_unknown():
    assert verdict("E2d", period_procedure(SCT, "1217123003", start=days_ago(60))).result is UNKNOWN


def test_E2d_radiotherapy_category_counts():
    p = procedure(LOCAL, "tbi-12gy", performed=days_ago(5))
    p["category"] = cc(SCT, "108290001")
    assert verdict("E2d", p).result is MET


def test_E2d_radiotherapy_encounter_diagnosis_is_dated_by_onset():
    assert verdict("E2d", condition(ICD10CM, "Z51.0", onset=days_ago(10))).result is MET


def test_E2d_undated_history_alone_is_unknown():
    v = verdict("E2d", condition(ICD10CM, "Z92.3", clinical=None))
    assert v.result is UNKNOWN
    assert "without a date" in v.reason


def test_E2d_history_recorded_before_the_window_is_not_met():
    v = verdict("E2d", condition(ICD10CM, "Z92.3", clinical=None, recordedDate="2024-03-01"))
    assert v.result is NOT_MET
    assert v.evidence


def test_E2d_history_with_old_dated_radiotherapy_is_not_met():
    v = verdict("E2d", condition(ICD10CM, "Z92.3", clinical=None),
                procedure(CPT, "77385", performed="2023-05-01"))
    assert v.result is NOT_MET
    assert len(v.evidence) == 2


def test_E2d_history_does_not_hide_recent_radiotherapy():
    v = verdict("E2d", condition(ICD10CM, "Z92.3", clinical=None),
                procedure(CPT, "77385", performed=days_ago(3)))
    assert v.result is MET


def test_E2d_not_done_procedure_is_ignored():
    v = verdict("E2d", procedure(CPT, "77385", performed=days_ago(3), status="not-done"))
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_E2d_procedures_not_retrieved_is_unknown():
    assert verdict("E2d", not_retrieved={"Procedure": "403 forbidden"}).result is UNKNOWN


# === E2e: DLI within 6 weeks ==================================================================================

def test_E2e_dli_20_days_ago_is_met():
    v = verdict("E2e", procedure(CPT, "38242", performed=days_ago(20)))
    assert v.result is MET
    assert v.until == date(2026, 10, 24)  # 2026-09-11 09:00 + 42 days = 2026-10-23 09:00


def test_E2e_exactly_42_days_ago_is_outside():
    assert verdict("E2e", procedure(CPT, "38242", performed=days_ago(42))).result is NOT_MET


def test_E2e_41_days_ago_is_inside():
    assert verdict("E2e", procedure(CPT, "38242", performed=days_ago(41))).result is MET


def test_E2e_undated_dli_is_unknown():
    assert verdict("E2e", procedure(CPT, "38242")).result is UNKNOWN


def test_E2e_none_recorded():
    assert verdict("E2e").reason.startswith("None recorded")


def test_E2e_procedures_not_retrieved_is_unknown():
    assert verdict("E2e", not_retrieved={"Procedure": "timeout"}).result is UNKNOWN


# === E4: prior CAR-T / gene-modified cell therapy =============================================================

@pytest.mark.parametrize("resource", [
    condition(ICD10CM, "Z92.850", clinical=None),
    procedure(PCS, "XW033C7", performed="2024-02-10"),
    procedure(CPT, "0540T", performed="2024-02-10"),
    medication_administration(ATC, "L01XL04", date="2024-02-10", route=None),
], ids=["history-code", "pcs-infusion", "cpt-administration", "product-given"])
def test_E4_any_evidence_ever_is_met(resource):
    v = verdict("E4", resource)
    assert v.result is MET
    assert v.until is None


@pytest.mark.parametrize("resource", [
    condition(ICD10CM, "Z92.858", clinical=None),
    condition(ICD10CM, "Z92.859", clinical=None),
    procedure(CPT, "0537T", performed=days_ago(3)),
], ids=["other-cellular", "unspecified-cellular", "harvest-only"])
def test_E4_review_codes_are_unknown(resource):
    assert verdict("E4", resource).result is UNKNOWN


def test_E4_unconfirmed_history_is_unknown():
    assert verdict("E4", condition(ICD10CM, "Z92.850", verification="provisional")).result is UNKNOWN


def test_E4_product_ordered_but_not_given_is_unknown():
    res = medication_request(ATC, "L01XL04", start=date_ago(3), route=None)
    assert verdict("E4", res).result is UNKNOWN


def test_E4_refuted_history_is_ignored():
    v = verdict("E4", condition(ICD10CM, "Z92.850", verification="refuted"))
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_E4_none_recorded():
    assert verdict("E4").reason.startswith("None recorded")


def test_E4_conditions_not_retrieved_is_unknown():
    assert verdict("E4", not_retrieved={"Condition": "timeout"}).result is UNKNOWN


# === E5: allogeneic HSCT within 6 calendar months =============================================================

def test_E5_allo_hsct_inside_six_calendar_months_is_met():
    v = verdict("E5", procedure(SCT, "58390007", performed="2026-04-02"))
    assert v.result is MET
    assert v.until == date(2026, 10, 3)  # 2026-04-02 (whole day) + 6 months = 2026-10-02


def test_E5_exactly_six_calendar_months_before_is_outside():
    assert verdict("E5", procedure(SCT, "58390007", performed="2026-04-01T09:00:00Z")).result is NOT_MET


def test_E5_an_hour_after_the_window_start_is_inside():
    assert verdict("E5", procedure(SCT, "58390007", performed="2026-04-01T10:00:00Z")).result is MET


def test_E5_pcs_allogeneic_transfusion_counts():
    assert verdict("E5", procedure(PCS, "30233Y2", performed=days_ago(30))).result is MET


def test_E5_old_allo_hsct_is_not_met_with_evidence():
    v = verdict("E5", procedure(CPT, "38240", performed="2025-01-15"))
    assert v.result is NOT_MET
    assert "2025-01-15" in v.reason


def test_E5_unspecified_hsct_in_window_is_unknown():
    v = verdict("E5", procedure(SCT, "234336002", performed=days_ago(60)))
    assert v.result is UNKNOWN
    assert "allogeneic" in v.reason


def test_E5_old_unspecified_hsct_is_not_met():
    assert verdict("E5", procedure(SCT, "234336002", performed="2024-06-01")).result is NOT_MET


def test_E5_undated_status_code_alone_is_unknown():
    v = verdict("E5", condition(ICD10CM, "Z94.84", clinical=None))
    assert v.result is UNKNOWN
    assert "without a transplant date" in v.reason


def test_E5_status_code_recorded_before_the_window_is_not_met():
    v = verdict("E5", condition(ICD10CM, "Z94.84", clinical=None, recordedDate="2025-01-01"))
    assert v.result is NOT_MET


def test_E5_status_code_with_old_dated_allo_hsct_is_not_met():
    v = verdict("E5", condition(ICD10CM, "T86.09", clinical=None),
                procedure(SCT, "58390007", performed="2024-06-01"))
    assert v.result is NOT_MET
    assert len(v.evidence) == 2


def test_E5_autologous_only_is_not_met():
    v = verdict("E5", procedure(SCT, "709115004", performed=days_ago(60)))
    assert v.result is NOT_MET
    assert "autologous" in v.reason


def test_E5_not_done_procedure_is_ignored():
    v = verdict("E5", procedure(SCT, "58390007", performed=days_ago(30), status="not-done"))
    assert v.reason.startswith("None recorded")


def test_E5_procedures_not_retrieved_is_unknown():
    assert verdict("E5", not_retrieved={"Procedure": "timeout"}).result is UNKNOWN


# === E15: live attenuated vaccine within 4 weeks ==============================================================

def test_E15_live_vaccine_27_days_ago_is_met():
    v = verdict("E15", immunization("03", date=days_ago(27)))
    assert v.result is MET
    assert v.until == date(2026, 10, 3)  # 2026-09-04 09:00 + 28 days = 2026-10-02 09:00


def test_E15_live_vaccine_exactly_28_days_ago_is_outside():
    assert verdict("E15", immunization("03", date=days_ago(28))).result is NOT_MET


def test_E15_live_vaccine_by_atc_counts():
    assert verdict("E15", immunization("J07BA03", date=days_ago(5), system=ATC)).result is MET


def test_E15_not_done_vaccination_is_ignored():
    v = verdict("E15", immunization("03", date=days_ago(5), status="not-done"))
    assert v.reason.startswith("None recorded")


def test_E15_non_live_vaccine_is_not_counted():
    assert verdict("E15", immunization("187", date=days_ago(5))).reason.startswith("None recorded")


def test_E15_ambiguous_zoster_vaccine_is_unknown():
    v = verdict("E15", immunization("188", date=days_ago(5)))
    assert v.result is UNKNOWN
    assert "live vaccine" in v.reason


def test_E15_undated_partial_date_is_unknown():
    assert verdict("E15", immunization("03", date="2026-09")).result is UNKNOWN


def test_E15_immunizations_not_retrieved_is_unknown():
    assert verdict("E15", not_retrieved={"Immunization": "timeout"}).result is UNKNOWN


# === E16: major surgery within 4 weeks ========================================================================

def surgery(days, code="387713003", system=SCT, category=True):
    p = procedure(system, code, performed=days_ago(days))
    if category:
        p["category"] = cc(SCT, "387713003")
    return p


def test_E16_surgery_in_window_is_unknown_for_review():
    v = verdict("E16", surgery(10, code="lap-chole", system=LOCAL))
    assert v.result is UNKNOWN
    assert "major" in v.reason


def test_E16_exactly_28_days_ago_is_outside():
    v = verdict("E16", surgery(28))
    assert v.result is NOT_MET
    assert "planned surgery" in v.reason


def test_E16_27_days_ago_is_inside():
    assert verdict("E16", surgery(27)).result is UNKNOWN


def test_E16_biopsy_only_is_not_met():
    v = verdict("E16", surgery(5, code="86273004"))
    assert v.result is NOT_MET
    assert "biopsy" in v.reason


def test_E16_pcs_diagnostic_qualifier_is_a_biopsy():
    v = verdict("E16", surgery(5, code="0FB03ZX", system=PCS))  # excision of liver, diagnostic
    assert v.result is NOT_MET


def test_E16_biopsy_does_not_hide_a_surgery():
    assert verdict("E16", surgery(5, code="86273004"), surgery(6, code="lap-chole", system=LOCAL)).result \
        is UNKNOWN


def test_E16_old_surgery_is_not_met_with_evidence():
    v = verdict("E16", surgery(90))
    assert v.result is NOT_MET
    assert v.evidence


def test_E16_none_recorded_says_planned_surgery_is_unchecked():
    v = verdict("E16")
    assert v.reason.startswith("None recorded")
    assert "planned surgery" in v.reason


def test_E16_not_done_surgery_is_ignored():
    p = surgery(5)
    p["status"] = "not-done"
    assert verdict("E16", p).reason.startswith("None recorded")


def test_E16_procedures_not_retrieved_is_unknown():
    assert verdict("E16", not_retrieved={"Procedure": "timeout"}).result is UNKNOWN


def test_E16_site_major_surgery_table_makes_it_met(tmp_path):
    table = {"id": "major-surgery", "title": "Major surgery (site)", "description": "Site list.",
             "criteria": ["E16"], "concepts": [{"system": LOCAL, "code": "whipple", "display": "Whipple",
                                                "status": "local", "source": "site"}]}
    (tmp_path / "major-surgery.json").write_text(json.dumps(table), encoding="utf-8")
    k = default_knowledge()
    knowledge = Knowledge(load_code_tables(site_dir=tmp_path), k.rules)
    v = verdict("E16", surgery(10, code="whipple", system=LOCAL), knowledge=knowledge)
    assert v.result is MET
    assert v.until == date(2026, 10, 20)


# === more cases ================================================================================================

def statement_with_dose(code, *, start, end=None, mg, per_day=1, status="completed"):
    res = medication_statement(RXNORM, code, start=start, end=end, status=status)
    res["dosage"] = [{"route": cc(SCT, ORAL),
                      "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                      "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org",
                                                        "code": "mg"}}]}]
    return res


def test_E2a_statement_used_when_no_administration_exists():
    v = verdict("E2a", statement_with_dose(PRED, start=date_ago(30), end=date_ago(-3), mg=15))
    assert v.result is MET  # 15 mg/day x 7 days = 105 mg
    assert "statements (prednisone)" in v.reason


def test_E2a_statements_win_over_orders():
    v = verdict("E2a", statement_with_dose(PRED, start=date_ago(30), end=date_ago(-3), mg=5),
                medication_request(RXNORM, PRED, start=date_ago(10), dose_mg=20))
    assert v.result is NOT_MET  # 35 mg from the statement; the 140 mg order is not used
    assert "statements (prednisone)" in v.reason


def test_E2a_statement_of_intent_is_not_counted_but_keeps_it_open():
    v = verdict("E2a", statement_with_dose(PRED, start=date_ago(30), end=date_ago(-3), mg=15, status="intended"))
    assert v.result is UNKNOWN


def test_E2b_immunosuppressant_given_recently_is_a_flag():
    v = verdict("E2b", medication_administration(RXNORM, "42316", date=days_ago(10), dose_mg=1))
    assert "current immunosuppressant" in v.reason


def test_E2c_unknown_reason_names_the_doubt():
    v = verdict("E2c", medication_request(RXNORM, GILTERITINIB, start=date_ago(60), status="completed"))
    assert "gilteritinib (end date not recorded)" in v.reason


def test_E2c_latest_until_wins_when_several_drugs_are_in_washout():
    v = verdict("E2c", admin(GILTERITINIB, 10), admin(IDARUBICIN, 3))
    assert v.result is MET
    assert v.until == date(2026, 10, 13)  # idarubicin 3 days ago + 14 days (half-life unknown)
    assert len(v.evidence) == 2


def test_E4_gene_modified_hspc_counts():
    assert verdict("E4", procedure(PCS, "30233C0", performed="2023-01-01")).result is MET


def test_E5_latest_allo_hsct_decides_until():
    v = verdict("E5", procedure(SCT, "58390007", performed="2026-05-01"),
                procedure(SCT, "58390007", performed="2026-07-01"))
    assert v.result is MET
    assert v.until == date(2027, 1, 2)


def test_E2c_order_running_past_today_is_met():
    v = verdict("E2c", medication_request(RXNORM, VENETOCLAX, start=date_ago(20), end=date_ago(-7)))
    assert v.result is MET
    assert v.until == date(2026, 10, 7)  # as if the last dose were now: + 130 h


def test_E2d_course_due_to_end_after_today_is_met():
    assert verdict("E2d", period_procedure(SCT, "1217123003", start=days_ago(10), end=days_ago(-10))).result is MET


def test_E2d_planned_course_is_not_received():
    v = verdict("E2d", period_procedure(SCT, "1217123003", start=days_ago(-3), end=days_ago(-20)))
    assert v.result is NOT_MET
