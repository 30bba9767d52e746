"""The service with its database gone (issue 16): the hook keeps the card without its report link and says so,
feedback is 503 with Retry-After (never 200, never 500), the replay check refuses what it cannot record,
``/readyz`` is 503 while ``/healthz`` stays 200, and the report page answers 503. The database is broken for
real: the SQLite file is moved away and a folder put in its place. The same through gunicorn and PostgreSQL,
with every fault: tests/faults/test_store_faults.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body
from sqlalchemy import text

from cds_service.cards.card import REPORT_UNAVAILABLE
from cds_service.hooks.report import STORE_KEY

ISS = "https://ehr.example.org"
FEEDBACK = {"feedback": [{"card": "b3c9d7a6-6c1e-4a53-9b2f-0c6f1d9d4e11", "outcome": "overridden",
                          "outcomeTimestamp": "2026-10-01T09:31:00Z"}]}


class Outage:
    """Takes the app's SQLite database away (a folder where the file was) and brings it back."""

    def __init__(self, app) -> None:
        self.store = app.extensions[STORE_KEY]
        self.store.gate.cooldown = 0.0  # each call below measures the database itself, not the pause after a failure
        self.db = Path(self.store.engine.url.database)

    def start(self) -> None:
        self.store.engine.dispose()  # closes the pool: the WAL is checkpointed into the file, which then moves
        self.db.rename(self.db.with_name("away.sqlite3"))
        self.db.mkdir()

    def end(self) -> None:
        self.db.rmdir()
        self.db.with_name("away.sqlite3").rename(self.db)


@pytest.fixture
def down(make_app, tmp_path) -> Callable[..., tuple]:
    made = []

    def make(**overrides):
        app = make_app(state_dir=tmp_path / "state", **overrides)
        made.append(app)
        return app, app.test_client(), Outage(app)

    yield make
    for app in made:
        app.extensions[STORE_KEY].close()


def _feedback_rows(app) -> int:
    with app.extensions[STORE_KEY].engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM cds_feedback")).scalar_one()


def test_the_card_is_kept_without_its_report_link_and_says_so(down):
    app, client, outage = down()
    body = hook_body(full_prefetch(app, *aml_patient()))
    healthy = client.post(SERVICE_URL, json=body).get_json()["cards"]
    assert any("/report/" in link["url"] for link in healthy[0]["links"])
    assert REPORT_UNAVAILABLE not in healthy[0]["detail"]
    outage.start()
    resp = client.post(SERVICE_URL, json=body)
    assert resp.status_code == 200
    (card,) = resp.get_json()["cards"]
    assert card["summary"] == healthy[0]["summary"]
    assert not any("/report/" in link["url"] for link in card["links"])
    assert card["links"] == [link for link in healthy[0]["links"] if "/report/" not in link["url"]]
    assert card["detail"].startswith(healthy[0]["detail"]) and card["detail"].endswith(f"*{REPORT_UNAVAILABLE}*")
    outage.end()
    again = client.post(SERVICE_URL, json=body).get_json()["cards"][0]
    assert any("/report/" in link["url"] for link in again["links"]) and REPORT_UNAVAILABLE not in again["detail"]


def test_feedback_is_503_with_retry_after_and_stored_once_retried(down):
    app, client, outage = down()
    outage.start()
    resp = client.post(f"{SERVICE_URL}/feedback", json=FEEDBACK)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.get_json()["issue"][0]["code"] == "transient"
    outage.end()
    assert _feedback_rows(app) == 0
    assert client.post(f"{SERVICE_URL}/feedback", json=FEEDBACK).status_code == 200  # the client's retry
    assert _feedback_rows(app) == 1


def test_readyz_is_503_naming_the_database_while_healthz_stays_200(down):
    app, client, outage = down()
    assert client.get("/readyz").get_json()["checks"]["database"] == "ok"
    outage.start()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["database"].startswith("cannot write")
    assert client.get("/healthz").status_code == 200
    outage.end()
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_sqlite_folder_is_full(down, monkeypatch):
    app, client, _ = down()
    import cds_service.store as store_module

    monkeypatch.setattr(store_module, "_free_bytes", lambda url: 4096)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["database"] == "disk full (4096 bytes free)"


def test_the_report_page_is_503_with_retry_after(down):
    app, client, outage = down()
    body = hook_body(full_prefetch(app, *aml_patient()))
    link = next(lk["url"] for lk in client.post(SERVICE_URL, json=body).get_json()["cards"][0]["links"]
                if "/report/" in lk["url"])
    path = "/report/" + link.rsplit("/report/", 1)[1]
    outage.start()
    resp = client.get(path)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.headers["Cache-Control"] == "no-store" and "cannot be read right now" in resp.get_data(as_text=True)
    outage.end()
    assert client.get(path).status_code == 200


def test_a_token_whose_jti_cannot_be_recorded_is_refused_with_503_and_not_used_up(down, tmp_path):
    """The security decision (docs/security.md): no database, no replay check, no call; the token stays good."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "ES384"}
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [jwk]}}]}))
    app, client, outage = down(auth_required=True, trusted_clients=trusted)
    now = int(time.time())
    token = jwt.encode({"iss": ISS, "aud": f"http://localhost{SERVICE_URL}", "iat": now, "exp": now + 300,
                        "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": "k1"})
    headers = {"Authorization": f"Bearer {token}"}
    body = hook_body(full_prefetch(app, *aml_patient()))
    outage.start()
    refused = client.post(SERVICE_URL, json=body, headers=headers)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert "cards" not in (refused.get_json() or {})
    outage.end()
    assert client.post(SERVICE_URL, json=body, headers=headers).status_code == 200  # recorded now, first use
    assert client.post(SERVICE_URL, json=body, headers=headers).status_code == 401  # and a replay after that
