"""Trusting a CDS client with no internet: configured keys serve a listed ``jku`` without any fetch.

Tokens are shaped as the CDS Hooks sandbox signs them (ES384, its ``kid``, its ``jku`` header; see
docs/security.md); the keys are made here, since the sandbox's private key has no place in this project.
"""

import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.security.auth import (
    AuthError,
    JwksCache,
    MemoryReplayGuard,
    TokenVerifier,
    TrustedClient,
    load_trusted_clients,
)

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
AUD = "https://cds.hospital.example/cds-services/trialscreen-nct06880354"


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict:
    d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    d.update({"kid": SANDBOX_KID, "alg": "ES384", "use": "sig"})
    return d


def _sandbox_token(key: ec.EllipticCurvePrivateKey, jku: str = SANDBOX_JKU) -> str:
    now = int(time.time())
    claims = {"iss": SANDBOX_ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return "Bearer " + jwt.encode(claims, key, algorithm="ES384",
                                  headers={"typ": "JWT", "kid": SANDBOX_KID, "jku": jku})


def _no_network(url: str, timeout: float) -> dict:
    raise AssertionError(f"the verifier tried to fetch {url}")


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _verifier(client: TrustedClient) -> TokenVerifier:
    return TokenVerifier(clients={client.iss: client}, replay=MemoryReplayGuard(), jwks=JwksCache(fetch=_no_network))


def test_inline_keys_serve_a_listed_jku_without_fetching(key):
    client = TrustedClient(iss=SANDBOX_ISS, jwks={"keys": [_public_jwk(key)]}, jku=(SANDBOX_JKU,))
    assert _verifier(client).verify(_sandbox_token(key), [AUD])["iss"] == SANDBOX_ISS


def test_a_key_file_serves_a_listed_jku_without_fetching(key, tmp_path):
    keys = tmp_path / "sandbox-jwks.json"
    keys.write_text(json.dumps({"keys": [_public_jwk(key)]}), encoding="utf-8")
    client = TrustedClient(iss=SANDBOX_ISS, jwks_file=keys, jku=(SANDBOX_JKU,))
    assert _verifier(client).verify(_sandbox_token(key), [AUD])["iss"] == SANDBOX_ISS


def test_an_unlisted_jku_is_still_refused_with_configured_keys(key):
    client = TrustedClient(iss=SANDBOX_ISS, jwks={"keys": [_public_jwk(key)]}, jku=(SANDBOX_JKU,))
    with pytest.raises(AuthError) as err:
        _verifier(client).verify(_sandbox_token(key, jku="https://attacker.example.net/jwks.json"), [AUD])
    assert "jku" in err.value.reason


def test_configured_keys_are_the_only_keys_a_listed_jku_can_reach(key):
    """The jku's document is never consulted: a token signed by any other key fails, whatever that URL holds."""
    client = TrustedClient(iss=SANDBOX_ISS, jwks={"keys": [_public_jwk(key)]}, jku=(SANDBOX_JKU,))
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(AuthError) as err:
        _verifier(client).verify(_sandbox_token(other), [AUD])
    assert "signature" in err.value.reason


def test_the_offline_sandbox_example_holds_the_sandbox_public_key():
    """docs/trusted-clients.sandbox-offline.yaml loads, lists the jku, and its inline key is a P-384 public key."""
    clients = load_trusted_clients(ROOT / "docs" / "trusted-clients.sandbox-offline.yaml")
    client = clients[SANDBOX_ISS]
    assert client.jku == (SANDBOX_JKU,) and client.jwks_url is None
    (jwk,) = client.jwks["keys"]
    assert jwk["kid"] == SANDBOX_KID and "d" not in jwk
    public = jwt.PyJWK(dict(jwk), algorithm="ES384").key
    assert public.curve.name == "secp384r1"
