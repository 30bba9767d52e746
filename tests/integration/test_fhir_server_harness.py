"""Proves the local FHIR server harness (tests/fhir_server.py) does what TrialScreen's integration tests need.

Run with ``-s`` to see the measured load and query times.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir_server import SERVER_VERSION, FhirServerError, LocalFhirServer, installed_version
from hapi_server import HapiServer

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
PATIENT_ID = "ts-harness-1"
ALT, AST, HGB, WBC = "1742-6", "1920-8", "718-7", "6690-2"
TIMEOUT = 30
SYNTHEA_ID_SYSTEM = "https://github.com/synthetichealth/synthea"

# (code system, code, effectiveDateTime) for the 25 Observations of ts-harness-1
_OBS: list[tuple[str, str, str]] = [
    # 15 match code=ALT,AST & date=ge2026-01-01 (one exactly on the boundary)
    (LOINC, ALT, "2026-01-01T00:00:00Z"),
    (LOINC, ALT, "2026-01-05T08:00:00Z"),
    (LOINC, ALT, "2026-02-02T08:00:00Z"),
    (LOINC, ALT, "2026-03-02T08:00:00Z"),
    (LOINC, ALT, "2026-04-06T08:00:00Z"),
    (LOINC, ALT, "2026-05-04T08:00:00Z"),
    (LOINC, ALT, "2026-06-01T08:00:00Z"),
    (LOINC, ALT, "2026-07-06T08:00:00Z"),
    (LOINC, AST, "2026-01-06T09:30:00Z"),
    (LOINC, AST, "2026-02-03T09:30:00Z"),
    (LOINC, AST, "2026-03-03T09:30:00Z"),
    (LOINC, AST, "2026-04-07T09:30:00Z"),
    (LOINC, AST, "2026-05-05T09:30:00Z"),
    (LOINC, AST, "2026-06-02T09:30:00Z"),
    (LOINC, AST, "2026-07-07T09:30:00Z"),
    # 10 that must not match: too old (one a second before the boundary), other codes, other code system
    (LOINC, ALT, "2025-06-01T08:00:00Z"),
    (LOINC, ALT, "2025-12-31T23:59:59Z"),
    (LOINC, AST, "2025-06-02T08:00:00Z"),
    (LOINC, AST, "2025-11-03T08:00:00Z"),
    (LOINC, HGB, "2026-01-05T08:00:00Z"),
    (LOINC, HGB, "2026-03-02T08:00:00Z"),
    (LOINC, HGB, "2026-06-01T08:00:00Z"),
    (LOINC, WBC, "2026-01-05T08:00:00Z"),
    (LOINC, WBC, "2026-06-01T08:00:00Z"),
    ("http://example.org/local-lab-codes", ALT, "2026-02-10T08:00:00Z"),
]


def _put(resource: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = resource["resourceType"], resource["id"]
    url = f"{rtype}/{rid}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}


def _observation(oid: str, patient_id: str, system: str, code: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 30, "unit": "U/L", "system": "http://unitsofmeasure.org", "code": "U/L"},
    }


def harness_bundle() -> dict[str, Any]:
    """Transaction bundle: Patient ts-harness-1, two Conditions, 25 Observations, all PUT with fixed ids."""
    entries = [_put({"resourceType": "Patient", "id": PATIENT_ID, "gender": "female",
                     "birthDate": "1961-04-12", "name": [{"family": "Harness", "given": ["Tess"]}]})]
    conditions = (("91861009", "Acute myeloid leukemia"), ("38341003", "Hypertension"))
    for i, (code, display) in enumerate(conditions, 1):
        entries.append(_put({
            "resourceType": "Condition", "id": f"{PATIENT_ID}-cond-{i}",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "onsetDateTime": "2025-09-01",
        }))
    for i, (system, code, when) in enumerate(_OBS, 1):
        entries.append(_put(_observation(f"{PATIENT_ID}-obs-{i:02d}", PATIENT_ID, system, code, when)))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Resources of a searchset with search.mode = match (the server may add an OperationOutcome entry)."""
    return [e["resource"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"]


def get(url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    resp = requests.get(url, params=params, headers={"Accept": "application/fhir+json"}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text[:2000]
    body: dict[str, Any] = resp.json()
    return body


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((li["url"] for li in bundle.get("link", []) if li.get("relation") == relation), None)


@pytest.fixture(scope="module")
def harness_loaded(fhir_server: LocalFhirServer) -> dict[str, Any]:
    t0 = time.perf_counter()
    response = fhir_server.load_bundle(harness_bundle())
    elapsed = time.perf_counter() - t0
    fhir_server.analyze()
    print(f"\n[fhir] harness fixture (28 resources) loaded in {elapsed:.3f}s")
    return response


def test_server_is_the_pinned_version_on_loopback(fhir_server: LocalFhirServer) -> None:
    assert fhir_server.base_url.startswith("http://127.0.0.1:")
    meta = get(f"{fhir_server.base_url}/metadata")
    assert meta["resourceType"] == "CapabilityStatement"
    assert meta["fhirVersion"] == "4.0.1"
    if isinstance(fhir_server, HapiServer):  # the version the Maven module pins
        pom = (Path(__file__).resolve().parents[1] / "hapi" / "pom.xml").read_text()
        assert f"<hapi.version>{meta['software']['version']}</hapi.version>" in pom
        assert meta["software"]["version"] == fhir_server.version
    else:
        assert installed_version() == SERVER_VERSION


def test_transaction_put_keeps_ids(fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]) -> None:
    assert harness_loaded["type"] == "transaction-response"
    locations = [e["response"]["location"] for e in harness_loaded["entry"]]
    assert len(locations) == 28
    # sekmet answers absolute locations, HAPI relative ones (Patient/x/_history/1): both are valid FHIR
    assert locations[0].removeprefix(f"{fhir_server.base_url}/").startswith(f"Patient/{PATIENT_ID}/_history/")
    assert any(f"Observation/{PATIENT_ID}-obs-25/" in loc for loc in locations)


def test_read_patient(fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]) -> None:
    patient = get(f"{fhir_server.base_url}/Patient/{PATIENT_ID}")
    assert patient["resourceType"] == "Patient"
    assert patient["id"] == PATIENT_ID
    assert patient["name"][0]["family"] == "Harness"
    missing = requests.get(f"{fhir_server.base_url}/Patient/ts-no-such-patient", timeout=TIMEOUT)
    assert missing.status_code == 404


def test_condition_search_by_patient(fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]) -> None:
    bundle = get(f"{fhir_server.base_url}/Condition", {"patient": PATIENT_ID})
    assert sorted(c["id"] for c in matches(bundle)) == [f"{PATIENT_ID}-cond-1", f"{PATIENT_ID}-cond-2"]


def test_observation_codes_date_sort_and_paging(
    fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]
) -> None:
    expected = sorted(
        (f"{PATIENT_ID}-obs-{i:02d}" for i, (system, code, when) in enumerate(_OBS, 1)
         if system == LOINC and code in (ALT, AST) and when >= "2026-01-01"),
        key=lambda oid: _OBS[int(oid[-2:]) - 1][2], reverse=True)
    assert len(expected) == 15
    params = {"patient": PATIENT_ID, "code": f"{LOINC}|{ALT},{LOINC}|{AST}", "date": "ge2026-01-01",
              "_sort": "-date", "_count": "10"}
    if isinstance(fhir_server, HapiServer):
        params["_total"] = "accurate"  # HAPI leaves Bundle.total out of a paged search unless asked
    t0 = time.perf_counter()
    page1 = get(f"{fhir_server.base_url}/Observation", params)
    elapsed = time.perf_counter() - t0
    assert page1["type"] == "searchset"
    assert page1.get("total") == 15
    first = matches(page1)
    assert [o["id"] for o in first] == expected[:10]
    dates = [o["effectiveDateTime"] for o in first]
    assert dates == sorted(dates, reverse=True)

    next_url = link(page1, "next")
    assert next_url and next_url.startswith(fhir_server.base_url)
    page2 = get(next_url)
    assert [o["id"] for o in matches(page2)] == expected[10:]
    assert link(page2, "next") is None
    print(f"\n[fhir] Observation code-list/date/_sort/_count search: {elapsed * 1000:.1f} ms")


def test_search_is_scoped_to_the_patient(
    fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]
) -> None:
    other = "ts-harness-2"
    fhir_server.load_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
        _put({"resourceType": "Patient", "id": other}),
        _put(_observation(f"{other}-obs-1", other, LOINC, ALT, "2026-03-01T08:00:00Z")),
    ]})
    mine = get(f"{fhir_server.base_url}/Observation", {"patient": PATIENT_ID, "code": f"{LOINC}|{ALT}",
                                                       "_count": "100"})
    assert len(matches(mine)) == 10
    assert all(o["subject"]["reference"] == f"Patient/{PATIENT_ID}" for o in matches(mine))
    theirs = get(f"{fhir_server.base_url}/Observation", {"patient": other})
    assert [o["id"] for o in matches(theirs)] == [f"{other}-obs-1"]


def test_other_clinical_types_search_by_patient(fhir_server: LocalFhirServer) -> None:
    pid = "ts-harness-3"
    med = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1187832"}]}
    subject = {"reference": f"Patient/{pid}"}
    resources = [
        {"resourceType": "Patient", "id": pid},
        {"resourceType": "MedicationStatement", "id": f"{pid}-ms", "status": "active",
         "medicationCodeableConcept": med, "subject": subject},
        {"resourceType": "MedicationRequest", "id": f"{pid}-mr", "status": "active", "intent": "order",
         "medicationCodeableConcept": med, "subject": subject},
        {"resourceType": "MedicationAdministration", "id": f"{pid}-ma", "status": "completed",
         "medicationCodeableConcept": med, "subject": subject, "effectiveDateTime": "2026-02-01T10:00:00Z"},
        {"resourceType": "Procedure", "id": f"{pid}-proc", "status": "completed", "subject": subject,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "234336002"}]}},
        {"resourceType": "Immunization", "id": f"{pid}-imm", "status": "completed", "patient": subject,
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
         "occurrenceDateTime": "2025-10-01"},
        {"resourceType": "AllergyIntolerance", "id": f"{pid}-allergy", "patient": subject,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]}},
    ]
    fhir_server.load_bundle(
        {"resourceType": "Bundle", "type": "transaction", "entry": [_put(r) for r in resources]})
    for res in resources[1:]:
        bundle = get(f"{fhir_server.base_url}/{res['resourceType']}", {"patient": pid})
        assert [r["id"] for r in matches(bundle)] == [res["id"]], res["resourceType"]


def test_transaction_resolves_urn_uuid_post_entries(fhir_server: LocalFhirServer) -> None:
    pat_urn = "urn:uuid:7d1c1f8e-0c55-4b59-9f53-2f3a1b0c9d01"
    obs_urn = "urn:uuid:7d1c1f8e-0c55-4b59-9f53-2f3a1b0c9d02"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": obs_urn, "request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"coding": [
             {"system": LOINC, "code": HGB}]}, "subject": {"reference": pat_urn},
             "effectiveDateTime": "2026-05-01T08:00:00Z"}},
        {"fullUrl": pat_urn, "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "identifier": [
             {"system": "urn:trialscreen:test", "value": "urn-uuid-case"}]}},
    ]}
    out = fhir_server.load_bundle(bundle)
    obs_loc, pat_loc = (e["response"]["location"] for e in out["entry"])
    new_pid = pat_loc.removeprefix(f"{fhir_server.base_url}/").split("/")[1]  # Patient/<id>/_history/1
    assert new_pid != pat_urn.rsplit(":", 1)[1]  # POST: the server picks the id
    found = matches(get(f"{fhir_server.base_url}/Observation", {"patient": new_pid}))
    assert len(found) == 1 and found[0]["subject"]["reference"] == f"Patient/{new_pid}"

    # keep_ids=True turns the POSTs into PUTs with the urn:uuid as id: ids kept, reloading is idempotent
    for _ in range(2):
        fhir_server.load_bundle(bundle, keep_ids=True)
    kept = get(f"{fhir_server.base_url}/Observation/{obs_urn.rsplit(':', 1)[1]}")
    assert kept["subject"]["reference"] == f"Patient/{pat_urn.rsplit(':', 1)[1]}"
    # the second identical PUT: sekmet writes version 2, HAPI sees no change and keeps version 1 (a no-op update)
    assert kept["meta"]["versionId"] == ("1" if isinstance(fhir_server, HapiServer) else "2")


def test_failed_transaction_is_rolled_back(fhir_server: LocalFhirServer) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _put({"resourceType": "Patient", "id": "ts-harness-rollback"}),
        {"request": {"method": "PUT", "url": "Observation/ts-harness-rollback-obs"},
         "resource": {"resourceType": "Observation", "id": "ts-harness-rollback-obs", "status": "final",
                      "code": {"text": "x"}, "effectiveDateTime": "not-a-date"}},
    ]}
    with pytest.raises(FhirServerError, match="HTTP 400"):
        fhir_server.load_bundle(bundle)
    left = requests.get(f"{fhir_server.base_url}/Patient/ts-harness-rollback", timeout=TIMEOUT)
    assert left.status_code == 404


# ---------------------------------------------------------------- Synthea (shared data, read in place)

def synthea_dir() -> Path | None:
    candidates = [os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ""),
                  str(Path(__file__).resolve().parents[2].parent / "shared" / "synthea"),
                  "/work/shared/synthea"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def test_synthea_record_loads_and_is_searchable(fhir_server: LocalFhirServer) -> None:
    folder = synthea_dir()
    if folder is None:
        pytest.skip("Synthea sample folder (shared/synthea) not present")
    infra = [*sorted(folder.glob("hospitalInformation*.json")),
             *sorted(folder.glob("practitionerInformation*.json"))]
    patients = sorted((p for p in folder.glob("*.json") if p not in infra),
                      key=lambda p: (p.stat().st_size, p.name))
    if not patients:
        pytest.skip("no Synthea patient bundles in shared/synthea")

    t0 = time.perf_counter()
    for path in infra:
        fhir_server.load_bundle(json.loads(path.read_text()))
    t_infra = time.perf_counter() - t0

    record = patients[0]  # the smallest record keeps the suite fast
    bundle = json.loads(record.read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    synthea_ident = next(i for i in patient["identifier"] if i.get("system") == SYNTHEA_ID_SYSTEM)["value"]
    t0 = time.perf_counter()
    out = fhir_server.load_bundle(bundle)
    t_load = time.perf_counter() - t0
    assert len(out["entry"]) == len(bundle["entry"])
    t0 = time.perf_counter()
    fhir_server.analyze()
    t_analyze = time.perf_counter() - t0

    t0 = time.perf_counter()
    found = matches(get(f"{fhir_server.base_url}/Patient",
                        {"identifier": f"{SYNTHEA_ID_SYSTEM}|{synthea_ident}"}))
    t_search = time.perf_counter() - t0
    assert len(found) == 1
    server_pid = found[0]["id"]

    n_obs = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    t0 = time.perf_counter()
    obs = get(f"{fhir_server.base_url}/Observation",
              {"patient": server_pid, "_sort": "-date", "_count": "50", "_total": "accurate"})
    t_obs = time.perf_counter() - t0
    assert obs["total"] == n_obs
    dates = [datetime.fromisoformat(o["effectiveDateTime"]) for o in matches(obs) if "effectiveDateTime" in o]
    assert dates and dates == sorted(dates, reverse=True)

    size_mb = record.stat().st_size / 1e6
    print(f"\n[fhir] Synthea {record.name} ({size_mb:.2f} MB, {len(bundle['entry'])} entries): "
          f"load {t_load:.2f}s; hospital+practitioner bundles {t_infra:.2f}s; ANALYZE {t_analyze:.3f}s; "
          f"Patient?identifier {t_search * 1000:.1f} ms; Observation?patient&_sort=-date ({n_obs}) "
          f"{t_obs * 1000:.1f} ms")


# ---------------------------------------------------------------- paging caps, _include, errors (both servers)

CAP_PATIENT = "ts-harness-cap"
CAP_N = 60  # more than HAPI's largest page (50)


@pytest.fixture(scope="module")
def many_observations(fhir_server: LocalFhirServer) -> int:
    entries = [_put({"resourceType": "Patient", "id": CAP_PATIENT})]
    for i in range(CAP_N):
        entries.append(_put(_observation(f"{CAP_PATIENT}-obs-{i:02d}", CAP_PATIENT, LOINC, ALT,
                                         f"2026-0{1 + i % 9}-{1 + i % 28:02d}T08:00:00Z")))
    fhir_server.load_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    fhir_server.analyze()
    return CAP_N


def test_count_is_capped_and_next_links_give_the_rest(fhir_server: LocalFhirServer, many_observations: int) -> None:
    """Asking for more than the server's largest page gives its cap (HAPI 50, sekmet 1000) and next links."""
    page = get(f"{fhir_server.base_url}/Observation", {"patient": CAP_PATIENT, "_count": "2000", "_sort": "-date"})
    cap = 50 if isinstance(fhir_server, HapiServer) else 1000
    seen = [o["id"] for o in matches(page)]
    assert len(seen) == min(cap, many_observations)
    pages = 1
    while (url := link(page, "next")) is not None and pages < 10:
        assert url.startswith(fhir_server.base_url)  # HAPI: [base]?_getpages=<search id>&_getpagesoffset=...
        page = get(url)
        seen += [o["id"] for o in matches(page)]
        pages += 1
    assert sorted(seen) == sorted(f"{CAP_PATIENT}-obs-{i:02d}" for i in range(many_observations))
    assert pages == -(-many_observations // cap)


def test_category_code_and_date_search(fhir_server: LocalFhirServer, harness_loaded: dict[str, Any]) -> None:
    got = matches(get(f"{fhir_server.base_url}/Observation", {
        "patient": PATIENT_ID, "category": "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        "code": f"{LOINC}|{HGB}", "date": "ge2026-03-01", "_count": "50"}))
    assert sorted(o["id"] for o in got) == [f"{PATIENT_ID}-obs-21", f"{PATIENT_ID}-obs-22"]
    assert matches(get(f"{fhir_server.base_url}/Observation",
                       {"patient": PATIENT_ID, "category": "vital-signs"})) == []


def test_include_of_the_medication(fhir_server: LocalFhirServer) -> None:
    pid = "ts-harness-inc"
    fhir_server.load_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
        _put({"resourceType": "Patient", "id": pid}),
        _put({"resourceType": "Medication", "id": f"{pid}-med", "code": {"coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1187832"}]}}),
        _put({"resourceType": "MedicationRequest", "id": f"{pid}-mr", "status": "active", "intent": "order",
              "medicationReference": {"reference": f"Medication/{pid}-med"},
              "subject": {"reference": f"Patient/{pid}"}}),
    ]})
    bundle = get(f"{fhir_server.base_url}/MedicationRequest",
                 {"patient": pid, "_include": "MedicationRequest:medication"})
    modes = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"])
    assert modes == [("Medication", "include"), ("MedicationRequest", "match")]


def test_unknown_parameter_through_the_service_client(fhir_server: LocalFhirServer,
                                                      harness_loaded: dict[str, Any]) -> None:
    """HAPI refuses an unknown search parameter (400 + OperationOutcome HAPI-0524); sekmet ignores it with a
    warning entry. The service's client turns the first into a reason and reads through the second."""
    from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query

    client = FhirClient(fhir_server.base_url, token=None, allowlist=Allowlist.parse([fhir_server.base_url]),
                        max_pages=5, deadline=Deadline(30))
    result = client.search(Query("Condition", f"Condition?patient={PATIENT_ID}&no-such-param=1"))
    raw = requests.get(f"{fhir_server.base_url}/Condition", params={"patient": PATIENT_ID, "no-such-param": "1"},
                       headers={"Accept": "application/fhir+json"}, timeout=TIMEOUT)
    if isinstance(fhir_server, HapiServer):
        assert raw.status_code == 400 and raw.json()["resourceType"] == "OperationOutcome"
        assert "HAPI-0524" in raw.json()["issue"][0]["diagnostics"]
        assert result.error == "the FHIR server answered HTTP 400" and result.resources == []
    else:
        assert raw.status_code == 200
        assert result.error is None and len(result.resources) == 2
    bad_date = client.search(Query("Observation", f"Observation?patient={PATIENT_ID}&date=not-a-date"))
    assert bad_date.error == "the FHIR server answered HTTP 400"
