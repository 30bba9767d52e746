"""Every registered JWT claim with a wrong JSON type, and over-long ``jti`` values, against the production server
(``trialscreen serve`` with authentication on and a real ES384 key): always a 401, never a 500; the 401 says which
claim is wrong (``error_description``); a valid token and a ``jti`` at the documented limit are accepted (issue 10:
a string ``exp`` gave 500, a 5,000-character ``jti`` was refused with no reason)."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from served import serve

from cds_service.hooks.discovery import SERVICE_ID
from cds_service.security.auth import MAX_JTI_LENGTH

ISS = "https://ehr.example.org"
KID = "ec-1"
PATH = f"/cds-services/{SERVICE_ID}"
KEY = ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jwt-claims")
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    public.update({"kid": KID, "alg": "ES384", "use": "sig"})
    (tmp / "ehr-jwks.json").write_text(json.dumps({"keys": [public]}))
    clients = tmp / "trusted-clients.yaml"
    clients.write_text(yaml.safe_dump({"clients": [{"iss": ISS, "jwks_file": "ehr-jwks.json"}]}))
    env = {"TRIALSCREEN_AUTH_REQUIRED": "true", "TRIALSCREEN_TRUSTED_CLIENTS": str(clients)}
    with serve(tmp, env, workers=1, threads=2) as served:
        served.initial_workers = served.workers()
        yield served
        assert served.workers() == served.initial_workers
        assert "unexpected error" not in served.log() and "Traceback" not in served.log(), served.log()[-3000:]


def claims_for(server, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": ISS, "aud": server.base_url + PATH, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    for name, value in changes.items():
        if value is _ABSENT:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


def sign(claims: dict) -> str:
    """A correctly signed ES384 token over exactly these claims (NaN and Infinity written as JSON allows them
    to be read back by Python's parser, which PyJWT uses)."""
    payload = json.dumps(claims, allow_nan=True).encode()
    return jwt.api_jws.PyJWS().encode(payload, KEY, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


def call(server, token: str) -> requests.Response:
    if not hasattr(server, "prefetch"):  # every template answered: nothing is missing (else 412)
        templates = requests.get(server.base_url + "/cds-services", timeout=30).json()["services"][0]["prefetch"]
        server.prefetch = {key: None for key in templates}
        server.prefetch[next(k for k, q in templates.items() if q.startswith("Patient/"))] = \
            {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01"}
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": {"patientId": "p1"},
            "prefetch": server.prefetch}
    return requests.post(server.base_url + PATH, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()
NOT_NUMBERS = {"numeric-string": "9999999999", "text": "soon", "null": None, "true": True, "list": [1],
               "object": {"n": 1}, "nan": float("nan"), "infinity": float("inf"), "minus-infinity": float("-inf")}
NOT_STRINGS = {"number": 123, "null": None, "true": True, "list": ["x"], "object": {"x": 1}}
WRONG = ([(claim, name, value) for claim in ("exp", "iat", "nbf") for name, value in NOT_NUMBERS.items()]
         + [(claim, name, value) for claim in ("iss", "sub", "jti") for name, value in NOT_STRINGS.items()]
         + [("aud", name, value) for name, value in NOT_STRINGS.items() if name != "list"]
         + [("aud", "list-with-a-number", ["AUD", 5])])


@pytest.mark.parametrize(("claim", "kind", "value"), WRONG, ids=[f"{c}-{k}" for c, k, _ in WRONG])
def test_a_registered_claim_of_the_wrong_type_is_a_401_naming_the_claim(server, claim, kind, value):
    resp = call(server, sign(claims_for(server, **{claim: value})))
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="trialscreen", error="invalid_token"')
    assert f"error_description=\"claim '{claim}' must be" in challenge, challenge
    assert resp.content == b""


def test_a_valid_token_is_accepted_and_its_replay_refused_without_a_reason(server):
    token = sign(claims_for(server))
    assert call(server, token).status_code == 200
    replay = call(server, token)
    assert replay.status_code == 401
    # Issuer, key, signature and replay failures are logged, not told to the caller.
    assert replay.headers["WWW-Authenticate"] == 'Bearer realm="trialscreen", error="invalid_token"'


@pytest.mark.parametrize("length", [1, 36, MAX_JTI_LENGTH])
def test_a_jti_up_to_the_limit_is_accepted(server, length):
    assert call(server, sign(claims_for(server, jti=uuid.uuid4().hex[:1] * length))).status_code == 200


@pytest.mark.parametrize("length", [0, MAX_JTI_LENGTH + 1, 5000])
def test_a_jti_outside_the_limit_is_refused_saying_so(server, length):
    resp = call(server, sign(claims_for(server, jti="j" * length)))
    assert resp.status_code == 401
    assert f"error_description=\"claim 'jti' must be 1 to {MAX_JTI_LENGTH} characters\"" in \
        resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "iss", "aud"])
def test_a_missing_required_claim_is_a_401(server, claim):
    assert call(server, sign(claims_for(server, **{claim: _ABSENT}))).status_code == 401


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"a string"', b"42", b"null", b"{not json"])
def test_claims_that_are_not_a_json_object_are_a_401(server, payload):
    token = jwt.api_jws.PyJWS().encode(payload, KEY, algorithm="ES384", headers={"kid": KID})
    assert call(server, token).status_code == 401


def test_huge_numeric_dates_are_a_401(server):
    now = int(time.time())
    for claims in (claims_for(server, exp=10**30), claims_for(server, iat=-(10**30)),
                   claims_for(server, nbf=10**30), claims_for(server, exp=1e300, iat=now)):
        assert call(server, sign(claims)).status_code == 401
