"""The CDS client JWT rules, tried against real keys and real tokens: every rejection and both acceptances."""

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.security.auth import AuthError, JwksCache, MemoryReplayGuard, TokenVerifier, TrustedClient

AUD = "https://cds.example.org/cds-services/nct06880354"
ISS = "https://ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"


def _jwk(private_key, kid, alg):
    algo = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    d = json.loads(algo.to_jwk(private_key.public_key()))
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


@pytest.fixture(scope="module")
def keys():
    return {
        "ec": ec.generate_private_key(ec.SECP384R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "other_ec": ec.generate_private_key(ec.SECP384R1()),
    }


@pytest.fixture
def verifier(keys):
    jwks = {"keys": [_jwk(keys["ec"], "ec-1", "ES384"), _jwk(keys["rsa"], "rsa-1", "RS384")]}
    fetched = []

    def fetch(url, timeout):
        fetched.append(url)
        return jwks

    v = TokenVerifier(
        clients={ISS: TrustedClient(iss=ISS, jwks=jwks),
                 "https://jku.example.org": TrustedClient(iss="https://jku.example.org", jwks_url=JKU, jku=(JKU,))},
        replay=MemoryReplayGuard(),
        jwks=JwksCache(fetch=fetch),
    )
    v.fetched = fetched
    return v


def _token(key, alg="ES384", kid="ec-1", iss=ISS, aud=AUD, now=None, headers=None, **claims):
    now = now or time.time()
    body = {"iss": iss, "aud": aud, "iat": int(now), "exp": int(now) + 300, "jti": str(uuid.uuid4())}
    body.update(claims)
    h = {"kid": kid}
    h.update(headers or {})
    return "Bearer " + jwt.encode(body, key, algorithm=alg, headers=h)


def _rejects(verifier, auth, reason):
    with pytest.raises(AuthError) as err:
        verifier.verify(auth, [AUD])
    assert reason in err.value.reason
    return err.value


def test_valid_es384_is_accepted(verifier, keys):
    assert verifier.verify(_token(keys["ec"]), [AUD])["iss"] == ISS


def test_valid_rs384_is_accepted(verifier, keys):
    assert verifier.verify(_token(keys["rsa"], alg="RS384", kid="rsa-1"), [AUD])["iss"] == ISS


def test_forged_signature(verifier, keys):
    _rejects(verifier, _token(keys["other_ec"]), "signature")


def test_alg_none(verifier):
    body = {"iss": ISS, "aud": AUD, "iat": int(time.time()), "exp": int(time.time()) + 300, "jti": "x"}
    token = jwt.encode(body, None, algorithm="none", headers={"kid": "ec-1"})
    _rejects(verifier, "Bearer " + token, "not allowed")


def test_hs256_with_the_public_key_as_secret(verifier, keys):
    pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = base64.urlsafe_b64encode(json.dumps({"iss": ISS, "aud": AUD, "iat": int(time.time()),
                                                "exp": int(time.time()) + 300, "jti": "y"}).encode())
    import hashlib
    import hmac
    signing_input = header.rstrip(b"=") + b"." + body.rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    _rejects(verifier, "Bearer " + (signing_input + b"." + sig).decode(), "not allowed")


def test_expired(verifier, keys):
    _rejects(verifier, _token(keys["ec"], now=time.time() - 1000), "expired")


def test_iat_in_the_future(verifier, keys):
    _rejects(verifier, _token(keys["ec"], now=time.time() + 600), "future")


def test_wrong_audience(verifier, keys):
    _rejects(verifier, _token(keys["ec"], aud="https://evil.example.org/cds-services/x"), "audience")


def test_unknown_issuer(verifier, keys):
    _rejects(verifier, _token(keys["ec"], iss="https://unknown.example.org"), "issuer")


def test_unknown_kid(verifier, keys):
    _rejects(verifier, _token(keys["ec"], kid="nope"), "kid")


def test_missing_kid(verifier, keys):
    token = jwt.encode({"iss": ISS, "aud": AUD, "iat": int(time.time()), "exp": int(time.time()) + 300,
                        "jti": "z"}, keys["ec"], algorithm="ES384")
    _rejects(verifier, "Bearer " + token, "kid")


def test_jku_off_the_list_is_refused_without_fetching(verifier, keys):
    _rejects(verifier, _token(keys["ec"], iss="https://jku.example.org",
                              headers={"jku": "https://attacker.example.net/jwks.json"}), "jku")
    assert verifier.fetched == []


def test_jku_on_the_list_is_fetched_and_cached(verifier, keys):
    for _ in range(2):
        assert verifier.verify(_token(keys["ec"], iss="https://jku.example.org", headers={"jku": JKU}), [AUD])
    assert verifier.fetched == [JKU]


def test_replayed_jti(verifier, keys):
    auth = _token(keys["ec"])
    verifier.verify(auth, [AUD])
    _rejects(verifier, auth, "replayed")


def test_missing_jti(verifier, keys):
    body = {"iss": ISS, "aud": AUD, "iat": int(time.time()), "exp": int(time.time()) + 300}
    token = jwt.encode(body, keys["ec"], algorithm="ES384", headers={"kid": "ec-1"})
    _rejects(verifier, "Bearer " + token, "jti")


def test_key_of_the_wrong_type_for_the_algorithm(verifier, keys):
    _rejects(verifier, _token(keys["ec"], alg="ES384", kid="rsa-1"), "does not fit")


def test_no_header_and_garbage(verifier):
    _rejects(verifier, None, "no bearer token")
    _rejects(verifier, "Basic abc", "no bearer token")
    _rejects(verifier, "Bearer not.a.jwt", "malformed")


def test_reason_never_contains_the_token(verifier, keys):
    auth = _token(keys["other_ec"])
    err = _rejects(verifier, auth, "signature")
    assert auth.split()[1] not in str(err) and auth.split()[1][:20] not in err.reason
