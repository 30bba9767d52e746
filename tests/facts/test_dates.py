"""Partial dates as intervals, calendar months, and the (start, end] window rule."""

from datetime import UTC, datetime

import pytest

from cds_service.criteria.result import Result
from cds_service.facts.dates import in_window, months_before, parse_fhir_date

AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "start", "end_date"), [
    ("2024", datetime(2024, 1, 1, tzinfo=UTC), "2024-12-31"),
    ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), "2024-02-29"),
    ("2024-05-17", datetime(2024, 5, 17, tzinfo=UTC), "2024-05-17"),
])
def test_partial_dates_cover_an_interval(text, start, end_date):
    r = parse_fhir_date(text)
    assert r.start == start
    assert r.end.date().isoformat() == end_date
    assert r.display() == text


def test_datetime_with_zone_and_without():
    assert parse_fhir_date("2026-09-30T10:00:00+02:00").start == datetime(2026, 9, 30, 8, 0, tzinfo=UTC)
    assert parse_fhir_date("2026-09-30T10:00:00").start.tzinfo is not None


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-13-01", "2026-02-30", None, 42])
def test_unparseable_dates_are_none(bad):
    assert parse_fhir_date(bad) is None


def test_calendar_months():
    assert months_before(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert months_before(AT, 6) == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def test_window_is_open_at_start_closed_at_end():
    start = months_before(AT, 6)
    assert in_window(parse_fhir_date("2026-04-01T09:00:00Z"), start, AT) is Result.NOT_MET
    assert in_window(parse_fhir_date("2026-04-01T09:00:01Z"), start, AT) is Result.MET
    assert in_window(parse_fhir_date("2026-10-01T09:00:00Z"), start, AT) is Result.MET


def test_partial_date_straddling_the_start_is_unknown():
    start = months_before(AT, 6)
    assert in_window(parse_fhir_date("2026-04-01"), start, AT) is Result.UNKNOWN
    assert in_window(parse_fhir_date("2026-04"), start, AT) is Result.UNKNOWN
    assert in_window(parse_fhir_date("2026-03"), start, AT) is Result.NOT_MET


def test_date_only_event_on_the_evaluation_day_is_inside():
    assert in_window(parse_fhir_date("2026-10-01"), months_before(AT, 1), AT) is Result.MET


def test_future_event_is_not_inside():
    assert in_window(parse_fhir_date("2026-10-02"), months_before(AT, 1), AT) is Result.NOT_MET


def test_no_date_is_unknown():
    assert in_window(None, months_before(AT, 1), AT) is Result.UNKNOWN
