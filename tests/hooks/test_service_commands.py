"""``trialscreen serve`` (gunicorn), ``trialscreen demo`` (replay over a real loopback server) and the prefetch
the demo builds from each fixture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest
import requests
from serving import free_port, stop_process_group, wait_until_answering

from cds_service.cli import main
from cds_service.hooks.app import create_app
from cds_service.hooks.commands import replay, serve_in_thread
from cds_service.hooks.demo_data import FIXTURE_TIME, FixturePatient, load_fixture_patients, prefetch_for
from cds_service.hooks.server import gunicorn_options

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def patients():
    found = load_fixture_patients()
    if not found:
        pytest.skip("no fixture patients")
    return found


# --- prefetch built from a fixture --------------------------------------------------------------------------


def _patient() -> FixturePatient:
    pid = "p9"
    return FixturePatient(pid, "made.json", [
        {"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01"},
        {"resourceType": "Observation", "id": "o1", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": LOINC, "code": "1742-6"}]}, "effectiveDateTime": "2026-09-01",
         "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]},
        {"resourceType": "Observation", "id": "o2", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": LOINC, "code": "9999-9"}]}, "effectiveDateTime": "2026-09-20",
         "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}]},
        {"resourceType": "Observation", "id": "o3", "subject": {"reference": f"Patient/{pid}"},
         "code": {"coding": [{"system": LOINC, "code": "1920-8"}]}, "effectiveDateTime": "2025-01-05"},
        {"resourceType": "MedicationRequest", "id": "m1", "subject": {"reference": f"Patient/{pid}"},
         "medicationReference": {"reference": "Medication/med1"}},
        {"resourceType": "Medication", "id": "med1"},
        {"resourceType": "Medication", "id": "unused"},
    ])


def test_prefetch_reads_searches_and_filters_like_a_fhir_server():
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "labs": f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|1742-6,{LOINC}|1920-8&_sort=-date",
        "recent": "Observation?patient={{context.patientId}}&date=ge2026-09-10",
        "meds": "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication&_count=50",
        "meds-alone": "MedicationRequest?patient={{context.patientId}}",
        "lab-category": f"Observation?patient={{{{context.patientId}}}}&category={CATEGORY}|laboratory",
        "other-category": f"Observation?patient={{{{context.patientId}}}}&category:not={CATEGORY}|laboratory",
        "allergies": "AllergyIntolerance?patient={{context.patientId}}",
        "missing": "Practitioner/{{context.patientId}}",
    }
    pre = prefetch_for(_patient(), templates)
    assert set(pre) == set(templates)
    assert pre["patient"]["id"] == "p9"
    assert [e["resource"]["id"] for e in pre["labs"]["entry"]] == ["o1", "o3"]  # newest first, code-filtered
    assert [e["resource"]["id"] for e in pre["recent"]["entry"]] == ["o2"]
    meds = pre["meds"]["entry"]
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in meds] == [("m1", "match"), ("med1", "include")]
    # without _include a FHIR server sends no Medication: gather reads it by reference when it can
    assert [e["resource"]["id"] for e in pre["meds-alone"]["entry"]] == ["m1"]
    assert [e["resource"]["id"] for e in pre["lab-category"]["entry"]] == ["o1"]
    assert [e["resource"]["id"] for e in pre["other-category"]["entry"]] == ["o2", "o3"]  # :not holds no category
    assert pre["allergies"] == {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
    assert pre["missing"] is None


def test_fixture_prefetch_covers_every_discovery_key(patients, tmp_path):
    app = create_app({"state_dir": tmp_path, "clock": lambda: FIXTURE_TIME, "auth_required": False})
    doc = app.test_client().get("/cds-services").get_json()
    templates = doc["services"][0]["prefetch"]
    pre = prefetch_for(patients[0], templates)
    assert set(pre) == set(templates)
    assert pre["patient"]["resourceType"] == "Patient"
    # every resource of the fixture that a key asks for is there once (no paging: all in one Bundle)
    obs = [e for k, v in pre.items() if k.startswith("observations") and v for e in v["entry"]]
    assert obs and all(e["resource"]["resourceType"] == "Observation" for e in obs)
    app.extensions["trialscreen.store"].close()


# --- demo ---------------------------------------------------------------------------------------------------


def test_demo_no_serve_replays_every_fixture_patient(patients, capsys):
    code = main(["demo", "--no-serve", "--port", "0"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "evaluation time 2026-10-01T09:00:00+00:00" in out
    for p in patients:
        assert f"== {p.patient_id}  ({p.source})" in out
    summary = re.search(r"(\d+) patients replayed: (\d+) with a card, (\d+) errors\.", out)
    assert summary and int(summary[1]) == len(patients) and summary[3] == "0"
    assert int(summary[2]) >= 1
    assert "[info] Possible candidate for NCT06880354" in out
    assert "no card (ineligible: " in out and "no card (not-applicable: " in out
    links = re.findall(r"http://127\.0\.0\.1:\d+/report/(\S+)", out)
    assert len(links) == int(summary[2])
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", t) for t in links)  # opaque: no patient id


def test_replayed_card_links_to_a_report_with_every_criterion(patients, tmp_path):
    app = create_app({"state_dir": tmp_path, "clock": lambda: FIXTURE_TIME, "auth_required": False})
    server = serve_in_thread(app)
    try:
        results = replay(server.base_url, [patients[0]])
        (_, status, payload), = results
        assert status == 200
        card, = payload["cards"]
        report = next(link["url"] for link in card["links"] if "/report/" in link["url"])
        assert report.startswith(server.base_url + "/report/")
        resp = requests.get(report, timeout=30)
        assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
        assert resp.text.count('class="item"') == 46
        assert patients[0].patient_id not in report
    finally:
        server.stop()
        app.extensions["trialscreen.store"].close()


# --- serve --------------------------------------------------------------------------------------------------


def test_gunicorn_builds_the_app_once_in_the_master():
    options = gunicorn_options("0.0.0.0", 9000, 3, 30)
    assert options["preload_app"] is True  # built before the fork, not again in every worker
    assert options["bind"] == "0.0.0.0:9000" and options["workers"] == 3 and options["timeout"] == 30
    # the worker with read deadlines, its threads, and no control socket shared with other instances (issue 17)
    assert options["worker_class"] == "cds_service.hooks.gunicorn_worker.DeadlineThreadWorker"
    assert options["threads"] == 4 and options["control_socket_disable"] is True


def test_serve_runs_gunicorn_and_answers(tmp_path):
    port = free_port()
    env = {**os.environ, "TRIALSCREEN_STATE_DIR": str(tmp_path), "TRIALSCREEN_LOG_LEVEL": "WARNING",
           "TRIALSCREEN_AUTH_REQUIRED": "false"}  # this test is about gunicorn, not client authentication
    env.pop("TRIALSCREEN_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        resp = wait_until_answering(f"http://127.0.0.1:{port}/cds-services", proc)
        assert resp.json()["services"][0]["hook"] == "patient-view"
        # The CLI process is gunicorn's master (SIGTERM to it stops the service): its children are the workers.
        # The first worker answers while the master may still be forking the second (CI once saw 1): wait for it.
        master = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(master.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(master.children()) == 2
        assert "gunicorn" in resp.headers.get("Server", "")
        missing = requests.get(f"http://127.0.0.1:{port}/report/{'Q' * 32}", timeout=5)
        assert missing.status_code == 404 and "no-store" in missing.headers["Cache-Control"]
        assert (tmp_path / "trialscreen.sqlite3").is_file()
    finally:
        stop_process_group(proc)
        proc.stdout.close()


def test_purge_reports_command(tmp_path, monkeypatch, capsys):
    from datetime import timedelta

    from cds_service.config import Settings
    from cds_service.store import open_store

    monkeypatch.setenv("TRIALSCREEN_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("TRIALSCREEN_DATABASE_URL", raising=False)
    store = open_store(Settings.from_env())
    store.reports.create({"criteria": []}, timedelta(microseconds=1))
    store.close()
    time.sleep(0.01)
    assert main(["purge-reports"]) == 0
    assert "1 expired screening reports deleted." in capsys.readouterr().out


def test_reports_are_stored_only_for_patients_with_a_card(patients, tmp_path):
    from sqlalchemy import text

    app = create_app({"state_dir": tmp_path, "clock": lambda: FIXTURE_TIME, "auth_required": False})
    server = serve_in_thread(app)
    store = app.extensions["trialscreen.store"]
    try:
        results = replay(server.base_url, patients)
        with_card = sum(1 for _, status, payload in results if status == 200 and payload.get("cards"))
        without = sum(1 for _, status, payload in results if status == 200 and not payload.get("cards"))
        assert with_card and without
        with store.engine.connect() as conn:
            stored = conn.execute(text("SELECT COUNT(*) FROM screening_report")).scalar_one()
        assert stored == with_card
    finally:
        server.stop()
        store.close()
