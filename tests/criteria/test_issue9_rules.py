"""Rules found alongside issue 9 (part 6), each a choice in the rules file and the README's table of choices:

* E10f ``windows.bp_readings_across_visits``: the mean of at least two readings (the latest visit's when it has
  two, else the latest readings across visits);
* E2c ``windows.open_order_course_days``: an open order is taken through its expected course, so ``until`` is a
  fixed date (moving ``at`` does not move it); hydroxyurea's half-life (from the medication tables) decides
  "whichever was shorter";
* E10b ``windows.onset_bound_by_code``: an MI code with only a recordedDate is dated by what the code means;
* E8's reason names "the AML" only for a patient who has one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

from builders import (
    AT,
    ATC,
    ICD10,
    ICD10CM,
    LOINC,
    SCT,
    UCUM,
    cc,
    condition,
    date_ago,
    days_ago,
    medication_administration,
    medication_request,
    medication_statement,
    observation,
    patient,
    record_of,
)

import cds_service.criteria.cardiac  # noqa: F401  (registers the criteria)
import cds_service.criteria.disease  # noqa: F401
import cds_service.criteria.treatments  # noqa: F401
from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.registry import REGISTRY
from cds_service.criteria.result import Result
from cds_service.facts.index import Facts

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VENETOCLAX = "1747556"
HYDROXYUREA_ATC = "L01XX05"
SBP, DBP, BP_PANEL = "8480-6", "8462-4", "85354-9"


def verdict(criterion_id: str, *resources: dict, at: datetime = AT, knowledge: Knowledge | None = None):
    facts = Facts(record_of(patient(), *resources), at, knowledge or default_knowledge())
    return REGISTRY[criterion_id](facts)


def with_windows(**changes) -> Knowledge:
    k = default_knowledge()
    return Knowledge(k.tables, replace(k.rules, windows={**k.rules.windows, **changes}))


def bp(sbp: float, dbp: float, *, hours_ago: float) -> dict:
    obs = observation(LOINC, BP_PANEL, date=days_ago(hours_ago / 24))
    obs["component"] = [{"code": cc(LOINC, code), "valueQuantity": {"value": v, "unit": "mm[Hg]", "system": UCUM,
                                                                     "code": "mm[Hg]"}}
                        for code, v in ((SBP, sbp), (DBP, dbp))]
    return obs


def refs(v) -> list[str]:
    return [e.reference for e in v.evidence]


# === E10f ========================================================================================================
def test_rule_keys_are_shipped_with_their_defaults():
    w = default_knowledge().rules.windows
    assert w["bp_readings_across_visits"] == "latest"
    assert w["open_order_course_days"] == 30
    assert {(r["system"], r["prefix"], r["days"]) for r in w["onset_bound_by_code"]} >= {
        (ICD10CM, "I21", 28), (ICD10CM, "I22", 28), (ICD10, "I21", 28)}


def test_E10f_two_high_readings_four_days_apart_are_met():
    a, b = bp(168, 104, hours_ago=2), bp(160, 98, hours_ago=4 * 24 + 2)
    v = verdict("E10f", a, b)
    assert v.result is MET
    assert "mean SBP 164" in v.reason and "latest 2 readings" in v.reason
    assert {f"Observation/{a['id']}", f"Observation/{b['id']}"} <= set(refs(v))


def test_E10f_across_visits_none_keeps_the_latest_visit_alone():
    v = verdict("E10f", bp(168, 104, hours_ago=2), bp(160, 98, hours_ago=4 * 24 + 2),
                knowledge=with_windows(bp_readings_across_visits="none"))
    assert v.result is UNKNOWN and "at least 2" in v.reason


def test_E10f_across_visits_takes_the_latest_two_readings_not_every_older_one():
    # one reading today (normal), two a week ago (very high): the mean of the newest two is 150/95 -> MET on SBP,
    # and the oldest reading (200/120) is not averaged in
    newest, middle = bp(140, 90, hours_ago=1), bp(160, 100, hours_ago=7 * 24)
    oldest = bp(200, 120, hours_ago=7 * 24 + 1)
    v = verdict("E10f", newest, middle, oldest)
    assert v.result is MET and "mean SBP 150" in v.reason
    assert f"Observation/{oldest['id']}" not in refs(v) and f"Observation/{middle['id']}" in refs(v)


def test_E10f_a_visit_with_two_readings_is_averaged_alone():
    v = verdict("E10f", bp(130, 80, hours_ago=1), bp(132, 82, hours_ago=2), bp(200, 120, hours_ago=5 * 24))
    assert v.result is NOT_MET and "latest visit" in v.reason


def test_E10f_a_single_reading_in_the_window_stays_unknown():
    v = verdict("E10f", bp(190, 115, hours_ago=1), bp(190, 115, hours_ago=40 * 24))  # the second is stale
    assert v.result is UNKNOWN


# === E2c =========================================================================================================
def test_E2c_until_of_an_open_order_does_not_move_with_the_evaluation_time():
    order = medication_request(RXNORM, VENETOCLAX, start="2026-09-25")
    first = verdict("E2c", order, at=AT)
    later = verdict("E2c", order, at=AT + timedelta(days=9))
    assert first.result is MET and later.result is MET
    assert first.until == later.until == date(2026, 10, 31)  # course to 2026-10-25, + 5 x 26 h


def test_E2c_expected_supply_duration_and_repeats_set_the_course():
    order = medication_request(RXNORM, VENETOCLAX, start="2026-06-01")
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 28, "unit": "days", "system": UCUM, "code": "d"},
                                "numberOfRepeatsAllowed": 3}
    v = verdict("E2c", order)  # 4 fills x 28 days: to 2026-09-21, before the 130 h washout
    assert v.result is UNKNOWN and "2026-09-21" in v.reason
    order["dispenseRequest"]["numberOfRepeatsAllowed"] = 4  # 5 fills: to 2026-10-19
    v = verdict("E2c", order)
    assert v.result is MET and v.until == date(2026, 10, 25)
    assert "expected supply 28 days x 5 fills" in v.reason


def test_E2c_expected_supply_in_weeks_is_read_with_ucum():
    order = medication_request(RXNORM, VENETOCLAX, start="2026-09-01")
    order["dispenseRequest"] = {"expectedSupplyDuration": {"value": 6, "unit": "weeks", "system": UCUM, "code": "wk"}}
    v = verdict("E2c", order)  # 42 days: to 2026-10-13
    assert v.result is MET and "2026-10-13" in v.reason


def test_E2c_open_order_course_days_is_configurable():
    order = medication_request(RXNORM, VENETOCLAX, start=date_ago(60))
    assert verdict("E2c", order).result is UNKNOWN
    v = verdict("E2c", order, knowledge=with_windows(open_order_course_days=90))
    assert v.result is MET and v.until == date(2026, 11, 6)  # 2026-08-02 + 90 d = 2026-10-31, + 130 h


def test_E2c_active_statement_is_bounded_from_its_assertion_date():
    st = medication_statement(RXNORM, VENETOCLAX, start="2025-01-01", status="active")
    st["dateAsserted"] = "2026-09-28"
    v = verdict("E2c", st)
    assert v.result is MET and v.until == date(2026, 11, 3)  # asserted 2026-09-28 + 30 d = 2026-10-28, + 130 h


def test_E2c_an_infusion_in_progress_is_given_now():
    ma = medication_administration(RXNORM, VENETOCLAX, date=days_ago(0.1), status="in-progress")
    assert verdict("E2c", ma).result is MET


def test_E2c_hydroxyurea_given_5_days_ago_is_past_five_half_lives():
    # Hydroxyurea's elimination half-life is a few hours (4 h used, sourced in fhir_mappings/medications), so five
    # half-lives are under a day: "whichever was shorter" makes a dose 5 days ago no exclusion. The value-set entry
    # (ATC L01XX05) has no half-life; the ingredient's, with its source, is used.
    ma = medication_administration(ATC, HYDROXYUREA_ATC, date=days_ago(5))
    assert verdict("E2c", ma).result is NOT_MET


def test_E2c_a_drug_without_a_half_life_uses_14_days_and_says_so():
    ma = medication_administration(ATC, "L01DB07", date=days_ago(5))  # mitoxantrone: no sourced half-life
    v = verdict("E2c", ma)
    assert v.result is MET and "unknown" in v.reason.lower()


# === E10b ========================================================================================================
def mi(system: str, code: str, recorded_days_ago: int, **extra) -> dict:
    c = condition(system, code, **extra)
    c["recordedDate"] = date_ago(recorded_days_ago)
    return c


def test_E10b_i21_with_only_a_recorded_date_inside_the_window_goes_to_review():
    v = verdict("E10b", mi(ICD10CM, "I21.09", 90))
    assert v.result is UNKNOWN
    assert "between 2026-06-05 and 2026-07-03" in v.reason and "inside the window" in v.reason
    assert "None recorded" not in v.reason


def test_E10b_i21_recorded_at_the_edge_overlaps_the_window():
    v = verdict("E10b", mi(ICD10CM, "I21.4", 170, clinical="resolved"))
    assert v.result is UNKNOWN and "overlapping the window" in v.reason


def test_E10b_who_icd10_i22_is_bounded_the_same_way():
    v = verdict("E10b", mi(ICD10, "I22.0", 60))
    assert v.result is UNKNOWN and "28 days after onset" in v.reason


def test_E10b_i21_recorded_before_the_window_is_an_older_mi():
    v = verdict("E10b", mi(ICD10CM, "I21.09", 300))
    assert v.result is NOT_MET
    assert v.evidence and "None recorded" not in v.reason


def test_E10b_a_code_without_a_bound_keeps_on_or_before():
    v = verdict("E10b", mi(SCT, "22298006", 90))
    assert v.result is UNKNOWN and "cannot place" in v.reason


def test_E10b_the_bound_is_configurable():
    v = verdict("E10b", mi(ICD10CM, "I21.09", 90), knowledge=with_windows(onset_bound_by_code=[]))
    assert v.result is UNKNOWN and "cannot place" in v.reason


def test_E10b_an_onset_date_still_decides():
    c = mi(ICD10CM, "I21.09", 90, onset=date_ago(95))
    v = verdict("E10b", c)
    assert v.result is MET


# === E8 ==========================================================================================================
def test_E8_reason_does_not_mention_the_aml_for_a_patient_without_one():
    v = verdict("E8")
    assert v.result is NOT_MET
    assert "the AML" not in v.reason and "malignancy" in v.reason


def test_E8_reason_names_the_aml_for_a_patient_with_one():
    v = verdict("E8", condition(SCT, "91861009", onset="2025-01-10"))
    assert v.result is NOT_MET and "other than the AML" in v.reason
