"""Parsing resources into the typed record; invalid resources become data problems, never crashes."""

from cds_service.gather.record import build_record, raw_codings


def test_invalid_resource_is_a_data_problem_with_its_codes():
    bad = {"resourceType": "Observation", "id": "bad1", "status": "final", "valueQuantity": {"value": "high"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]}}
    good = {"resourceType": "Observation", "id": "ok", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1920-8"}]}}
    record = build_record("Patient/p", [{"resourceType": "Patient", "id": "p"}, bad, good])
    assert [o.id for o in record.of_type("Observation")] == ["ok"]
    [problem] = record.problems
    assert problem.reference == "Observation/bad1"
    assert ("http://loinc.org", "1742-6") in problem.codings
    assert "valueQuantity" in problem.message


def test_unread_types_are_ignored_and_patient_kept():
    record = build_record("Patient/p", [{"resourceType": "Patient", "id": "p", "birthDate": "1970"},
                                        {"resourceType": "Claim", "id": "c"}, {"no": "type"}])
    assert record.patient.birthDate == "1970" and not record.problems and not record.resources


def test_invalid_date_is_a_problem():
    record = build_record("Patient/p", [{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"},
                                         "onsetDateTime": "31/12/2025", "code": {"text": "x"}}])
    assert record.problems and record.problems[0].reference == "Condition/c1"


def test_raw_codings_is_bounded_and_skips_text():
    deep = {"a": {}}
    node = deep["a"]
    for _ in range(20):
        node["b"] = {"coding": [{"system": "s", "code": "c"}]}
        node = node["b"]
    assert len(raw_codings(deep)) < 10
