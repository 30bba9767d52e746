"""``GET /cds-services``: one patient-view service whose prefetch asks only for what the criteria use."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hookhelp import SERVICE_URL

from cds_service.gather.prefetch import PATIENT_TOKEN


def _service(client) -> dict:
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    services = resp.get_json()["services"]
    assert len(services) == 1
    return services[0]


def test_discovery_lists_the_patient_view_service(client):
    s = _service(client)
    assert s["hook"] == "patient-view"
    assert SERVICE_URL.endswith(s["id"])
    assert "NCT06880354" in s["title"]
    assert s["description"] and s["usageRequirements"]


def test_prefetch_reads_the_patient_and_searches_by_patient(client):
    prefetch = _service(client)["prefetch"]
    assert prefetch["patient"] == f"Patient/{PATIENT_TOKEN}"
    for key, template in prefetch.items():
        if key == "patient":
            continue
        query = parse_qs(urlsplit(template).query)
        assert query["patient"] == [PATIENT_TOKEN], key
        assert int(query["_count"][0]) > 0


def test_observations_are_narrowed_to_the_codes_of_the_observation_value_sets(client, knowledge):
    prefetch = _service(client)["prefetch"]
    obs = [t for k, t in prefetch.items() if k.startswith("observations")]
    assert obs, "an Observation query is expected"
    tokens = set()
    for t in obs:
        assert len(t) < 4000  # each URL stays well under common limits
        q = parse_qs(urlsplit(t).query)
        assert q["_sort"] == ["-date"]
        tokens.update(q["code"][0].split(","))
    # ALT, blasts, LVEF and ECOG codes are asked for; a condition code (AML) and LOINC answers are not
    for vs in ("alt", "bone-marrow-blasts", "lvef", "ecog", "hbsag"):
        for c in knowledge.tables[vs].concepts:
            if not c.code.startswith("LA"):
                assert f"{c.system}|{c.code}" in tokens, (vs, c.code)
    assert not any(t.endswith("|91861009") for t in tokens)
    assert not any("|LA" in t for t in tokens)


def test_every_other_kind_the_criteria_read_is_asked_for(client):
    prefetch = _service(client)["prefetch"]
    types = {urlsplit(t).path.split("/")[0] for t in prefetch.values()}
    assert {"Patient", "Observation", "Condition", "Procedure", "MedicationRequest", "MedicationStatement",
            "MedicationAdministration", "Immunization", "AllergyIntolerance"} <= types


def test_page_size_comes_from_the_settings(make_app):
    prefetch = _service(make_app(fhir_page_size=50).test_client())["prefetch"]
    assert all("_count=50" in t for k, t in prefetch.items() if k != "patient")


def test_discovery_needs_no_body_and_answers_a_request_id(client):
    resp = client.get("/cds-services", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = client.get("/cds-services", headers={"X-Request-ID": "bad id; with spaces"})
    assert resp.headers["X-Request-ID"] != "bad id; with spaces"
