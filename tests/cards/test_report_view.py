"""The report page's view model and HTML: every criterion, grouped blocking / to confirm / met."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

from report_sample import PATIENT, sample_rules, sample_screening

from cds_service.cards.report import build_report, format_when, render_missing_html, render_report_html


def test_every_criterion_lands_in_exactly_one_section():
    rules = sample_rules()
    view = build_report(sample_screening(rules), rules)
    ids = [it.id for s in view.sections for it in s.items]
    assert sorted(ids) == sorted(c.id for c in rules.criteria)
    assert view.total == len(rules.criteria) == 46
    assert [s.key for s in view.sections] == ["blocking", "confirm", "met"]


def test_grouping_by_kind_and_result():
    rules = sample_rules()
    view = build_report(sample_screening(rules), rules)
    blocking = {it.id: it for it in view.section("blocking").items}
    assert set(blocking) == {"I7d", "E5"}
    assert blocking["I7d"].outcome == "Inclusion not met"
    assert blocking["E5"].outcome == "Exclusion applies" and blocking["E5"].until == "2027-01-01"
    confirm = {it.id for it in view.section("confirm").items}
    assert "I3" in confirm and "I1" not in confirm
    met = {it.id: it for it in view.section("met").items}
    assert met["I1"].outcome == "Inclusion met" and met["E1"].outcome == "Exclusion ruled out"


def test_items_keep_the_trial_order_and_labels_and_resolve_texts():
    rules = sample_rules()
    view = build_report(sample_screening(rules), rules)
    order = [c.id for c in rules.criteria]
    attest = {c.id for c in rules.criteria if c.attestation}
    for s in view.sections:
        ids = [it.id for it in s.items]
        # trial order, attestations after the items the record can settle (as on the card)
        assert ids == sorted(ids, key=lambda i: (i in attest, order.index(i)))
    confirm = [it.id for it in view.section("confirm").items]
    assert any(i in attest for i in confirm) and not any(
        a in attest and b not in attest for a, b in zip(confirm, confirm[1:], strict=False))
    i3 = next(it for it in view.section("confirm").items if it.id == "I3")
    assert i3.label == rules.criterion("I3").label
    assert i3.resolve == rules.criterion("I3").resolve
    assert all(it.resolve == "" for it in view.section("met").items)


def test_evidence_values_units_and_dates_are_formatted():
    rules = sample_rules()
    view = build_report(sample_screening(rules), rules)
    i7a = next(it for it in view.section("met").items if it.id == "I7a")
    alt, ast = i7a.evidence
    assert (alt.reference, alt.value, alt.date) == ("Observation/alt-1", "ALT: 32 U/L", "2026-09-24 07:30 UTC")
    assert (ast.value, ast.note) == ("24.5 U/L", "ULN 40 U/L")


def test_format_when():
    assert format_when("2026-09-24") == "2026-09-24"
    assert format_when("2025-03") == "2025-03"
    assert format_when("2026-09-24T07:30:00Z") == "2026-09-24 07:30 UTC"
    assert format_when("2026-09-24T07:30:00+02:00") == "2026-09-24 07:30 +02:00"
    assert format_when(datetime(2026, 10, 2, 9, 0, tzinfo=UTC)) == "2026-10-02 09:00 UTC"
    assert format_when("soon") == "soon"
    assert format_when(None) == ""


def test_header_status_and_not_retrieved():
    rules = sample_rules()
    view = build_report(sample_screening(rules), rules, expires_at=datetime(2026, 10, 2, 9, 0, tzinfo=UTC))
    assert view.status_label == "Not eligible" and view.patient == PATIENT
    assert view.evaluated_at == "2026-10-01 09:00 UTC" and view.expires_at == "2026-10-02 09:00 UTC"
    assert view.not_retrieved == (("MedicationAdministration", "the EHR's prefetch query failed"),)


def test_unknown_criterion_ids_and_odd_input_do_not_break_the_view():
    rules = sample_rules()
    odd = {"trial": "NCT06880354", "status": "weird",
           "criteria": [{"id": "Z9", "kind": "inclusion", "result": "met", "reason": "x", "evidence": "nope"},
                        "not a dict", {"id": "I1", "result": "unknown"}],
           "data_problems": [{"reference": "Observation/x", "message": "invalid date"}, 3]}
    view = build_report(odd, rules)
    assert view.total == 2
    assert [it.id for it in view.section("met").items] == ["Z9"]
    assert view.section("confirm").items[0].kind == "inclusion"  # taken from the rules
    assert view.data_problems == (("Observation/x", "invalid date"),)
    assert view.status_label == "weird"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_escaped():
    rules = sample_rules()
    screening = sample_screening(rules)
    screening["criteria"][0]["reason"] = "<script>alert(1)</script> & more"
    html = render_report_html(build_report(screening, rules))
    parser = _Text()
    parser.feed(html)
    assert "script" not in parser.tags and "img" not in parser.tags and "link" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert not re.search(r"""(src|href)=["'](?!https://clinicaltrials\.gov/)""", html)  # no other URL is loaded
    assert "@media print" in html
    text = " ".join(parser.text)
    assert "Screening report - NCT06880354" in text
    for heading in ("Blocking (2)", "To check (", "Met ("):
        assert heading in text
    assert "Not eligible until 2027-01-01." in text


def test_missing_page():
    html = render_missing_html("NCT06880354")
    assert "Screening report not available" in html and "expired" in html


# --- the patient header ------------------------------------------------------------------------------------------
PATIENT_JSON = {"resourceType": "Patient", "id": "x", "gender": "female", "birthDate": "1974-05-22",
                "identifier": [{"system": "urn:ssn", "value": "999-00-1234"},
                               {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                     "code": "MR"}]}, "value": "TS-0001"}],
                "name": [{"use": "old", "family": "Berg", "given": ["Maren"]},
                         {"use": "official", "family": "Lindqvist", "given": ["Maren", "A."]}]}


def test_patient_header_takes_the_official_name_the_mrn_and_the_age_at_the_evaluation_time():
    from cds_service.cards.report import patient_header

    header = patient_header(PATIENT_JSON, datetime(2026, 5, 21, tzinfo=UTC))
    assert header == {"name": "Maren A. Lindqvist", "mrn": "TS-0001", "birth_date": "1974-05-22",
                      "age": "51 years", "sex": "female"}
    assert patient_header({"resourceType": "Patient", "birthDate": "1955"}, datetime(2026, 5, 21, tzinfo=UTC)) == {
        "name": "", "mrn": "", "birth_date": "1955", "age": "", "sex": ""}


def test_patient_header_reads_the_fhir_resources_model_as_the_hook_has_it():
    from fhir.resources.R4B.patient import Patient

    from cds_service.cards.report import patient_header

    model = Patient.model_validate(PATIENT_JSON) if hasattr(Patient, "model_validate") else Patient.parse_obj(
        PATIENT_JSON)
    assert patient_header(model, datetime(2026, 5, 22, tzinfo=UTC))["age"] == "52 years"
    assert patient_header(model, datetime(2026, 5, 22, tzinfo=UTC))["birth_date"] == "1974-05-22"


def test_the_stored_header_is_shown_above_the_result_and_a_report_without_one_still_renders():
    from cds_service.cards.report import patient_header, with_header

    rules = sample_rules()
    stored = with_header(sample_screening(rules), patient_header(PATIENT_JSON, datetime(2026, 10, 1, tzinfo=UTC)))
    html = render_report_html(build_report(stored, rules))
    header = re.search(r'<dl class="patient".*?</dl>', html, re.S).group(0)
    assert " ".join(re.sub(r"<[^>]+>", " ", header).split()) == ("Patient Maren A. Lindqvist MRN TS-0001 Born "
                                                                "1974-05-22 Age 52 years Sex female")
    assert html.index('class="patient"') < html.index("Result")
    assert 'class="patient"' not in render_report_html(build_report(sample_screening(rules), rules))


def test_report_text_shows_days_and_displays_never_iso_timestamps_or_raw_codes():
    from cds_service.config import Settings, load_knowledge

    knowledge = load_knowledge(Settings.from_env({}))
    rules = knowledge.rules
    screening = sample_screening(rules)
    for c in screening["criteria"]:
        if c["id"] == "E12b":
            c["reason"] = "HBsAg negative on 2026-09-01T08:00:00+00:00."
            c["evidence"] = [{"reference": "Observation/hbsag", "value": "http://loinc.org|LA6577-6",
                              "date": "2026-09-01T08:00:00+00:00", "note": "HBsAg: negative"}]
    view = build_report(screening, rules, tables=knowledge.tables)
    [item] = [it for s in view.sections for it in s.items if it.id == "E12b"]
    assert item.reason == "HBsAg negative on 2026-09-01."
    assert item.evidence[0].value == "Negative" and item.evidence[0].date == "2026-09-01 08:00 UTC"
    assert format_when("2026-05-04T09:00:00+00:00..2026-05-14T09:00:00+00:00") == ("2026-05-04 09:00 UTC to "
                                                                                  "2026-05-14 09:00 UTC")
