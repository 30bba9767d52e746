"""Authenticating the CDS client: the ``Authorization: Bearer <JWT>`` a CDS Hooks 2.0 client must send.

Rules (CDS Hooks 2.0 "Trusting CDS Clients", hardened):

* algorithms ES384 and RS384 only: ``none`` and every HMAC algorithm are refused before any key is looked at,
  so "HS256 signed with the public key as the secret" cannot work;
* ``iss`` must be a configured trusted client, each with its JWKS (a file, inline keys, or a URL fetched and
  cached with a TTL); a ``jku`` header is honoured only when it equals a URL configured for that issuer;
* the key is chosen by ``kid`` (required), and must fit the algorithm;
* ``aud`` must be this service's endpoint URL (or its discovery URL, which some clients send);
* ``exp``, ``iat`` (not in the future beyond a bounded clock skew) and ``nbf`` are checked; ``jti`` is required
  (at most ``MAX_JTI_LENGTH`` characters) and remembered until the token expires, so a replay is refused;
* every registered claim must have its JSON type (numbers for the dates, strings, ``aud`` a string or a list of
  them) before any is used: a wrong type is a 401 saying which claim, never a 500.

A failure raises ``AuthError`` whose ``reason`` is safe to log (it never contains the token). Verification is
done with PyJWT, a maintained library; this module only decides which key and which claims to trust.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
import yaml

from cds_service.errors import ConfigurationError, TrialScreenError

__all__ = [
    "AuthError",
    "TrustedClient",
    "load_trusted_clients",
    "read_client_entries",
    "JwksCache",
    "ReplayGuard",
    "MemoryReplayGuard",
    "TokenVerifier",
    "ALLOWED_ALGORITHMS",
    "MAX_JTI_LENGTH",
    "check_claim_types",
]

ALLOWED_ALGORITHMS = ("ES384", "RS384")


class AuthError(TrialScreenError):
    """The request's bearer token is missing or not trusted. ``reason`` is safe to log.

    ``tell_client``: the reason is a mistake in how the client built its token (a claim of the wrong type, a
    ``jti`` over :data:`MAX_JTI_LENGTH`), safe and useful to say in the 401's ``error_description``; other reasons
    (unknown issuer, bad signature, replay) are only logged, so a caller cannot probe the trust configuration.
    """

    def __init__(self, reason: str, *, tell_client: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tell_client = tell_client


# A jti is remembered (cds_used_jti) until its token expires; a client's random id needs a few dozen characters.
MAX_JTI_LENGTH = 255
_NUMERIC_DATES = ("exp", "iat", "nbf")
_STRING_CLAIMS = ("iss", "sub", "jti")


def check_claim_types(claims: Mapping[str, Any]) -> None:
    """Refuse registered claims of the wrong JSON type (RFC 7519 section 4.1), before any is used.

    ``exp``/``iat``/``nbf`` must be finite JSON numbers (PyJWT accepts the string ``"1767225600"`` and lets NaN
    through; arithmetic on either failed with a 500), ``iss``/``sub``/``jti`` strings, ``aud`` a string or a
    list of strings; ``jti`` is at most :data:`MAX_JTI_LENGTH` characters and not empty.
    """
    for name in _NUMERIC_DATES:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))
                               or not math.isfinite(value)):
            raise AuthError(f"claim {name!r} must be a number of seconds (a JSON number)", tell_client=True)
    for name in _STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise AuthError(f"claim {name!r} must be a string", tell_client=True)
    aud = claims.get("aud")
    if "aud" in claims and not (isinstance(aud, str)
                                or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))):
        raise AuthError("claim 'aud' must be a string or a list of strings", tell_client=True)
    jti = claims.get("jti")
    if isinstance(jti, str) and not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise AuthError(f"claim 'jti' must be 1 to {MAX_JTI_LENGTH} characters", tell_client=True)


@dataclass(frozen=True)
class TrustedClient:
    """One CDS client we trust: its issuer and where its public keys come from."""

    iss: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwks: Mapping[str, Any] | None = None
    jku: tuple[str, ...] = ()

    def key_sources(self) -> tuple[str, ...]:
        return tuple(u for u in ((self.jwks_url,) + self.jku) if u)


def read_client_entries(path: Path) -> list[Any]:
    """The raw entries under ``clients`` of a trusted-clients file (JSON or YAML), not yet checked one by one."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"trusted clients file {path}: cannot be read: {exc}") from exc
    clients = data.get("clients") if isinstance(data, dict) else None
    if not isinstance(clients, list):
        raise ConfigurationError(f"trusted clients file {path}: expected a list under 'clients'")
    return clients


def load_trusted_clients(path: Path) -> dict[str, TrustedClient]:
    """Read the trusted-clients file (JSON or YAML).

    Shape: ``{"clients": [{"iss": ..., one of "jwks_url" / "jwks_file" / "jwks", optional "jku": [urls]}]}``.
    """
    clients = read_client_entries(path)
    out: dict[str, TrustedClient] = {}
    for n, c in enumerate(clients):
        if not isinstance(c, dict) or not isinstance(c.get("iss"), str) or not c["iss"]:
            raise ConfigurationError(f"trusted clients file {path}: entry {n} has no 'iss'")
        sources = [k for k in ("jwks_url", "jwks_file", "jwks") if c.get(k)]
        if len(sources) != 1:
            raise ConfigurationError(f"trusted clients file {path}: entry {n} ({c['iss']}) needs exactly one of "
                                     "jwks_url, jwks_file, jwks")
        for url in [c.get("jwks_url"), *(c.get("jku") or [])]:
            if url and not str(url).startswith("https://") and not str(url).startswith("http://127.0.0.1"):
                raise ConfigurationError(f"trusted clients file {path}: entry {n}: key URL must be https: {url}")
        jwks_file = c.get("jwks_file")
        if jwks_file and not Path(jwks_file).is_absolute():
            jwks_file = Path(path).parent / jwks_file
        out[c["iss"]] = TrustedClient(
            iss=c["iss"],
            jwks_url=c.get("jwks_url"),
            jwks_file=Path(jwks_file) if jwks_file else None,
            jwks=c.get("jwks"),
            jku=tuple(c.get("jku") or ()),
        )
    return out


@dataclass
class JwksCache:
    """Fetches JWKS documents from configured URLs only, caching each for ``ttl_seconds``."""

    ttl_seconds: float = 300.0
    timeout_seconds: float = 2.0
    fetch: Callable[[str, float], Mapping[str, Any]] | None = None
    proxy: str = ""  # a proxy for JWKS fetches configured on purpose (none: the environment's are ignored)
    # A forced refresh (an unknown kid: the issuer may have rotated its keys) is honoured at most this often,
    # so tokens with made-up kids cannot turn every request into a fetch from the issuer's server.
    min_refresh_seconds: float = 30.0
    _entries: dict[str, tuple[float, Mapping[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, *, refresh: bool = False) -> Mapping[str, Any]:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(url)
            if hit and now - hit[0] < (self.min_refresh_seconds if refresh else self.ttl_seconds):
                return hit[1]
        doc = self.fetch(url, self.timeout_seconds) if self.fetch else _http_fetch(url, self.timeout_seconds,
                                                                                   self.proxy)
        with self._lock:
            self._entries[url] = (now, doc)
        return doc


JWKS_MAX_BYTES = 1024 * 1024  # a key set is a few KB; a larger answer is refused before it is parsed


def _http_fetch(url: str, timeout: float, proxy: str = "") -> Mapping[str, Any]:
    """GET one JWKS document: an explicit session that ignores proxy variables and ``.netrc`` (``proxy``: one
    configured on purpose, TRIALSCREEN_JWKS_PROXY), no redirects, no cookies kept, at most JWKS_MAX_BYTES read
    within ``timeout`` seconds in all."""
    end = time.monotonic() + timeout
    with requests.Session() as session:
        session.trust_env = False
        if proxy:
            session.proxies = {"http": proxy, "https": proxy}
        try:
            with session.get(url, timeout=timeout, allow_redirects=False, stream=True,
                             headers={"Accept": "application/json"}) as resp:
                resp.raise_for_status()
                length = resp.headers.get("Content-Length")
                if length and length.strip().isdigit() and int(length) > JWKS_MAX_BYTES:
                    raise AuthError("the issuer's key set is larger than 1 MiB (not read)")
                blob = bytearray()
                for chunk in resp.iter_content(16384):  # decoded bytes: a compressed bomb stops at the cap too
                    blob += chunk
                    if len(blob) > JWKS_MAX_BYTES:
                        raise AuthError("the issuer's key set is larger than 1 MiB (not read)")
                    if time.monotonic() > end:
                        raise AuthError("the issuer's key set did not arrive in time")
            doc = json.loads(bytes(blob))
        except (requests.RequestException, ValueError) as exc:
            raise AuthError(f"the issuer's key set could not be fetched ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise AuthError("the issuer's key set is not a JWKS document")
    return doc


class ReplayGuard(Protocol):
    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record the token id; False if it was seen before (a replay)."""


class MemoryReplayGuard:
    """Remembers token ids in this process until they expire (one process; a shared store for replicas)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, expires_at: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._seen) > 10000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            key = (iss, jti)
            if key in self._seen and self._seen[key] > now:
                return False
            self._seen[key] = expires_at
            return True


@dataclass
class TokenVerifier:
    """Verifies CDS client JWTs against the trusted clients."""

    clients: Mapping[str, TrustedClient]
    replay: ReplayGuard
    jwks: JwksCache = field(default_factory=JwksCache)
    leeway_seconds: int = 60
    max_lifetime_seconds: int = 3600
    now: Callable[[], float] = time.time

    def verify(self, authorization: str | None, audiences: Iterable[str]) -> dict[str, Any]:
        """Return the verified claims, or raise AuthError with a loggable reason."""
        # the scheme name is case-insensitive (RFC 7235 section 2.1): "bearer" and "BEARER" are Bearer too
        if not authorization or authorization[:7].lower() != "bearer ":
            raise AuthError("no bearer token")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token ({type(exc).__name__})") from exc
        if not isinstance(unverified, dict):
            raise AuthError("malformed token (the claims are not a JSON object)")
        check_claim_types(unverified)
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} is not allowed")
        iss = unverified.get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise AuthError("issuer is not a trusted client")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token header has no kid")
        key = self._key(client, header, kid, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=client.iss,
                leeway=self.leeway_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience is not this service") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not valid yet (nbf or iat in the future)") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the required claim {exc.claim!r}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"token rejected ({type(exc).__name__})") from exc
        now = self.now()
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, (int, float)) or iat > now + self.leeway_seconds:
            raise AuthError("token issued in the future")
        if exp - iat > self.max_lifetime_seconds:
            raise AuthError("token lifetime is too long")
        if not self.replay.first_use(client.iss, str(claims["jti"]), float(exp) + self.leeway_seconds):
            raise AuthError("token replayed (jti already used)")
        return claims

    def _key(self, client: TrustedClient, header: Mapping[str, Any], kid: str, alg: str) -> Any:
        jku = header.get("jku")
        if jku is not None and jku not in client.jku:
            raise AuthError("jku is not a key URL configured for this issuer")
        doc: Mapping[str, Any] | None = None
        # Keys configured for the issuer (inline ``jwks`` or a ``jwks_file``) are used as they are, even when the
        # token names a listed ``jku``: the listing only allows the header, and a hospital's CDS service often
        # has no outbound internet to fetch it from. Only an issuer configured by ``jwks_url`` is fetched.
        url = None if (client.jwks is not None or client.jwks_file is not None) else (jku or client.jwks_url)
        if client.jwks is not None:
            doc = client.jwks
        elif client.jwks_file is not None:
            try:
                doc = json.loads(client.jwks_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise AuthError("the issuer's key file cannot be read") from exc
        if url is not None:
            doc = self.jwks.get(url)
            if _find(doc, kid) is None:  # keys rotate: refetch once before giving up
                doc = self.jwks.get(url, refresh=True)
        jwk = _find(doc, kid) if doc is not None else None
        if jwk is None:
            raise AuthError("no key with this kid for the issuer")
        try:
            return jwt.PyJWK(dict(jwk), algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise AuthError(f"key {kid!r} does not fit algorithm {alg}") from exc


def _find(doc: Mapping[str, Any], kid: str) -> Mapping[str, Any] | None:
    for k in doc.get("keys", ()):
        if isinstance(k, Mapping) and k.get("kid") == kid:
            return k
    return None
