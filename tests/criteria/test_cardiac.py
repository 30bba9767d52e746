"""E9 (stroke or seizure) and E10a-E10f (cardiac): met / not-met / unknown, boundaries and status filters.

The evaluation time is AT = 2026-10-01T09:00Z, so the 6-calendar-month window is (2026-04-01T09:00Z, AT].
"""

from __future__ import annotations

import pytest
from builders import (
    CPT,
    ICD10,
    ICD10CM,
    LOINC,
    PCS,
    SCT,
    UCUM,
    cc,
    coded_observation,
    condition,
    date_ago,
    days_ago,
    observation,
    patient,
    procedure,
    result_of,
)

from cds_service.criteria.result import Result

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN

QTCF = "76634-5"
QT = "8634-8"
RR = "8637-1"
HR = "8867-4"
QTCB = "76635-2"
QTC = "8636-3"
SBP = "8480-6"
DBP = "8462-4"
BP_PANEL = "85354-9"
LVEF = "10230-1"


def run(cid: str, *resources, not_retrieved=None):
    return result_of(cid, patient(), *resources, not_retrieved=not_retrieved)


def component(code: str, value: float | None, unit: str | None) -> dict:
    c: dict = {"code": cc(LOINC, code)}
    if value is not None:
        c["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return c


def panel(code: str, *components: dict, date: str | None = None, status: str = "final") -> dict:
    obs = observation(LOINC, code, date=date, status=status)
    obs["component"] = list(components)
    return obs


def ecg(*components: dict, date: str | None = None, status: str = "final") -> dict:
    return panel("11524-6", *components, date=date or days_ago(3), status=status)


def bp(sbp: float | None, dbp: float | None, *, hours_ago: float = 24, unit: str = "mm[Hg]",
       status: str = "final") -> dict:
    return panel(BP_PANEL, component(SBP, sbp, unit), component(DBP, dbp, unit), date=days_ago(hours_ago / 24),
                 status=status)


def qtcf(value: float, *, date: str | None = None, status: str = "final") -> dict:
    return observation(LOINC, QTCF, value=value, unit="ms", date=date or days_ago(3), status=status)


def notes(r) -> str:
    return " ".join(f"{e.note or ''} {e.value or ''}" for e in r.evidence)


# ================================================================================================================
# E9 stroke or seizure within 6 months before consent
# ================================================================================================================
def test_E9_stroke_inside_window_is_met_with_until():
    r = run("E9", condition(SCT, "230690007", onset="2026-05-01"))
    assert r.result is MET
    assert r.until.isoformat() == "2026-11-02"
    assert r.evidence[0].date == "2026-05-01"


def test_E9_onset_at_the_window_start_instant_is_outside():
    r = run("E9", condition(SCT, "422504002", onset="2026-04-01T09:00:00Z"))
    assert r.result is NOT_MET
    assert r.evidence and r.evidence[0].reference.startswith("Condition/")


def test_E9_date_only_on_the_window_start_day_straddles_it_and_is_unknown():
    assert run("E9", condition(SCT, "422504002", onset="2026-04-01")).result is UNKNOWN


def test_E9_day_after_the_window_start_is_met():
    assert run("E9", condition(SCT, "422504002", onset="2026-04-02")).result is MET


def test_E9_just_after_the_window_start_instant_is_met():
    assert run("E9", condition(SCT, "422504002", onset="2026-04-01T09:00:01Z")).result is MET


def test_E9_partial_month_straddling_the_window_is_unknown():
    assert run("E9", condition(SCT, "230690007", onset="2026-04")).result is UNKNOWN


def test_E9_old_stroke_is_not_met_with_evidence():
    r = run("E9", condition(ICD10CM, "I63.9", onset="2025-01-10", clinical="resolved"))
    assert r.result is NOT_MET
    assert "2025-01-10" in r.reason and r.evidence[0].date == "2025-01-10"


def test_E9_aml_related_intracerebral_haemorrhage_is_a_stroke():
    assert run("E9", condition(ICD10CM, "I61.9", onset=date_ago(20))).result is MET


def test_E9_who_icd10_i64_is_a_stroke():
    assert run("E9", condition(ICD10, "I64", onset=date_ago(20))).result is MET


def test_E9_i62_other_intracranial_haemorrhage_in_window_is_unknown_for_review():
    r = run("E9", condition(ICD10CM, "I62.00", onset=date_ago(20)))
    assert r.result is UNKNOWN and "review" in r.reason


def test_E9_i62_long_ago_is_not_met():
    assert run("E9", condition(ICD10CM, "I62.00", onset="2020-01-01")).result is NOT_MET


def test_E9_tia_is_not_a_stroke():
    r = run("E9", condition(SCT, "266257000", onset=date_ago(20)), condition(ICD10CM, "G45.9", onset=date_ago(10)))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")
    assert "TIA is not a stroke" in notes(r)


def test_E9_stroke_sequela_with_an_old_date_is_not_a_new_event():
    r = run("E9", condition(ICD10CM, "I69.354", onset="2019-03-01", recordedDate=date_ago(5)))
    assert r.result is NOT_MET
    assert "not a new event" in notes(r)


def test_E9_undated_history_of_stroke_is_not_a_new_event():
    assert run("E9", condition(SCT, "275526006")).result is NOT_MET


def test_E9_stroke_sequela_dated_inside_the_window_asks_for_the_original_date():
    r = run("E9", condition(ICD10CM, "I69.354", onset=date_ago(30)))
    assert r.result is UNKNOWN and "original stroke" in r.reason


def test_E9_seizure_condition_in_window_is_met():
    assert run("E9", condition(ICD10CM, "R56.9", onset=date_ago(40), clinical="resolved")).result is MET


def test_E9_epilepsy_without_a_dated_recent_seizure_is_unknown():
    r = run("E9", condition(ICD10CM, "G40.909", onset="2010-05-01"))
    assert r.result is UNKNOWN and "last seizure" in r.reason


def test_E9_epilepsy_with_a_seizure_in_window_is_met():
    r = run("E9", condition(ICD10CM, "G40.909", onset="2010-05-01"), condition(SCT, "91175000", onset=date_ago(60)))
    assert r.result is MET


def test_E9_epilepsy_with_an_old_seizure_only_is_unknown():
    r = run("E9", condition(ICD10CM, "G40.909", onset="2010-05-01"), condition(ICD10CM, "R56.9", onset="2024-01-01"))
    assert r.result is UNKNOWN


def test_E9_epilepsy_diagnosed_inside_the_window_is_met():
    assert run("E9", condition(SCT, "84757009", onset=date_ago(60))).result is MET


def test_E9_resolved_epilepsy_long_ago_is_not_met():
    r = run("E9", condition(ICD10CM, "G40.909", onset="2000-05-01", clinical="resolved",
                            abatementDateTime="2005-01-01"))
    assert r.result is NOT_MET
    assert "recorded as resolved" in notes(r)


def test_E9_epilepsy_resolved_inside_the_window_is_unknown():
    r = run("E9", condition(ICD10CM, "G40.909", onset="2000-05-01", clinical="resolved",
                            abatementDateTime=date_ago(30)))
    assert r.result is UNKNOWN


def test_E9_epilepsy_with_a_partial_onset_straddling_the_window_is_unknown():
    assert run("E9", condition(ICD10CM, "G40.909", onset="2026-04", clinical="inactive")).result is UNKNOWN


def test_E9_seizure_observation_in_window_is_met():
    obs = observation(SCT, "91175000", date=days_ago(10))
    obs["valueBoolean"] = True
    assert run("E9", obs).result is MET


def test_E9_seizure_observation_recorded_absent_does_not_count():
    obs = observation(SCT, "91175000", date=days_ago(10))
    obs["valueBoolean"] = False
    assert run("E9", obs).result is NOT_MET


def test_E9_refuted_and_entered_in_error_strokes_are_ignored():
    r = run("E9", condition(SCT, "230690007", onset=date_ago(20), verification="refuted"),
            condition(SCT, "230690007", onset=date_ago(20), verification="entered-in-error"))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E9_provisional_stroke_in_window_is_unknown():
    r = run("E9", condition(SCT, "230690007", onset=date_ago(20), verification="provisional"))
    assert r.result is UNKNOWN and "provisional" in r.reason


def test_E9_undated_stroke_is_unknown():
    assert run("E9", condition(SCT, "230690007")).result is UNKNOWN


def test_E9_stroke_with_only_an_old_recorded_date_is_not_met():
    r = run("E9", condition(SCT, "230690007", recordedDate="2020-02-01"))
    assert r.result is NOT_MET
    assert r.evidence[0].date == "on or before 2020-02-01"


def test_E9_stroke_with_only_a_recent_recorded_date_is_unknown():
    assert run("E9", condition(SCT, "230690007", recordedDate=date_ago(10))).result is UNKNOWN


def test_E9_none_recorded():
    r = run("E9")
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E9_conditions_not_retrieved_is_unknown():
    r = run("E9", not_retrieved={"Condition": "HTTP 403"})
    assert r.result is UNKNOWN and "403" in r.reason


# ================================================================================================================
# E10a NYHA III/IV heart failure
# ================================================================================================================
HF = (ICD10CM, "I50.22")
NYHA = {1: "420300004", 2: "421704003", 3: "420913000", 4: "422293003"}


def nyha_obs(cls: int, days: float = 10) -> dict:
    return coded_observation(LOINC, "88020-3", SCT, NYHA[cls], date=days_ago(days))


def test_E10a_nyha_class_iii_condition_is_met():
    r = run("E10a", condition(*HF, onset="2024-01-01"), condition(SCT, NYHA[3], onset="2026-08-01"))
    assert r.result is MET and "NYHA class 3" in notes(r)


def test_E10a_nyha_iv_observation_is_met():
    assert run("E10a", condition(*HF), nyha_obs(4)).result is MET


def test_E10a_nyha_class_as_heart_failure_stage_is_met():
    hf = condition(*HF, onset="2024-01-01")
    hf["stage"] = [{"summary": cc(SCT, NYHA[3])}]
    assert run("E10a", hf).result is MET


def test_E10a_heart_failure_without_nyha_class_is_unknown():
    r = run("E10a", condition(*HF, onset="2024-01-01"))
    assert r.result is UNKNOWN and "NYHA class" in r.reason


def test_E10a_heart_failure_nyha_ii_is_not_met_with_evidence():
    r = run("E10a", condition(*HF, onset="2024-01-01"), nyha_obs(2))
    assert r.result is NOT_MET
    assert {e.reference.split("/")[0] for e in r.evidence} == {"Condition", "Observation"}


def test_E10a_latest_nyha_observation_decides():
    assert run("E10a", condition(*HF), nyha_obs(3, days=60), nyha_obs(2, days=5)).result is NOT_MET
    assert run("E10a", condition(*HF), nyha_obs(2, days=60), nyha_obs(3, days=5)).result is MET


def test_E10a_stale_nyha_observation_is_unknown():
    r = run("E10a", condition(*HF), nyha_obs(2, days=200))
    assert r.result is UNKNOWN and "too old" in r.reason


def test_E10a_unreadable_nyha_value_without_heart_failure_is_unknown():
    obs = coded_observation(LOINC, "88020-3", LOINC, "LA-unverified", date=days_ago(10))
    r = run("E10a", obs)
    assert r.result is UNKNOWN and "cannot be read as a class" in r.reason


def test_E10a_old_nyha_iv_without_heart_failure_is_unknown():
    r = run("E10a", nyha_obs(4, days=200))
    assert r.result is UNKNOWN and "class 4" in r.reason


def test_E10a_old_nyha_i_without_heart_failure_is_not_met():
    assert run("E10a", nyha_obs(1, days=200)).result is NOT_MET


def test_E10a_preliminary_nyha_observation_does_not_count():
    obs = nyha_obs(2)
    obs["status"] = "preliminary"
    assert run("E10a", condition(*HF), obs).result is UNKNOWN


def test_E10a_conflicting_current_classes_is_unknown():
    r = run("E10a", condition(*HF), condition(SCT, NYHA[3]), nyha_obs(1))
    assert r.result is UNKNOWN and "Conflicting" in r.reason


def test_E10a_resolved_nyha_iii_finding_does_not_count():
    assert run("E10a", condition(*HF), condition(SCT, NYHA[3], clinical="resolved"), nyha_obs(2)).result is NOT_MET


def test_E10a_provisional_nyha_iii_is_unknown():
    r = run("E10a", condition(SCT, NYHA[3], verification="provisional"))
    assert r.result is UNKNOWN and "not confirmed" in r.reason


def test_E10a_resolved_heart_failure_is_not_met():
    assert run("E10a", condition(*HF, clinical="resolved", onset="2020-01-01")).result is NOT_MET


def test_E10a_refuted_heart_failure_is_none_recorded():
    r = run("E10a", condition(*HF, verification="refuted"))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10a_none_recorded():
    r = run("E10a")
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10a_not_retrieved_is_unknown():
    assert run("E10a", not_retrieved={"Condition": "timeout"}).result is UNKNOWN


# ================================================================================================================
# E10b MI or CABG within 6 months before enrolment
# ================================================================================================================
def test_E10b_mi_inside_window_is_met_with_until():
    r = run("E10b", condition(ICD10CM, "I21.4", onset="2026-06-15"))
    assert r.result is MET and r.until.isoformat() == "2026-12-16"


def test_E10b_cabg_procedure_inside_window_is_met():
    r = run("E10b", procedure(SCT, "232717009", performed=days_ago(60)))
    assert r.result is MET and r.until is not None


@pytest.mark.parametrize("system,code", [(CPT, "33533"), (PCS, "021209W")])
def test_E10b_cabg_cpt_and_pcs_codes(system, code):
    assert run("E10b", procedure(system, code, performed=days_ago(60))).result is MET


def test_E10b_percutaneous_coronary_vein_bypass_is_not_cabg():
    r = run("E10b", procedure(PCS, "0210344", performed=days_ago(60)))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10b_not_done_cabg_is_ignored():
    r = run("E10b", procedure(SCT, "232717009", performed=days_ago(60), status="not-done"))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10b_boundaries():
    assert run("E10b", condition(SCT, "22298006", onset="2026-04-01T09:00:00Z")).result is NOT_MET
    assert run("E10b", condition(SCT, "22298006", onset="2026-04-01")).result is UNKNOWN
    assert run("E10b", condition(SCT, "22298006", onset="2026-04-02")).result is MET


def test_E10b_older_mi_is_not_met_with_evidence():
    r = run("E10b", condition(SCT, "57054005", onset="2023-02-01", clinical="resolved"))
    assert r.result is NOT_MET and r.evidence[0].date == "2023-02-01"


def test_E10b_undated_old_mi_code_only_is_unknown():
    r = run("E10b", condition(ICD10CM, "I25.2"))
    assert r.result is UNKNOWN


def test_E10b_undated_bypass_graft_status_is_unknown():
    assert run("E10b", condition(ICD10CM, "Z95.1")).result is UNKNOWN


def test_E10b_bypass_graft_status_recorded_long_ago_is_not_met():
    r = run("E10b", condition(ICD10CM, "Z95.1", recordedDate="2019-06-01"))
    assert r.result is NOT_MET and "on or before 2019-06-01" in r.reason


def test_E10b_unconfirmed_mi_in_window_is_unknown():
    r = run("E10b", condition(ICD10CM, "I21.4", onset=date_ago(10), verification="differential"))
    assert r.result is UNKNOWN and "differential" in r.reason


def test_E10b_future_planned_cabg_is_not_a_past_event():
    r = run("E10b", procedure(SCT, "232717009", performed=days_ago(-10), status="in-progress"))
    assert r.result is NOT_MET


def test_E10b_none_recorded():
    r = run("E10b")
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10b_procedures_not_retrieved_is_unknown():
    assert run("E10b", not_retrieved={"Procedure": "HTTP 500"}).result is UNKNOWN


# ================================================================================================================
# E10c rhythm / conduction / QTcF
# ================================================================================================================
def test_E10c_reported_qtcf_480_is_met():
    r = run("E10c", qtcf(480))
    assert r.result is MET and "480 ms" in r.reason


def test_E10c_reported_qtcf_479_is_not_met_with_evidence():
    r = run("E10c", qtcf(479))
    assert r.result is NOT_MET
    assert r.evidence[0].value == "479 ms"


def test_E10c_qtcf_computed_from_qt_0_44_s_and_rr_0_8_s():
    r = run("E10c", ecg(component(QT, 0.44, "s"), component(RR, 0.8, "s")))
    assert r.result is NOT_MET
    assert "474 ms" in r.reason and "computed" in r.reason
    computed = r.evidence[0]
    assert "QT 440 ms" in computed.note and "RR 0.8 s" in computed.note
    assert any(e.value == "440 ms" for e in r.evidence) and any(e.value == "0.8 s" for e in r.evidence)


def test_E10c_qtcf_computed_from_separate_observations_of_the_same_time():
    t = days_ago(2)
    r = run("E10c", observation(LOINC, QT, value=500, unit="ms", date=t),
            observation(LOINC, RR, value=1000, unit="ms", date=t))
    assert r.result is MET and "500 ms" in r.reason


def test_E10c_qtcf_computed_from_heart_rate():
    # QT 460 ms at 90/min: RR 0.667 s, QTcF = 460 / 0.667^(1/3) = 526.6 ms
    r = run("E10c", ecg(component(QT, 460, "ms"), component(HR, 90, "/min")))
    assert r.result is MET and "heart rate" in r.reason


def test_E10c_computed_qtcf_is_decided_at_the_precision_it_is_shown():
    # RR 1 s: QTcF = QT. 479.96 is shown and decided as 480; 479.94 as 479.9.
    r = run("E10c", ecg(component(QT, 479.96, "ms"), component(RR, 1, "s")))
    assert r.result is MET and "QTcF 480 ms" in r.reason
    r = run("E10c", ecg(component(QT, 479.94, "ms"), component(RR, 1, "s")))
    assert r.result is NOT_MET and "QTcF 479.9 ms" in r.reason


def test_E10c_bazett_is_never_used_as_qtcf():
    r = run("E10c", ecg(component(QTCB, 520, "ms"), component(HR, 55, "/min")))
    assert r.result is UNKNOWN and "not a QTcF" in r.reason


def test_E10c_generic_qtc_is_never_used_as_qtcf():
    r = run("E10c", ecg(component(QTC, 520, "ms")))
    assert r.result is UNKNOWN and "formula not stated" in r.reason


def test_E10c_bazett_below_480_at_heart_rate_above_60_supports_not_met():
    r = run("E10c", ecg(component(QTCB, 465, "ms"), component(HR, 80, "/min")))
    assert r.result is NOT_MET and "Bazett" in r.reason
    assert "over-corrects" in notes(r)


def test_E10c_bazett_below_480_at_heart_rate_60_is_unknown():
    assert run("E10c", ecg(component(QTCB, 465, "ms"), component(HR, 60, "/min"))).result is UNKNOWN


def test_E10c_no_ecg_is_unknown_even_without_rhythm_conditions():
    r = run("E10c")
    assert r.result is UNKNOWN and "order a 12-lead ECG" in r.reason


def test_E10c_stale_ecg_is_unknown():
    r = run("E10c", qtcf(450, date=days_ago(91)))
    assert r.result is UNKNOWN and "older than 90 days" in r.reason


def test_E10c_ecg_at_89_days_counts():
    assert run("E10c", qtcf(450, date=days_ago(89))).result is NOT_MET


def test_E10c_preliminary_ecg_is_unknown():
    r = run("E10c", qtcf(450, status="preliminary"))
    assert r.result is UNKNOWN and "preliminary" in r.reason


def test_E10c_newer_preliminary_ecg_blocks_not_met():
    r = run("E10c", qtcf(450, date=days_ago(10)), qtcf(495, date=days_ago(1), status="preliminary"))
    assert r.result is UNKNOWN and "newer preliminary ECG" in r.reason


def test_E10c_older_preliminary_ecg_does_not_matter():
    r = run("E10c", qtcf(450, date=days_ago(1)), qtcf(495, date=days_ago(10), status="preliminary"))
    assert r.result is NOT_MET


def test_E10c_newer_preliminary_heart_rate_is_not_an_ecg():
    hr = observation(LOINC, HR, value=80, unit="/min", date=days_ago(0.5), status="preliminary")
    assert run("E10c", qtcf(450, date=days_ago(10)), hr).result is NOT_MET


def test_E10c_final_qtcf_above_limit_stays_met_despite_a_newer_preliminary():
    r = run("E10c", qtcf(500, date=days_ago(10)), qtcf(450, date=days_ago(1), status="preliminary"))
    assert r.result is MET


def test_E10c_unreadable_qt_unit_is_unknown():
    # "mm" (ECG paper millimetres) is a length, not a time: no UCUM reading makes it a QT interval. ("msec" was
    # the example before issue 9; it is a common spelling of ms and is now read as ms, see the next test.)
    r = run("E10c", ecg(component(QT, 440, "mm"), component(RR, 0.8, "s")))
    assert r.result is UNKNOWN and "unit" in r.reason


def test_E10c_qt_in_msec_is_read_as_ms():
    r = run("E10c", ecg(component(QT, 440, "msec"), component(RR, 0.8, "s")))
    assert r.result is NOT_MET and "474" in r.reason


def test_E10c_censored_qtcf_above_limit_is_met():
    obs = qtcf(480)
    obs["valueQuantity"]["comparator"] = ">"
    assert run("E10c", obs).result is MET


def test_E10c_the_latest_ecg_decides():
    assert run("E10c", qtcf(500, date=days_ago(40)), qtcf(450, date=days_ago(3))).result is NOT_MET
    assert run("E10c", qtcf(450, date=days_ago(40)), qtcf(500, date=days_ago(3))).result is MET


def test_E10c_triplicate_mean_decides():
    r = run("E10c", qtcf(470, date="2026-09-28T10:00:00Z"), qtcf(478, date="2026-09-28T10:02:00Z"),
            qtcf(495, date="2026-09-28T10:04:00Z"))
    assert r.result is MET and "mean of 3 ECGs" in r.reason  # (470 + 478 + 495) / 3 = 481
    r = run("E10c", qtcf(470, date="2026-09-28T10:00:00Z"), qtcf(475, date="2026-09-28T10:02:00Z"),
            qtcf(490, date="2026-09-28T10:04:00Z"))
    assert r.result is NOT_MET  # mean 478.3


def test_E10c_active_complete_av_block_is_met_even_without_ecg():
    r = run("E10c", condition(ICD10CM, "I44.2", onset=date_ago(20)))
    assert r.result is MET and "AV block" in r.reason


def test_E10c_active_av_block_with_normal_qtcf_is_met():
    assert run("E10c", qtcf(420), condition(SCT, "28189009")).result is MET


def test_E10c_mobitz_i_is_unknown_for_review():
    r = run("E10c", qtcf(420), condition(SCT, "54016002"))
    assert r.result is UNKNOWN and "Mobitz I" in r.reason
    assert "QTcF 420 ms" in r.reason and any(e.value == "420 ms" for e in r.evidence)


def test_E10c_ventricular_arrhythmia_is_unknown_for_review():
    r = run("E10c", qtcf(420), condition(ICD10CM, "I47.20"))
    assert r.result is UNKNOWN and "intervention" in r.reason


def test_E10c_resolved_av_block_and_ventricular_arrhythmia_do_not_count():
    r = run("E10c", qtcf(420), condition(ICD10CM, "I44.2", clinical="resolved"),
            condition(SCT, "25569003", clinical="inactive"))
    assert r.result is NOT_MET
    assert "recorded as resolved" in notes(r)


def test_E10c_av_block_without_clinical_status_is_unknown():
    assert run("E10c", qtcf(420), condition(ICD10CM, "I44.2", clinical=None)).result is UNKNOWN


def test_E10c_refuted_av_block_is_ignored():
    assert run("E10c", qtcf(420), condition(ICD10CM, "I44.2", verification="refuted")).result is NOT_MET


def test_E10c_normal_qtcf_but_conditions_not_retrieved_is_unknown():
    r = run("E10c", qtcf(420), not_retrieved={"Condition": "HTTP 403"})
    assert r.result is UNKNOWN and "cannot be ruled out" in r.reason


# ================================================================================================================
# E10d severe non-ischaemic cardiomyopathy
# ================================================================================================================
def test_E10d_cardiomyopathy_is_unknown_with_the_lvef_in_evidence():
    r = run("E10d", condition(ICD10CM, "I42.7", onset="2025-06-01"),
            observation(LOINC, LVEF, value=40, unit="%", date=days_ago(10)))
    assert r.result is UNKNOWN and "severity" in r.reason
    assert any(e.value == "40 %" for e in r.evidence)


def test_E10d_resolved_cardiomyopathy_is_still_history():
    assert run("E10d", condition(SCT, "85898001", clinical="resolved")).result is UNKNOWN


def test_E10d_ischaemic_cardiomyopathy_is_not_e10d():
    r = run("E10d", condition(ICD10CM, "I25.5"))
    assert r.result is NOT_MET and r.reason.startswith("None recorded")
    assert "ischaemic" in notes(r)


def test_E10d_refuted_cardiomyopathy_is_none_recorded():
    assert run("E10d", condition(ICD10CM, "I42.0", verification="refuted")).result is NOT_MET


def test_E10d_none_recorded():
    r = run("E10d")
    assert r.result is NOT_MET and r.reason.startswith("None recorded")


def test_E10d_not_retrieved_is_unknown():
    assert run("E10d", not_retrieved={"Condition": "timeout"}).result is UNKNOWN


# ================================================================================================================
# E10e LVEF < 45% or symptomatic cardiac disease within 6 months
# ================================================================================================================
def lvef(value: float, *, unit: str = "%", days: float = 10, code: str = LVEF, **kw) -> dict:
    return observation(LOINC, code, value=value, unit=unit, date=days_ago(days), **kw)


def test_E10e_lvef_below_45_is_met():
    r = run("E10e", lvef(40))
    assert r.result is MET and r.evidence[0].value == "40 %"


@pytest.mark.parametrize("value,expected", [(44.9, MET), (45, NOT_MET), (45.1, NOT_MET)])
def test_E10e_lvef_boundary(value, expected):
    assert run("E10e", lvef(value)).result is expected


def test_E10e_lvef_fraction_is_read_as_percent_and_flagged():
    r = run("E10e", lvef(0.40))
    assert r.result is MET and "fraction" in notes(r)


def test_E10e_muga_lvef_counts():
    assert run("E10e", lvef(38, code="8812-0")).result is MET


def test_E10e_no_lvef_is_unknown():
    r = run("E10e")
    assert r.result is UNKNOWN and "echocardiogram" in r.reason


def test_E10e_stale_lvef_is_unknown():
    assert run("E10e", lvef(60, days=91)).result is UNKNOWN


def test_E10e_preliminary_lvef_is_unknown():
    assert run("E10e", lvef(30, status="preliminary")).result is UNKNOWN


def test_E10e_normal_lvef_and_no_cardiac_condition_is_not_met():
    r = run("E10e", lvef(60))
    assert r.result is NOT_MET and r.evidence[0].value == "60 %"


def test_E10e_normal_lvef_with_active_heart_failure_is_unknown():
    r = run("E10e", lvef(60), condition(ICD10CM, "I50.22", onset="2020-01-01"))
    assert r.result is UNKNOWN and "symptomatic" in r.reason


def test_E10e_normal_lvef_with_recent_resolved_arrhythmia_is_unknown():
    r = run("E10e", lvef(60), condition(SCT, "25569003", onset=date_ago(60), clinical="resolved",
                                         abatementDateTime=date_ago(50)))
    assert r.result is UNKNOWN


def test_E10e_normal_lvef_with_old_resolved_mi_is_not_met():
    r = run("E10e", lvef(60), condition(ICD10CM, "I21.4", onset="2019-01-01", clinical="resolved",
                                         abatementDateTime="2019-02-01"))
    assert r.result is NOT_MET


def test_E10e_same_day_results_on_both_sides_of_45_are_unknown():
    r = run("E10e", lvef(42, code="8806-2"), lvef(50, code="8807-0"))
    assert r.result is UNKNOWN and "disagree" in r.reason


def test_E10e_same_day_results_on_the_same_side_decide():
    assert run("E10e", lvef(55, code="8806-2"), lvef(60, code="8807-0")).result is NOT_MET


def test_E10e_newer_preliminary_lvef_blocks_not_met():
    r = run("E10e", lvef(60, days=20), lvef(35, days=2, status="preliminary"))
    assert r.result is UNKNOWN and "preliminary" in r.reason


def test_E10e_text_range_uses_the_lower_bound():
    obs = observation(LOINC, "8806-2", date=days_ago(10))
    obs["valueString"] = "40-45%"
    assert run("E10e", obs).result is MET


def test_E10e_unreadable_unit_is_unknown():
    # "mL" is a volume, never a fraction. ("pct" was the example before issue 9: it is a spelling of percent and
    # is now read as %, as UCUM semantics ask.)
    assert run("E10e", lvef(60, unit="mL")).result is UNKNOWN
    assert run("E10e", lvef(60, unit="pct")).result is NOT_MET


def test_E10e_latest_lvef_decides():
    assert run("E10e", lvef(35, days=60), lvef(55, days=5)).result is NOT_MET


# ================================================================================================================
# E10f uncontrolled hypertension
# ================================================================================================================
def test_E10f_mean_of_152_and_146_is_149_and_not_met():
    r = run("E10f", bp(152, 80, hours_ago=1), bp(146, 80, hours_ago=1.5))
    assert r.result is NOT_MET
    assert "mean SBP 149 mm[Hg]" in r.reason
    values = [e.value for e in r.evidence]
    assert "152 mm[Hg]" in values and "146 mm[Hg]" in values
    assert r.evidence[0].display == "Blood pressure, mean (computed)"
    assert "mean SBP 149" in r.evidence[0].value and "mean DBP 80" in r.evidence[0].value


def test_E10f_mean_sbp_150_is_met():
    r = run("E10f", bp(152, 80, hours_ago=1), bp(148, 80, hours_ago=2))
    assert r.result is MET and "mean SBP 150" in r.reason


def test_E10f_mean_sbp_149_5_is_not_met():
    assert run("E10f", bp(150, 80, hours_ago=1), bp(149, 80, hours_ago=2)).result is NOT_MET


def test_E10f_mean_dbp_100_is_met():
    r = run("E10f", bp(130, 102, hours_ago=1), bp(130, 98, hours_ago=2))
    assert r.result is MET and "DBP" in r.reason


def test_E10f_mean_dbp_99_5_is_not_met():
    assert run("E10f", bp(130, 100, hours_ago=1), bp(130, 99, hours_ago=2)).result is NOT_MET


def test_E10f_single_high_reading_is_unknown():
    r = run("E10f", bp(190, 115, hours_ago=1))
    assert r.result is UNKNOWN and "at least 2" in r.reason


def test_E10f_hypertension_diagnosis_alone_is_unknown():
    r = run("E10f", condition(ICD10CM, "I10", onset="2015-01-01"))
    assert r.result is UNKNOWN
    assert "diagnosis alone" in notes(r)


def test_E10f_no_reading_is_unknown():
    r = run("E10f")
    assert r.result is UNKNOWN and "record at least 2 readings" in r.reason


def test_E10f_stale_readings_are_unknown():
    r = run("E10f", bp(160, 100, hours_ago=29 * 24), bp(160, 100, hours_ago=29 * 24 + 1))
    assert r.result is UNKNOWN and "too old" in r.reason


def test_E10f_only_the_latest_visit_is_averaged():
    r = run("E10f", bp(140, 85, hours_ago=2), bp(142, 85, hours_ago=3), bp(210, 120, hours_ago=72),
            bp(205, 118, hours_ago=73))
    assert r.result is NOT_MET
    assert not any(e.value == "210 mm[Hg]" for e in r.evidence)


def test_E10f_standalone_systolic_and_diastolic_observations():
    r = run("E10f", observation(LOINC, SBP, value=160, unit="mm[Hg]", date=days_ago(0.1)),
            observation(LOINC, SBP, value=150, unit="mm[Hg]", date=days_ago(0.11)),
            observation(LOINC, DBP, value=90, unit="mm[Hg]", date=days_ago(0.1)),
            observation(LOINC, DBP, value=88, unit="mm[Hg]", date=days_ago(0.11)))
    assert r.result is MET


def test_E10f_low_systolic_but_too_few_diastolic_readings_is_unknown():
    r = run("E10f", bp(130, 90, hours_ago=1), bp(132, None, hours_ago=2))
    assert r.result is UNKNOWN and "1 DBP reading" in r.reason


def test_E10f_high_systolic_mean_decides_even_with_one_diastolic():
    assert run("E10f", bp(160, 90, hours_ago=1), bp(158, None, hours_ago=2)).result is MET


def test_E10f_the_same_reading_in_a_panel_and_standalone_counts_once():
    t = days_ago(1 / 24)
    panel_obs = panel(BP_PANEL, component(SBP, 170, "mm[Hg]"), component(DBP, 90, "mm[Hg]"), date=t)
    r = run("E10f", panel_obs, observation(LOINC, SBP, value=170, unit="mm[Hg]", date=t),
            observation(LOINC, DBP, value=90, unit="mm[Hg]", date=t))
    assert r.result is UNKNOWN  # one reading, not three
    assert "counted once" in notes(r)


def test_E10f_unreadable_unit_is_unknown():
    r = run("E10f", bp(160, 90, hours_ago=1, unit="mm"), bp(160, 90, hours_ago=2, unit="mm"))
    assert r.result is UNKNOWN and "unit" in r.reason


def test_E10f_common_mmhg_spelling_is_read_through_the_value_set_alias():
    """"mmHg" is not UCUM, but the systolic/diastolic tables alias it to mm[Hg] (a reviewed data choice)."""
    r = run("E10f", bp(160, 90, hours_ago=1, unit="mmHg"), bp(160, 90, hours_ago=2, unit="mmHg"))
    assert r.result is MET


def test_E10f_preliminary_readings_do_not_count():
    r = run("E10f", bp(160, 100, hours_ago=1, status="preliminary"), bp(160, 100, hours_ago=2, status="preliminary"))
    assert r.result is UNKNOWN and "preliminary" in r.reason


def test_E10f_entered_in_error_reading_is_ignored():
    r = run("E10f", bp(200, 120, hours_ago=1, status="entered-in-error"), bp(130, 80, hours_ago=2),
            bp(132, 82, hours_ago=3))
    assert r.result is NOT_MET


# ================================================================================================================
# Unreadable Observations keep a result-decided not-met open
# ================================================================================================================
def broken(code: str) -> dict:
    obs = observation(LOINC, code, value=500, unit="ms", date=days_ago(1))
    obs["valueQuantity"]["value"] = "five hundred"  # fails validation: kept as a data problem with its codes
    return obs


def test_E10c_unreadable_qtcf_observation_blocks_not_met():
    r = run("E10c", qtcf(450, date=days_ago(10)), broken(QTCF))
    assert r.result is UNKNOWN and "could not be read" in r.reason


def test_E10e_unreadable_lvef_observation_blocks_not_met():
    assert run("E10e", lvef(60), broken(LVEF)).result is UNKNOWN


def test_E10f_unreadable_blood_pressure_observation_blocks_not_met():
    assert run("E10f", bp(130, 80, hours_ago=1), bp(130, 80, hours_ago=2), broken(BP_PANEL)).result is UNKNOWN


def test_E10c_unreadable_unrelated_observation_with_codes_does_not_matter():
    assert run("E10c", qtcf(450, date=days_ago(10)), broken("2345-7")).result is NOT_MET


@pytest.mark.parametrize("cid", ["E10c", "E10e", "E10f"])
def test_E10_results_not_retrieved_is_unknown_and_says_so(cid):
    r = run(cid, not_retrieved={"Observation": "HTTP 503"})
    assert r.result is UNKNOWN and "could not be retrieved" in r.reason
