"""E12a-E12d: virology exclusions decided by test results (no result is UNKNOWN, never "none recorded").

Each test builds a small record and evaluates one criterion at the fixed time AT (2026-10-01T09:00Z).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from builders import (
    AT,
    ICD10,
    ICD10CM,
    LOINC,
    SCT,
    V3_INTERP,
    cc,
    coded_observation,
    condition,
    days_ago,
    observation,
    record_of,
    result_of,
)

import cds_service.criteria.virology  # noqa: F401  (registers the criteria)
from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import REGISTRY, Verdict
from cds_service.criteria.result import Result
from cds_service.facts.index import Facts

POS = (LOINC, "LA6576-8")
NEG = (LOINC, "LA6577-6")
NOT_DETECTED = (SCT, "260415000")


def verdict(criterion_id: str, *resources: dict, not_retrieved: dict[str, str] | None = None,
            knowledge: Knowledge | None = None) -> Verdict:
    facts = Facts(record_of(*resources, not_retrieved=not_retrieved), AT, knowledge or default_knowledge())
    return REGISTRY[criterion_id](facts)


def lab(code: str, answer: tuple[str, str], days: float = 2, **extra: object) -> dict:
    """A qualitative LOINC result with a coded answer, ``days`` before AT."""
    return coded_observation(LOINC, code, *answer, date=days_ago(days), **extra)





def text_result(code: str, text: str, days: float = 2) -> dict:
    return observation(LOINC, code, date=days_ago(days), valueString=text)


def interp(code: str, flag: str, days: float = 2, **extra: object) -> dict:
    return observation(LOINC, code, date=days_ago(days), interpretation=[cc(V3_INTERP, flag)], **extra)


def with_thresholds(**changes: object) -> Knowledge:
    k = default_knowledge()
    return Knowledge(k.tables, replace(k.rules, thresholds={**k.rules.thresholds, **changes}))


def refs(v: Verdict) -> set[str]:
    return {e.reference for e in v.evidence}


# --- E12a: HIV antibody ----------------------------------------------------------------------------------------


def test_E12a_hiv_antibody_positive_is_met():
    obs = lab("31201-7", POS)
    v = verdict("E12a", obs)
    assert v.result is Result.MET
    assert refs(v) == {f"Observation/{obs['id']}"}
    assert v.evidence[0].date


@pytest.mark.parametrize("code", ["7917-8", "29893-5", "7918-6", "56888-1", "105080-6"])
def test_E12a_each_hiv_antibody_code_counts(code):
    assert verdict("E12a", lab(code, POS)).result is Result.MET


def test_E12a_reactive_text_is_positive():
    assert verdict("E12a", text_result("56888-1", "Reactive")).result is Result.MET


def test_E12a_positive_interpretation_is_positive():
    assert verdict("E12a", interp("31201-7", "POS")).result is Result.MET


def test_E12a_negative_is_not_met_with_evidence():
    obs = lab("31201-7", NEG, days=400)
    v = verdict("E12a", obs)
    assert v.result is Result.NOT_MET
    assert "negative" in v.reason
    assert refs(v) == {f"Observation/{obs['id']}"}


def test_E12a_latest_result_decides():
    assert verdict("E12a", lab("31201-7", POS, days=900), lab("31201-7", NEG, days=10)).result is Result.NOT_MET
    assert verdict("E12a", lab("31201-7", NEG, days=900), lab("31201-7", POS, days=10)).result is Result.MET


def test_E12a_reactive_screen_with_later_negative_confirmatory_goes_to_review():
    v = verdict("E12a", lab("56888-1", POS, days=20), lab("5221-7", NEG, days=10))
    assert v.result is Result.UNKNOWN
    assert "confirmatory" in v.reason


def test_E12a_reactive_screen_with_positive_confirmatory_is_met():
    assert verdict("E12a", lab("56888-1", POS, days=20), lab("44873-8", POS, days=10)).result is Result.MET


def test_E12a_negative_confirmatory_older_than_the_positive_screen_does_not_refute_it():
    assert verdict("E12a", lab("5221-7", NEG, days=800), lab("56888-1", POS, days=10)).result is Result.MET


def test_E12a_confirmatory_without_its_screen_goes_to_review():
    v = verdict("E12a", lab("5221-7", NEG, days=10))
    assert v.result is Result.UNKNOWN


def test_E12a_positive_confirmatory_alone_is_met():
    assert verdict("E12a", lab("5221-7", POS, days=10)).result is Result.MET


@pytest.mark.parametrize("system,code", [(ICD10CM, "B20"), (ICD10CM, "Z21"), (SCT, "86406008")])
def test_E12a_hiv_diagnosis_is_met_even_with_a_negative_test(system, code):
    v = verdict("E12a", condition(system, code, clinical=None), lab("31201-7", NEG))
    assert v.result is Result.MET


def test_E12a_who_icd10_hiv_disease_is_met():
    assert verdict("E12a", condition(ICD10, "B24")).result is Result.MET


def test_E12a_unconfirmed_hiv_diagnosis_with_negative_test_is_unknown():
    v = verdict("E12a", condition(ICD10CM, "B20", verification="provisional"), lab("31201-7", NEG))
    assert v.result is Result.UNKNOWN


def test_E12a_inconclusive_hiv_evidence_goes_to_review():
    v = verdict("E12a", condition(ICD10CM, "R75"), lab("31201-7", NEG, days=100))
    assert v.result is Result.UNKNOWN
    assert "inconclusive" in v.reason


def test_E12a_no_test_is_unknown_never_none_recorded():
    v = verdict("E12a")
    assert v.result is Result.UNKNOWN
    assert "order" in v.reason
    assert not v.reason.startswith("None recorded")


def test_E12a_panel_code_is_not_a_result():
    assert verdict("E12a", lab("75622-1", POS)).result is Result.UNKNOWN


def test_E12a_preliminary_only_is_unknown():
    v = verdict("E12a", lab("31201-7", NEG, status="preliminary"))
    assert v.result is Result.UNKNOWN
    assert "preliminary" in v.reason


def test_E12a_newer_preliminary_positive_makes_a_final_negative_unknown():
    v = verdict("E12a", lab("31201-7", NEG, days=30), lab("31201-7", POS, days=1, status="preliminary"))
    assert v.result is Result.UNKNOWN
    assert len(v.evidence) == 2


def test_E12a_newer_preliminary_negative_leaves_a_final_negative():
    v = verdict("E12a", lab("31201-7", NEG, days=30), lab("31201-7", NEG, days=1, status="preliminary"))
    assert v.result is Result.NOT_MET


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered"])
def test_E12a_non_result_statuses_are_ignored(status):
    assert verdict("E12a", lab("31201-7", POS, status=status)).result is Result.UNKNOWN


def test_E12a_negative_with_an_unreadable_hiv_result_resource_is_unknown():
    bad = lab("31201-7", POS, days=1)
    bad["effectiveDateTime"] = "yesterday"  # not a FHIR dateTime: the resource cannot be parsed
    v = verdict("E12a", lab("31201-7", NEG, days=30), bad)
    assert v.result is Result.UNKNOWN
    assert "could not be read" in v.reason


def undated(resource: dict) -> dict:
    del resource["effectiveDateTime"]
    return resource


def test_E12a_negative_with_an_undated_positive_is_unknown():
    v = verdict("E12a", lab("31201-7", NEG, days=30), undated(lab("31201-7", POS)))
    assert v.result is Result.UNKNOWN
    assert "undated" in v.reason


def test_E12a_only_an_undated_positive_is_met():
    assert verdict("E12a", undated(lab("31201-7", POS))).result is Result.MET


def test_E12a_only_an_undated_negative_is_not_met():
    v = verdict("E12a", undated(lab("31201-7", NEG)))
    assert v.result is Result.NOT_MET
    assert "unrecorded date" in v.reason


def test_E12a_positive_screen_with_an_undated_negative_confirmatory_goes_to_review():
    v = verdict("E12a", lab("56888-1", POS, days=20), undated(lab("5221-7", NEG)))
    assert v.result is Result.UNKNOWN


def test_E12a_unreadable_result_is_unknown():
    v = verdict("E12a", text_result("31201-7", "see scanned report"))
    assert v.result is Result.UNKNOWN
    assert "cannot be read" in v.reason


def test_E12a_multiple_codings_where_only_one_is_hiv():
    obs = lab("31201-7", POS)
    obs["code"] = {"coding": [{"system": "http://example.org/lab", "code": "HIVAB"},
                              {"system": LOINC, "code": "31201-7"}]}
    assert verdict("E12a", obs).result is Result.MET


def test_E12a_observations_not_retrieved_is_unknown_and_says_so():
    v = verdict("E12a", not_retrieved={"Observation": "HTTP 503"})
    assert v.result is Result.UNKNOWN
    assert "could not be retrieved" in v.reason


def test_E12a_through_the_pipeline():
    r = result_of("E12a", lab("31201-7", NEG))
    assert r.kind == "exclusion" and r.result is Result.NOT_MET
    assert r.to_json()["evidence"][0]["reference"].startswith("Observation/")


# --- E12b: hepatitis B -----------------------------------------------------------------------------------------


def test_E12b_hbsag_positive_is_met():
    assert verdict("E12b", lab("5196-1", POS)).result is Result.MET


def test_E12b_hbsag_detected_finding_code_is_met_as_observation_or_condition():
    assert verdict("E12b", observation(SCT, "165806002")).result is Result.MET
    assert verdict("E12b", condition(SCT, "165806002")).result is Result.MET


def test_E12b_hbsag_and_hbcab_negative_is_not_met():
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", NEG))
    assert v.result is Result.NOT_MET
    assert len(v.evidence) == 2


def test_E12b_hbcab_positive_and_dna_detected_is_met():
    dna = observation(LOINC, "29615-2", value=35, unit="[IU]/mL")
    v = verdict("E12b", lab("5196-1", NEG), lab("16933-4", POS), dna)
    assert v.result is Result.MET
    assert f"Observation/{dna['id']}" in refs(v)


def test_E12b_dna_in_copies_per_ml_is_read_without_a_fixed_cutoff():
    dna = observation(LOINC, "29615-2", value=150, unit="{copies}/mL")
    assert verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna).result is Result.MET


def test_E12b_dna_detected_below_lloq_text_is_detected():
    dna = text_result("29615-2", "Detected <20 IU/mL")
    assert verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna).result is Result.MET


def test_E12b_dna_below_lloq_flagged_detected_is_detected():
    dna = interp("29615-2", "DET", valueQuantity={"value": 20, "comparator": "<", "unit": "IU/mL",
                                                   "system": "http://unitsofmeasure.org", "code": "[IU]/mL"})
    assert verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna).result is Result.MET


def test_E12b_dna_target_not_detected_is_not_met():
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), lab("29615-2", NOT_DETECTED))
    assert v.result is Result.NOT_MET
    assert "not detected" in v.reason


def test_E12b_dna_not_detected_text_is_not_met():
    dna = text_result("29615-2", "Target not detected")
    assert verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna).result is Result.NOT_MET


def test_E12b_bare_censored_dna_value_is_unknown():
    dna = observation(LOINC, "29615-2", value=20, unit="[IU]/mL", comparator="<")
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna)
    assert v.result is Result.UNKNOWN
    assert "quantification limit" in v.reason


def test_E12b_bare_censored_dna_value_is_not_detected_when_the_site_says_so():
    dna = observation(LOINC, "29615-2", value=20, unit="[IU]/mL", comparator="<")
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna,
                knowledge=with_thresholds(viral_load_below_limit="not-detected"))
    assert v.result is Result.NOT_MET


def test_E12b_dna_of_zero_is_not_detected():
    dna = observation(LOINC, "29615-2", value=0, unit="[IU]/mL")
    assert verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS), dna).result is Result.NOT_MET


def test_E12b_hbcab_positive_without_dna_is_unknown():
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", POS))
    assert v.result is Result.UNKNOWN
    assert "order HBV DNA" in v.reason


def test_E12b_hbsag_negative_without_hbcab_is_unknown():
    v = verdict("E12b", lab("5196-1", NEG))
    assert v.result is Result.UNKNOWN
    assert "order HBcAb" in v.reason


def test_E12b_no_hbsag_is_unknown_even_with_negative_hbcab():
    v = verdict("E12b", lab("13952-7", NEG))
    assert v.result is Result.UNKNOWN
    assert "HBsAg" in v.reason


def test_E12b_no_tests_is_unknown():
    v = verdict("E12b")
    assert v.result is Result.UNKNOWN
    assert "order HBsAg" in v.reason


def test_E12b_dna_detected_with_negative_hbcab_goes_to_review():
    dna = observation(LOINC, "29615-2", value=500, unit="[IU]/mL")
    v = verdict("E12b", lab("5196-1", NEG), lab("13952-7", NEG), dna)
    assert v.result is Result.UNKNOWN
    assert "occult" in v.reason


def test_E12b_active_chronic_hepatitis_b_diagnosis_is_met():
    assert verdict("E12b", condition(ICD10CM, "B18.1")).result is Result.MET


def test_E12b_who_icd10_chronic_hepatitis_b_is_met():
    assert verdict("E12b", condition(ICD10, "B18.1")).result is Result.MET


def test_E12b_resolved_hepatitis_b_diagnosis_leaves_the_tests_to_decide():
    old = condition(SCT, "66071002", clinical="resolved")
    v = verdict("E12b", old, lab("5196-1", NEG), lab("13952-7", NEG))
    assert v.result is Result.NOT_MET
    assert f"Condition/{old['id']}" in refs(v)


def test_E12b_unconfirmed_hepatitis_b_diagnosis_is_unknown():
    v = verdict("E12b", condition(ICD10CM, "B18.1", verification="unconfirmed"), lab("5196-1", NEG),
                lab("13952-7", NEG))
    assert v.result is Result.UNKNOWN


def test_E12b_latest_hbsag_decides():
    v = verdict("E12b", lab("5196-1", POS, days=1000), lab("5195-3", NEG, days=10), lab("13952-7", NEG))
    assert v.result is Result.NOT_MET


# --- E12c: hepatitis C -----------------------------------------------------------------------------------------


def test_E12c_antibody_positive_and_rna_detected_is_met():
    rna = observation(LOINC, "11011-4", value=120000, unit="[IU]/mL")
    v = verdict("E12c", lab("13955-0", POS), rna)
    assert v.result is Result.MET
    assert len(v.evidence) == 2


def test_E12c_qualitative_rna_detected_text_is_met():
    assert verdict("E12c", lab("16128-1", POS), text_result("11259-9", "Detected")).result is Result.MET


def test_E12c_antibody_positive_rna_not_detected_is_not_met():
    v = verdict("E12c", lab("13955-0", POS), lab("11259-9", NOT_DETECTED))
    assert v.result is Result.NOT_MET
    assert "not detected" in v.reason


def test_E12c_antibody_positive_without_rna_is_unknown():
    v = verdict("E12c", lab("13955-0", POS))
    assert v.result is Result.UNKNOWN
    assert "order HCV RNA" in v.reason


def test_E12c_antibody_negative_is_not_met():
    assert verdict("E12c", lab("13955-0", NEG)).result is Result.NOT_MET


def test_E12c_antibody_negative_with_rna_detected_goes_to_review():
    rna = observation(LOINC, "11011-4", value=3000, unit="[IU]/mL")
    v = verdict("E12c", lab("13955-0", NEG), rna)
    assert v.result is Result.UNKNOWN
    assert "seronegative" in v.reason


def test_E12c_no_antibody_result_is_unknown():
    v = verdict("E12c")
    assert v.result is Result.UNKNOWN
    assert "order an HCV antibody test" in v.reason


def test_E12c_bare_censored_rna_is_unknown():
    rna = observation(LOINC, "11011-4", value=15, unit="[IU]/mL", comparator="<")
    assert verdict("E12c", lab("13955-0", POS), rna).result is Result.UNKNOWN


def test_E12c_active_hepatitis_c_diagnosis_is_met():
    assert verdict("E12c", condition(ICD10CM, "B18.2")).result is Result.MET


def test_E12c_who_icd10_chronic_hepatitis_c_is_met():
    assert verdict("E12c", condition(ICD10, "B18.2")).result is Result.MET


def test_E12c_cured_hepatitis_c_leaves_the_tests_to_decide():
    cured = condition(SCT, "128302006", clinical="resolved")
    v = verdict("E12c", cured, lab("13955-0", POS), lab("11259-9", NOT_DETECTED))
    assert v.result is Result.NOT_MET


def test_E12c_hepatitis_c_diagnosis_without_status_is_unknown():
    v = verdict("E12c", condition(SCT, "50711007", clinical=None), lab("13955-0", NEG))
    assert v.result is Result.UNKNOWN


# --- E12d: Treponema pallidum antibody -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["24312-1", "24110-9", "22587-0", "34147-9", "17723-8"])
def test_E12d_treponemal_antibody_positive_is_met(code):
    assert verdict("E12d", lab(code, POS)).result is Result.MET


def test_E12d_positive_years_ago_after_cure_still_excludes():
    assert verdict("E12d", lab("24312-1", POS, days=3000)).result is Result.MET


def test_E12d_negative_is_not_met():
    obs = lab("24110-9", NEG)
    v = verdict("E12d", obs)
    assert v.result is Result.NOT_MET
    assert refs(v) == {f"Observation/{obs['id']}"}


def test_E12d_rpr_only_positive_goes_to_review():
    v = verdict("E12d", lab("20507-0", POS))
    assert v.result is Result.UNKNOWN
    assert "TPPA" in v.reason


def test_E12d_rpr_only_negative_is_still_unknown():
    v = verdict("E12d", lab("14904-7", NEG))
    assert v.result is Result.UNKNOWN
    assert "not TPPA" in v.reason


def test_E12d_treponemal_negative_decides_over_a_positive_rpr():
    assert verdict("E12d", lab("24312-1", NEG), lab("20507-0", POS)).result is Result.NOT_MET


def test_E12d_titre_without_a_call_is_unknown():
    obs = observation(LOINC, "26009-1", value=80)
    assert verdict("E12d", obs).result is Result.UNKNOWN


def test_E12d_no_test_is_unknown():
    v = verdict("E12d")
    assert v.result is Result.UNKNOWN
    assert "order" in v.reason
