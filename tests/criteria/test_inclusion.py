"""Inclusion criteria I1-I11: met / not-met / unknown and the boundaries, per criterion."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from builders import (
    AT,
    ICD10CM,
    LOINC,
    RXNORM,
    SCT,
    UCUM,
    V3_INTERP,
    cc,
    coded_observation,
    condition,
    date_ago,
    days_ago,
    medication_administration,
    medication_request,
    observation,
    patient,
    procedure,
    record_of,
)

import cds_service.criteria.inclusion  # noqa: F401 - registers the criteria
from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import REGISTRY, Verdict
from cds_service.criteria.result import Result
from cds_service.facts.codes import load_code_tables
from cds_service.facts.index import Facts

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN
CLL1_SYSTEM = "http://example.org/local-lab"
CLL1_CODE = "CLL1"


def verdict(criterion_id: str, *resources: dict, knowledge: Knowledge | None = None,
            not_retrieved: dict[str, str] | None = None) -> Verdict:
    """One criterion's verdict on a record made of these resources, evaluated at AT."""
    facts = Facts(record_of(*resources, not_retrieved=not_retrieved), AT, knowledge or default_knowledge())
    return REGISTRY[criterion_id](facts)


def with_thresholds(**changes: Any) -> Knowledge:
    k = site_knowledge()
    return Knowledge(k.tables, replace(k.rules, thresholds={**k.rules.thresholds, **changes}))


@lru_cache(maxsize=1)
def site_knowledge() -> Knowledge:
    """The shipped knowledge plus a site table with a local CLL1 flow-cytometry code (no LOINC code exists)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="site-tables-"))
    (folder / "cll1.json").write_text(json.dumps({
        "id": "cll1", "title": "CLL1 (local)", "description": "Site flow-cytometry code for CLL1 on blasts.",
        "criteria": ["I3"],
        "concepts": [{"system": CLL1_SYSTEM, "code": CLL1_CODE, "display": "CLL1 on blasts", "status": "local",
                      "source": "test site"}],
    }), encoding="utf-8")
    # A site that routes its CD38 immunohistochemistry code to review (tissue IHC is not gated on blasts).
    (folder / "cd38.json").write_text(json.dumps({
        "id": "cd38", "title": "CD38 (site)", "description": "Site re-qualification of CD38 IHC.",
        "criteria": ["I3"],
        "concepts": [{"system": "http://loinc.org", "code": "56127-4", "display": "CD38 Ag", "status": "local",
                      "source": "test site", "review": "Tissue IHC: confirm CD38 is on the blast population."}],
    }), encoding="utf-8")
    k = default_knowledge()
    return Knowledge(load_code_tables(site_dir=folder), k.rules)


def interp(code: str) -> list[dict]:
    return [cc(V3_INTERP, code)]


def lab(code: str, value: float, unit: str, high: float | None = None, ago: float = 2, **kw: Any) -> dict:
    return observation(LOINC, code, value=value, unit=unit, high=high, date=days_ago(ago), **kw)


MALE_60 = patient(birth="1966-05-01", gender="male")


# --- I1 ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("birth", "expected"), [
    ("2008-10-01", MET),      # 18th birthday on the evaluation day
    ("2008-10-02", NOT_MET),  # 18 tomorrow
    ("1955-11-01", MET),      # 70 years 11 months
    ("1955-10-01", NOT_MET),  # 71st birthday on the evaluation day
    ("1955-10-02", MET),      # 71 tomorrow
    ("1970", MET),            # partial, 56 at either end
    ("1955", UNKNOWN),        # partial: 70 or 71
    ("1955-10", UNKNOWN),     # partial month straddling the 71st birthday
])
def test_I1_age_boundaries(birth: str, expected: Result) -> None:
    assert verdict("I1", patient(birth=birth)).result is expected


def test_I1_no_birth_date_is_unknown() -> None:
    v = verdict("I1", patient(birth=None))
    assert v.result is UNKNOWN
    assert "date of birth" in v.reason


def test_I1_no_patient_is_unknown() -> None:
    assert verdict("I1").result is UNKNOWN


def test_I1_deceased_is_not_met() -> None:
    assert verdict("I1", patient(deceasedBoolean=True)).result is NOT_MET


def test_I1_evidence_names_the_birth_date() -> None:
    v = verdict("I1", patient(birth="1980-01-01"))
    assert v.result is MET
    assert v.evidence[0].reference == "Patient/p1"
    assert v.evidence[0].date == "1980-01-01"


# --- I2 ---------------------------------------------------------------------------------------------------------

def test_I2_relapse_code_is_met() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.02", onset="2024-01-10"))
    assert v.result is MET
    assert "relapse" in v.reason
    assert v.evidence[0].code.endswith("C92.02")


def test_I2_refractory_snomed_is_met() -> None:
    assert verdict("I2", MALE_60, condition(SCT, "12291000132102")).result is MET


def test_I2_clinical_status_relapse_is_met() -> None:
    v = verdict("I2", MALE_60, condition(SCT, "91861009", clinical="relapse"))
    assert v.result is MET
    assert "relapse" in v.reason


def test_I2_aml_without_rr_evidence_is_unknown() -> None:
    v = verdict("I2", MALE_60, condition(SCT, "91861009"))
    assert v.result is UNKNOWN
    assert "relapse" in v.reason and "refractory" in v.reason
    assert v.evidence


def test_I2_c92_00_not_in_remission_is_not_refractory() -> None:
    # C92.00 also covers newly diagnosed AML: not evidence of refractory disease.
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.00")).result is UNKNOWN


def test_I2_remission_code_alone_is_unknown() -> None:
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.01", onset="2025-06-01")).result is UNKNOWN


def test_I2_blasts_after_remission_is_met() -> None:
    v = verdict("I2", MALE_60,
                condition(ICD10CM, "C92.01", onset="2026-03-01", clinical="remission"),
                lab("11150-0", 12, "%", ago=10))
    assert v.result is MET
    assert "blasts" in v.reason
    assert len(v.evidence) == 2


def test_I2_blasts_below_5_after_remission_is_unknown() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.01", onset="2026-03-01"), lab("11150-0", 3, "%", ago=10))
    assert v.result is UNKNOWN


def test_I2_blasts_before_remission_do_not_count() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.01", onset="2026-09-01"), lab("11150-0", 40, "%", ago=60))
    assert v.result is UNKNOWN


def test_I2_preliminary_blasts_do_not_count() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.01", onset="2026-03-01"),
                lab("11150-0", 40, "%", ago=10, status="preliminary"))
    assert v.result is UNKNOWN


def test_I2_no_aml_is_not_met() -> None:
    v = verdict("I2", MALE_60)
    assert v.result is NOT_MET
    assert v.reason.startswith("None recorded")


def test_I2_conditions_not_retrieved_is_unknown() -> None:
    v = verdict("I2", MALE_60, not_retrieved={"Condition": "HTTP 403"})
    assert v.result is UNKNOWN


def test_I2_apl_is_not_met() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.40"), condition(ICD10CM, "C92.02"))
    assert v.result is NOT_MET
    assert "APL" in v.reason


def test_I2_pml_rara_positive_is_not_met() -> None:
    pml = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8", date=date_ago(400))
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.02"), pml).result is NOT_MET


def test_I2_pml_rara_negative_does_not_block() -> None:
    pml = coded_observation(LOINC, "21551-7", LOINC, "LA6577-6", date=date_ago(400))
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.02"), pml).result is MET


def test_I2_preliminary_pml_rara_positive_is_unknown() -> None:
    pml = coded_observation(LOINC, "21551-7", LOINC, "LA6576-8", status="preliminary")
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.02"), pml).result is UNKNOWN


def test_I2_provisional_aml_is_unknown() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.02", verification="provisional"))
    assert v.result is UNKNOWN
    assert "provisional" in v.reason


def test_I2_unconfirmed_apl_is_unknown() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.02"), condition(ICD10CM, "C92.40", verification="unconfirmed"))
    assert v.result is UNKNOWN


def test_I2_refuted_aml_is_ignored() -> None:
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.02", verification="refuted")).result is NOT_MET


def test_I2_entered_in_error_aml_is_ignored() -> None:
    assert verdict("I2", MALE_60, condition(ICD10CM, "C92.02", verification="entered-in-error")).result is NOT_MET


def test_I2_ambiguous_code_is_unknown() -> None:
    v = verdict("I2", MALE_60, condition(ICD10CM, "C92.Z2"))
    assert v.result is UNKNOWN
    assert "review" in v.reason


# --- I3 ---------------------------------------------------------------------------------------------------------

def verdict3(*resources: dict, knowledge: Knowledge | None = None) -> Verdict:
    return verdict("I3", MALE_60, *resources, knowledge=knowledge or site_knowledge())


def cll1(**kw: Any) -> dict:
    return observation(CLL1_SYSTEM, CLL1_CODE, **kw)


def cd38(**kw: Any) -> dict:
    return observation(LOINC, "5470-0", **kw)


def test_I3_cll1_positive_is_met() -> None:
    v = verdict3(cll1(value=60, unit="%", interpretation=interp("POS")))
    assert v.result is MET
    assert "CLL1 positive" in v.reason


def test_I3_cd38_coded_positive_is_met() -> None:
    obs = coded_observation(LOINC, "5470-0", LOINC, "LA6576-8", date=date_ago(300))  # markers: any date
    assert verdict3(obs).result is MET


def test_I3_both_negative_is_not_met() -> None:
    v = verdict3(cll1(interpretation=interp("NEG")), cd38(interpretation=interp("NEG")))
    assert v.result is NOT_MET


def test_I3_one_negative_other_missing_is_unknown() -> None:
    v = verdict3(cll1(interpretation=interp("NEG")))
    assert v.result is UNKNOWN
    assert "CD38" in v.reason


def test_I3_nothing_is_unknown() -> None:
    v = verdict("I3", MALE_60)
    assert v.result is UNKNOWN
    assert "flow cytometry" in v.reason


def test_I3_latest_result_wins() -> None:
    old_pos = cll1(interpretation=interp("POS"), date=date_ago(200))
    new_neg = cll1(interpretation=interp("NEG"), date=date_ago(20))
    assert verdict3(old_pos, new_neg, cd38(interpretation=interp("NEG"))).result is NOT_MET


def test_I3_bare_percentage_without_cutoff_is_unknown() -> None:
    v = verdict3(cll1(value=35, unit="%"), cd38(interpretation=interp("NEG")))
    assert v.result is UNKNOWN
    assert "cut-off" in v.reason


def test_I3_percentage_with_configured_cutoff() -> None:
    k = with_thresholds(marker_positive_min_percent_of_blasts=20)
    assert verdict3(cll1(value=20, unit="%"), knowledge=k).result is MET
    assert verdict3(cll1(value=19.9, unit="%"), cd38(value=5, unit="%"),
                   knowledge=k).result is NOT_MET


def test_I3_preliminary_only_is_unknown() -> None:
    v = verdict3(cll1(interpretation=interp("POS"), status="preliminary"))
    assert v.result is UNKNOWN
    assert "preliminary" in v.reason


def test_I3_review_code_is_unknown() -> None:
    # The test site flags 56127-4 (CD38 Ag, likely tissue IHC) for review: not necessarily on blasts.
    obs = observation(LOINC, "56127-4", interpretation=interp("POS"))
    assert verdict3(obs).result is UNKNOWN


# --- I4, I5, I10, I11 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["I4", "I5", "I10", "I11"])
def test_I4_I5_I10_I11_attestations_are_unknown(cid: str) -> None:
    v = verdict(cid, MALE_60)
    assert v.result is UNKNOWN
    assert v.reason.startswith("Needs confirmation")


# --- I6 ---------------------------------------------------------------------------------------------------------

def ecog(value: int | None = None, answer: str | None = None, ago: float = 3, **kw: Any) -> dict:
    if answer:
        return coded_observation(LOINC, "89247-1", LOINC, answer, date=days_ago(ago), **kw)
    return observation(LOINC, "89247-1", date=days_ago(ago), valueInteger=value, **kw)


@pytest.mark.parametrize(("score", "expected"), [(0, MET), (2, MET), (3, NOT_MET), (4, NOT_MET)])
def test_I6_ecog_integer(score: int, expected: Result) -> None:
    assert verdict("I6", MALE_60, ecog(score)).result is expected


@pytest.mark.parametrize(("answer", "expected"), [("LA9624-3", MET), ("LA9625-0", NOT_MET)])
def test_I6_ecog_coded_answer(answer: str, expected: Result) -> None:
    assert verdict("I6", MALE_60, ecog(answer=answer)).result is expected


def test_I6_latest_ecog_decides() -> None:
    assert verdict("I6", MALE_60, ecog(1, ago=20), ecog(3, ago=2)).result is NOT_MET


def test_I6_stale_ecog_is_unknown() -> None:
    v = verdict("I6", MALE_60, ecog(1, ago=29))
    assert v.result is UNKNOWN
    assert "too old" in v.reason


def test_I6_karnofsky_only_is_unknown_not_converted() -> None:
    v = verdict("I6", MALE_60, observation(LOINC, "89243-0", valueInteger=90, date=days_ago(2)))
    assert v.result is UNKNOWN
    assert "Karnofsky" in v.reason


def test_I6_preliminary_is_unknown() -> None:
    assert verdict("I6", MALE_60, ecog(1, status="preliminary")).result is UNKNOWN


def test_I6_entered_in_error_is_ignored() -> None:
    assert verdict("I6", MALE_60, ecog(1, ago=5), ecog(4, ago=1, status="entered-in-error")).result is MET


# --- I7a --------------------------------------------------------------------------------------------------------

def alt(value: float, unit: str = "U/L", high: float | None = 40, **kw: Any) -> dict:
    return lab("1742-6", value, unit, high, **kw)


def ast(value: float, unit: str = "U/L", high: float | None = 40, **kw: Any) -> dict:
    return lab("1920-8", value, unit, high, **kw)


def test_I7a_exactly_2_5_uln_is_met() -> None:
    v = verdict("I7a", MALE_60, alt(100), ast(30))
    assert v.result is MET
    assert "2.50 x ULN" in v.evidence[0].note
    assert "ULN 40 U/L" in v.evidence[0].note


def test_I7a_above_2_5_uln_is_not_met() -> None:
    v = verdict("I7a", MALE_60, alt(100.1), ast(30))
    assert v.result is NOT_MET
    assert "ALT" in v.reason


def test_I7a_ast_above_is_not_met() -> None:
    assert verdict("I7a", MALE_60, alt(20), ast(150)).result is NOT_MET


def test_I7a_missing_uln_is_unknown() -> None:
    v = verdict("I7a", MALE_60, alt(30, high=None), ast(30))
    assert v.result is UNKNOWN
    assert "ULN" in v.reason


def test_I7a_missing_ast_is_unknown() -> None:
    v = verdict("I7a", MALE_60, alt(30))
    assert v.result is UNKNOWN
    assert "AST" in v.reason


def test_I7a_ukat_and_iu_units_are_converted() -> None:
    # 1.5 ukat/L = 90 U/L against 0.67 ukat/L = 40.2 U/L: 2.24 x ULN.
    v = verdict("I7a", MALE_60, alt(1.5, "ukat/L", 0.67), ast(30, "[IU]/L", 40))
    assert v.result is MET
    assert v.evidence[0].value == "90 U/L"


def test_I7a_stale_lab_29_days_is_unknown() -> None:
    v = verdict("I7a", MALE_60, alt(30, ago=29), ast(30))
    assert v.result is UNKNOWN
    assert "too old" in v.reason


def test_I7a_lab_27_days_old_counts() -> None:
    assert verdict("I7a", MALE_60, alt(30, ago=27), ast(30, ago=27)).result is MET


def test_I7a_preliminary_is_unknown() -> None:
    v = verdict("I7a", MALE_60, alt(30, status="preliminary"), ast(30))
    assert v.result is UNKNOWN
    assert "preliminary" in v.reason


def test_I7a_entered_in_error_is_ignored() -> None:
    v = verdict("I7a", MALE_60, alt(30, ago=5), alt(500, ago=1, status="entered-in-error"), ast(30))
    assert v.result is MET


def test_I7a_comparator_values() -> None:
    assert verdict("I7a", MALE_60, alt(5, comparator="<"), ast(30)).result is MET
    assert verdict("I7a", MALE_60, alt(200, comparator=">"), ast(30)).result is NOT_MET
    # ">50 U/L" is above 1.25 x ULN, but may or may not be above 2.5 x ULN.
    assert verdict("I7a", MALE_60, alt(50, comparator=">"), ast(30)).result is UNKNOWN


def test_I7a_unitless_value_is_unknown() -> None:
    assert verdict("I7a", MALE_60, alt(30, unit=None), ast(30)).result is UNKNOWN


def test_I7a_value_string_is_parsed() -> None:
    obs = observation(LOINC, "1742-6", valueString="<10 U/L", date=days_ago(2),
                      referenceRange=[{"high": {"value": 40, "unit": "U/L", "system": UCUM, "code": "U/L"}}])
    assert verdict("I7a", MALE_60, obs, ast(30)).result is MET


# --- I7b --------------------------------------------------------------------------------------------------------

def total_bili(value: float, unit: str = "mg/dL", high: float | None = 1.2, **kw: Any) -> dict:
    code = "1975-2" if unit == "mg/dL" else "14631-6"
    return lab(code, value, unit, high, **kw)


def direct_bili(value: float, high: float | None = 0.3, **kw: Any) -> dict:
    return lab("1968-7", value, "mg/dL", high, **kw)


GILBERT = ("E80.4",)


def test_I7b_total_within_2_uln_is_met() -> None:
    assert verdict("I7b", MALE_60, total_bili(2.4)).result is MET  # exactly 2 x ULN


def test_I7b_total_above_2_uln_is_not_met() -> None:
    assert verdict("I7b", MALE_60, total_bili(2.5)).result is NOT_MET


def test_I7b_umol_per_litre() -> None:
    assert verdict("I7b", MALE_60, total_bili(40, "umol/L", 21)).result is MET  # 1.90 x ULN
    assert verdict("I7b", MALE_60, total_bili(45, "umol/L", 21)).result is NOT_MET  # 2.14 x ULN


def test_I7b_missing_uln_is_unknown() -> None:
    assert verdict("I7b", MALE_60, total_bili(0.8, high=None)).result is UNKNOWN


def test_I7b_no_result_is_unknown() -> None:
    v = verdict("I7b", MALE_60)
    assert v.result is UNKNOWN
    assert "total bilirubin" in v.reason


def test_I7b_gilbert_uses_direct_bilirubin() -> None:
    gil = condition(ICD10CM, "E80.4")
    v = verdict("I7b", MALE_60, gil, total_bili(4.0), direct_bili(0.45))  # 1.5 x ULN, total 3.3 x ULN
    assert v.result is MET
    assert "Gilbert" in v.reason
    assert v.evidence[0].reference.startswith("Condition/")
    assert verdict("I7b", MALE_60, gil, direct_bili(0.5)).result is NOT_MET


def test_I7b_gilbert_without_direct_is_unknown() -> None:
    assert verdict("I7b", MALE_60, condition(ICD10CM, "E80.4"), total_bili(1.0)).result is UNKNOWN


def test_I7b_suspected_gilbert_is_unknown() -> None:
    v = verdict("I7b", MALE_60, condition(ICD10CM, "E80.4", verification="provisional"), total_bili(1.0))
    assert v.result is UNKNOWN
    assert "investigator" in v.reason


def test_I7b_other_congenital_hyperbilirubinaemia_is_unknown() -> None:
    assert verdict("I7b", MALE_60, condition(ICD10CM, "E80.5"), total_bili(1.0)).result is UNKNOWN


# --- I7c --------------------------------------------------------------------------------------------------------

def scr(value: float, unit: str = "mg/dL", ago: float = 2, **kw: Any) -> dict:
    return lab("2160-0" if unit == "mg/dL" else "14682-9", value, unit, ago=ago, **kw)


def weight(value: float, unit: str = "kg", ago: float = 2, code: str = "29463-7") -> dict:
    return lab(code, value, unit, ago=ago)


MALE_50 = patient(birth="1976-01-15", gender="male")  # 50 at the creatinine date


def test_I7c_exactly_45_is_not_met() -> None:
    v = verdict("I7c", MALE_50, scr(1.0), weight(36))  # 90 x 36 / 72 = 45.0
    assert v.result is NOT_MET
    assert "45.0 mL/min" in v.reason


def test_I7c_45_1_is_met() -> None:
    assert verdict("I7c", MALE_50, scr(1.0), weight(36.08)).result is MET  # 45.1


def test_I7c_evidence_lists_every_input() -> None:
    v = verdict("I7c", MALE_50, scr(1.0), weight(70))
    assert v.result is MET
    refs = [e.reference for e in v.evidence]
    assert refs[0].startswith("Observation/") and refs[1].startswith("Observation/")
    assert refs[2] == refs[3] == "Patient/p1"
    assert v.evidence[2].value.startswith("age 50")
    assert v.evidence[3].value == "male"
    assert all(e.date for e in v.evidence[:3])


def test_I7c_female_factor() -> None:
    female = patient(birth="1976-01-15", gender="female")
    v = verdict("I7c", female, scr(1.0), weight(50))  # 90 x 50 / 72 = 62.5 x 0.85 = 53.1
    assert v.result is MET
    assert "53.1" in v.reason
    assert verdict("I7c", female, scr(1.0), weight(40)).result is NOT_MET  # 50 x 0.85 = 42.5


def test_I7c_umol_creatinine_and_pound_weight() -> None:
    # 88.4 umol/L = 1.0 mg/dL; 154.32 [lb_av] = 70 kg: 90 x 70 / 72 = 87.5.
    v = verdict("I7c", MALE_50, scr(88.4, "umol/L"), weight(154.32, "[lb_av]"))
    assert v.result is MET
    assert "87.5" in v.reason


def test_I7c_sex_unknown_computes_both() -> None:
    unknown_sex = patient(birth="1976-01-15", gender="unknown")
    assert verdict("I7c", unknown_sex, scr(1.0), weight(70)).result is MET  # 87.5 / 74.4
    assert verdict("I7c", unknown_sex, scr(1.0), weight(30)).result is NOT_MET  # 37.5 / 31.9
    v = verdict("I7c", unknown_sex, scr(1.0), weight(40))  # 50.0 male / 42.5 female
    assert v.result is UNKNOWN
    assert "male" in v.reason and "female" in v.reason


def test_I7c_birth_sex_extension_wins_over_gender() -> None:
    p = patient(birth="1976-01-15", gender="male", extension=[
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}])
    assert verdict("I7c", p, scr(1.0), weight(40)).result is NOT_MET  # female: 42.5


def test_I7c_age_at_creatinine_date() -> None:
    # 50th birthday falls between the creatinine (10 days ago) and the evaluation: age 49 at the SCr.
    p = patient(birth="1976-09-26", gender="male")  # 50 on 2026-09-26; creatinine on 2026-09-21
    v = verdict("I7c", p, scr(1.0, ago=10), weight(70, ago=10))
    assert v.evidence[2].value.startswith("age 49")


def test_I7c_weight_too_far_from_creatinine_is_unknown() -> None:
    v = verdict("I7c", MALE_50, scr(1.0, ago=2), weight(70, ago=12))
    assert v.result is UNKNOWN
    assert "7 days" in v.reason


def test_I7c_weight_7_days_from_creatinine_counts() -> None:
    assert verdict("I7c", MALE_50, scr(1.0, ago=2), weight(70, ago=9)).result is MET


def test_I7c_no_weight_is_unknown() -> None:
    assert verdict("I7c", MALE_50, scr(1.0)).result is UNKNOWN


def test_I7c_egfr_is_never_used() -> None:
    egfr = observation(LOINC, "33914-3", value=90, unit="mL/min/{1.73_m2}", date=days_ago(2))
    v = verdict("I7c", MALE_50, egfr, weight(70))
    assert v.result is UNKNOWN
    assert "creatinine" in v.reason


def test_I7c_stale_creatinine_is_unknown() -> None:
    assert verdict("I7c", MALE_50, scr(1.0, ago=29), weight(70, ago=29)).result is UNKNOWN


def test_I7c_no_birth_date_is_unknown() -> None:
    assert verdict("I7c", patient(birth=None, gender="male"), scr(1.0), weight(70)).result is UNKNOWN


def test_I7c_censored_creatinine() -> None:
    # SCr "<0.5" means CrCl above 90 x 36 / 36 = 90.
    assert verdict("I7c", MALE_50, scr(0.5, comparator="<"), weight(36)).result is MET
    # SCr ">2.0" means CrCl below 22.5.
    assert verdict("I7c", MALE_50, scr(2.0, comparator=">"), weight(36)).result is NOT_MET


# --- I7d --------------------------------------------------------------------------------------------------------

def lvef(value: float, unit: str = "%", ago: float = 10, code: str = "10230-1", **kw: Any) -> dict:
    return observation(LOINC, code, value=value, unit=unit, date=days_ago(ago), **kw)


@pytest.mark.parametrize(("value", "expected"), [(45, MET), (44.9, NOT_MET), (60, MET)])
def test_I7d_lvef_boundary(value: float, expected: Result) -> None:
    assert verdict("I7d", MALE_60, lvef(value)).result is expected


def test_I7d_fraction_is_read_as_percent() -> None:
    v = verdict("I7d", MALE_60, lvef(0.55, unit="1"))
    assert v.result is MET
    assert "fraction" in v.evidence[0].note
    assert verdict("I7d", MALE_60, lvef(0.40, unit="1")).result is NOT_MET


def test_I7d_text_range_uses_lower_bound() -> None:
    obs = observation(LOINC, "10230-1", valueString="45-50%", date=days_ago(10))
    assert verdict("I7d", MALE_60, obs).result is MET


def test_I7d_methods_disagreeing_on_same_day_is_unknown() -> None:
    v = verdict("I7d", MALE_60, lvef(50, code="8806-2", ago=10), lvef(42, code="8812-0", ago=10))
    assert v.result is UNKNOWN
    assert "disagree" in v.reason


def test_I7d_stale_is_unknown_and_89_days_counts() -> None:
    assert verdict("I7d", MALE_60, lvef(60, ago=91)).result is UNKNOWN
    assert verdict("I7d", MALE_60, lvef(60, ago=89)).result is MET


def test_I7d_missing_is_unknown() -> None:
    v = verdict("I7d", MALE_60)
    assert v.result is UNKNOWN
    assert "echocardiogram" in v.reason


# --- I7e --------------------------------------------------------------------------------------------------------

def o2_flow(litres: float) -> dict:
    return {"code": cc(LOINC, "3151-8"), "valueQuantity": {"value": litres, "unit": "L/min", "system": UCUM,
                                                          "code": "L/min"}}


def spo2(value: float, *, code: str = "59408-5", component: list | None = None, ago: float = 1,
         **kw: Any) -> dict:
    extra = {"component": component} if component else {}
    return observation(LOINC, code, value=value, unit="%", date=days_ago(ago), **extra, **kw)


def test_I7e_room_air_flow_zero_is_met() -> None:
    v = verdict("I7e", MALE_60, spo2(95, component=[o2_flow(0)]))
    assert v.result is MET
    assert "room air" in v.reason


def test_I7e_exactly_92_on_room_air_is_met() -> None:
    assert verdict("I7e", MALE_60, spo2(92, component=[o2_flow(0)])).result is MET


def test_I7e_room_air_coded_component_is_met() -> None:
    comp = {"code": cc(LOINC, "3151-8"), "valueCodeableConcept": cc(SCT, "722742002")}
    assert verdict("I7e", MALE_60, spo2(96, component=[comp])).result is MET


def test_I7e_same_time_fio2_observation_is_met() -> None:
    s = spo2(96)
    fio2 = observation(LOINC, "3150-0", value=21, unit="%", date=s["effectiveDateTime"])
    assert verdict("I7e", MALE_60, s, fio2).result is MET


def test_I7e_room_air_not_documented_is_unknown() -> None:
    v = verdict("I7e", MALE_60, spo2(97))
    assert v.result is UNKNOWN
    assert "room air" in v.reason


def test_I7e_on_oxygen_above_92_is_unknown() -> None:
    assert verdict("I7e", MALE_60, spo2(97, component=[o2_flow(2)])).result is UNKNOWN


def test_I7e_below_92_is_not_met_whatever_the_context() -> None:
    assert verdict("I7e", MALE_60, spo2(91.9, component=[o2_flow(0)])).result is NOT_MET
    assert verdict("I7e", MALE_60, spo2(90)).result is NOT_MET
    assert verdict("I7e", MALE_60, spo2(90, component=[o2_flow(3)])).result is NOT_MET


def test_I7e_arterial_blood_gas_is_unknown() -> None:
    v = verdict("I7e", MALE_60, spo2(98, code="2708-6", component=[o2_flow(0)]))
    assert v.result is UNKNOWN


def test_I7e_stale_is_unknown() -> None:
    assert verdict("I7e", MALE_60, spo2(97, component=[o2_flow(0)], ago=29)).result is UNKNOWN


# --- I8 ---------------------------------------------------------------------------------------------------------

def test_I8_no_steroid_is_unknown() -> None:
    v = verdict("I8", MALE_60)
    assert v.result is UNKNOWN
    assert "No current systemic corticosteroid" in v.reason


def test_I8_reports_prednisone_equivalent_dose() -> None:
    v = verdict("I8", MALE_60, medication_request(RXNORM, "3264", start=date_ago(5), dose_mg=4))
    assert v.result is UNKNOWN
    assert "26.7 mg/day prednisone-equivalent" in v.reason
    assert "at or above" in v.reason
    assert v.evidence[0].reference.startswith("MedicationRequest/")


def test_I8_low_dose_is_still_unknown() -> None:
    v = verdict("I8", MALE_60, medication_request(RXNORM, "8640", start=date_ago(5), dose_mg=5))
    assert v.result is UNKNOWN
    assert "5.0 mg/day" in v.reason and "below" in v.reason


def test_I8_inhaled_steroid_not_counted() -> None:
    v = verdict("I8", MALE_60, medication_request(RXNORM, "3264", start=date_ago(5), dose_mg=4, route="447694001"))
    assert "No current systemic corticosteroid" in v.reason


def test_I8_ended_order_not_counted() -> None:
    v = verdict("I8", MALE_60, medication_request(RXNORM, "3264", start=date_ago(30), end=date_ago(10), dose_mg=4,
                                                   status="completed"))
    assert "No current systemic corticosteroid" in v.reason


def test_I8_administration_preferred_over_order() -> None:
    v = verdict("I8", MALE_60, medication_request(RXNORM, "3264", start=date_ago(5), dose_mg=4),
                medication_administration(RXNORM, "3264", date=days_ago(0.5), dose_mg=3))
    assert "20.0 mg/day" in v.reason


# --- I9 ---------------------------------------------------------------------------------------------------------

WOMAN = patient(birth="1980-01-01", gender="female")


def hcg_coded(answer: str, ago: float = 3, **kw: Any) -> dict:
    return coded_observation(LOINC, "2106-3", LOINC, answer, date=days_ago(ago), **kw)


def test_I9_wocbp_negative_hcg_is_unknown_with_date() -> None:
    v = verdict("I9", WOMAN, hcg_coded("LA6577-6"))
    assert v.result is UNKNOWN
    assert v.reason.startswith("hCG negative on ")
    assert "baseline hCG" in v.reason and "contraception" in v.reason


def test_I9_positive_hcg_is_not_met() -> None:
    v = verdict("I9", WOMAN, hcg_coded("LA6576-8"))
    assert v.result is NOT_MET
    assert v.evidence[0].note.startswith("hCG positive")


def test_I9_quantitative_hcg_against_lab_cutoff() -> None:
    neg = observation(LOINC, "19080-1", value=2, unit="m[IU]/mL", high=5, date=days_ago(3))
    pos = observation(LOINC, "19080-1", value=120, unit="m[IU]/mL", high=5, date=days_ago(3))
    assert "hCG negative" in verdict("I9", WOMAN, neg).reason
    assert verdict("I9", WOMAN, pos).result is NOT_MET


def test_I9_no_hcg_asks_to_order() -> None:
    v = verdict("I9", WOMAN)
    assert v.result is UNKNOWN
    assert "Order hCG" in v.reason


def test_I9_stale_hcg_asks_to_order() -> None:
    v = verdict("I9", WOMAN, hcg_coded("LA6577-6", ago=29))
    assert v.result is UNKNOWN
    assert "Order hCG" in v.reason


def test_I9_male_needs_agreements() -> None:
    v = verdict("I9", MALE_60)
    assert v.result is UNKNOWN
    assert "sperm" in v.reason


def test_I9_documented_non_childbearing_needs_no_hcg() -> None:
    v = verdict("I9", WOMAN, procedure(SCT, "236886002", performed="2010-01-01"),
                condition(ICD10CM, "Z90.710", onset="2010-01-01"))
    assert v.result is UNKNOWN
    assert "does not apply" in v.reason


def test_I9_unconfirmed_menopause_keeps_wocbp() -> None:
    v = verdict("I9", WOMAN, condition(ICD10CM, "Z78.0", verification="unconfirmed"))
    assert "Order hCG" in v.reason


def test_I9_is_never_met() -> None:
    for record in ([WOMAN, hcg_coded("LA6577-6")], [MALE_60], [WOMAN, condition(ICD10CM, "Z90.710")]):
        assert verdict("I9", *record).result is not MET


# --- further cases ------------------------------------------------------------------------------------------------

def test_I2_disease_status_remission_then_blasts_is_met() -> None:
    cr = coded_observation(LOINC, "97509-4", SCT, "550991000124107", date=date_ago(200))
    v = verdict("I2", MALE_60, condition(SCT, "91861009", onset="2025-01-10"), cr, lab("11150-0", 8, "%", ago=15))
    assert v.result is MET
    assert v.evidence[0].reference == cr["resourceType"] + "/" + cr["id"]


def test_I2_blast_threshold_comes_from_rules() -> None:
    record = (MALE_60, condition(ICD10CM, "C92.01", onset="2026-03-01"), lab("11150-0", 8, "%", ago=10))
    assert verdict("I2", *record).result is MET
    k = with_thresholds(relapse_blasts_min_percent=10)
    v = verdict("I2", *record, knowledge=k)
    assert v.result is UNKNOWN
    assert ">= 10%" in v.reason


def test_I7b_gilbert_with_other_congenital_form_is_unknown() -> None:
    v = verdict("I7b", MALE_60, condition(ICD10CM, "E80.4"), condition(ICD10CM, "E80.6"), direct_bili(0.2))
    assert v.result is UNKNOWN


def test_I7b_conjugated_bilirubin_needs_review() -> None:
    conj = lab("15152-2", 0.2, "mg/dL", 0.3)
    v = verdict("I7b", MALE_60, condition(ICD10CM, "E80.4"), conj)
    assert v.result is UNKNOWN
    assert "review" in v.reason


def test_I7c_stated_weight_only_is_unknown() -> None:
    v = verdict("I7c", MALE_50, scr(1.0), weight(70, code="3142-7"))
    assert v.result is UNKNOWN
    assert "review" in v.reason


def test_I7e_capillary_oximetry_needs_review() -> None:
    assert verdict("I7e", MALE_60, spo2(97, code="2710-2", component=[o2_flow(0)])).result is UNKNOWN


def test_I7e_finger_oximetry_preferred_over_newer_blood_gas() -> None:
    v = verdict("I7e", MALE_60, spo2(98, code="2708-6", ago=0.5), spo2(95, component=[o2_flow(0)], ago=2))
    assert v.result is MET


def test_I7e_fio2_above_room_air_is_oxygen() -> None:
    comp = {"code": cc(LOINC, "3150-0"), "valueQuantity": {"value": 28, "unit": "%", "system": UCUM, "code": "%"}}
    v = verdict("I7e", MALE_60, spo2(96, component=[comp]))
    assert v.result is UNKNOWN
    assert "supplemental oxygen" in v.reason


def test_I7e_on_oxygen_coded_value_is_unknown() -> None:
    comp = {"code": cc(LOINC, "3151-8"), "valueCodeableConcept": cc(SCT, "371825009")}
    assert verdict("I7e", MALE_60, spo2(96, component=[comp])).result is UNKNOWN


def test_I7e_observation_at_another_time_does_not_document_room_air() -> None:
    fio2 = observation(LOINC, "3150-0", value=21, unit="%", date=days_ago(3))
    assert verdict("I7e", MALE_60, spo2(96, ago=1), fio2).result is UNKNOWN


def test_I8_flags_steroid_dependence() -> None:
    v = verdict("I8", MALE_60, condition(ICD10CM, "E27.1"),
                medication_request(RXNORM, "5492", start=date_ago(100), dose_mg=10, per_day=2))
    assert v.result is UNKNOWN
    assert "5.0 mg/day" in v.reason
    assert "stopping steroids may be hard" in v.reason
    assert any(e.reference.startswith("Condition/") for e in v.evidence)
