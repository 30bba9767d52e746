"""The demo's own CDS client: an ES384 key pair, a trusted-clients file that trusts it, and fresh tokens.

``trialscreen demo`` calls :func:`make_demo_client` with a folder (under the demo's state directory, or a
temporary one): the private key is written there as PEM (mode 0600), its public half as a JWKS file, and
``trusted-clients.yaml`` trusting that JWKS under the issuer :data:`DEMO_ISSUER`. Any clients of an existing
trusted-clients file (``TRIALSCREEN_TRUSTED_CLIENTS``) are kept in it, so a person can point the CDS Hooks
sandbox at the demo by trusting the sandbox there (docs/security.md). :meth:`DemoClient.token` signs a
fresh single-use token (random ``jti``, 5 minutes) for one endpoint URL.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cds_service.security.auth import read_client_entries

__all__ = ["DemoClient", "make_demo_client", "DEMO_ISSUER", "TOKEN_LIFETIME_SECONDS"]

DEMO_ISSUER = "urn:trialscreen:demo-client"
TOKEN_LIFETIME_SECONDS = 300


@dataclass(frozen=True)
class DemoClient:
    """A CDS client identity the demo service trusts."""

    iss: str
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    key_file: Path
    jwks_file: Path
    trusted_clients_file: Path

    def token(self, audience: str, *, lifetime_seconds: int = TOKEN_LIFETIME_SECONDS) -> str:
        """A fresh signed JWT for ``audience`` (the endpoint URL), usable once."""
        now = int(time.time())
        claims = {"iss": self.iss, "sub": self.iss, "aud": audience, "iat": now, "exp": now + lifetime_seconds,
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.private_key, algorithm="ES384", headers={"kid": self.kid, "typ": "JWT"})


def _public_jwks(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "ES384", "use": "sig"})
    return {"keys": [jwk]}


def _existing_clients(path: Path | None) -> list[dict[str, Any]]:
    """The client entries of an existing trusted-clients file, with relative key files made absolute."""
    if path is None:
        return []
    out = []
    for c in read_client_entries(path):
        if isinstance(c, dict) and c.get("iss") != DEMO_ISSUER:
            c = dict(c)
            if c.get("jwks_file") and not Path(c["jwks_file"]).is_absolute():
                c["jwks_file"] = str((Path(path).parent / c["jwks_file"]).resolve())
            out.append(c)
    return out


def make_demo_client(folder: Path, *, also_trust: Path | None = None) -> DemoClient:
    """Make a new ES384 key pair in ``folder`` and a trusted-clients file trusting it (plus ``also_trust``'s)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    kid = f"demo-{uuid.uuid4().hex[:12]}"
    key_file = folder / "demo-client-key.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    jwks_file = folder / "demo-client-jwks.json"
    jwks_file.write_text(json.dumps(_public_jwks(key, kid), indent=2), encoding="utf-8")
    clients = [{"iss": DEMO_ISSUER, "jwks_file": str(jwks_file.resolve())}, *_existing_clients(also_trust)]
    trusted = folder / "trusted-clients.yaml"
    trusted.write_text("# Written by `trialscreen demo`: trusts the demo's own key (and TRIALSCREEN_TRUSTED_CLIENTS)\n"
                       + yaml.safe_dump({"clients": clients}, sort_keys=False), encoding="utf-8")
    return DemoClient(DEMO_ISSUER, kid, key, key_file, jwks_file, trusted)
