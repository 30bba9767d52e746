"""Next steps grouped by cause (``cards/steps.py``) and the prose helpers (``cards/text.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from cds_service.cards.steps import MISSING, NO_ULN, PATIENT, PRELIMINARY, REVIEW, STALE, cause_of, next_steps
from cds_service.cards.text import age_in_years, plain
from cds_service.config import Settings, load_knowledge
from cds_service.criteria.result import CriterionResult, Evidence, Result

KNOWLEDGE = load_knowledge(Settings.from_env({}))
RULES = KNOWLEDGE.rules


def _u(cid: str, reason: str, *evidence: Evidence) -> CriterionResult:
    return CriterionResult(cid, RULES.criterion(cid).kind, Result.UNKNOWN, reason, tuple(evidence))


OLD = Evidence("Observation/o", "32 U/L", None, "2026-09-27T07:30:00+00:00", note="too old to count")


def test_each_cause_is_read_from_the_reason_and_the_evidence_notes():
    assert cause_of(_u("I7a", "No ALT result in the 28 days before 2026-12-03; the latest "
                              "(2026-09-27T07:30:00+00:00) is too old to count.", OLD)) == STALE
    assert cause_of(_u("E10c", "No ECG in the 90 days before D (none is recorded): order a 12-lead ECG.")) == MISSING
    assert cause_of(_u("I7c", "Cockcroft-Gault creatinine clearance cannot be computed: No serum creatinine result "
                              "in the 28 days before 2026-10-01.")) == MISSING
    assert cause_of(_u("I7b", "Only a preliminary total bilirubin result in the 28 days before D.")) == PRELIMINARY
    assert cause_of(_u("I7b", "Total bilirubin: Observation/x has no reference range upper limit (ULN).")) == NO_ULN
    assert cause_of(_u("E17", "Needs confirmation by the study team: pregnancy.")) == PATIENT
    assert cause_of(_u("I9", "hCG negative on D; the contraception agreement to confirm.")) == PATIENT
    assert cause_of(_u("E1", "Allergy to a possible excipient recorded: confirm with the sponsor.")) == REVIEW


def test_stale_tests_are_one_step_with_the_last_date_and_one_echo_for_two_criteria():
    items = [_u("I7a", "No ALT result in the 28 days before 2026-12-03; the latest (2026-09-27T07:30:00+00:00) "
                       "is too old to count.", OLD),
             _u("I7b", "No total bilirubin result in the 28 days before 2026-12-03; the latest (2026-09-20) is too "
                       "old to count."),
             _u("I7d", "No LVEF result in the 90 days before 2026-12-03; the latest (2026-08-01) is too old to "
                       "count.", Evidence("Observation/l", None, None, "2026-08-01", note="too old to count")),
             _u("E10e", "No LVEF result in the 90 days before 2026-12-03; the latest (2026-08-01) is too old to "
                        "count.", Evidence("Observation/l", None, None, "2026-08-01", note="too old to count")),
             _u("E6", "Graft-versus-host disease recorded, activity unclear.")]
    steps = next_steps(items, RULES)
    assert [s.text for s in steps] == [
        "Repeat 2 tests older than 28 days (last 2026-09-27): ALT/AST, bilirubin",
        "Repeat 1 test older than 90 days (last 2026-08-01): LVEF (echo/MUGA)",
        "Check in the record (1): GvHD activity (E6)",
    ]
    assert steps[1].ids == ("I7d", "E10e")  # both criteria settled by one echocardiogram


def test_plain_shows_days_and_code_displays():
    text = plain("HBsAg http://loinc.org|LA6577-6 on 2026-09-01T08:00:00+00:00 and 2026-09-02T08:00Z.",
                 KNOWLEDGE.tables)
    assert text == "HBsAg Negative on 2026-09-01 and 2026-09-02."
    assert plain("x http://example.org/unknown|ZZ9 y") == "x a coded value y"


def test_age_in_years_counts_whole_years_and_refuses_partial_dates():
    at = datetime(2026, 5, 21, tzinfo=UTC)
    assert age_in_years("1974-05-22", at) == 51 and age_in_years("1974-05-21", at) == 52
    assert age_in_years("1974", at) is None and age_in_years(None, at) is None
