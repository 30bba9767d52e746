"""``/healthz``, ``/readyz`` and ``/metrics`` through the app (the multi-worker sum is in tests/test_serve.py)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from cryptography.hazmat.primitives.asymmetric import ec
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body
from jwt.algorithms import ECAlgorithm

from cds_service.hooks.app import state
from cds_service.hooks.report import STORE_KEY


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_readyz_when_ready(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "checks": {"code_tables": "ok", "trial_rules": "ok",
                                                             "database": "ok"}}


def test_readyz_is_503_when_the_database_is_unreachable(app, client, monkeypatch):
    monkeypatch.setattr(app.extensions[STORE_KEY], "writable", lambda: "cannot write (OperationalError)")
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["database"] == "cannot write (OperationalError)"
    assert client.get("/healthz").status_code == 200  # alive all the same: do not restart, take out of rotation


def test_readyz_is_503_without_code_tables(app, client, monkeypatch):
    svc = state(app)
    monkeypatch.setattr(svc, "knowledge", SimpleNamespace(tables=SimpleNamespace(value_sets={}),
                                                          rules=svc.knowledge.rules))
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["code_tables"] == "not loaded"


def test_readyz_with_a_real_broken_database(make_app, tmp_path):
    app = make_app(state_dir=tmp_path)
    app.extensions[STORE_KEY].engine.dispose()
    (tmp_path / "trialscreen.sqlite3").unlink()
    (tmp_path / "trialscreen.sqlite3").mkdir()  # a folder where the database file was: SQLite cannot open it
    assert app.test_client().get("/readyz").status_code == 503


def test_metrics_count_hooks_screenings_and_cards(app, client):
    before = client.get("/metrics").get_data(as_text=True)
    ok = dict(hook="patient-view", outcome="ok")
    bad = dict(hook="patient-view", outcome="client_error")
    assert client.post(SERVICE_URL, json=hook_body(full_prefetch(app, *aml_patient()))).status_code == 200
    assert client.post(SERVICE_URL, json={"hook": "order-sign"}).status_code == 400
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    after = resp.get_data(as_text=True)
    name = "trialscreen_hook_duration_seconds_count"
    assert _metric(after, name, **ok) == _metric(before, name, **ok) + 1
    assert _metric(after, name, **bad) == _metric(before, name, **bad) + 1
    status = dict(status="potential-candidate")
    assert _metric(after, "trialscreen_screenings_total", **status) == \
        _metric(before, "trialscreen_screenings_total", **status) + 1
    assert _metric(after, "trialscreen_cards_total", **status) == _metric(before, "trialscreen_cards_total",
                                                                           **status) + 1
    assert "trialscreen_fhir_request_duration_seconds" in after
    assert "p1" not in re.findall(r'"([^"]*)"', after)  # labels carry no patient id


def test_unknown_service_is_counted_as_unknown(client):
    client.post("/cds-services/other", json=hook_body({}))
    text = client.get("/metrics").get_data(as_text=True)
    assert _metric(text, "trialscreen_hook_duration_seconds_count", hook="unknown", outcome="client_error") >= 1


def test_operations_endpoints_need_no_authentication(make_app, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES384", "use": "sig"}]}))
    (tmp_path / "clients.yaml").write_text("clients:\n  - iss: https://ehr.example.org\n    jwks_file: jwks.json\n")
    app = make_app(auth_required=True, trusted_clients=tmp_path / "clients.yaml", state_dir=tmp_path)
    client = app.test_client()
    name, refused = "trialscreen_hook_duration_seconds_count", dict(hook="patient-view", outcome="client_error")
    before = _metric(client.get("/metrics").get_data(as_text=True), name, **refused)
    assert client.post(SERVICE_URL, json=hook_body({})).status_code == 401  # authentication is really on
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.yaml"):
        assert client.get(path).status_code == 200, path
    # a call refused by the authentication is timed and counted too
    assert _metric(client.get("/metrics").get_data(as_text=True), name, **refused) == before + 1
