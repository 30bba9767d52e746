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


def test_observations_are_asked_for_by_category_and_together_cover_every_observation(client):
    # Issue 9 part 5: code lists in templates missed codes the engine reads (a blood-pressure panel 55284-4) and
    # cannot hold expanded value sets. One key asks for every HL7 category, the other for its complement
    # (category:not: none or a local category), so nothing is lost and the engine filters locally.
    prefetch = _service(client)["prefetch"]
    obs = {k: parse_qs(urlsplit(t).query) for k, t in prefetch.items() if k.startswith("observations")}
    assert set(obs) == {"observations", "observations-other"}
    for q in obs.values():
        assert q["_sort"] == ["-date"]
        assert "code" not in q
    cats = obs["observations"]["category"][0].split(",")
    assert obs["observations-other"]["category:not"] == [",".join(cats)]
    names = {c.rpartition("|")[2] for c in cats}
    assert {"laboratory", "vital-signs", "exam", "survey", "social-history", "imaging", "procedure"} <= names
    assert all(c.startswith("http://terminology.hl7.org/CodeSystem/observation-category|") for c in cats)


def test_medication_kinds_include_the_medications_they_reference(client):
    prefetch = _service(client)["prefetch"]
    for key, kind in (("medication-requests", "MedicationRequest"), ("medication-statements", "MedicationStatement"),
                      ("medication-administrations", "MedicationAdministration")):
        assert parse_qs(urlsplit(prefetch[key]).query)["_include"] == [f"{kind}:medication"], key


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
