"""QTcF, blood-pressure and LVEF arithmetic (cds_service.facts.ecg)."""

from __future__ import annotations

import math

import pytest
from builders import AT, LOINC, UCUM, days_ago, observation, patient, record_of

from cds_service.config import default_knowledge
from cds_service.facts import ecg
from cds_service.facts.index import Facts

QTCF = "76634-5"
QT = "8634-8"
RR = "8637-1"
HR = "8867-4"
QTCB = "76635-2"
QTC = "8636-3"
SBP = "8480-6"
DBP = "8462-4"
BP_PANEL = "85354-9"


def facts_of(*resources) -> Facts:
    return Facts(record_of(patient(), *resources), AT, default_knowledge())


def component(code: str, value: float | None, unit: str | None) -> dict:
    c: dict = {"code": {"coding": [{"system": LOINC, "code": code}]}}
    if value is not None:
        c["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return c


def panel(code: str, *components: dict, date: str | None = None, status: str = "final") -> dict:
    obs = observation(LOINC, code, date=date, status=status)
    obs["component"] = list(components)
    return obs


def bp(sbp: float | None, dbp: float | None, *, date: str, unit: str = "mm[Hg]", status: str = "final") -> dict:
    return panel(BP_PANEL, component(SBP, sbp, unit), component(DBP, dbp, unit), date=date, status=status)


# --- formulas ----------------------------------------------------------------------------------------------------
def test_fridericia_of_qt_440_ms_and_rr_0_8_s():
    assert ecg.fridericia_ms(440, 0.8) == pytest.approx(440 / 0.8 ** (1 / 3))
    assert ecg.fridericia_ms(440, 0.8) == pytest.approx(474.0, abs=0.05)


def test_fridericia_at_rr_one_second_is_the_qt():
    assert ecg.fridericia_ms(400, 1.0) == pytest.approx(400)


def test_rr_from_heart_rate():
    assert ecg.rr_seconds_from_heart_rate(75) == pytest.approx(0.8)
    assert ecg.rr_seconds_from_heart_rate(60) == pytest.approx(1.0)


@pytest.mark.parametrize("qt,rr", [(0, 0.8), (440, 0), (-1, 1)])
def test_fridericia_refuses_non_positive_inputs(qt, rr):
    with pytest.raises(ValueError):
        ecg.fridericia_ms(qt, rr)


def test_heart_rate_must_be_positive():
    with pytest.raises(ValueError):
        ecg.rr_seconds_from_heart_rate(0)


# --- gathering measurements --------------------------------------------------------------------------------------
def test_gather_reads_components_and_converts_seconds_to_ms():
    f = facts_of(panel("11524-6", component(QT, 0.44, "s"), component(RR, 800, "ms"), date=days_ago(3)))
    found = ecg.gather(f, (ecg.QT, ecg.RR), "ecg")
    by_kind = {m.kind: m for m in found.current}
    assert by_kind[ecg.QT].value == pytest.approx(440) and by_kind[ecg.QT].unit == "ms"
    assert by_kind[ecg.RR].value == pytest.approx(0.8) and by_kind[ecg.RR].unit == "s"
    assert by_kind[ecg.QT].component is True


def test_gather_keeps_an_unreadable_unit_as_unusable():
    # "mm" of ECG paper is a length, not a time ("msec", the example before issue 9, is now read as ms)
    f = facts_of(observation(LOINC, QT, value=440, unit="mm", date=days_ago(3)))
    (m,) = ecg.gather(f, (ecg.QT,), "ecg").current
    assert m.value is None and not m.usable
    assert "cannot be read" in m.problem()


def test_gather_skips_data_absent_components():
    comp = component(QT, None, None)
    comp["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                            "code": "not-performed"}]}
    f = facts_of(panel("11524-6", comp, component(RR, 0.8, "s"), date=days_ago(3)))
    assert [m.kind for m in ecg.gather(f, (ecg.QT, ecg.RR), "ecg").current] == [ecg.RR]


def test_gather_sets_aside_preliminary_stale_and_future_results():
    f = facts_of(
        observation(LOINC, QTCF, value=450, unit="ms", date=days_ago(2), status="preliminary"),
        observation(LOINC, QTCF, value=451, unit="ms", date=days_ago(120)),
        observation(LOINC, QTCF, value=452, unit="ms", date=days_ago(-3)),
        observation(LOINC, QTCF, value=453, unit="ms", date=days_ago(5), status="entered-in-error"),
    )
    found = ecg.gather(f, (ecg.QTCF,), "ecg")
    assert found.current == ()
    assert [m.value for m in found.stale] == [451]
    assert len(found.preliminary) == 1


def test_gather_newest_first():
    f = facts_of(observation(LOINC, QTCF, value=450, unit="ms", date=days_ago(30)),
                 observation(LOINC, QTCF, value=460, unit="ms", date=days_ago(3)))
    assert [m.value for m in ecg.gather(f, (ecg.QTCF,), "ecg").current] == [460, 450]


# --- ECGs and QTcF -----------------------------------------------------------------------------------------------
def test_separate_observations_at_the_same_time_are_one_ecg():
    t = days_ago(3)
    f = facts_of(observation(LOINC, QT, value=440, unit="ms", date=t),
                 observation(LOINC, RR, value=0.8, unit="s", date=t))
    sel = ecg.ecgs(f)
    assert len(sel.current) == 1
    q, why = ecg.qtcf_of(sel.current[0])
    assert why is None and q.value == pytest.approx(474.0, abs=0.05)
    assert q.method == "computed (Fridericia) from QT and RR"
    # The computed value shows its inputs.
    notes = " ".join(e.note or "" for e in q.evidence)
    assert "QT 440 ms" in notes and "RR 0.8 s" in notes
    assert {e.reference for e in q.evidence} == {o for o in sel.current[0].refs}


def test_rr_from_a_different_time_is_not_used():
    f = facts_of(observation(LOINC, QT, value=440, unit="ms", date=days_ago(3)),
                 observation(LOINC, RR, value=0.8, unit="s", date=days_ago(4)))
    (latest,) = ecg.ecgs(f).current  # the RR-only group is not an ECG
    q, why = ecg.qtcf_of(latest)
    assert q is None and "no RR interval or heart rate" in why


def test_heart_rate_alone_is_not_an_ecg():
    f = facts_of(observation(LOINC, HR, value=80, unit="/min", date=days_ago(1)))
    assert ecg.ecgs(f).current == ()


def test_qtcf_from_qt_and_heart_rate():
    f = facts_of(panel("11524-6", component(QT, 400, "ms"), component(HR, 75, "{beats}/min"), date=days_ago(3)))
    q, _ = ecg.qtcf_of(ecg.ecgs(f).current[0])
    assert q.value == pytest.approx(400 / 0.8 ** (1 / 3), abs=0.05)
    assert q.method == "computed (Fridericia) from QT and heart rate"


def test_reported_qtcf_is_preferred_to_computing():
    f = facts_of(panel("11524-6", component(QTCF, 430, "ms"), component(QT, 440, "ms"), component(RR, 0.8, "s"),
                       date=days_ago(3)))
    q, _ = ecg.qtcf_of(ecg.ecgs(f).current[0])
    assert q.value == 430 and q.method == "reported"


def test_bazett_and_generic_qtc_are_never_qtcf():
    f = facts_of(panel("11524-6", component(QTCB, 500, "ms"), component(QTC, 500, "ms"), component(HR, 75, "/min"),
                       date=days_ago(3)))
    q, why = ecg.qtcf_of(ecg.ecgs(f).current[0])
    assert q is None and why


def test_bazett_below_limit_at_heart_rate_above_60_bounds_qtcf():
    f = facts_of(panel("11524-6", component(QTCB, 470, "ms"), component(HR, 75, "/min"), date=days_ago(3)))
    ev = ecg.bazett_bound(ecg.ecgs(f).current[0], 480)
    assert ev is not None and "Bazett over-corrects" in ev[0].note


@pytest.mark.parametrize("qtcb,hr", [(470, 60), (470, 55), (480, 75), (495, 90)])
def test_bazett_bound_does_not_hold(qtcb, hr):
    f = facts_of(panel("11524-6", component(QTCB, qtcb, "ms"), component(HR, hr, "/min"), date=days_ago(3)))
    assert ecg.bazett_bound(ecg.ecgs(f).current[0], 480) is None


def test_bazett_bound_can_use_the_rr_interval():
    f = facts_of(panel("11524-6", component(QTCB, 470, "ms"), component(RR, 0.75, "s"), date=days_ago(3)))
    assert ecg.bazett_bound(ecg.ecgs(f).current[0], 480) is not None


def test_latest_qtcf_is_the_latest_ecg():
    f = facts_of(observation(LOINC, QTCF, value=500, unit="ms", date=days_ago(30)),
                 observation(LOINC, QTCF, value=450, unit="ms", date=days_ago(3)))
    a = ecg.latest_qtcf(f, 480, 10)
    assert a.qtcf.value == 450 and len(a.ecgs) == 1


def test_triplicate_within_minutes_is_averaged():
    f = facts_of(observation(LOINC, QTCF, value=470, unit="ms", date="2026-09-28T10:00:00+00:00"),
                 observation(LOINC, QTCF, value=480, unit="ms", date="2026-09-28T10:02:00+00:00"),
                 observation(LOINC, QTCF, value=496, unit="ms", date="2026-09-28T10:04:00+00:00"),
                 observation(LOINC, QTCF, value=600, unit="ms", date="2026-09-27T10:00:00+00:00"))
    a = ecg.latest_qtcf(f, 480, 10)
    assert len(a.ecgs) == 3
    assert a.qtcf.value == pytest.approx(482)
    assert a.qtcf.method.startswith("mean of 3 ECGs")
    assert ecg.latest_qtcf(f, 480, 0).qtcf.value == 496


def test_no_ecg_in_window():
    f = facts_of(observation(LOINC, QTCF, value=450, unit="ms", date=days_ago(91)))
    a = ecg.latest_qtcf(f, 480, 10)
    assert a.latest is None and a.qtcf is None and a.selection.stale is not None


# --- blood pressure ----------------------------------------------------------------------------------------------
def test_blood_pressure_means_are_separate():
    f = facts_of(bp(152, 90, date=days_ago(1)), bp(146, 80, date=days_ago(1.01)))
    b = ecg.screening_blood_pressure(f, 24)
    assert b.mean_systolic == pytest.approx(149)
    assert b.mean_diastolic == pytest.approx(85)
    assert len(b.systolic) == 2 and len(b.diastolic) == 2


def test_blood_pressure_latest_visit_only():
    f = facts_of(bp(140, 80, date=days_ago(1)), bp(142, 82, date=days_ago(1.2)), bp(200, 120, date=days_ago(3)))
    b = ecg.screening_blood_pressure(f, 24)
    assert [m.value for m in b.systolic] == [140, 142]
    whole = ecg.screening_blood_pressure(f, None)
    assert [m.value for m in whole.systolic] == [140, 142, 200]


def test_blood_pressure_standalone_observations_and_duplicates():
    t = days_ago(1)
    f = facts_of(bp(150, 90, date=t), observation(LOINC, SBP, value=150, unit="mm[Hg]", date=t),
                 observation(LOINC, SBP, value=160, unit="mm[Hg]", date=days_ago(1.01)),
                 observation(LOINC, DBP, value=95, unit="mm[Hg]", date=days_ago(1.01)))
    b = ecg.screening_blood_pressure(f, 24)
    assert sorted(m.value for m in b.systolic) == [150, 160]
    assert sorted(m.value for m in b.diastolic) == [90, 95]
    assert len(b.duplicates) == 1


def test_blood_pressure_unreadable_unit_is_kept_apart():
    f = facts_of(bp(150, 90, date=days_ago(1), unit="mm"))
    b = ecg.screening_blood_pressure(f, 24)
    assert b.systolic == () and len(b.unusable) == 2


def test_blood_pressure_outside_recency_is_stale():
    f = facts_of(bp(150, 90, date=days_ago(29)))
    b = ecg.screening_blood_pressure(f, 24)
    assert b.systolic == () and b.stale is not None


@pytest.mark.parametrize("value,tenth", [(479.94, 479.9), (479.95, 480.0), (479.97, 480.0), (149.5, 149.5),
                                         (149.04, 149.0)])
def test_to_tenth_rounds_half_up(value, tenth):
    assert ecg.to_tenth(value) == pytest.approx(tenth)


def test_component_evidence_names_the_component_not_the_panel():
    f = facts_of(bp(150, 90, date=days_ago(1)))
    b = ecg.screening_blood_pressure(f, 24)
    ev = b.systolic[0].evidence()
    assert ev.display.startswith("systolic BP (component of") and ev.code.endswith("|8480-6")


def test_mean():
    assert ecg.mean([149, 150]) == 149.5
    assert math.isclose(ecg.mean([1, 2, 3]), 2)


# --- LVEF --------------------------------------------------------------------------------------------------------
def test_lvef_percent():
    f = facts_of(observation(LOINC, "10230-1", value=55, unit="%", date=days_ago(3)))
    (r,), why = ecg.latest_lvef(f)
    assert why is None and r.percent == 55 and r.note is None


def test_lvef_fraction_is_multiplied_and_flagged():
    f = facts_of(observation(LOINC, "10230-1", value=0.4, unit="%", date=days_ago(3)))
    (r,), _ = ecg.latest_lvef(f)
    assert r.percent == pytest.approx(40) and "fraction" in r.note


def test_lvef_unit_one_is_converted():
    f = facts_of(observation(LOINC, "10230-1", value=0.4, unit="1", date=days_ago(3)))
    (r,), _ = ecg.latest_lvef(f)
    assert r.percent == pytest.approx(40)


def test_lvef_text_range_uses_the_lower_bound():
    obs = observation(LOINC, "8806-2", date=days_ago(3))
    obs["valueString"] = "55-60%"
    (r,), _ = ecg.latest_lvef(facts_of(obs))
    assert r.percent == 55 and "lower bound" in r.note


def test_lvef_results_of_the_latest_day_only():
    f = facts_of(observation(LOINC, "10230-1", value=40, unit="%", date=days_ago(60)),
                 observation(LOINC, "8806-2", value=55, unit="%", date="2026-09-28T10:00:00+00:00"),
                 observation(LOINC, "8807-0", value=60, unit="%", date="2026-09-28T11:00:00+00:00"))
    results, _ = ecg.latest_lvef(f)
    assert sorted(r.percent for r in results) == [55, 60]


def test_no_recent_lvef():
    results, why = ecg.latest_lvef(facts_of(observation(LOINC, "10230-1", value=40, unit="%", date=days_ago(91))))
    assert results == () and "too old" in why
