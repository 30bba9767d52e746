"""The jti replay guard in the database, on SQLite and PostgreSQL: first use wins everywhere, ids expire,
expired rows are purged, concurrent uses let exactly one through, and two app instances sharing one database
refuse each other's replays."""

from __future__ import annotations

import json
import threading
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from cds_service.config import Settings, load_knowledge
from cds_service.hooks.app import create_app, state
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import STORE_KEY
from cds_service.store.replay import MAX_ID_LENGTH, DbReplayGuard

ISS = "https://ehr.example.org"


class Now:
    def __init__(self) -> None:
        self.t = 1_790_000_000.0

    def __call__(self) -> float:
        return self.t


def _rows(store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT iss, jti FROM cds_used_jti ORDER BY id"))]


def test_first_use_then_replay(store):
    now = Now()
    guard = DbReplayGuard(store.engine, now=now)
    assert guard.first_use(ISS, "a", now.t + 300) is True
    assert guard.first_use(ISS, "a", now.t + 300) is False
    assert guard.first_use("https://other.example.org", "a", now.t + 300) is True  # per issuer
    assert _rows(store) == [(ISS, "a"), ("https://other.example.org", "a")]


def test_two_guards_on_one_database_share_what_they_saw(store):
    """Two replicas: each has its own guard object and engine pool, the database is the one memory."""
    now = Now()
    one, two = DbReplayGuard(store.engine, now=now), DbReplayGuard(store.engine, now=now)
    assert one.first_use(ISS, "shared", now.t + 300) is True
    assert two.first_use(ISS, "shared", now.t + 300) is False


def test_an_id_may_be_used_again_once_its_token_expired(store):
    now = Now()
    guard = DbReplayGuard(store.engine, now=now, purge_every_seconds=10_000)
    assert guard.first_use(ISS, "a", now.t + 60) is True
    now.t += 61
    assert guard.first_use(ISS, "a", now.t + 60) is True


def test_expired_rows_are_purged(store):
    now = Now()
    guard = DbReplayGuard(store.engine, now=now, purge_every_seconds=60)
    for n in range(5):
        guard.first_use(ISS, f"old-{n}", now.t + 30)
    now.t += 120  # the five have expired; the next use purges them (a minute has passed since the last purge)
    assert guard.first_use(ISS, "new", now.t + 300) is True
    assert _rows(store) == [(ISS, "new")]
    guard.first_use(ISS, "newer", now.t + 1)
    now.t += 2
    assert guard.purge_expired() == 1


def test_long_ids_are_stored_hashed_and_still_refused(store):
    now = Now()
    guard = DbReplayGuard(store.engine, now=now)
    long_jti = "x" * (MAX_ID_LENGTH + 50)
    assert guard.first_use(ISS, long_jti, now.t + 300) is True
    assert guard.first_use(ISS, long_jti, now.t + 300) is False
    assert guard.first_use(ISS, long_jti + "y", now.t + 300) is True
    assert all(len(jti) <= MAX_ID_LENGTH for _, jti in _rows(store))


def test_concurrent_uses_of_one_id_let_exactly_one_through(store):
    now = Now()
    guards = [DbReplayGuard(store.engine, now=now) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(guards))

    def use(guard: DbReplayGuard) -> None:
        barrier.wait()
        results.append(guard.first_use(ISS, "race", now.t + 300))

    threads = [threading.Thread(target=use, args=(g,)) for g in guards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]


# --- through two app instances on each backend ---------------------------------------------------------------


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(Settings.from_env({}))


def test_replay_refused_across_two_app_instances(backend, knowledge, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "alg": "ES384"}
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [jwk]}}]}))
    settings: Settings = backend()
    overrides = {"environ": {}, "knowledge": knowledge, "state_dir": settings.state_dir, "trusted_clients": trusted}
    if settings.database_url:
        overrides["database_url"] = settings.database_url
    first, second = create_app(overrides), create_app(overrides)
    try:
        path = f"/cds-services/{SERVICE_ID}"
        now = int(time.time())
        tok = jwt.encode({"iss": ISS, "aud": f"http://localhost{path}", "iat": now, "exp": now + 300,
                          "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": "k1"})
        prefetch = {t.key: None for t in state(first).templates}
        # a Patient without AML: screened, no card (without a Patient the answer would be a 412)
        prefetch["patient"] = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01"}
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
                "prefetch": prefetch}
        headers = {"Authorization": f"Bearer {tok}"}
        assert first.test_client().post(path, json=body, headers=headers).status_code == 200
        again = second.test_client().post(path, json=body, headers=headers)
        assert again.status_code == 401 and again.get_data() == b""
        dialect = first.extensions[STORE_KEY].engine.dialect.name
        assert dialect == ("postgresql" if settings.database_url else "sqlite")
    finally:
        first.extensions[STORE_KEY].close()
        second.extensions[STORE_KEY].close()
