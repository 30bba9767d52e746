"""CDS client authentication through the real app: real keys, real tokens, the Flask test client and one real
HTTP server on 127.0.0.1. Every rejection of issue 4, both acceptances, the 401's shape, no token in the logs,
CORS preflights without authentication, replays refused across two app instances sharing one database, and
authentication off only by an explicit setting (with a warning)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
import yaml
from builders import AT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.config import Settings, load_knowledge
from cds_service.errors import ConfigurationError
from cds_service.hooks.app import JsonFormatter, create_app, state
from cds_service.hooks.auth import WWW_AUTHENTICATE
from cds_service.hooks.commands import serve_in_thread
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import STORE_KEY

ISS = "https://ehr.example.org"
JKU_ISS = "https://jku-ehr.example.org"
PATH = f"/cds-services/{SERVICE_ID}"
FEEDBACK_PATH = f"{PATH}/feedback"
AUD = f"http://localhost{PATH}"  # the Flask test client's root URL is http://localhost/


def _jwk(private_key, kid: str, alg: str) -> dict:
    algo = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    d = json.loads(algo.to_jwk(private_key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


@pytest.fixture(scope="module")
def keys():
    return {"ec": ec.generate_private_key(ec.SECP384R1()),
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "other_ec": ec.generate_private_key(ec.SECP384R1())}


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(Settings.from_env({}))


class _JwksServer:
    """A real JWKS endpoint on 127.0.0.1 that counts every request it gets (to prove a fetch did not happen)."""

    def __init__(self, jwks: dict) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                outer.requests.append(self.path)
                body = json.dumps(jwks).encode()
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.other_url = f"http://127.0.0.1:{self.server.server_address[1]}/evil.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks_server(keys):
    server = _JwksServer({"keys": [_jwk(keys["ec"], "jku-ec", "ES384")]})
    yield server
    server.stop()


@pytest.fixture
def trusted_file(tmp_path, keys, jwks_server) -> Path:
    (tmp_path / "ehr-jwks.json").write_text(json.dumps(
        {"keys": [_jwk(keys["ec"], "ec-1", "ES384"), _jwk(keys["rsa"], "rsa-1", "RS384")]}))
    path = tmp_path / "trusted-clients.yaml"
    path.write_text(yaml.safe_dump({"clients": [
        {"iss": ISS, "jwks_file": "ehr-jwks.json"},
        {"iss": JKU_ISS, "jwks_url": jwks_server.url, "jku": [jwks_server.url]},
    ]}))
    return path


@pytest.fixture
def make_app(knowledge, tmp_path, trusted_file):
    apps = []

    def make(**overrides):
        base = {"environ": {}, "knowledge": knowledge, "clock": lambda: AT, "state_dir": tmp_path / "state",
                "trusted_clients": trusted_file}
        base.update(overrides)
        app = create_app(base)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions[STORE_KEY].close()


@pytest.fixture
def app(make_app):
    return make_app()


def token(key, alg="ES384", kid="ec-1", iss=ISS, aud=AUD, now=None, headers=None, **claims) -> str:
    now = time.time() if now is None else now
    body = {"iss": iss, "aud": aud, "iat": int(now), "exp": int(now) + 300, "jti": str(uuid.uuid4())}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


def hook_body(app) -> dict:
    prefetch = {t.key: None for t in state(app).templates}
    patient_key = next(t.key for t in state(app).templates if t.kind == "Patient")
    prefetch[patient_key] = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01"}
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
            "prefetch": prefetch}


def post(client, app, tok: str | None, path: str = PATH, body: dict | None = None):
    headers = {"Authorization": f"Bearer {tok}"} if tok is not None else {}
    return client.post(path, json=body if body is not None else hook_body(app), headers=headers)


def assert_bare_401(resp) -> None:
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="trialscreen", error="invalid_token"' == WWW_AUTHENTICATE
    assert resp.get_data() == b""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _claims(aud=AUD) -> dict:
    now = int(time.time())
    return {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}


# --- acceptance ---------------------------------------------------------------------------------------------


def test_valid_es384_token_is_accepted(app, keys):
    resp = post(app.test_client(), app, token(keys["ec"]))
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}


def test_valid_rs384_token_is_accepted(app, keys):
    resp = post(app.test_client(), app, token(keys["rsa"], alg="RS384", kid="rsa-1"))
    assert resp.status_code == 200


def test_discovery_url_is_accepted_as_audience(app, keys):
    """Some clients sign every call for the discovery URL they were configured with: accepted, documented."""
    assert post(app.test_client(), app, token(keys["ec"], aud="http://localhost/cds-services")).status_code == 200


def test_public_url_sets_the_audience(make_app, keys):
    app = make_app(public_url="https://cds.example.org/trialscreen/")
    client = app.test_client()
    assert_bare_401(post(client, app, token(keys["ec"])))  # the internal URL is not the audience any more
    assert post(client, app, token(keys["ec"], aud=f"https://cds.example.org/trialscreen{PATH}")).status_code == 200


# --- each rejection -----------------------------------------------------------------------------------------


def test_no_token_and_not_bearer_are_refused(app):
    client = app.test_client()
    assert_bare_401(post(client, app, None))
    assert_bare_401(client.post(PATH, json=hook_body(app), headers={"Authorization": "Basic dXNlcjpwYXNz"}))
    assert_bare_401(post(client, app, "not.a.jwt"))


def test_forged_signature_is_refused(app, keys):
    assert_bare_401(post(app.test_client(), app, token(keys["other_ec"])))  # ec-1's kid, another key signed


def test_alg_none_is_refused(app):
    unsigned = jwt.encode(_claims(), None, algorithm="none", headers={"kid": "ec-1"})
    assert_bare_401(post(app.test_client(), app, unsigned))


def test_hs256_with_the_public_key_as_secret_is_refused(app, keys):
    pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()) + b"." + _b64(
        json.dumps(_claims()).encode())
    forged = signing_input + b"." + _b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    assert_bare_401(post(app.test_client(), app, forged.decode()))


def test_expired_token_is_refused(app, keys):
    assert_bare_401(post(app.test_client(), app, token(keys["ec"], now=time.time() - 3600)))


def test_token_issued_in_the_future_is_refused(app, keys):
    future = int(time.time()) + 3600
    assert_bare_401(post(app.test_client(), app, token(keys["ec"], iat=future, exp=future + 300)))


def test_wrong_audience_is_refused(app, keys):
    assert_bare_401(post(app.test_client(), app, token(keys["ec"], aud="https://other.example.org/cds-services/x")))


def test_unknown_issuer_is_refused(app, keys):
    assert_bare_401(post(app.test_client(), app, token(keys["ec"], iss="https://stranger.example.org")))


def test_unknown_kid_is_refused(app, keys):
    assert_bare_401(post(app.test_client(), app, token(keys["ec"], kid="no-such-kid")))


def test_jku_off_the_list_is_refused_without_any_fetch(app, keys, jwks_server):
    before = len(jwks_server.requests)
    tok = token(keys["ec"], kid="jku-ec", iss=JKU_ISS, headers={"jku": jwks_server.other_url})
    assert_bare_401(post(app.test_client(), app, tok))
    assert len(jwks_server.requests) == before  # no request reached any key URL, listed or not


def test_jku_on_the_list_is_fetched_once_and_cached(app, keys, jwks_server):
    before = len(jwks_server.requests)
    client = app.test_client()
    for _ in range(3):
        tok = token(keys["ec"], kid="jku-ec", iss=JKU_ISS, headers={"jku": jwks_server.url})
        assert post(client, app, tok).status_code == 200
    assert jwks_server.requests[before:] == ["/jwks.json"]  # one fetch for three calls: the per-process cache


def test_replayed_jti_is_refused_by_the_same_app(app, keys):
    client = app.test_client()
    tok = token(keys["ec"])
    assert post(client, app, tok).status_code == 200
    assert_bare_401(post(client, app, tok))


def test_replayed_jti_is_refused_by_another_instance_sharing_the_database(make_app, keys):
    """Two replicas (two apps, one SQLite database): a token used on one is refused by the other."""
    first, second = make_app(), make_app()
    assert first.extensions[STORE_KEY] is not second.extensions[STORE_KEY]
    tok = token(keys["ec"])
    assert post(first.test_client(), first, tok).status_code == 200
    assert_bare_401(post(second.test_client(), second, tok))


def test_a_token_is_for_one_endpoint(app, keys):
    """A hook token is not a feedback token: the audience is the endpoint's URL."""
    feedback = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                              "outcomeTimestamp": "2026-10-01T09:30:00Z"}]}
    client = app.test_client()
    assert_bare_401(post(client, app, token(keys["ec"]), FEEDBACK_PATH, feedback))
    assert post(client, app, token(keys["ec"], aud=f"http://localhost{FEEDBACK_PATH}"), FEEDBACK_PATH,
                feedback).status_code == 200


def test_feedback_needs_a_token(app):
    assert_bare_401(post(app.test_client(), app, None, FEEDBACK_PATH, {"feedback": []}))


def test_unknown_service_id_is_401_before_404(app, keys):
    """No token: nothing is said about which services exist."""
    assert_bare_401(app.test_client().post("/cds-services/nope", json={}))
    assert app.test_client().post("/cds-services/nope", json={}, headers={
        "Authorization": f"Bearer {token(keys['ec'], aud='http://localhost/cds-services/nope')}"}).status_code == 404


def test_endpoints_that_are_not_cds_client_calls_need_no_token(app):
    client = app.test_client()
    assert client.get("/cds-services").status_code == 200
    assert client.get(f"/report/{'Q' * 32}").status_code == 404  # the page's own 404, not a 401


# --- logs ---------------------------------------------------------------------------------------------------


def test_rejections_log_the_reason_never_the_token(app, keys, caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="trialscreen")
    bad = [token(keys["other_ec"]), token(keys["ec"], now=time.time() - 3600), token(keys["ec"], aud="x"),
           token(keys["ec"], kid="nope")]
    client = app.test_client()
    for tok in bad:
        assert_bare_401(post(client, app, tok))
    good = token(keys["ec"])
    assert post(client, app, good).status_code == 200
    assert_bare_401(post(client, app, good))  # replay
    records = [r for r in caplog.records if r.name == "trialscreen.auth" and r.getMessage().startswith("CDS client")]
    reasons = [r.reason for r in records if getattr(r, "reason", None)]
    assert reasons == ["signature does not verify", "token expired", "token audience is not this service",
                       "no key with this kid for the issuer", "token replayed (jti already used)"]
    formatted = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    out, err = capfd.readouterr()
    for tok in [*bad, good]:
        for text in (formatted, caplog.text, out, err):
            assert tok not in text
            assert tok.split(".")[2] not in text  # not even the signature
    assert '"reason":"token expired"' in formatted


# --- over real HTTP -----------------------------------------------------------------------------------------


def test_over_a_real_http_server(app, keys):
    server = serve_in_thread(app)
    try:
        url = server.base_url + PATH
        ok = requests.post(url, json=hook_body(app), timeout=30,
                           headers={"Authorization": f"Bearer {token(keys['ec'], aud=url)}"})
        assert ok.status_code == 200 and ok.json() == {"cards": []}
        rs = requests.post(url, json=hook_body(app), timeout=30,
                           headers={"Authorization": f"Bearer {token(keys['rsa'], 'RS384', 'rsa-1', aud=url)}"})
        assert rs.status_code == 200
        bad = requests.post(url, json=hook_body(app), timeout=30,
                            headers={"Authorization": f"Bearer {token(keys['ec'])}"})  # aud: http://localhost
        assert bad.status_code == 401 and bad.content == b""
        assert bad.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
        unsigned = requests.post(url, json=hook_body(app), timeout=30)
        assert unsigned.status_code == 401
        assert requests.get(server.base_url + "/cds-services", timeout=30).status_code == 200
    finally:
        server.stop()


# --- CORS ---------------------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_preflight_is_answered_without_authentication(make_app):
    app = make_app(cors_origins=("https://sandbox.cds-hooks.org",))
    for path in (PATH, FEEDBACK_PATH, "/cds-services"):
        resp = app.test_client().options(path, headers=PREFLIGHT)
        assert resp.status_code == 200, path
        assert resp.headers["Access-Control-Allow-Origin"] == "https://sandbox.cds-hooks.org"
        allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Origin" in resp.headers.get("Vary", "")
        assert "Access-Control-Allow-Credentials" not in resp.headers


def test_cors_headers_on_the_actual_response_including_a_401(make_app):
    app = make_app(cors_origins=("https://sandbox.cds-hooks.org",))
    resp = app.test_client().post(PATH, json={}, headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert_bare_401(resp)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://sandbox.cds-hooks.org"
    assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]


def test_origin_not_listed_gets_no_cors_headers(make_app):
    app = make_app(cors_origins=("https://sandbox.cds-hooks.org",))
    resp = app.test_client().options(PATH, headers={**PREFLIGHT, "Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_no_cors_by_default(app):
    resp = app.test_client().options(PATH, headers=PREFLIGHT)
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers


def test_star_never_comes_with_credentials(make_app):
    app = make_app(cors_origins=("*",))
    resp = app.test_client().options(PATH, headers={**PREFLIGHT, "Origin": "https://ehr.example.net"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_cors_origins_from_the_environment(knowledge, tmp_path, trusted_file):
    app = create_app({"environ": {"TRIALSCREEN_CORS_ORIGINS": "https://a.example.org, https://b.example.org",
                                  "TRIALSCREEN_TRUSTED_CLIENTS": str(trusted_file),
                                  "TRIALSCREEN_STATE_DIR": str(tmp_path / "s")}, "knowledge": knowledge})
    try:
        resp = app.test_client().options(PATH, headers={**PREFLIGHT, "Origin": "https://b.example.org"})
        assert resp.headers["Access-Control-Allow-Origin"] == "https://b.example.org"
    finally:
        app.extensions[STORE_KEY].close()


# --- authentication on by default; off only when asked, with a warning ------------------------------------


def test_authentication_is_on_by_default():
    assert Settings().auth_required is True and Settings.from_env({}).auth_required is True


def test_auth_on_without_trusted_clients_stops_start_up(knowledge, tmp_path):
    with pytest.raises(ConfigurationError, match="TRIALSCREEN_TRUSTED_CLIENTS is not set"):
        create_app({"environ": {}, "knowledge": knowledge, "state_dir": tmp_path})


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("clients: [", "cannot be read"),
    ("clients: []", "lists no client"),
    ("clients:\n  - iss: https://x.example.org\n    jwks_file: missing.json\n", "jwks_file"),
    ("clients:\n  - iss: https://x.example.org\n    jwks_url: http://ehr.example.org/jwks\n", "must be https"),
    ('clients:\n  - iss: https://x.example.org\n    jwks: {"keys": [{"kid": "k", "kty": "EC", "d": "secret"}]}\n',
     "PRIVATE key"),
])
def test_bad_trusted_clients_file_stops_start_up(knowledge, tmp_path, content, message):
    path = tmp_path / "trusted.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        create_app({"environ": {"TRIALSCREEN_TRUSTED_CLIENTS": str(path)}, "knowledge": knowledge,
                    "state_dir": tmp_path})


def test_trusted_clients_as_json(knowledge, tmp_path, keys):
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [_jwk(keys["ec"], "ec-1", "ES384")]}}]}))
    app = create_app({"environ": {"TRIALSCREEN_TRUSTED_CLIENTS": str(path)}, "knowledge": knowledge,
                      "state_dir": tmp_path})
    try:
        assert post(app.test_client(), app, token(keys["ec"])).status_code == 200
    finally:
        app.extensions[STORE_KEY].close()


def test_auth_off_only_by_explicit_setting_and_with_a_warning(knowledge, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="trialscreen")
    app = create_app({"environ": {"TRIALSCREEN_AUTH_REQUIRED": "false"}, "knowledge": knowledge,
                      "state_dir": tmp_path})
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("authentication is OFF" in w for w in warnings)
        assert post(app.test_client(), app, None).status_code == 200
    finally:
        app.extensions[STORE_KEY].close()


def test_an_empty_auth_setting_does_not_turn_authentication_off():
    with pytest.raises(ConfigurationError, match="AUTH_REQUIRED is empty"):
        Settings.from_env({"TRIALSCREEN_AUTH_REQUIRED": " "})


def test_unknown_kids_do_not_make_every_request_a_key_fetch(app, keys, jwks_server):
    """A made-up kid forces one refresh (keys rotate), then the cache answers for min_refresh_seconds."""
    before = len(jwks_server.requests)
    client = app.test_client()
    for n in range(5):
        tok = token(keys["ec"], kid=f"made-up-{n}", iss=JKU_ISS, headers={"jku": jwks_server.url})
        assert_bare_401(post(client, app, tok))
    assert len(jwks_server.requests) - before == 1


def test_the_documented_sandbox_example_loads():
    from cds_service.hooks.auth import load_clients_for

    path = Path(__file__).resolve().parents[2] / "docs" / "trusted-clients.sandbox.yaml"
    (client,) = load_clients_for(Settings(trusted_clients=path)).values()
    assert client.iss == "https://sandbox.cds-hooks.org"
    assert client.jwks_url == "https://sandbox.cds-hooks.org/.well-known/jwks.json" and client.jku == (client.jwks_url,)


def test_the_bearer_scheme_is_case_insensitive(app, keys):
    client = app.test_client()
    for scheme in ("bearer", "BEARER"):
        resp = client.post(PATH, json=hook_body(app), headers={"Authorization": f"{scheme} {token(keys['ec'])}"})
        assert resp.status_code == 200, scheme
