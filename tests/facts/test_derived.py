"""Computed facts: Cockcroft-Gault creatinine clearance, current prednisone-equivalent dose, hCG call."""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    AT,
    ATC,
    LOINC,
    RXNORM,
    coded_observation,
    date_ago,
    days_ago,
    medication_administration,
    medication_request,
    medication_statement,
    observation,
    patient,
    record_of,
)

from cds_service.config import default_knowledge
from cds_service.criteria.result import Result
from cds_service.facts.derived import (
    CreatinineClearance,
    Estimate,
    cockcroft_gault,
    creatinine_clearance,
    current_steroid_dose,
    pregnancy_test,
)
from cds_service.facts.index import Facts
from cds_service.facts.units import Quantity

MAN_50 = patient(birth="1976-01-15", gender="male")


def facts_of(*resources: dict) -> Facts:
    return Facts(record_of(*resources), AT, default_knowledge())


def scr(value: float, unit: str = "mg/dL", ago: float = 2, **kw: Any) -> dict:
    code = "2160-0" if unit == "mg/dL" else "14682-9"
    return observation(LOINC, code, value=value, unit=unit, date=days_ago(ago), **kw)


def weight(value: float, unit: str = "kg", ago: float = 2, code: str = "29463-7", **kw: Any) -> dict:
    return observation(LOINC, code, value=value, unit=unit, date=days_ago(ago), **kw)


# --- the formula --------------------------------------------------------------------------------------------

def test_cockcroft_gault_formula() -> None:
    assert cockcroft_gault(50, 72, 1.0, female=False) == pytest.approx(90.0)
    assert cockcroft_gault(50, 72, 1.0, female=True) == pytest.approx(76.5)
    assert cockcroft_gault(80, 60, 2.0, female=False) == pytest.approx(25.0)


def test_above_is_tri_state() -> None:
    def crcl(*values: float, comparator: str | None = None) -> CreatinineClearance:
        return CreatinineClearance(tuple(Estimate("male", 50, Quantity(v, "mL/min", comparator)) for v in values), ())

    assert crcl(45.1).above(45) is Result.MET
    assert crcl(45.0).above(45) is Result.NOT_MET
    assert crcl(50, 40).above(45) is Result.UNKNOWN
    assert crcl(40, comparator=">").above(45) is Result.UNKNOWN
    assert crcl(45, comparator=">").above(45) is Result.MET
    assert CreatinineClearance((), (), "no creatinine").above(45) is Result.UNKNOWN


# --- creatinine clearance from the record --------------------------------------------------------------------

def test_crcl_inputs_are_evidence() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(72)))
    assert c.missing is None
    assert [e.value for e in c.estimates] == [Quantity(90.0, "mL/min")]
    creat, wt, age, sex = c.evidence
    assert creat.reference.startswith("Observation/") and creat.value == "1 mg/dL" and creat.date
    assert wt.value == "72 kg" and wt.date
    assert age.reference == "Patient/p1" and age.value.startswith("age 50") and age.date == "1976-01-15"
    assert sex.value == "male"


def test_crcl_umol_per_litre_creatinine() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(88.4, "umol/L"), weight(72)))
    assert c.estimates[0].value.value == pytest.approx(90.0, rel=1e-3)
    assert "88.4 umol/L" in c.evidence[0].note


def test_crcl_pound_weight() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(158.733, "[lb_av]")))
    assert c.estimates[0].value.value == pytest.approx(90.0, rel=1e-4)


def test_crcl_gram_weight() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(72000, "g")))
    assert c.estimates[0].value.value == pytest.approx(90.0)


def test_crcl_nearest_weight_to_the_creatinine() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0, ago=10), weight(60, ago=2), weight(72, ago=11)))
    assert c.estimates[0].value.value == pytest.approx(90.0)  # the weight of day -11, one day from the SCr


def test_crcl_weight_must_be_within_configured_days() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0, ago=2), weight(72, ago=10)))
    assert c.missing is not None and "7 days" in c.missing
    assert len(c.evidence) == 2  # the creatinine and the weight that was too far


def test_crcl_stated_weight_only_needs_review() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(72, code="3142-7")))
    assert c.missing is not None and "review" in c.missing


def test_crcl_measured_weight_preferred_over_stated() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(50, code="3142-7", ago=2), weight(72, ago=3)))
    assert c.estimates[0].value.value == pytest.approx(90.0)


def test_crcl_preliminary_creatinine_is_missing() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0, status="preliminary"), weight(72)))
    assert c.missing is not None and "preliminary" in c.missing


def test_crcl_whole_blood_creatinine_needs_review() -> None:
    blood = observation(LOINC, "38483-4", value=1.0, unit="mg/dL", date=days_ago(2))
    c = creatinine_clearance(facts_of(MAN_50, blood, weight(72)))
    assert c.missing is not None and "review" in c.missing


def test_crcl_never_uses_egfr() -> None:
    egfr = observation(LOINC, "33914-3", value=95, unit="mL/min/{1.73_m2}", date=days_ago(2))
    c = creatinine_clearance(facts_of(MAN_50, egfr, weight(72)))
    assert not c.estimates
    assert "not a Cockcroft-Gault" in c.missing


def test_crcl_lab_reported_value_is_cross_check_only() -> None:
    reported = observation(LOINC, "35591-7", value=30, unit="mL/min", date=days_ago(2))
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0), weight(72), reported))
    assert c.estimates[0].value.value == pytest.approx(90.0)
    assert "cross-check" in c.evidence[-1].note


def test_crcl_sex_unknown_gives_both() -> None:
    c = creatinine_clearance(facts_of(patient(birth="1976-01-15", gender="other"), scr(1.0), weight(72)))
    assert sorted(e.sex for e in c.estimates) == ["female", "male"]
    assert "both" in c.evidence[3].note


def test_crcl_partial_birth_date_gives_every_age() -> None:
    c = creatinine_clearance(facts_of(patient(birth="1976", gender="male"), scr(1.0), weight(72)))
    assert sorted(e.age_years for e in c.estimates) == [49, 50]


def test_crcl_censored_inputs() -> None:
    low = creatinine_clearance(facts_of(MAN_50, scr(0.3, comparator="<"), weight(72)))
    assert low.estimates[0].value.comparator == ">"
    high = creatinine_clearance(facts_of(MAN_50, scr(5.0, comparator=">"), weight(72)))
    assert high.estimates[0].value.comparator == "<"
    mixed = creatinine_clearance(facts_of(MAN_50, scr(0.3, comparator="<"), weight(72, comparator="<")))
    assert mixed.missing is not None and "opposite" in mixed.missing


def test_crcl_unit_missing_is_missing() -> None:
    c = creatinine_clearance(facts_of(MAN_50, scr(1.0, unit=None), weight(72)))
    assert c.missing is not None and "unit" in c.missing


# --- corticosteroid dose -------------------------------------------------------------------------------------

DEX, PRED, METHYLPRED = "3264", "8640", "6902"


def test_steroid_dose_dexamethasone_factor() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, DEX, start=date_ago(3), dose_mg=3)))
    assert d.total_mg == pytest.approx(20.01)
    assert d.parts[0].unit == "mg/day prednisone-equivalent"
    assert "x 6.67" in d.parts[0].note


def test_steroid_dose_frequency_counts() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, METHYLPRED, start=date_ago(3), dose_mg=8,
                                                         per_day=2)))
    assert d.total_mg == pytest.approx(20.0)


def test_steroid_dose_sums_drugs() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, DEX, start=date_ago(3), dose_mg=1.5),
                                      medication_request(RXNORM, PRED, start=date_ago(3), dose_mg=10)))
    assert d.total_mg == pytest.approx(20.005)
    assert len(d.parts) == 2


def test_steroid_dose_atc_coded() -> None:
    d = current_steroid_dose(facts_of(medication_request(ATC, "H02AB07", start=date_ago(3), dose_mg=25)))
    assert d.total_mg == pytest.approx(25.0)


def test_steroid_dose_administrations_preferred_over_order() -> None:
    d = current_steroid_dose(facts_of(
        medication_request(RXNORM, DEX, start=date_ago(5), dose_mg=4),
        medication_administration(RXNORM, DEX, date=days_ago(0.3), dose_mg=4),
        medication_administration(RXNORM, DEX, date=days_ago(3), dose_mg=4),  # older than 24 h: not today's
    ))
    assert d.total_mg == pytest.approx(26.68)
    assert [p.reference.split("/")[0] for p in d.parts] == ["MedicationAdministration"]


def test_steroid_dose_ignores_ended_and_future_orders() -> None:
    d = current_steroid_dose(facts_of(
        medication_request(RXNORM, DEX, start=date_ago(30), end=date_ago(5), dose_mg=4, status="completed"),
        medication_request(RXNORM, PRED, start=date_ago(-5), dose_mg=40),
    ))
    assert not d.any_current and d.total_mg is None


def test_steroid_dose_non_systemic_route_excluded() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, DEX, start=date_ago(3), dose_mg=4,
                                                         route="46713006")))  # nasal
    assert not d.any_current


def test_steroid_dose_unknown_route_is_undetermined() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, DEX, start=date_ago(3), dose_mg=4,
                                                         route="6064005")))  # topical: not in either table
    assert d.total_mg is None and len(d.undetermined) == 1


def test_steroid_dose_without_dose_is_undetermined() -> None:
    d = current_steroid_dose(facts_of(medication_request(RXNORM, PRED, start=date_ago(3))))
    assert d.total_mg is None
    assert "dose or frequency" in d.undetermined[0].note


def test_steroid_without_factor_is_undetermined() -> None:
    d = current_steroid_dose(facts_of(medication_request(ATC, "H02AB13", start=date_ago(3), dose_mg=6)))
    assert d.total_mg is None
    assert "by hand" in d.undetermined[0].note


def test_steroid_statement_active_without_dose() -> None:
    d = current_steroid_dose(facts_of(medication_statement(RXNORM, PRED, start=date_ago(60), status="active")))
    assert d.any_current and d.total_mg is None


# --- hCG ------------------------------------------------------------------------------------------------------

def test_pregnancy_test_coded() -> None:
    t = pregnancy_test(facts_of(coded_observation(LOINC, "2106-3", LOINC, "LA6577-6", date=days_ago(2))))
    assert t.call is Result.NOT_MET and "negative" in t.evidence[0].note


def test_pregnancy_test_quantity_against_cutoff() -> None:
    pos = observation(LOINC, "19080-1", value=25, unit="m[IU]/mL", high=5, date=days_ago(2))
    neg = observation(LOINC, "19080-1", value=4, unit="[IU]/L", high=5, date=days_ago(2))
    assert pregnancy_test(facts_of(pos)).call is Result.MET
    assert pregnancy_test(facts_of(neg)).call is Result.NOT_MET


def test_pregnancy_test_bare_quantity_has_no_call() -> None:
    obs = observation(LOINC, "19080-1", value=25, unit="m[IU]/mL", date=days_ago(2))
    assert pregnancy_test(facts_of(obs)).call is Result.UNKNOWN


def test_pregnancy_test_missing_and_stale() -> None:
    assert pregnancy_test(facts_of()).missing.startswith("No hCG result")
    stale = pregnancy_test(facts_of(coded_observation(LOINC, "2106-3", LOINC, "LA6577-6", date=days_ago(40))))
    assert "too old" in stale.missing

