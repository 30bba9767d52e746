"""``trialscreen demo``'s own CDS client: a fresh ES384 key pair, a trusted-clients file trusting it, signed
replayed calls, and the printed curl command that works (once)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from cds_service.config import Settings, load_knowledge
from cds_service.hooks.app import create_app
from cds_service.hooks.auth import load_clients_for
from cds_service.hooks.commands import _how_to_call, demo_settings, replay, serve_in_thread, write_demo_request
from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients
from cds_service.hooks.report import STORE_KEY
from cds_service.security.demo_client import DEMO_ISSUER, make_demo_client


def test_demo_client_files(tmp_path):
    client = make_demo_client(tmp_path / "c")
    assert stat.S_IMODE(client.key_file.stat().st_mode) == 0o600
    assert client.key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    jwks = json.loads(client.jwks_file.read_text())
    (key,) = jwks["keys"]
    assert key["kid"] == client.kid and key["crv"] == "P-384" and "d" not in key  # the public half only
    clients = load_clients_for(Settings(trusted_clients=client.trusted_clients_file))
    assert list(clients) == [DEMO_ISSUER]
    assert make_demo_client(tmp_path / "d").kid != client.kid  # a new key pair each start


def test_demo_keeps_the_clients_of_trialscreen_trusted_clients(tmp_path):
    (tmp_path / "ehr.json").write_text(json.dumps({"keys": [{"kid": "k", "kty": "EC", "crv": "P-384",
                                                             "x": "AA", "y": "AA"}]}))
    existing = tmp_path / "trusted.yaml"
    existing.write_text(yaml.safe_dump({"clients": [
        {"iss": "https://ehr.example.org", "jwks_file": "ehr.json"},
        {"iss": "https://sandbox.cds-hooks.org", "jwks_url": "https://sandbox.cds-hooks.org/.well-known/jwks.json",
         "jku": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"]}]}))
    client = make_demo_client(tmp_path / "demo", also_trust=existing)
    clients = load_clients_for(Settings(trusted_clients=client.trusted_clients_file))
    assert set(clients) == {DEMO_ISSUER, "https://ehr.example.org", "https://sandbox.cds-hooks.org"}
    assert clients["https://ehr.example.org"].jwks_file == (tmp_path / "ehr.json").resolve()


@pytest.fixture(scope="module")
def patients():
    found = load_fixture_patients()
    if not found:
        pytest.skip("no fixture patients")
    return found[:3]


def test_demo_app_needs_the_demo_signature_and_allows_any_origin(tmp_path, patients):
    client = make_demo_client(tmp_path / "client")
    settings = demo_settings(tmp_path, client)
    assert settings["cors_origins"] == ("*",) and "auth_required" not in settings  # auth stays on
    app = create_app({**settings, "environ": {}, "knowledge": load_knowledge(Settings.from_env({})),
                      "clock": lambda: FIXTURE_TIME})
    server = serve_in_thread(app)
    try:
        signed = replay(server.base_url, patients, sign=client.token)
        assert [status for _, status, _ in signed] == [200] * len(patients)
        unsigned = replay(server.base_url, patients)
        assert [status for _, status, _ in unsigned] == [401] * len(patients)
        preflight = requests.options(f"{server.base_url}/cds-services/x", timeout=10, headers={
            "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"})
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"

        request_file = write_demo_request(tmp_path / "request.json", server.base_url, patients)
        howto = _how_to_call(server.base_url, client, request_file)
        url = re.search(r"curl -X POST '([^']+)'", howto)[1]
        token = re.search(r"Authorization: Bearer ([\w.-]+)'", howto)[1]
        assert client.iss in howto and str(client.key_file) in howto
        printed = Path(re.search(r"-d @(\S+)", howto)[1])
        assert printed == request_file and printed.is_file()
        # The printed command works as printed: its body file, its token, one card for the candidate.
        answer = requests.post(url, data=printed.read_bytes(), timeout=60,
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json()["cards"]
        token = re.search(r"Authorization: Bearer ([\w.-]+)'", _how_to_call(server.base_url, client,
                                                                              request_file))[1]
        body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {"patientId": "nobody"}, "prefetch": {"patient": None}}
        headers = {"Authorization": f"Bearer {token}"}
        first = requests.post(url, json=body, headers=headers, timeout=30)
        assert first.status_code != 401
        assert requests.post(url, json=body, headers=headers, timeout=30).status_code == 401  # usable once
    finally:
        server.stop()
        app.extensions[STORE_KEY].close()


def test_demo_stopped_by_sigterm_deletes_its_key_pair(tmp_path):
    """``trialscreen demo`` stopped by SIGTERM (a service manager, ``timeout``) cleans up like Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRIALSCREEN_DATABASE_URL", "TRIALSCREEN_TRUSTED_CLIENTS")}
    with (tmp_path / "err").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "demo", "--port", "0"], env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            key_file = None
            for line in proc.stdout:
                found = re.search(r"private key\s+(\S+\.pem)", line)
                if found:
                    key_file = Path(found[1])
                if "Browsers may call" in line:
                    break
            assert key_file is not None and key_file.is_file(), (tmp_path / "err").read_text()[-2000:]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            assert not key_file.exists() and not key_file.parent.parent.exists()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            proc.stdout.close()
