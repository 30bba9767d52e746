"""E3, E6, E7, E8, E11, E13, E14: disease exclusions decided by diagnoses, medications and procedures.

Each test builds a small record and evaluates one criterion at the fixed time AT (2026-10-01T09:00Z).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from builders import (
    AT,
    ATC,
    ICD10,
    ICD10CM,
    LOINC,
    PCS,
    RXNORM,
    SCT,
    V3_INTERP,
    cc,
    coded_observation,
    condition,
    date_ago,
    days_ago,
    medication_administration,
    medication_request,
    medication_statement,
    observation,
    procedure,
    record_of,
    result_of,
)
from dateutil.relativedelta import relativedelta

import cds_service.criteria.disease  # noqa: F401  (registers the criteria)
from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import REGISTRY, Verdict
from cds_service.criteria.result import Result
from cds_service.facts.codes import default_mappings_dir, load_code_tables
from cds_service.facts.index import Facts

ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
LOCAL_ROUTE = "http://example.org/fhir/CodeSystem/local-route"
INTRAVENOUS = "47625008"
NASAL = "46713006"


def verdict(criterion_id: str, *resources: dict, not_retrieved: dict[str, str] | None = None,
            knowledge: Knowledge | None = None) -> Verdict:
    """One criterion evaluated on a record made of these resources."""
    facts = Facts(record_of(*resources, not_retrieved=not_retrieved), AT, knowledge or default_knowledge())
    return REGISTRY[criterion_id](facts)


def with_windows(**changes: object) -> Knowledge:
    """The shipped knowledge with some ``windows`` keys changed, as a site override would."""
    k = default_knowledge()
    return Knowledge(k.tables, replace(k.rules, windows={**k.rules.windows, **changes}))


def coded(resource: dict, *codings: tuple[str, str]) -> dict:
    """Give a resource a code with several codings."""
    resource["code"] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    return resource


def years_ago(n: int, extra_days: int = 0) -> str:
    return ((AT - relativedelta(years=n)).date() - timedelta(days=extra_days)).isoformat()


def refs(v: Verdict) -> set[str]:
    return {e.reference for e in v.evidence}


# --- E3: acute promyelocytic leukaemia -------------------------------------------------------------------------


def test_E3_apl_snomed_condition_is_met():
    v = verdict("E3", condition(SCT, "110004001"))
    assert v.result is Result.MET
    assert v.evidence and v.evidence[0].reference.startswith("Condition/")


def test_E3_who_icd10_c92_4_is_met():
    assert verdict("E3", condition(ICD10, "C92.4")).result is Result.MET


def test_E3_who_national_extension_of_c92_4_is_met():
    # China's clinical ICD-10 adds characters after the WHO code.
    assert verdict("E3", condition(ICD10, "C92.400")).result is Result.MET


def test_E3_icd10cm_apl_in_remission_history_is_met():
    v = verdict("E3", condition(ICD10CM, "C92.41", clinical="remission"))
    assert v.result is Result.MET
    assert "remission" in v.reason


def test_E3_resolved_apl_still_counts():
    c = condition(SCT, "110004001", clinical="resolved", abatementDateTime=date_ago(3000))
    assert verdict("E3", c).result is Result.MET


def test_E3_icdo3_morphology_is_met():
    assert verdict("E3", condition(ICDO3, "9866/3")).result is Result.MET


def test_E3_multiple_codings_where_only_one_is_apl_is_met():
    c = coded(condition(SCT, "91861009"), (SCT, "91861009"), (ICD10CM, "C92.40"))
    assert verdict("E3", c).result is Result.MET


def test_E3_aml_only_is_none_recorded():
    v = verdict("E3", condition(ICD10CM, "C92.02"))
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_E3_refuted_or_entered_in_error_apl_is_ignored(status):
    v = verdict("E3", condition(SCT, "110004001", verification=status))
    assert v.result is Result.NOT_MET


@pytest.mark.parametrize("status", ["unconfirmed", "provisional", "differential"])
def test_E3_unconfirmed_apl_is_unknown(status):
    v = verdict("E3", condition(ICD10CM, "C92.40", verification=status))
    assert v.result is Result.UNKNOWN
    assert status in v.reason


def test_E3_pml_rara_positive_coded_value_is_met():
    obs = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8")
    v = verdict("E3", condition(SCT, "91861009"), obs)
    assert v.result is Result.MET
    assert "PML::RARA" in v.reason
    assert obs["id"] in v.evidence[0].reference


def test_E3_old_pml_rara_positive_by_interpretation_counts_at_any_date():
    obs = observation(LOINC, "21551-7", date=days_ago(3650), interpretation=[cc(V3_INTERP, "POS")])
    assert verdict("E3", obs).result is Result.MET


def test_E3_positive_then_negative_pml_rara_is_still_met():
    old = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8", date=days_ago(400))
    new = coded_observation(LOINC, "21551-7", LOINC, "LA6577-6", date=days_ago(10))
    assert verdict("E3", old, new).result is Result.MET


def test_E3_undated_pml_rara_positive_is_met():
    obs = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8")
    del obs["effectiveDateTime"]
    v = verdict("E3", obs)
    assert v.result is Result.MET
    assert "unrecorded date" in v.reason


def test_E3_pml_rara_negative_is_not_met_with_evidence():
    obs = coded_observation(LOINC, "21551-7", LOINC, "LA6577-6")
    v = verdict("E3", obs)
    assert v.result is Result.NOT_MET
    assert "PML::RARA negative" in v.reason
    assert refs(v) == {f"Observation/{obs['id']}"}


def test_E3_preliminary_pml_rara_positive_is_unknown():
    obs = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8", status="preliminary")
    assert verdict("E3", obs).result is Result.UNKNOWN


def test_E3_fish_percentage_without_a_call_is_unknown():
    obs = observation(LOINC, "21785-1", value=85, unit="%")
    v = verdict("E3", obs)
    assert v.result is Result.UNKNOWN
    assert "cannot be read" in v.reason


def test_E3_entered_in_error_pml_rara_result_is_ignored():
    obs = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8", status="entered-in-error")
    assert verdict("E3", obs).result is Result.NOT_MET


def test_E3_prior_tretinoin_without_apl_diagnosis_is_unknown():
    ma = medication_administration(ATC, "L01XF01", date=days_ago(500))
    v = verdict("E3", condition(SCT, "91861009"), ma)
    assert v.result is Result.UNKNOWN
    assert "PML::RARA" in v.reason


def test_E3_none_recorded_is_not_met():
    v = verdict("E3")
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


@pytest.mark.parametrize("kind", ["Condition", "Observation"])
def test_E3_not_retrieved_kind_is_unknown(kind):
    v = verdict("E3", not_retrieved={kind: "HTTP 503"})
    assert v.result is Result.UNKNOWN
    assert kind in v.reason


def test_E3_unreadable_apl_condition_is_unknown():
    bad = condition(ICD10CM, "C92.40")
    bad["clinicalStatus"] = "active"  # not a CodeableConcept: the resource cannot be parsed
    v = verdict("E3", bad)
    assert v.result is Result.UNKNOWN
    assert "could not be read" in v.reason


def test_E3_through_the_pipeline_is_an_exclusion_with_evidence():
    r = result_of("E3", condition(ICD10, "C92.4"))
    assert r.kind == "exclusion" and r.result is Result.MET
    assert r.to_json()["evidence"][0]["code"].endswith("C92.4")


# --- E6: GvHD or immunosuppression -----------------------------------------------------------------------------


def test_E6_active_acute_gvhd_is_met():
    v = verdict("E6", condition(SCT, "402355000"))
    assert v.result is Result.MET


@pytest.mark.parametrize("status", ["recurrence", "relapse"])
def test_E6_chronic_gvhd_recurrence_or_relapse_is_met(status):
    assert verdict("E6", condition(ICD10CM, "D89.811", clinical=status)).result is Result.MET


def test_E6_gvhd_abated_within_4_weeks_is_met():
    c = condition(ICD10CM, "D89.810", clinical="resolved", abatementDateTime=date_ago(20))
    v = verdict("E6", c)
    assert v.result is Result.MET
    assert "abated" in v.reason


def test_E6_gvhd_abated_exactly_28_days_ago_is_met_until_tomorrow():
    c = condition(ICD10CM, "D89.810", clinical="resolved", abatementDateTime=date_ago(28))
    v = verdict("E6", c)
    assert v.result is Result.MET
    assert v.until == (AT + timedelta(days=1)).date()


def test_E6_active_gvhd_has_no_until():
    assert verdict("E6", condition(SCT, "402355000")).until is None


def test_E6_gvhd_abated_29_days_ago_without_immunosuppressant_is_not_met():
    c = condition(ICD10CM, "D89.810", clinical="resolved", abatementDateTime=date_ago(29))
    v = verdict("E6", c)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Condition/{c['id']}"}


def test_E6_gvhd_abated_in_a_month_straddling_the_window_is_unknown():
    c = condition(ICD10CM, "D89.810", clinical="resolved", abatementDateTime="2026-09")
    assert verdict("E6", c).result is Result.UNKNOWN


def test_E6_gvhd_inactive_without_abatement_date_is_unknown():
    v = verdict("E6", condition(SCT, "402356004", clinical="inactive"))
    assert v.result is Result.UNKNOWN
    assert "abatement" in v.reason


def test_E6_gvhd_without_clinical_status_is_unknown():
    assert verdict("E6", condition(SCT, "234646005", clinical=None)).result is Result.UNKNOWN


def test_E6_who_t86_0_is_unknown_until_confirmed_as_gvhd():
    v = verdict("E6", condition(ICD10, "T86.0"))
    assert v.result is Result.UNKNOWN
    assert "GvHD" in v.reason


def test_E6_unconfirmed_gvhd_is_unknown():
    assert verdict("E6", condition(SCT, "402355000", verification="provisional")).result is Result.UNKNOWN


def test_E6_refuted_gvhd_is_ignored():
    assert verdict("E6", condition(SCT, "402355000", verification="refuted")).result is Result.NOT_MET


def test_E6_multiple_codings_where_only_one_is_gvhd_is_met():
    c = coded(condition(SCT, "402355000"), ("http://example.org/local", "GVHD-A"), (ICD10CM, "D89.810"))
    assert verdict("E6", c).result is Result.MET


def test_E6_tacrolimus_order_with_past_gvhd_is_met():
    gvhd = condition(ICD10CM, "D89.811", clinical="resolved", abatementDateTime=date_ago(300))
    mr = medication_request(RXNORM, "42316", start=date_ago(100))
    v = verdict("E6", gvhd, mr)
    assert v.result is Result.MET
    assert f"MedicationRequest/{mr['id']}" in refs(v)


def test_E6_ruxolitinib_atc_l01_statement_with_gvhd_is_met():
    gvhd = condition(SCT, "402356004", clinical="inactive", abatementDateTime=date_ago(200))
    ms = medication_statement(ATC, "L01EJ01", start=date_ago(60), status="active")
    assert verdict("E6", gvhd, ms).result is Result.MET


def test_E6_immunosuppressant_without_gvhd_is_unknown():
    v = verdict("E6", medication_request(RXNORM, "3008", start=date_ago(30)))
    assert v.result is Result.UNKNOWN
    assert "indication" in v.reason


def test_E6_immunosuppressant_given_within_28_days_counts():
    gvhd = condition(ICD10CM, "D89.811", clinical="resolved", abatementDateTime=date_ago(300))
    ma = medication_administration(RXNORM, "68149", date=days_ago(20))
    assert verdict("E6", gvhd, ma).result is Result.MET


def test_E6_immunosuppressant_given_40_days_ago_does_not_count():
    gvhd = condition(ICD10CM, "D89.811", clinical="resolved", abatementDateTime=date_ago(300))
    ma = medication_administration(RXNORM, "68149", date=days_ago(40))
    assert verdict("E6", gvhd, ma).result is Result.NOT_MET


def test_E6_order_that_ended_two_months_ago_does_not_count():
    mr = medication_request(RXNORM, "42316", start=date_ago(200), end=date_ago(60), status="completed")
    assert verdict("E6", mr).result is Result.NOT_MET


def test_E6_cancelled_order_is_not_given():
    mr = medication_request(RXNORM, "42316", start=date_ago(5), status="cancelled")
    assert verdict("E6", mr).result is Result.NOT_MET


def test_E6_planned_immunosuppressant_is_unknown():
    mr = medication_request(RXNORM, "42316", start=(AT + timedelta(days=5)).date().isoformat())
    assert verdict("E6", mr).result is Result.UNKNOWN


def test_E6_intrathecal_methotrexate_route_is_not_assumed_systemic():
    gvhd = condition(ICD10CM, "D89.811", clinical="resolved", abatementDateTime=date_ago(300))
    ma = medication_administration(RXNORM, "6851", date=days_ago(3), route=None)
    ma["dosage"] = {"route": cc(LOCAL_ROUTE, "IT")}
    v = verdict("E6", gvhd, ma)
    assert v.result is Result.UNKNOWN
    assert "route" in v.reason


def test_E6_undated_completed_statement_is_unknown():
    ms = medication_statement(RXNORM, "42316", start=date_ago(3))
    del ms["effectivePeriod"]
    v = verdict("E6", ms)
    assert v.result is Result.UNKNOWN
    assert "without dates" in v.reason


def test_E6_nasal_route_is_not_systemic():
    ma = medication_administration(RXNORM, "42316", date=days_ago(3), route=NASAL)
    assert verdict("E6", ma).result is Result.NOT_MET


def test_E6_intravenous_route_is_systemic():
    gvhd = condition(SCT, "402355000", clinical="resolved", abatementDateTime=date_ago(100))
    ma = medication_administration(RXNORM, "3008", date=days_ago(3), route=INTRAVENOUS)
    assert verdict("E6", gvhd, ma).result is Result.MET


def test_E6_none_recorded_is_not_met():
    v = verdict("E6")
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


@pytest.mark.parametrize("kind", ["Condition", "MedicationRequest", "MedicationAdministration",
                                  "MedicationStatement"])
def test_E6_not_retrieved_kind_is_unknown(kind):
    v = verdict("E6", not_retrieved={kind: "timeout"})
    assert v.result is Result.UNKNOWN
    assert kind in v.reason


def test_E6_old_gvhd_with_medications_not_retrieved_is_unknown():
    gvhd = condition(ICD10CM, "D89.811", clinical="resolved", abatementDateTime=date_ago(300))
    assert verdict("E6", gvhd, not_retrieved={"MedicationRequest": "403"}).result is Result.UNKNOWN


# --- E7: active infection requiring systemic treatment ---------------------------------------------------------


def test_E7_active_pneumonia_with_recent_antibiotic_is_met():
    inf = condition(ICD10CM, "J18.9")
    ma = medication_administration(ATC, "J01DH02", date=days_ago(2), route=INTRAVENOUS)
    v = verdict("E7", inf, ma)
    assert v.result is Result.MET
    assert refs(v) == {f"Condition/{inf['id']}", f"MedicationAdministration/{ma['id']}"}


def test_E7_active_infection_with_posaconazole_order_is_met():
    inf = condition(SCT, "40733004")
    assert verdict("E7", inf, medication_request(RXNORM, "282446", start=date_ago(10))).result is Result.MET


def test_E7_antibiotic_given_6_days_ago_is_concurrent():
    inf = condition(ICD10CM, "A41.9")
    assert verdict("E7", inf, medication_administration(ATC, "J01CR05", date=days_ago(6))).result is Result.MET


def test_E7_antibiotic_given_8_days_ago_is_not_concurrent():
    inf = condition(ICD10CM, "A41.9")
    v = verdict("E7", inf, medication_administration(ATC, "J01CR05", date=days_ago(8)))
    assert v.result is Result.UNKNOWN


def test_E7_active_infection_without_treatment_is_unknown():
    v = verdict("E7", condition(ICD10CM, "N39.0"))
    assert v.result is Result.UNKNOWN
    assert "require systemic treatment" in v.reason


def test_E7_active_infection_with_medications_not_retrieved_says_so():
    v = verdict("E7", condition(ICD10CM, "N39.0"), not_retrieved={"MedicationRequest": "HTTP 500"})
    assert v.result is Result.UNKNOWN
    assert "could not be retrieved" in v.reason


def test_E7_anti_infective_alone_goes_to_review_by_default():
    mr = medication_request(RXNORM, "282446", start=date_ago(30))
    v = verdict("E7", mr)
    assert v.result is Result.UNKNOWN
    assert "prophylaxis" in v.reason


def test_E7_anti_infective_alone_is_not_met_when_the_site_chooses_so():
    mr = medication_request(RXNORM, "282446", start=date_ago(30))
    v = verdict("E7", mr, knowledge=with_windows(anti_infective_without_infection="not-met"))
    assert v.result is Result.NOT_MET
    assert f"MedicationRequest/{mr['id']}" in refs(v)


def test_E7_anti_infective_with_only_a_resolved_infection_is_unknown():
    old = condition(ICD10CM, "J18.9", clinical="resolved", abatementDateTime=date_ago(60))
    assert verdict("E7", old, medication_request(ATC, "J05AB01", start=date_ago(30))).result is Result.UNKNOWN


def test_E7_resolved_infection_without_treatment_is_not_met_with_evidence():
    old = condition(ICD10CM, "J18.9", clinical="resolved", abatementDateTime=date_ago(60))
    v = verdict("E7", old)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Condition/{old['id']}"}


def test_E7_neutropenic_fever_code_goes_to_review():
    fever = condition(ICD10CM, "R50.81")
    v = verdict("E7", fever, medication_administration(ATC, "J01DH02", date=days_ago(1)))
    assert v.result is Result.UNKNOWN
    assert "presumed" in v.reason


def test_E7_unconfirmed_infection_with_antibiotic_is_unknown():
    inf = condition(ICD10CM, "J18.9", verification="unconfirmed")
    assert verdict("E7", inf, medication_administration(ATC, "J01DH02", date=days_ago(1))).result is Result.UNKNOWN


def test_E7_infection_without_clinical_status_is_unknown():
    assert verdict("E7", condition(ICD10CM, "J18.9", clinical=None)).result is Result.UNKNOWN


def test_E7_refuted_infection_is_ignored():
    assert verdict("E7", condition(ICD10CM, "J18.9", verification="refuted")).result is Result.NOT_MET


def test_E7_multiple_codings_where_only_one_is_an_infection():
    inf = coded(condition(ICD10CM, "J18.9"), (ICD10CM, "D70.9"), (ICD10CM, "J18.9"))
    assert verdict("E7", inf, medication_administration(ATC, "J01DH02", date=days_ago(1))).result is Result.MET


def test_E7_who_icd10_pneumonia_with_antibiotic_is_met():
    inf = condition(ICD10, "J18.9")
    assert verdict("E7", inf, medication_administration(ATC, "J01DH02", date=days_ago(1))).result is Result.MET


def test_E7_none_recorded_is_not_met():
    v = verdict("E7")
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


def test_E7_conditions_not_retrieved_is_unknown():
    assert verdict("E7", not_retrieved={"Condition": "refused"}).result is Result.UNKNOWN


# --- E8: another malignancy ------------------------------------------------------------------------------------


def test_E8_active_lung_cancer_is_met():
    v = verdict("E8", condition(ICD10CM, "C34.90"))
    assert v.result is Result.MET


def test_E8_who_icd10_lung_cancer_is_met():
    assert verdict("E8", condition(ICD10, "C34.9")).result is Result.MET


def test_E8_own_aml_is_not_another_malignancy():
    v = verdict("E8", condition(ICD10CM, "C92.02"), condition(ICD10, "C92.0"))
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


def test_E8_generic_malignancy_coding_on_the_aml_condition_is_the_aml():
    aml = coded(condition(SCT, "363346000"), (SCT, "363346000"), (ICD10CM, "C92.02"))
    assert verdict("E8", aml).result is Result.NOT_MET


def test_E8_apl_is_not_another_malignancy():
    assert verdict("E8", condition(ICD10CM, "C92.40")).result is Result.NOT_MET


def test_E8_cns_involvement_code_is_left_to_E11():
    assert verdict("E8", condition(ICD10CM, "C79.32")).result is Result.NOT_MET


def test_E8_who_cns_and_cmml_codes_are_not_another_malignancy():
    assert verdict("E8", condition(ICD10, "C79.3")).result is Result.NOT_MET
    assert verdict("E8", condition(ICD10, "C93.1")).result is Result.UNKNOWN


def test_E8_cmml_precursor_goes_to_review():
    v = verdict("E8", condition(ICD10CM, "C93.10"))
    assert v.result is Result.UNKNOWN
    assert "antecedent" in v.reason


@pytest.mark.parametrize("code", ["C44.91", "D04.9", "D06.9"])
def test_E8_nmsc_and_cervical_cis_are_allowed_with_evidence(code):
    c = condition(ICD10CM, code)
    v = verdict("E8", c)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Condition/{c['id']}"}
    assert "exception" in v.reason


def test_E8_melanoma_is_not_an_exception():
    assert verdict("E8", condition(ICD10CM, "C43.9")).result is Result.MET


def test_E8_active_breast_cancer_is_met():
    assert verdict("E8", condition(ICD10CM, "C50.911")).result is Result.MET


def test_E8_breast_cancer_abated_3_years_ago_is_met_under_reading_b():
    c = condition(ICD10CM, "C50.911", clinical="resolved", abatementDateTime=years_ago(3))
    v = verdict("E8", c)
    assert v.result is Result.MET
    assert "less than 5 years" in v.reason


def test_E8_breast_cancer_abated_3_years_ago_goes_to_review_under_reading_a():
    c = condition(ICD10CM, "C50.911", clinical="resolved", abatementDateTime=years_ago(3))
    assert verdict("E8", c, knowledge=with_windows(malignancy_listed_exceptions="A")).result is Result.UNKNOWN


def test_E8_active_breast_cancer_is_met_under_reading_a_too():
    c = condition(ICD10CM, "C50.911")
    assert verdict("E8", c, knowledge=with_windows(malignancy_listed_exceptions="A")).result is Result.MET


def test_E8_bladder_cancer_abated_7_years_ago_goes_to_review():
    c = condition(ICD10CM, "C67.9", clinical="resolved", abatementDateTime=years_ago(7))
    v = verdict("E8", c)
    assert v.result is Result.UNKNOWN
    assert "curative" in v.reason


def test_E8_colon_cancer_abated_more_than_5_years_ago_goes_to_review_never_not_met():
    c = condition(ICD10CM, "C18.9", clinical="remission", abatementDateTime=years_ago(12))
    assert verdict("E8", c).result is Result.UNKNOWN


def test_E8_abated_exactly_5_years_ago_is_not_more_than_5_years():
    c = condition(ICD10CM, "C18.9", clinical="resolved", abatementDateTime=years_ago(5))
    assert verdict("E8", c).result is Result.MET


def test_E8_abated_5_years_and_1_day_ago_goes_to_review():
    c = condition(ICD10CM, "C18.9", clinical="resolved", abatementDateTime=years_ago(5, extra_days=1))
    assert verdict("E8", c).result is Result.UNKNOWN


def test_E8_abatement_year_straddling_the_5_year_boundary_is_unknown():
    year = (AT - relativedelta(years=5)).year
    c = condition(ICD10CM, "C18.9", clinical="resolved", abatementDateTime=str(year))
    v = verdict("E8", c)
    assert v.result is Result.UNKNOWN
    assert "imprecise" in v.reason


def test_E8_inactive_without_abatement_but_diagnosed_2_years_ago_is_met():
    c = condition(ICD10CM, "C61", clinical="inactive", onset=years_ago(2))
    assert verdict("E8", c).result is Result.MET


def test_E8_inactive_without_abatement_diagnosed_10_years_ago_is_unknown():
    c = condition(ICD10CM, "C61", clinical="inactive", onset=years_ago(10))
    assert verdict("E8", c).result is Result.UNKNOWN


def test_E8_no_clinical_status_and_no_dates_is_unknown():
    assert verdict("E8", condition(ICD10CM, "C61", clinical=None)).result is Result.UNKNOWN


def test_E8_personal_history_code_z85_is_unknown():
    v = verdict("E8", condition(ICD10CM, "Z85.3", clinical=None))
    assert v.result is Result.UNKNOWN
    assert "history" in v.reason


def test_E8_unconfirmed_malignancy_is_unknown():
    assert verdict("E8", condition(ICD10CM, "C34.90", verification="provisional")).result is Result.UNKNOWN


def test_E8_refuted_malignancy_is_ignored():
    assert verdict("E8", condition(ICD10CM, "C34.90", verification="refuted")).result is Result.NOT_MET


def test_E8_an_excluding_cancer_wins_over_an_nmsc():
    v = verdict("E8", condition(ICD10CM, "C44.91"), condition(ICD10CM, "C34.90"))
    assert v.result is Result.MET


def test_E8_conditions_not_retrieved_is_unknown():
    assert verdict("E8", not_retrieved={"Condition": "HTTP 503"}).result is Result.UNKNOWN


# --- E11: CNS involvement --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trusted_csf_code(tmp_path_factory) -> Knowledge:
    """A site table that vouches for 26447-3 as its CSF blast test (no review flag)."""
    site = tmp_path_factory.mktemp("site")
    (site / "csf-blasts.json").write_text(json.dumps({
        "id": "csf-blasts", "title": "Blasts in cerebrospinal fluid", "description": "Site: CSF blast count.",
        "criteria": ["E11"],
        "concepts": [{"system": "http://loinc.org", "code": "26447-3", "display": "Blasts/100 leukocytes",
                      "status": "verified", "source": "site"}],
    }))
    tables = load_code_tables(default_mappings_dir(), site)
    return Knowledge(tables, default_knowledge().rules)


def test_E11_past_meningeal_leukemia_is_met():
    c = condition(SCT, "722795004", clinical="resolved", abatementDateTime=date_ago(900))
    v = verdict("E11", c)
    assert v.result is Result.MET


def test_E11_icd10cm_secondary_neoplasm_of_meninges_is_met():
    assert verdict("E11", condition(ICD10CM, "C79.32")).result is Result.MET


def test_E11_who_icd10_secondary_neoplasm_of_brain_and_meninges_is_met():
    assert verdict("E11", condition(ICD10, "C79.3")).result is Result.MET


def test_E11_unconfirmed_cns_involvement_is_unknown():
    assert verdict("E11", condition(SCT, "722795004", verification="unconfirmed")).result is Result.UNKNOWN


def test_E11_blast_code_of_unverified_specimen_positive_goes_to_review():
    obs = observation(LOINC, "26447-3", value=12, unit="%", date=days_ago(100))
    v = verdict("E11", obs)
    assert v.result is Result.UNKNOWN
    assert "specimen" in v.reason


def test_E11_blast_code_of_unverified_specimen_negative_proves_nothing():
    obs = observation(LOINC, "26446-5", value=0, unit="%")
    v = verdict("E11", obs, procedure(PCS, "3E0R305", performed=days_ago(30)))
    assert v.result is Result.UNKNOWN  # intrathecal chemotherapy with no usable CSF result


def test_E11_trusted_csf_blasts_positive_count_is_met(trusted_csf_code):
    obs = observation(LOINC, "26447-3", value=3, unit="%", date=days_ago(700))
    assert verdict("E11", obs, knowledge=trusted_csf_code).result is Result.MET


def test_E11_trusted_csf_blasts_reported_positive_is_met(trusted_csf_code):
    obs = coded_observation(LOINC, "26447-3", LOINC, "LA6576-8")
    assert verdict("E11", obs, knowledge=trusted_csf_code).result is Result.MET


def test_E11_trusted_csf_negative_is_not_met_with_evidence(trusted_csf_code):
    obs = observation(LOINC, "26447-3", value=0, unit="%")
    v = verdict("E11", obs, knowledge=trusted_csf_code)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Observation/{obs['id']}"}


def test_E11_intrathecal_chemotherapy_with_negative_csf_is_not_met(trusted_csf_code):
    obs = observation(LOINC, "26447-3", value=0, unit="%")
    it = procedure(PCS, "3E0R305", performed=days_ago(30))
    v = verdict("E11", obs, it, knowledge=trusted_csf_code)
    assert v.result is Result.NOT_MET
    assert "prophylaxis" in v.reason
    assert f"Procedure/{it['id']}" in refs(v)


def test_E11_preliminary_positive_csf_is_unknown(trusted_csf_code):
    obs = observation(LOINC, "26447-3", value=5, unit="%", status="preliminary")
    assert verdict("E11", obs, knowledge=trusted_csf_code).result is Result.UNKNOWN


def test_E11_intrathecal_chemotherapy_alone_goes_to_review():
    v = verdict("E11", procedure(PCS, "3E0R305", performed=days_ago(30)))
    assert v.result is Result.UNKNOWN
    assert "prophylaxis" in v.reason


def test_E11_intrathecal_chemotherapy_alone_is_not_met_when_the_site_chooses_so():
    it = procedure(PCS, "3E0R305", performed=days_ago(30))
    v = verdict("E11", it, knowledge=with_windows(intrathecal_without_csf="not-met"))
    assert v.result is Result.NOT_MET


def test_E11_not_done_intrathecal_procedure_is_ignored():
    assert verdict("E11", procedure(PCS, "3E0R305", status="not-done")).result is Result.NOT_MET


def test_E11_none_recorded_is_not_met():
    v = verdict("E11")
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


@pytest.mark.parametrize("kind", ["Condition", "Observation", "Procedure"])
def test_E11_not_retrieved_kind_is_unknown(kind):
    assert verdict("E11", not_retrieved={kind: "HTTP 503"}).result is Result.UNKNOWN


# --- E13: pulmonary fibrosis -----------------------------------------------------------------------------------


@pytest.mark.parametrize("system,code", [(ICD10CM, "J84.10"), (ICD10CM, "J84.112"), (ICD10, "J84.1"),
                                         (SCT, "51615001"), (ICD10CM, "J70.1")])
def test_E13_pulmonary_fibrosis_is_met(system, code):
    assert verdict("E13", condition(system, code)).result is Result.MET


def test_E13_inactive_or_statusless_fibrosis_still_counts():
    assert verdict("E13", condition(ICD10CM, "J84.10", clinical="inactive")).result is Result.MET
    assert verdict("E13", condition(SCT, "196125002", clinical=None)).result is Result.MET


def test_E13_resolved_fibrosis_goes_to_review():
    v = verdict("E13", condition(ICD10CM, "J84.10", clinical="resolved"))
    assert v.result is Result.UNKNOWN
    assert "does not resolve" in v.reason


def test_E13_drug_induced_ild_goes_to_review():
    assert verdict("E13", condition(ICD10CM, "J70.4")).result is Result.UNKNOWN


def test_E13_unconfirmed_fibrosis_is_unknown():
    assert verdict("E13", condition(ICD10CM, "J84.10", verification="differential")).result is Result.UNKNOWN


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_E13_refuted_fibrosis_is_ignored(status):
    assert verdict("E13", condition(ICD10CM, "J84.10", verification=status)).result is Result.NOT_MET


def test_E13_multiple_codings_where_only_one_is_fibrosis():
    c = coded(condition(SCT, "51615001"), ("http://example.org/local", "PF"), (SCT, "51615001"))
    assert verdict("E13", c).result is Result.MET


def test_E13_none_recorded_is_not_met():
    v = verdict("E13", condition(ICD10CM, "J18.9"))
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


def test_E13_conditions_not_retrieved_is_unknown():
    assert verdict("E13", not_retrieved={"Condition": "HTTP 503"}).result is Result.UNKNOWN


# --- E14: active autoimmune disease ----------------------------------------------------------------------------


@pytest.mark.parametrize("system,code", [(ICD10CM, "M32.9"), (SCT, "69896004"), (ICD10CM, "G35.A"),
                                         (ICD10CM, "G35"), (ICD10CM, "M35.00"), (SCT, "83901003")])
def test_E14_active_named_autoimmune_disease_is_met(system, code):
    assert verdict("E14", condition(system, code)).result is Result.MET


def test_E14_who_icd10_codes_are_read():
    assert verdict("E14", condition(ICD10, "M32.1")).result is Result.MET
    assert verdict("E14", condition(ICD10, "M35.0")).result is Result.MET
    assert verdict("E14", condition(ICD10, "L40.0")).result is Result.UNKNOWN


def test_E14_relapse_of_ms_is_met():
    assert verdict("E14", condition(SCT, "24700007", clinical="relapse")).result is Result.MET


@pytest.mark.parametrize("status", ["remission", "inactive", "resolved"])
def test_E14_named_disease_not_active_goes_to_review(status):
    v = verdict("E14", condition(ICD10CM, "M06.9", clinical=status))
    assert v.result is Result.UNKNOWN
    assert "immunosuppression" in v.reason


def test_E14_named_disease_in_remission_shows_a_current_immunosuppressant():
    ra = condition(ICD10CM, "M06.9", clinical="remission")
    mtx = medication_request(RXNORM, "6851", start=date_ago(90))
    v = verdict("E14", ra, mtx)
    assert v.result is Result.UNKNOWN
    assert "current immunosuppressant" in v.reason
    assert f"MedicationRequest/{mtx['id']}" in refs(v)


def test_E14_named_disease_without_status_is_unknown():
    assert verdict("E14", condition(SCT, "55464009", clinical=None)).result is Result.UNKNOWN


def test_E14_active_other_autoimmune_disease_goes_to_review():
    v = verdict("E14", condition(ICD10CM, "L40.0"))
    assert v.result is Result.UNKNOWN
    assert "investigator" in v.reason


def test_E14_resolved_other_autoimmune_disease_is_not_counted():
    c = condition(ICD10CM, "D69.3", clinical="resolved")
    v = verdict("E14", c)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Condition/{c['id']}"}


def test_E14_unconfirmed_named_disease_is_unknown():
    assert verdict("E14", condition(SCT, "69896004", verification="unconfirmed")).result is Result.UNKNOWN


def test_E14_refuted_named_disease_is_ignored():
    assert verdict("E14", condition(SCT, "69896004", verification="refuted")).result is Result.NOT_MET


def test_E14_multiple_codings_where_only_one_is_named():
    c = coded(condition(SCT, "69896004"), ("http://example.org/local", "RA"), (ICD10CM, "M06.9"))
    assert verdict("E14", c).result is Result.MET


def test_E14_none_recorded_is_not_met():
    v = verdict("E14")
    assert v.result is Result.NOT_MET
    assert v.reason.startswith("None recorded")


def test_E14_conditions_not_retrieved_is_unknown():
    assert verdict("E14", not_retrieved={"Condition": "HTTP 503"}).result is Result.UNKNOWN
