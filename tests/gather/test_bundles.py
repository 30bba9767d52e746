"""Reading bundles, NDJSON and folders; grouping by patient; unreadable input."""

import json

import pytest

from cds_service.errors import InputError
from cds_service.gather.bundles import group_by_patient, read_path, records_from_paths
from cds_service.gather.record import PatientRecord


def _bundle(*resources, kind="collection", urn=False):
    entries = []
    for r in resources:
        e = {"resource": r}
        if urn:
            e["fullUrl"] = f"urn:uuid:{r['id']}"
        entries.append(e)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _obs(oid, subject):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]},
            "subject": {"reference": subject}, "effectiveDateTime": "2026-09-30"}


def test_bundle_with_two_patients_keeps_input_order(tmp_path):
    f = tmp_path / "two.json"
    f.write_text(json.dumps(_bundle(
        {"resourceType": "Patient", "id": "b"}, _obs("o1", "Patient/b"),
        {"resourceType": "Patient", "id": "a"}, _obs("o2", "Patient/a"), _obs("o3", "Patient/b"),
        {"resourceType": "Medication", "id": "m1", "code": {"text": "x"}},
    )))
    records = list(records_from_paths([f]))
    assert [r.patient_ref for r in records] == ["Patient/b", "Patient/a"]
    assert [o.id for o in records[0].of_type("Observation")] == ["o1", "o3"]
    assert [m.id for m in records[1].of_type("Medication")] == ["m1"]  # shared resources go to every patient


def test_urn_uuid_references_resolve(tmp_path):
    f = tmp_path / "tx.json"
    bundle = _bundle({"resourceType": "Patient", "id": "123"}, _obs("o1", "urn:uuid:123"), kind="transaction",
                     urn=True)
    f.write_text(json.dumps(bundle))
    [record] = list(records_from_paths([f]))
    assert record.patient_ref == "Patient/123" and len(record.of_type("Observation")) == 1


def test_ndjson_and_folders(tmp_path):
    (tmp_path / "a.ndjson").write_text(
        json.dumps({"resourceType": "Patient", "id": "n1"}) + "\n\n" + json.dumps(_obs("o", "Patient/n1")) + "\n")
    (tmp_path / "b.json").write_text(json.dumps(_bundle({"resourceType": "Patient", "id": "j1"})))
    (tmp_path / "notes.txt").write_text("ignored")
    refs = [r.patient_ref for r in records_from_paths([tmp_path])]
    assert refs == ["Patient/n1", "Patient/j1"]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON"),
    ('{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle"),
    ("[1, 2]", "not a FHIR Bundle"),
])
def test_unreadable_files_are_input_errors_and_others_still_screen(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_bundle({"resourceType": "Patient", "id": "g"})))
    items = list(records_from_paths([bad, good]))
    assert isinstance(items[0], InputError) and message in str(items[0])
    assert isinstance(items[1], PatientRecord)


def test_missing_file(tmp_path):
    [item] = list(records_from_paths([tmp_path / "nope.json"]))
    assert isinstance(item, InputError) and "cannot be read" in str(item)


def test_resources_before_their_patient_are_kept(tmp_path):
    f = tmp_path / "late.json"
    f.write_text(json.dumps(_bundle(_obs("o1", "Patient/z"), {"resourceType": "Patient", "id": "z"})))
    [(source, resources, urls)] = list(read_path(f))
    [raw] = group_by_patient(resources, urls, source)
    assert raw.resources[0]["resourceType"] == "Patient" and len(raw.resources) == 2
