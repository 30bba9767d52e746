"""Patterns that validate input match the whole string (issue 10: ``patientId`` and ``hookInstance`` with a
trailing newline were accepted, Python's ``$`` matching before a final newline). Through the production server
(``trialscreen serve``), plus the places that are not an HTTP body: the X-Request-ID header, report tokens and the
fixture upload's id prefix."""

from __future__ import annotations

import uuid

import pytest
import requests
from flask import Flask
from served import serve

from cds_service.errors import InputError
from cds_service.facts.codes import default_mappings_dir
from cds_service.hooks.demo_data import valid_prefix
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import report_blueprint
from cds_service.hooks.schemas import REQUEST_SCHEMA, validate_request
from cds_service.rules import load_trial_rules

PATH = f"/cds-services/{SERVICE_ID}"
UUID = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("patterns"), workers=1, threads=2) as served:
        templates = requests.get(served.base_url + "/cds-services", timeout=30).json()["services"][0]["prefetch"]
        served.prefetch = {key: None for key in templates}
        served.patient_key = next(k for k, q in templates.items() if q.startswith("Patient/"))
        yield served


def body(server, *, patient_id: str = "p1", hook_instance: str = UUID, **extra) -> dict:
    prefetch = dict(server.prefetch)
    prefetch[server.patient_key] = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01"}
    out = {"hook": "patient-view", "hookInstance": hook_instance,
           "context": {"patientId": patient_id}, "prefetch": prefetch}
    out.update(extra)
    return out


def post(server, payload: dict) -> requests.Response:
    return requests.post(server.base_url + PATH, json=payload, timeout=30)


def test_the_valid_values_are_accepted(server):
    assert post(server, body(server)).status_code == 200
    assert post(server, body(server, hook_instance="urn:uuid:" + UUID)).status_code == 200


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\n\n", " ", "\t", "\x00", "\u2028"])
def test_a_patient_id_with_anything_after_it_is_400(server, suffix):
    resp = post(server, body(server, patient_id="p1" + suffix))
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["expression"] == ["context.patientId"]


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_a_hook_instance_with_anything_after_it_is_400(server, suffix):
    resp = post(server, body(server, hook_instance=UUID + suffix))
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["expression"] == ["hookInstance"]


def test_a_token_type_with_a_trailing_newline_is_400(server):
    auth = {"access_token": "t", "token_type": "Bearer\n", "expires_in": 60, "scope": "patient/*.read",
            "subject": "x"}
    resp = post(server, body(server, fhirServer="https://ehr.example.org/fhir", fhirAuthorization=auth))
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["expression"] == ["fhirAuthorization.token_type"]


def test_every_anchored_pattern_of_the_request_schema_refuses_a_trailing_newline():
    patterns = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str) and node["pattern"].endswith("$"):
                patterns.append(node["pattern"])
            for value in node.values():
                walk(value)

    walk(REQUEST_SCHEMA)
    assert len(patterns) >= 3  # patientId, hookInstance, token_type
    base = {"hook": "patient-view", "hookInstance": UUID, "context": {"patientId": "p1"}}
    with pytest.raises(InputError):
        validate_request({**base, "context": {"patientId": "p1\n"}})
    with pytest.raises(InputError):
        validate_request({**base, "hookInstance": UUID + "\n"})


def test_a_request_id_header_is_echoed_only_when_it_is_whole(server):
    ok = requests.get(server.base_url + "/healthz", headers={"X-Request-ID": "abc-123"}, timeout=30)
    assert ok.headers["X-Request-ID"] == "abc-123"
    # A header value cannot end in a newline on the wire; a trailing space is the same pattern question.
    other = requests.get(server.base_url + "/healthz", headers={"X-Request-ID": "abc-123 x"}, timeout=30)
    assert other.headers["X-Request-ID"] != "abc-123 x"


def test_a_report_token_with_a_trailing_newline_is_not_looked_up():
    looked_up = []

    class Reports:
        def get(self, token):
            looked_up.append(token)
            return None

    app = Flask("t")
    app.register_blueprint(report_blueprint(Reports(), load_trial_rules(default_mappings_dir(), None)))
    client = app.test_client()
    token = "A" * 32
    assert client.get(f"/report/{token}%0A").status_code == 404
    assert client.get(f"/report/{token}").status_code == 404
    assert looked_up == [token]


@pytest.mark.parametrize("prefix", ["ts-\n", "ts-\r\n", "ts- "])
def test_an_upload_id_prefix_with_a_trailing_newline_is_refused(prefix):
    with pytest.raises(InputError):
        valid_prefix(prefix)
    assert valid_prefix("ts-") == "ts-"


def test_a_hook_instance_that_is_not_a_uuid_at_all_is_still_400(server):
    assert post(server, body(server, hook_instance=str(uuid.uuid4())[:-1])).status_code == 400
