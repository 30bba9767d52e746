"""Bulk Data (NDJSON) input joined per patient: the same screening as the patients' bundles, one line each.

The NDJSON is written here, in a temporary folder, from the fixtures' and Synthea's bundles as a Bulk Data
export would hold them: one file per resource type (and, in variants, mixed files and shuffled lines).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.config import default_knowledge
from cds_service.gather.bulk import BulkIndex, patient_key, reference_key
from cds_service.gather.bundles import expand_paths, records_from_paths
from cds_service.pipeline import screen
from cds_service.population import as_json, screen_index

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
SYNTHEA = ROOT.parent / "shared" / "synthea"
if not SYNTHEA.is_dir():
    SYNTHEA = Path("/work/shared/synthea")
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
AT_ISO = "2026-10-01T09:00:00Z"


def bundle_resources(paths: list[Path]) -> list[dict]:
    """Every resource of the bundles, references to a fullUrl rewritten to 'Type/id' as a server's export has
    them (Synthea's urn:uuid references name the resource's own id, so they are kept as they are)."""
    out = []
    for path in expand_paths(paths):
        if path.suffix != ".json":
            continue
        bundle = json.loads(path.read_text(encoding="utf-8"))
        urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
                for e in bundle.get("entry", []) if "fullUrl" in e}
        for entry in bundle.get("entry", []):
            text = json.dumps(entry["resource"])
            for url, ref in urls.items():
                if url.startswith("urn:uuid:") and url[9:] == ref.split("/", 1)[1]:
                    continue
                text = text.replace(f'"reference": "{url}"', f'"reference": "{ref}"')
            out.append(json.loads(text))
    return out


def write_export(resources: list[dict], folder: Path, *, mixed: bool = False, seed: int | None = None) -> Path:
    """Resources as NDJSON: one file per type (``mixed``: three files of all types); ``seed`` shuffles lines."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = defaultdict(list)
    for n, res in enumerate(resources):
        files[f"part-{n % 3}" if mixed else res["resourceType"]].append(json.dumps(res))
    for name, lines in files.items():
        if seed is not None:
            random.Random(f"{seed}-{name}").shuffle(lines)
        (folder / f"{name}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def by_bundles(paths: list[Path]) -> dict[str, dict]:
    """Screenings of the bundles as `trialscreen screen` does them (with the code tables' relevance filter), for
    the patients that have a Patient resource."""
    knowledge = default_knowledge()
    out = {}
    for record in records_from_paths(paths, knowledge.tables, at=AT, rules=knowledge.rules):
        if record.patient is not None:
            out[record.patient_ref] = screen(record, AT).to_json()
    return out


def by_bulk(folder: Path, jobs: int = 1) -> list[dict]:
    with BulkIndex.build([folder]) as index:
        return [o.rendered for o in screen_index(index, AT, jobs=jobs, render=as_json)]


def _evidence_as_set(screening: dict) -> dict:
    """The screening with each criterion's evidence in a canonical order: the engine lists evidence of the same
    date in input order, and no order of a bundle's entries survives an export (nor should it count)."""
    return {**screening, "criteria": [{**c, "evidence": sorted(c["evidence"], key=json.dumps)}
                                      for c in screening["criteria"]]}


def assert_same(bulk: list[dict], bundles: dict[str, dict], *, evidence_order: bool = True) -> None:
    patients = [s["patient"] for s in bulk]
    assert len(patients) == len(set(patients)), "a patient screened twice"
    assert sorted(patients) == sorted(bundles)
    for s in bulk:
        expected = bundles[s["patient"]]
        assert len(s["criteria"]) == 46
        assert s["status"] == expected["status"], s["patient"]
        if evidence_order:
            assert s == expected, s["patient"]
        else:
            assert _evidence_as_set(s) == _evidence_as_set(expected), s["patient"]


@pytest.fixture(scope="module")
def fixture_resources() -> list[dict]:
    return bundle_resources([FIXTURES])


@pytest.fixture(scope="module")
def fixture_bundles() -> dict[str, dict]:
    return by_bundles(sorted(p for p in FIXTURES.glob("*.json")))


def test_reference_forms_name_the_patient():
    assert reference_key("Patient/p1") == ("Patient", "p1")
    assert reference_key("https://ehr.example.org/fhir/Patient/p1") == ("Patient", "p1")
    assert reference_key("https://ehr.example.org/fhir/Patient/p1/_history/3") == ("Patient", "p1")
    assert reference_key("urn:uuid:0dc83baf-6bb7") == (None, "0dc83baf-6bb7")
    assert reference_key("#med1") is None
    assert reference_key("Patient?identifier=x|1") is None
    assert patient_key({"resourceType": "Condition", "subject": {"reference": "Group/g1"}}) is None
    assert patient_key({"resourceType": "AllergyIntolerance", "patient": {"reference": "urn:uuid:abc"}}) == "abc"


def test_fixtures_split_per_type_screen_as_their_bundles(tmp_path, fixture_resources, fixture_bundles):
    folder = write_export(fixture_resources, tmp_path / "export")
    assert (folder / "Procedure.ndjson").exists() and (folder / "Patient.ndjson").exists()
    bulk = by_bulk(folder)
    assert_same(bulk, fixture_bundles)
    # The cross-file exclusion: fixture 09's allogeneic transplant is only in Procedure.ndjson.
    [s09] = [s for s in bulk if s["patient"] == "Patient/ts09-patient"]
    [e5] = [c for c in s09["criteria"] if c["id"] == "E5"]
    assert s09["status"] == "ineligible" and e5["result"] == "met"
    assert any(e["reference"].startswith("Procedure/") for e in e5["evidence"])


def test_mixed_files_and_shuffled_lines_change_nothing(tmp_path, fixture_resources, fixture_bundles):
    shuffled = list(fixture_resources)
    random.Random(7).shuffle(shuffled)
    mixed = by_bulk(write_export(shuffled, tmp_path / "mixed", mixed=True, seed=3))
    assert_same(mixed, fixture_bundles)
    assert by_bulk(write_export(fixture_resources, tmp_path / "per-type", seed=11)) == mixed


def test_jobs_give_the_same_lines_in_the_same_order(tmp_path, fixture_resources):
    folder = write_export(fixture_resources, tmp_path / "export")
    assert by_bulk(folder, jobs=2) == by_bulk(folder)


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason=f"{SYNTHEA} is absent")
def test_synthea_split_per_type_screens_as_its_bundles(tmp_path):
    files = sorted(SYNTHEA.glob("*.json"))
    folder = write_export(bundle_resources(files), tmp_path / "synthea", seed=5)
    bulk = by_bulk(folder)
    # Synthea dates many allergies and conditions alike: their evidence order is the input's, compared as sets.
    assert_same(bulk, by_bundles(files), evidence_order=False)
    # The same lines, in the same order, from a differently shuffled export.
    assert by_bulk(write_export(bundle_resources(files), tmp_path / "again", seed=6)) == bulk


def test_the_command_prints_one_line_per_patient_and_reports_orphans_once(tmp_path, capsys, fixture_resources,
                                                                          fixture_bundles):
    folder = write_export(fixture_resources, tmp_path / "export")
    with (folder / "Condition.ndjson").open("a", encoding="utf-8") as f:  # two resources of a patient not exported
        for n in (1, 2):
            f.write(json.dumps({"resourceType": "Condition", "id": f"ghost-{n}",
                                "subject": {"reference": "Patient/not-exported"}}) + "\n")
    assert main(["screen", str(folder), "--format", "json", "--at", AT_ISO]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == len(fixture_bundles) == len({s["patient"] for s in lines})
    assert "Patient/not-exported" not in {s["patient"] for s in lines}
    err = [line for line in captured.err.splitlines() if line]
    assert err == ["trialscreen: 2 resource(s) in 1 file(s) name 1 patient(s) absent from the input "
                   "(no Patient resource): not screened"]
    assert "not-exported" not in captured.err  # counts only: no patient data on stderr


def test_a_medication_in_another_file_is_resolved(tmp_path, fixture_resources):
    """Fixture 18's gilteritinib given by reference to Medication resources of Medication.ndjson (relative,
    absolute and urn:uuid references): the washout still blocks; without that file it cannot."""
    patient = [r for r in fixture_resources if patient_key(r) == "ts18-patient"]
    forms = ["Medication/gilt", "https://ehr.example.org/fhir/Medication/gilt", "urn:uuid:gilt"]
    rewritten = []
    for n, res in enumerate(patient):
        if "gilteritinib" in res.get("id", ""):
            concept = res.pop("medicationCodeableConcept")
            res = {**res, "medicationReference": {"reference": forms[n % 3]}}
        rewritten.append(res)
    medication = {"resourceType": "Medication", "id": "gilt", "code": concept}
    folder = write_export([*rewritten, medication], tmp_path / "export")
    assert (folder / "Medication.ndjson").exists()
    expected = by_bundles([FIXTURES / "18-ineligible-gilteritinib-washout.json"])["Patient/ts18-patient"]
    [s] = by_bulk(folder)
    assert s["status"] == expected["status"] == "ineligible"
    assert [c["result"] for c in s["criteria"]] == [c["result"] for c in expected["criteria"]]
    (folder / "Medication.ndjson").unlink()
    [without] = by_bulk(folder)
    assert [c["result"] for c in without["criteria"]] != [c["result"] for c in expected["criteria"]]


def test_a_bad_line_names_its_file_and_line(tmp_path, capsys):
    (tmp_path / "Patient.ndjson").write_text('{"resourceType": "Patient", "id": "p"}\n{oops\n')
    assert main(["screen", str(tmp_path), "--at", AT_ISO]) == 2
    assert "Patient.ndjson:2: not JSON" in capsys.readouterr().err
