"""The fast path (skip resources no criterion can use, and Observations beyond their date horizon, before model
validation; read the Observations it can vouch for without fhir.resources) changes no screening result. The plain
path validates every resource with fhir.resources."""

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import AT, LOINC, days_ago, observation, patient

from cds_service.config import default_knowledge
from cds_service.gather.bundles import records_from_paths
from cds_service.gather.record import build_record, raw_effective, relevant_to
from cds_service.pipeline import screen

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = Path(os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ROOT.parent / "shared" / "synthea"))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
from _common import aml_record  # noqa: E402 - the benchmarks' generated records


def _screenings(paths, tables, at=AT, horizon=False):
    rules = default_knowledge().rules if horizon else None
    # No tables: the plain path, every resource validated by fhir.resources.
    return [screen(r, at).to_json() for r in records_from_paths(paths, tables, at=at if horizon else None,
                                                                 rules=rules, checked=tables is not None)]


def _count(record) -> int:
    return sum(len(v) for v in record.resources.values()) + len(record.problems)


def _both(resources, at=AT):
    """(plain screening, horizon screening, plain record, horizon record) of one patient's raw resources."""
    k = default_knowledge()
    plain = build_record("Patient/p1", resources, checked=False)
    fast = build_record("Patient/p1", resources, keep=relevant_to(k.tables, at=at, rules=k.rules))
    return screen(plain, at).to_json(), screen(fast, at).to_json(), plain, fast


def test_fast_path_is_identical_on_fixtures():
    fixtures = ROOT / "fixtures"
    plain = _screenings([fixtures], None)
    fast = _screenings([fixtures], default_knowledge().tables)
    assert len(plain) >= 30
    assert fast == plain


def test_date_horizon_is_identical_on_fixtures_at_their_time_and_later():
    fixtures = ROOT / "fixtures"
    tables = default_knowledge().tables
    for at in (AT, AT + timedelta(days=30), AT + timedelta(days=120), AT + timedelta(days=800)):
        assert _screenings([fixtures], tables, at, horizon=True) == _screenings([fixtures], None, at), at


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/synthea is absent")
def test_fast_path_is_identical_on_synthea():
    files = sorted(SYNTHEA.glob("*.json"))[:6]
    assert _screenings(files, default_knowledge().tables) == _screenings(files, None)


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/synthea is absent")
@pytest.mark.parametrize("at", [AT, datetime(2019, 6, 1, tzinfo=UTC)])
def test_date_horizon_is_identical_on_synthea(at):
    files = sorted(SYNTHEA.glob("*.json"))[:8]
    tables = default_knowledge().tables
    assert _screenings(files, tables, at, horizon=True) == _screenings(files, None, at)


@pytest.mark.parametrize("size", [1_000, 10_000])
def test_date_horizon_is_identical_on_the_bench_records(size):
    resources = aml_record(size)
    plain, fast, plain_record, fast_record = _both(resources)
    assert fast == plain
    assert _count(fast_record) < _count(plain_record) // 2  # and it does skip most of the history


def test_date_horizon_is_identical_on_the_bench_record_at_other_times():
    resources = aml_record(1_000)
    for at in (AT - timedelta(days=40), AT - timedelta(days=400), AT + timedelta(days=20), AT + timedelta(days=95)):
        plain, fast, _p, _f = _both(resources, at)
        assert fast == plain, at


def _alt(days: float, **extra):
    return observation(LOINC, "1742-6", value=30, unit="U/L", high=40, date=days_ago(days), **extra)


def test_single_alt_a_year_ago_gives_the_same_too_old_reason():
    plain, fast, _p, fast_record = _both([patient(pid="p1"), _alt(365)])
    assert fast == plain
    assert len(fast_record.of_type("Observation")) == 1  # the newest stale result is kept
    i7a = next(c for c in fast["criteria"] if c["id"] == "I7a")
    assert i7a["result"] == "unknown" and "too old" in i7a["reason"]


def test_only_the_newest_old_results_are_kept_down_to_a_usable_one():
    # Newest first: a preliminary, an entered-in-error, a dataAbsentReason-only, then usable ones.
    old = [_alt(100, status="preliminary"), _alt(110, status="entered-in-error"),
           {**_alt(120), "dataAbsentReason": {"coding": [
               {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}]}}]
    old[2].pop("valueQuantity")
    usable = [_alt(130 + i) for i in range(20)]
    plain, fast, _p, fast_record = _both([patient(pid="p1"), *old, *usable])
    assert fast == plain
    kept = {o.id for o in fast_record.of_type("Observation")}
    assert kept == {o["id"] for o in old} | {usable[0]["id"]}


def test_undated_and_unparseable_labs_are_kept():
    undated = _alt(400)
    undated.pop("effectiveDateTime")
    odd = _alt(400, effectiveDateTime="2025-08-01T10:00")  # no seconds, no zone: not read by the horizon
    period = _alt(400)
    period.pop("effectiveDateTime")
    period["effectivePeriod"] = {"start": "2025-01-01"}  # an open period: never skipped
    resources = [patient(pid="p1"), undated, odd, period, *[_alt(40 + i) for i in range(10)]]
    plain, fast, _p, fast_record = _both(resources)
    assert fast == plain
    kept = {o.id for o in fast_record.of_type("Observation")} | {p.reference for p in fast_record.problems}
    assert {undated["id"], period["id"]} <= kept
    assert raw_effective(odd) is None and raw_effective(undated) is None and raw_effective(period) is None


def test_a_lab_that_also_matches_an_any_date_value_set_is_kept():
    both = _alt(500)
    both["code"]["coding"].append({"system": LOINC, "code": "13955-0"})  # HCV antibody: read at any date
    resources = [patient(pid="p1"), both, *[_alt(40 + i) for i in range(10)]]
    plain, fast, _p, fast_record = _both(resources)
    assert fast == plain
    assert both["id"] in {o.id for o in fast_record.of_type("Observation")}


def test_at_in_the_past_keeps_what_was_recent_then():
    at = AT - timedelta(days=365)
    resources = [patient(pid="p1"), *[_alt(350 + i) for i in range(60)]]
    plain, fast, _p, fast_record = _both(resources, at)
    assert fast == plain
    # 365 - 350 .. 365 - 409 days before `at`: the newer ones are after `at` (kept), 36 days of horizon too.
    assert len(fast_record.of_type("Observation")) < 60


def test_no_horizon_without_at_or_rules():
    k = default_knowledge()
    resources = [patient(pid="p1"), *[_alt(100 + i) for i in range(5)]]
    for keep in (relevant_to(k.tables), relevant_to(k.tables, at=AT), relevant_to(k.tables, rules=k.rules)):
        assert len(build_record("Patient/p1", resources, keep=keep).of_type("Observation")) == 5


def test_an_unreadable_result_older_than_a_usable_stale_one_is_not_read():
    """The one thing the horizon changes, by design: an Observation it skips is never validated, so one that
    fhir.resources would refuse is not listed as a data problem when a readable result of every value set it
    matches is newer (as with the code filter for resources no value set matches). One newer than that is."""
    newer_bad = _alt(50)
    newer_bad["valueQuantity"]["value"] = "high"
    older_bad = _alt(200)
    older_bad["valueQuantity"]["value"] = "high"
    resources = [patient(pid="p1"), newer_bad, _alt(100), older_bad]
    plain, fast, plain_record, fast_record = _both(resources)
    assert {p.reference for p in plain_record.problems} == {f"Observation/{newer_bad['id']}",
                                                          f"Observation/{older_bad['id']}"}
    assert {p.reference for p in fast_record.problems} == {f"Observation/{newer_bad['id']}"}
    assert fast["criteria"] == plain["criteria"]


def _creatinine(date: str):
    return observation(LOINC, "2160-0", value=0.9, unit="mg/dL", high=1.1, date=date)


def _weight(days: float, value: float = 70, unit: str = "kg"):
    return observation(LOINC, "29463-7", value=value, unit=unit, date=days_ago(days))


def test_I7c_closest_old_weight_is_kept_when_the_creatinine_is_recent():
    # No weight within 7 days of the creatinine: I7c names the closest one, which is the newest usable old one.
    unusable = [_weight(60, unit="cm"), _weight(61, value=0)]
    usable = [_weight(62 + i) for i in range(30)]
    resources = [patient(pid="p1"), _creatinine(days_ago(3)), *unusable, *usable]
    plain, fast, _p, fast_record = _both(resources)
    assert fast == plain
    i7c = next(c for c in fast["criteria"] if c["id"] == "I7c")
    assert "closest" in i7c["reason"]
    kept = {o.id for o in fast_record.of_type("Observation")}
    assert {o["id"] for o in unusable} | {usable[0]["id"]} <= kept
    assert not {o["id"] for o in usable[1:]} & kept


def test_I7c_every_weight_is_read_when_the_creatinine_starts_before_the_horizon():
    # A creatinine dated by its year only is current at AT, but its closest weight (in days, over the whole year)
    # is the one nearest mid-year: no old weight may be dropped.
    weights = [_weight(60 + 7 * i) for i in range(30)]
    resources = [patient(pid="p1"), _creatinine("2026"), *weights]
    plain, fast, _p, fast_record = _both(resources)
    assert fast == plain
    assert {o.id for o in fast_record.of_type("Observation")} >= {o["id"] for o in weights}


@pytest.mark.parametrize("text", [
    "2026-09-27T07:30:00Z", "2026-09-27T07:30:00.123Z", "2026-09-27T07:30:00.123456789+02:00",
    "2026-09-27T07:30:00-05:00", "2026-02-30T07:30:00Z", "2026-09-27T24:30:00Z", "2026-09-27T07:30:60Z", "2026",
    "2026-09", "2026-09-27", "2026-13"])
def test_raw_dates_are_read_as_the_facts_read_them(text):
    from cds_service.facts.dates import parse_fhir_date

    got = raw_effective({"effectiveDateTime": text})
    want = parse_fhir_date(text)
    assert got == ((want.start, want.end) if want is not None else None)


def test_the_throughput_benchmark_record_moved_to_another_day_screens_the_same():
    """bench/throughput.py moves the record to the server's real clock: the same results, the same work."""
    from _common import shift_dates  # the benchmarks' helpers

    k = default_knowledge()
    later = AT + timedelta(days=58)
    moved = aml_record(1_000, as_of=later)
    assert moved[0] != aml_record(1_000)[0] or moved[1] != aml_record(1_000)[1]
    assert shift_dates({"a": ["2026-10-01T09:00:00Z", "2026-10-01", "2026", "x"]}, 2) == \
        {"a": ["2026-10-03T09:00:00Z", "2026-10-03", "2026", "x"]}
    original = build_record("Patient/p1", aml_record(1_000), keep=relevant_to(k.tables, at=AT, rules=k.rules))
    shifted = build_record("Patient/p1", moved, keep=relevant_to(k.tables, at=later, rules=k.rules))
    assert _count(shifted) == _count(original)  # the same resources kept: the same work
    a, b = screen(original, AT).to_json(), screen(shifted, later).to_json()
    assert a["status"] == b["status"]
    assert [(c["id"], c["result"]) for c in a["criteria"]] == [(c["id"], c["result"]) for c in b["criteria"]]
