"""Cards from screenings: which card (if any), its summary, detail, suggestion, links and ids.

Screenings are built directly (``Screening`` + ``CriterionResult``) so each card rule is tested on its own,
whatever the criteria decide for a given record.
"""

from __future__ import annotations

import ast
import re
import uuid
from datetime import date
from pathlib import Path

import pytest
from builders import AT

from cds_service.cards.card import SCREENING_EXTENSION, TIME_PASSING, build_cards, card_uuid
from cds_service.config import Settings, load_knowledge
from cds_service.criteria.result import CriterionResult, Evidence, Result
from cds_service.pipeline import Screening

RULES = load_knowledge(Settings.from_env({})).rules
HOOK = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
M, N, U = Result.MET, Result.NOT_MET, Result.UNKNOWN


def _screening(status: str, overrides: dict[str, CriterionResult] | None = None,
               not_retrieved: dict[str, str] | None = None) -> Screening:
    """Every criterion fine (inclusions met, exclusions not met), then the overrides."""
    overrides = overrides or {}
    criteria = []
    for info in RULES.criteria:
        default = CriterionResult(info.id, info.kind, M if info.kind == "inclusion" else N, "Fine.")
        criteria.append(overrides.get(info.id, default))
    return Screening(RULES.trial_id, "Patient/p1", AT, status, tuple(criteria), (), dict(not_retrieved or {}))


def _c(cid: str, result: Result, reason: str = "Because.", *evidence: Evidence, until: date | None = None):
    kind = RULES.criterion(cid).kind
    return CriterionResult(cid, kind, result, reason, tuple(evidence), until)


def _cards(s: Screening, **kw) -> list[dict]:
    args = dict(rules=RULES, report_url=None, hook_instance=HOOK, explain_ineligibility=False)
    args.update(kw)
    return build_cards(s, **args)


# --- potential candidate ---------------------------------------------------------------------------------------
def test_potential_candidate_gets_one_info_card_counting_items_to_check():
    s = _screening("potential-candidate", {"I3": _c("I3", U, "No CD38 result."), "I4": _c("I4", U),
                                           "I7d": _c("I7d", U, "No LVEF.")})
    [card] = _cards(s)
    assert card["indicator"] == "info"
    assert card["summary"] == ("Possible candidate for NCT06880354 (CLL1/CD38 CAR-T, r/r AML): 2 items to check, "
                               "then investigator sign-off")
    assert len(card["summary"]) < 140


def test_attestations_are_counted_apart_from_the_items_to_check():
    """Attestations are open for every patient: one short sign-off line, after the items a clinician can act on."""
    s = _screening("potential-candidate", {
        "I3": _c("I3", U, "No CD38 result."),
        "I4": _c("I4", U, "Needs confirmation by the study team: estimated survival of at least 3 months."),
        "I8": _c("I8", U, "Needs confirmation by the study team: steroids can stop. Current dose 30 mg/day."),
    })
    detail = _cards(s)[0]["detail"]
    assert "**To check (1 item):**" in detail
    assert "**Sign-off:** 2 investigator sign-offs at the screening visit (I4, I8: Current dose 30 mg/day)." in detail
    assert detail.index("To check (1 item)") < detail.index("Sign-off")
    assert "estimated survival" not in detail  # no generic reason repeated


def test_attestation_reasons_are_not_cut_inside_a_sentence():
    s = _screening("potential-candidate", {"E18": _c("E18", U, "Needs confirmation by the study team: toxicities "
                                                               "recovered (except, e.g. alopecia).")})
    detail = _cards(s)[0]["detail"]
    assert "(E18)." in detail
    assert "alopecia" not in detail


def test_only_attestations_left():
    s = _screening("potential-candidate", {"I4": _c("I4", U), "E19": _c("E19", U)})
    [card] = _cards(s)
    assert card["summary"].endswith(": record checks pass, then investigator sign-off")


def test_detail_says_nothing_blocks_and_what_to_order():
    s = _screening("potential-candidate", {"I3": _c("I3", U, "No CD38 result.")})
    detail = _cards(s)[0]["detail"]
    assert "**Blocking:** nothing recorded rules the patient out." in detail
    assert "- Order 1 test with no recent result on record: CLL1/CD38 flow cytometry" in detail


def test_counts_agree_between_summary_detail_and_suggestion():
    s = _screening("potential-candidate", {
        "I7a": _c("I7a", U, "No ALT result in the 28 days before 2026-10-01; the latest (2026-08-20T07:30:00+00:00)"
                            " is too old to count."),
        "I7d": _c("I7d", U, "No LVEF result in the 90 days before 2026-10-01."),
        "E10e": _c("E10e", U, "No LVEF result in the 90 days before 2026-10-01."),
        "I4": _c("I4", U)})
    [card] = _cards(s)
    assert ": 3 items to check, then investigator sign-off" in card["summary"]
    assert "**To check (3 items):**" in card["detail"]
    assert "- Repeat 1 test older than 28 days (last 2026-08-20): ALT/AST" in card["detail"]
    assert "- Order 1 test with no recent result on record: LVEF (echo/MUGA)" in card["detail"]  # one echo, 2 items
    assert "3 items to check, 1 investigator sign-off." in card["suggestions"][0]["actions"][0]["resource"]["note"][0][
        "text"]
    assert "T07:30" not in card["detail"]


def test_detail_shows_key_values_on_one_line():
    born = Evidence("Patient/p1", "born 1974-05-22", None, "1974-05-22", note="birthDate")
    aml = Evidence("Condition/c1", None, None, "2026-09-06", display="Acute myeloid leukemia, in relapse (disorder)",
                   note="coded as relapse")
    cd38 = Evidence("Observation/cd38", "78 %", None, "2026-09-19T09:00:00+00:00", display="CD38 cells",
                    note="CD38 positive")
    ecog = Evidence("Observation/e", 1, None, "2026-09-27T10:15:00+00:00", display="ECOG", note="ECOG")
    lvef = Evidence("Observation/l", "60 %", None, "2026-09-11", display="LVEF", note="LVEF")
    s = _screening("potential-candidate", {
        "I1": _c("I1", M, "Age 52.", born), "I2": _c("I2", M, "Relapsed.", aml), "I3": _c("I3", M, "CD38+.", cd38),
        "I6": _c("I6", M, "ECOG 1.", ecog), "I7d": _c("I7d", M, "LVEF 60 %.", lvef),
        "I7c": _c("I7c", M, "Cockcroft-Gault creatinine clearance 83.1 mL/min (female, age 52) is above 45.")})
    line = next(x for x in _cards(s)[0]["detail"].split("\n") if x.startswith("**Key values:**"))
    assert line == ("**Key values:** 52 years · Acute myeloid leukemia, in relapse (2026-09-06) · CD38 78 % positive "
                    "(2026-09-19) · ECOG 1 (2026-09-27) · LVEF 60 % (2026-09-11) · CrCl 83 mL/min")


def test_referral_suggestion_creates_a_proposed_service_request():
    [card] = _cards(_screening("potential-candidate"))
    assert card["selectionBehavior"] == "at-most-one"
    [suggestion] = card["suggestions"]
    assert suggestion["label"] == "Refer to the study team"
    [action] = suggestion["actions"]
    assert action["type"] == "create" and action["description"]
    sr = action["resource"]
    assert sr["resourceType"] == "ServiceRequest"
    assert sr["intent"] == "proposal" and sr["status"] == "draft"
    assert sr["subject"] == {"reference": "Patient/p1"}
    assert "NCT06880354" in sr["reasonCode"][0]["text"]
    assert "NCT06880354" in sr["note"][0]["text"]


def test_source_links_override_reasons_and_extension():
    s = _screening("potential-candidate")
    [card] = _cards(s, report_url="https://ts.example.org/report/abc")
    assert card["source"]["label"] and card["source"]["url"] == RULES.registry_url
    assert card["source"]["topic"]["code"]
    assert [link["url"] for link in card["links"]] == [RULES.registry_url, "https://ts.example.org/report/abc"]
    assert all(link["type"] == "absolute" for link in card["links"])
    assert {r["display"] for r in card["overrideReasons"]} >= {"Patient declined", "Already referred",
                                                              "Not a candidate in my judgement"}
    assert card["extension"][SCREENING_EXTENSION] == s.to_json()


def test_without_report_url_there_is_only_the_registry_link():
    [card] = _cards(_screening("potential-candidate"))
    assert [link["url"] for link in card["links"]] == [RULES.registry_url]


def test_uuids_are_stable_per_hook_call_and_differ_between_calls():
    s = _screening("potential-candidate")
    a, b = _cards(s)[0], _cards(s)[0]
    c = _cards(s, hook_instance="0d6f6ea4-2a62-4c1d-9b4e-52f5e4e7f0a1")[0]
    assert a["uuid"] == b["uuid"] != c["uuid"]
    uuid.UUID(a["uuid"])
    assert a["uuid"] == card_uuid(HOOK, "potential-candidate")
    assert a["suggestions"][0]["uuid"] != a["uuid"]


def test_not_retrieved_kinds_make_the_summary_say_the_screening_is_incomplete():
    s = _screening("potential-candidate", not_retrieved={"Observation": "deadline passed",
                                                         "Condition": "HTTP 500 from the FHIR server"})
    [card] = _cards(s)
    assert not card["summary"].startswith("Possible candidate")
    assert card["summary"].startswith("Screening for NCT06880354 incomplete: diagnoses, results (labs, vitals, ECG, "
                                      "echo) not retrieved")
    assert len(card["summary"]) < 140
    assert card["detail"].startswith("**Screening incomplete:** diagnoses, results (labs, vitals, ECG, echo) could "
                                     "not be retrieved")


def test_a_complete_screening_reads_possible_candidate():
    [card] = _cards(_screening("potential-candidate"))
    assert card["summary"].startswith("Possible candidate for NCT06880354")
    assert "incomplete" not in card["summary"] + card["detail"]


def test_record_text_cannot_inject_markdown_or_html():
    evil = Evidence("Observation/x", "<script>alert(1)</script>", None, "2026-09-20", display="[click](http://x)")
    s = _screening("potential-candidate", {"I7a": _c("I7a", M, "ok", evil)})
    detail = _cards(s)[0]["detail"]
    assert re.search(r"(?<!\\)<", detail) is None  # every "<" escaped: shown as text, never as HTML
    assert re.search(r"(?<!\\)\[click", detail) is None


# --- ineligible for now ----------------------------------------------------------------------------------------
def test_time_window_exclusion_gets_a_not_eligible_until_card():
    s = _screening("ineligible", {"E15": _c("E15", M, "Live vaccine on 2026-09-20.", until=date(2026, 10, 19))})
    [card] = _cards(s)
    assert card["summary"].startswith("Not eligible for NCT06880354 until 2026-10-19: Live attenuated vaccine")
    assert len(card["summary"]) < 140
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert "2026-10-19" in card["detail"]


def test_several_windows_give_the_latest_date():
    s = _screening("ineligible", {
        "E15": _c("E15", M, until=date(2026, 10, 19)),
        "E16": _c("E16", M, until=date(2026, 10, 25)),
    })
    [card] = _cards(s)
    assert "until 2026-10-25" in card["summary"] and "(+1 more)" in card["summary"]


@pytest.mark.parametrize("overrides", [
    {"E15": _c("E15", M, until=date(2026, 10, 19)), "I1": _c("I1", N)},  # a lasting reason too
    {"E15": _c("E15", M)},  # a window exclusion without a date
    {"E3": _c("E3", M)},  # APL: not a window
])
def test_other_ineligibility_gives_no_card(overrides):
    assert _cards(_screening("ineligible", overrides)) == []


def test_not_applicable_gives_no_card():
    assert _cards(_screening("not-applicable")) == []


def test_explain_ineligibility_shows_ineligible_and_not_applicable():
    s = _screening("ineligible", {"I1": _c("I1", N, "Age 75."), "I7a": _c("I7a", U, "No ALT result in the 28 days "
                                                                                  "before 2026-10-01.")})
    [card] = _cards(s, explain_ineligibility=True)
    assert card["summary"].startswith("Not eligible for NCT06880354: Age 18-70")
    assert "- **I1** Age 18-70 at consent: Age 75" in card["detail"]
    assert "Order" not in card["detail"] and "Repeat" not in card["detail"] and "To check" not in card["detail"]
    [na] = _cards(_screening("not-applicable"), explain_ineligibility=True)
    assert "does not apply" in na["summary"]


def test_time_passing_list_is_the_protocol_windows():
    assert TIME_PASSING == {"E2a", "E2c", "E2d", "E2e", "E5", "E9", "E10b", "E15", "E16"}


def test_summary_is_cut_below_140_characters():
    long = _c("E15", M, until=date(2026, 10, 19))
    rules_label = RULES.criterion("E15").label
    s = _screening("ineligible", {"E15": long})
    assert len(_cards(s)[0]["summary"]) < 140 and rules_label[:20] in _cards(s)[0]["summary"]


def test_no_null_or_empty_fields():
    def walk(v, where="card"):
        assert v is not None and v != "" and v != [] and v != {}, where
        if isinstance(v, dict):
            for k, x in v.items():
                if k != "extension":
                    walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")

    for card in _cards(_screening("potential-candidate")):
        walk(card)


def test_cards_room_does_no_io():
    for name in ("card.py", "detail.py", "steps.py", "text.py", "checklist.py"):
        tree = ast.parse((Path(__file__).parents[2] / "cds_service" / "cards" / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"flask", "requests", "urllib3", "socket", "http"}, name


def test_a_blocking_reason_is_cut_at_whole_clauses_without_resource_references():
    reason = ("Gilteritinib last given 2026-09-26 (MedicationAdministration/ts18-gilteritinib-1), within its washout "
              "of 14 days, shorter than 5 half-lives of 23.5 days (t1/2 113 h); as of 2026-10-01; provisional until "
              "the apheresis date is known. Second sentence.")
    s = _screening("ineligible", {"E2c": _c("E2c", M, reason, until=date(2026, 10, 11))})
    [line] = [x for x in _cards(s)[0]["detail"].split("\n") if x.startswith("- **E2c**")]
    assert line.endswith("(until **2026-10-11**): Gilteritinib last given 2026-09-26, within its washout of 14 days, "
                         "shorter than 5 half-lives of 23.5 days (t1/2 113 h); as of 2026-10-01")
    assert "MedicationAdministration/" not in line and "…" not in line


@pytest.mark.parametrize("status, overrides", [
    ("potential-candidate", {"I3": _c("I3", U, "No CD38 result.")}),
    ("ineligible", {"E15": _c("E15", M, "A recent transplant.", until=date(2026, 12, 1))}),
    ("ineligible", {"I1": _c("I1", N)}),
    ("not-applicable", {}),
])
@pytest.mark.parametrize("explain", [False, True])
def test_report_link_added_afterwards_gives_the_cards_built_with_it(status, overrides, explain):
    """The hook builds its cards once, then adds the report link (``with_report``): the same cards as built
    with the link, for every kind of card."""
    from cds_service.cards.card import with_report

    s = _screening(status, overrides, {"Procedure": "the FHIR server timed out"})
    url = "https://screen.example.org/report/abcdefghijklmnopqrstuvwxyz012345"
    without = _cards(s, explain_ineligibility=explain)
    assert with_report(without, url) == _cards(s, report_url=url, explain_ineligibility=explain)
    carded = status == "potential-candidate" or "E15" in overrides or explain
    assert len(without) == (1 if carded else 0)  # the comparison is not between two empty lists
    assert _cards(s, explain_ineligibility=explain) == without  # the input cards are left as they were


def test_diagnoses_not_retrieved_is_never_a_silent_not_applicable():
    """Issue 17: when the Condition answer failed (or held only other patients), "no AML recorded" means nothing,
    so a card says the screening is incomplete, even with ineligibility cards off; with the diagnoses read and no
    AML, there is still no card."""
    lost = _screening("not-applicable", not_retrieved={"Condition": "the answer held only other patients' data"})
    [card] = _cards(lost)
    assert "incomplete" in card["summary"] and "diagnoses" in card["summary"]
    assert "does not apply" not in card["summary"]
    assert card["indicator"] == "info"
    assert _cards(_screening("not-applicable")) == []
    # another kind lost for a patient without AML: the diagnoses were read, so the trial does not concern them
    assert _cards(_screening("not-applicable", not_retrieved={"Observation": "deadline passed"})) == []
