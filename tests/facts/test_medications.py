"""Medication facts and their arithmetic: last-dose dates, washout windows, cumulative doses in a window."""

from datetime import UTC, date, datetime, timedelta

import pytest
from builders import (
    AT,
    RXNORM,
    date_ago,
    days_ago,
    medication_administration,
    medication_request,
    medication_statement,
    record_of,
)

from cds_service.facts.medications import (
    DoseItem,
    below_threshold_from,
    cumulative_dose,
    first_date_after,
    is_open,
    last_dose_range,
    medication_fact,
    washout_window,
)

DEX = "3264"
PRED = "8640"
WEEK = timedelta(days=7)
START = AT - WEEK


def fact_of(resource: dict):
    record = record_of(resource)
    (res,) = record.of_type(resource["resourceType"])
    return medication_fact(res, {})


def item(resource: dict, drug: str = "dexamethasone", factor: float | None = 6.67, **kw) -> DoseItem:
    return DoseItem(fact_of(resource), drug, factor, **kw)


# --- statuses -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("builder", "status", "kept"), [
    (lambda s: medication_administration(RXNORM, DEX, date=days_ago(1), status=s), "completed", True),
    (lambda s: medication_administration(RXNORM, DEX, date=days_ago(1), status=s), "entered-in-error", False),
    (lambda s: medication_administration(RXNORM, DEX, date=days_ago(1), status=s), "not-done", False),
    (lambda s: medication_request(RXNORM, DEX, start=date_ago(1), status=s), "cancelled", False),
    (lambda s: medication_request(RXNORM, DEX, start=date_ago(1), status=s), "draft", False),
    (lambda s: medication_request(RXNORM, DEX, start=date_ago(1), status=s), "stopped", True),
    (lambda s: medication_statement(RXNORM, DEX, start=date_ago(1), status=s), "not-taken", False),
    (lambda s: medication_statement(RXNORM, DEX, start=date_ago(1), status=s), "entered-in-error", False),
])
def test_status_filters(builder, status, kept):
    assert (fact_of(builder(status)) is not None) is kept


# --- last dose ----------------------------------------------------------------------------------------------

def test_last_dose_of_an_administration_is_its_date():
    f = fact_of(medication_administration(RXNORM, DEX, date=days_ago(3)))
    r = last_dose_range(f, AT)
    assert r.start == r.end == AT - timedelta(days=3)


def test_last_dose_of_a_closed_period_is_its_end_day():
    f = fact_of(medication_statement(RXNORM, DEX, start="2026-08-01", end="2026-09-20"))
    r = last_dose_range(f, AT)
    assert r.start == datetime(2026, 9, 20, tzinfo=UTC)
    assert r.end.date() == date(2026, 9, 20)


def test_last_dose_of_an_open_period_runs_from_its_start_to_now():
    f = fact_of(medication_request(RXNORM, DEX, start="2026-09-01", status="completed"))
    assert is_open(f.period) and not f.ongoing
    r = last_dose_range(f, AT)
    assert r.start == datetime(2026, 9, 1, tzinfo=UTC)
    assert r.end == AT


def test_active_order_without_end_is_ongoing():
    assert fact_of(medication_request(RXNORM, DEX, start="2026-09-01")).ongoing
    assert not fact_of(medication_request(RXNORM, DEX, start="2026-09-01", end="2026-09-05")).ongoing


def test_undated_record_has_no_last_dose():
    res = medication_statement(RXNORM, DEX, start="2026-09-01")
    del res["effectivePeriod"]
    assert last_dose_range(fact_of(res), AT) is None


# --- washout windows ----------------------------------------------------------------------------------------

def test_washout_shorter_takes_five_half_lives_when_shorter():
    w, text = washout_window(0.69, max_days=14, half_lives=5)
    assert w == timedelta(hours=3.45)
    assert "5 half-lives" in text


def test_washout_shorter_caps_at_14_days():
    w, text = washout_window(113, max_days=14, half_lives=5)
    assert w == timedelta(days=14)
    assert text.startswith("14 days")


def test_washout_longer_rule():
    assert washout_window(0.69, max_days=14, half_lives=5, rule="longer")[0] == timedelta(days=14)
    assert washout_window(113, max_days=14, half_lives=5, rule="longer")[0] == timedelta(hours=565)


def test_washout_unknown_half_life_uses_14_days_and_says_so():
    w, text = washout_window(None, max_days=14, half_lives=5)
    assert w == timedelta(days=14)
    assert text == "half-life unknown: 14 days used"


def test_washout_rule_must_be_known():
    with pytest.raises(ValueError):
        washout_window(1, max_days=14, half_lives=5, rule="median")


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(2026, 9, 25, 10, 0, tzinfo=UTC), date(2026, 10, 10)),  # passes at 10:00 on the 9th
    (datetime(2026, 9, 25, 0, 0, tzinfo=UTC), date(2026, 10, 9)),  # passes exactly at midnight
    (datetime(2026, 9, 25, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 10, 10)),  # a whole-day date
])
def test_first_date_after_a_14_day_window(moment, expected):
    assert first_date_after(moment, timedelta(days=14)) == expected


# --- cumulative dose ----------------------------------------------------------------------------------------

def test_administrations_in_window_are_summed_with_factor():
    items = [item(medication_administration(RXNORM, DEX, date=days_ago(d), dose_mg=3.5)) for d in (1, 2, 3)]
    cum = cumulative_dose(items, START, AT)
    assert cum.total == pytest.approx(10.5 * 6.67)
    assert len(cum.counted) == 3 and not cum.doubtful
    assert cum.sources == {"dexamethasone": "MedicationAdministration"}


def test_administration_exactly_7_days_ago_is_outside_the_window():
    cum = cumulative_dose([item(medication_administration(RXNORM, DEX, date=days_ago(7), dose_mg=20))], START, AT)
    assert cum.total == 0 and not cum.counted and not cum.doubtful


def test_administration_just_inside_the_window_counts():
    cum = cumulative_dose([item(medication_administration(RXNORM, DEX, date=days_ago(6.99), dose_mg=20))],
                          START, AT)
    assert cum.total == pytest.approx(133.4)


def test_future_administration_is_ignored():
    cum = cumulative_dose([item(medication_administration(RXNORM, DEX, date=days_ago(-1), dose_mg=20))], START, AT)
    assert not cum.counted and not cum.doubtful


def test_administrations_win_over_orders_of_the_same_drug():
    items = [
        item(medication_administration(RXNORM, DEX, date=days_ago(1), dose_mg=1)),
        item(medication_request(RXNORM, DEX, start=date_ago(10), dose_mg=8)),
    ]
    cum = cumulative_dose(items, START, AT)
    assert cum.total == pytest.approx(6.67)
    assert cum.sources["dexamethasone"] == "MedicationAdministration"


def test_order_used_when_no_administration_of_that_drug():
    items = [
        item(medication_administration(RXNORM, DEX, date=days_ago(1), dose_mg=1)),
        item(medication_request(RXNORM, PRED, start=date_ago(10), dose_mg=5), drug="prednisone", factor=1),
    ]
    cum = cumulative_dose(items, START, AT)
    # an ongoing order covers the whole 7-day window: 5 mg/day x 7 days = 35 mg
    assert cum.total == pytest.approx(6.67 + 35)
    assert cum.sources == {"dexamethasone": "MedicationAdministration", "prednisone": "MedicationRequest"}


def test_order_counts_only_the_days_it_overlaps():
    # 2026-09-28 00:00 .. 2026-09-29 23:59:59 = 2 days inside the window
    order = medication_request(RXNORM, PRED, start="2026-09-28", end="2026-09-29", dose_mg=10, per_day=2)
    cum = cumulative_dose([item(order, drug="prednisone", factor=1)], START, AT)
    assert cum.total == pytest.approx(40, abs=1e-3)


def test_completed_order_without_end_is_doubtful():
    order = medication_request(RXNORM, PRED, start=date_ago(3), status="completed", dose_mg=10)
    cum = cumulative_dose([item(order, drug="prednisone", factor=1)], START, AT)
    assert not cum.counted
    assert "no end date" in cum.doubtful[0].why_doubtful
    assert cum.possible_extra == pytest.approx(10 * (3 + 9 / 24), abs=0.01)


def test_dose_missing_is_doubtful_and_unquantified():
    cum = cumulative_dose([item(medication_administration(RXNORM, DEX, date=days_ago(1)))], START, AT)
    assert not cum.counted
    assert cum.possible_extra is None
    assert "dose" in cum.doubtful[0].why_doubtful


def test_missing_factor_is_doubtful():
    cum = cumulative_dose([item(medication_administration(RXNORM, DEX, date=days_ago(1), dose_mg=5), factor=None)],
                          START, AT)
    assert cum.possible_extra is None


def test_partial_date_straddling_the_window_is_doubtful():
    res = medication_administration(RXNORM, DEX, date="2026-09", dose_mg=5)
    cum = cumulative_dose([item(res)], START, AT)
    assert not cum.counted
    assert cum.possible_extra == pytest.approx(5 * 6.67)


def test_a_doubt_given_by_the_caller_keeps_the_record_out_of_the_total():
    res = medication_administration(RXNORM, DEX, date=days_ago(1), dose_mg=5)
    cum = cumulative_dose([item(res, doubt="route to review")], START, AT)
    assert cum.total == 0
    assert cum.doubtful[0].why_doubtful == "route to review"


def test_grams_are_converted():
    res = medication_administration(RXNORM, PRED, date=days_ago(1))
    res["dosage"]["dose"] = {"value": 0.1, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}
    cum = cumulative_dose([item(res, drug="prednisone", factor=1)], START, AT)
    assert cum.total == pytest.approx(100)


def test_below_threshold_date_drops_doses_oldest_first():
    # 40 mg 5 days ago, 40 mg 1 day ago: 80 >= 70. Without the older dose: 40 < 70, so eligible once the
    # older dose is out of the window: 5 days ago + 7 days = 2026-10-03 09:00 -> first whole date 2026-10-04.
    items = [item(medication_administration(RXNORM, PRED, date=days_ago(d), dose_mg=40), drug="prednisone",
                  factor=1) for d in (5, 1)]
    cum = cumulative_dose(items, START, AT)
    assert cum.total == 80
    assert below_threshold_from(cum.counted, 70, WEEK) == date(2026, 10, 4)


def test_below_threshold_date_is_none_when_already_below():
    items = [item(medication_administration(RXNORM, PRED, date=days_ago(1), dose_mg=40), drug="prednisone",
                  factor=1)]
    assert below_threshold_from(cumulative_dose(items, START, AT).counted, 70, WEEK) is None


def test_last_dose_of_a_period_still_running_is_now():
    f = fact_of(medication_statement(RXNORM, DEX, start=date_ago(10), end=date_ago(-5), status="active"))
    r = last_dose_range(f, AT)
    assert r.start == r.end == AT


def test_last_dose_of_a_future_period_is_in_the_future():
    f = fact_of(medication_request(RXNORM, DEX, start=date_ago(-3), end=date_ago(-10)))
    assert last_dose_range(f, AT).start > AT
