"""CDS client authentication and CORS for the service (issue 4 items 1 and 2).

Authentication (CDS Hooks 2.0 "Trusting CDS Clients"): every ``POST`` to a hook endpoint
(``/cds-services/<id>``) or a feedback endpoint (``/cds-services/<id>/feedback``) must carry
``Authorization: Bearer <JWT>``, verified by :class:`cds_service.security.auth.TokenVerifier` against the
trusted clients of ``TRIALSCREEN_TRUSTED_CLIENTS``. Discovery (``GET /cds-services``), CORS preflights
(``OPTIONS``), the report page, health, metrics and the OpenAPI document are not CDS client calls and are
not authenticated. A failure is a bare 401 (empty body, ``WWW-Authenticate: Bearer realm="trialscreen",
error="invalid_token"``) and one log line naming the reason, never the token. When the reason is a mistake in
how the client built its token (a registered claim of the wrong type, a ``jti`` too long), the challenge also
says so in ``error_description``; other reasons (issuer, key, signature, replay) are not told to the caller.

The audience a token must name is the URL the client called: ``TRIALSCREEN_PUBLIC_URL`` (when set: behind
a proxy the request's own URL is the internal one) or the request's root URL, plus the path. The discovery
URL ``<base>/cds-services`` is also accepted: the CDS Hooks 2.0 text says ``aud`` is "the CDS Service
endpoint", which some clients read as the provider's endpoint, i.e. the discovery URL they were configured
with, and sign every call for it. (The CDS Hooks sandbox signs hook calls for the service URL and discovery
calls for the discovery URL: both pass.) Accepting it does not widen trust beyond this deployment: a token
minted for another service names that service's URLs, and the jti is still single-use.

Replays are refused across every worker and replica: used ``jti`` values live in the database
(:class:`cds_service.store.replay.DbReplayGuard`). Only the JWKS cache is per process (a cache).

Authentication is on by default; ``TRIALSCREEN_AUTH_REQUIRED=false`` turns it off with a start-up warning.

CORS (for browser-based EHRs and the CDS Hooks sandbox) is done by hand in a few lines rather than with
flask-cors: the policy is tiny (a fixed list of origins or ``*``, no credentials ever), and owning it keeps
the preflight path visibly outside authentication.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.security.auth import (
    AuthError,
    JwksCache,
    MemoryReplayGuard,
    ReplayGuard,
    TokenVerifier,
    TrustedClient,
    load_trusted_clients,
)

__all__ = ["install_authentication", "install_cors", "load_clients_for", "PROTECTED_RULES", "AUTH_KEY",
           "WWW_AUTHENTICATE", "audiences_for"]

log = logging.getLogger("trialscreen.auth")

AUTH_KEY = "trialscreen.auth"
# The routes a CDS client calls with POST: the hook and its feedback. Nothing else is authenticated.
PROTECTED_RULES = frozenset({"/cds-services/<service_id>", "/cds-services/<service_id>/feedback"})
WWW_AUTHENTICATE = 'Bearer realm="trialscreen", error="invalid_token"'
DISCOVERY_PATH = "/cds-services"

CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
CORS_EXPOSE_HEADERS = "WWW-Authenticate, X-Request-ID"
CORS_MAX_AGE = "600"


# --- trusted clients ---------------------------------------------------------------------------------------
def _check_jwks(doc: Any, where: str) -> None:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ConfigurationError(f"{where}: not a JWKS document with at least one key")
    for key in doc["keys"]:
        if not isinstance(key, Mapping) or not key.get("kid") or not key.get("kty"):
            raise ConfigurationError(f"{where}: every key needs 'kid' and 'kty'")
        if "d" in key or "p" in key:  # a private key pasted by mistake must not sit in a trust file
            raise ConfigurationError(f"{where}: key {key.get('kid')!r} is a PRIVATE key; give the public key only")


def load_clients_for(settings: Settings) -> dict[str, TrustedClient]:
    """The trusted clients of ``settings.trusted_clients``, checked now so a bad file stops start-up.

    Raises ConfigurationError when the file is unset, missing, unreadable, lists no client, or a client's
    key file / inline key set is not a JWKS of public keys. Key URLs are fetched later (on first use).
    """
    path = settings.trusted_clients
    if path is None or not str(path).strip():
        raise ConfigurationError("authentication is on but TRIALSCREEN_TRUSTED_CLIENTS is not set: name a JSON or "
                                 "YAML file of trusted CDS clients (docs/security.md), or set "
                                 "TRIALSCREEN_AUTH_REQUIRED=false for local testing only")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"TRIALSCREEN_TRUSTED_CLIENTS: no such file: {path}")
    clients = load_trusted_clients(path)
    if not clients:
        raise ConfigurationError(f"TRIALSCREEN_TRUSTED_CLIENTS: {path} lists no client")
    for iss, client in clients.items():
        if client.jwks is not None:
            _check_jwks(client.jwks, f"trusted client {iss}: inline jwks")
        if client.jwks_file is not None:
            try:
                doc = json.loads(client.jwks_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"trusted client {iss}: jwks_file {client.jwks_file}: {exc}") from exc
            _check_jwks(doc, f"trusted client {iss}: jwks_file {client.jwks_file}")
    return clients


# --- authentication ----------------------------------------------------------------------------------------
def audiences_for(settings: Settings) -> list[str]:
    """The ``aud`` values accepted for the current request: its endpoint URL and the discovery URL."""
    base = (settings.public_url or request.url_root).rstrip("/")
    return [base + request.path, base + DISCOVERY_PATH]


def _unauthorized(description: str | None = None) -> Response:
    resp = Response(b"", status=401, mimetype="text/plain")
    challenge = WWW_AUTHENTICATE
    if description:  # RFC 6750 section 3: a quoted string of printable ASCII without '"' or '\\'
        text = "".join(c for c in description if " " <= c <= "~" and c not in '"\\')
        challenge += f', error_description="{text}"'
    resp.headers["WWW-Authenticate"] = challenge
    resp.headers["Cache-Control"] = "no-store"
    return resp


def install_authentication(app: Flask, settings: Settings, *, replay: ReplayGuard | None = None,
                           jwks: JwksCache | None = None) -> TokenVerifier | None:
    """Register the bearer-token check on hook and feedback POSTs; return the verifier (None when off).

    ``replay`` defaults to the database guard on the app's store (``init_reports`` must have run), so every
    replica sharing the database refuses a replay; ``jwks`` defaults to a per-process cache.
    """
    if not settings.auth_required:
        log.warning("CDS client authentication is OFF (TRIALSCREEN_AUTH_REQUIRED=false): any caller can use the "
                    "hook and feedback endpoints. Never run a service reachable by others like this.")
        return None
    clients = load_clients_for(settings)
    if replay is None:
        from cds_service.hooks.report import STORE_KEY
        from cds_service.store.replay import DbReplayGuard

        store = app.extensions.get(STORE_KEY)
        if store is not None:
            replay = DbReplayGuard(store.engine, gate=store.gate)
        else:  # no database: replays are refused within this process only
            log.warning("no database store: token replays are refused per process only")
            replay = MemoryReplayGuard()
    verifier = TokenVerifier(clients=clients, replay=replay, jwks=jwks or JwksCache(proxy=settings.jwks_proxy))
    app.extensions[AUTH_KEY] = verifier

    @app.before_request
    def _authenticate() -> Response | None:
        rule = request.url_rule.rule if request.url_rule is not None else None
        if request.method != "POST" or rule not in PROTECTED_RULES:
            return None  # discovery, preflights, report, health, metrics, openapi, unknown paths (404)
        try:
            claims = verifier.verify(request.headers.get("Authorization"), audiences_for(settings))
        except AuthError as exc:
            log.warning("CDS client not authenticated", extra={"status": 401, "reason": exc.reason,
                                                                 "route": rule})
            return _unauthorized(exc.reason if exc.tell_client else None)
        g.cds_client = claims.get("iss")
        return None

    log.info("CDS client authentication on", extra={"count": len(clients)})
    if not settings.public_url:  # not a warning: the demo and tests run like this on loopback
        log.info("TRIALSCREEN_PUBLIC_URL is not set: token audiences are checked against the request's own URL "
                 "(its Host header); set it in production (docs/security.md)")
    return verifier


# --- CORS --------------------------------------------------------------------------------------------------
def install_cors(app: Flask, settings: Settings) -> None:
    """Answer CORS for the ``/cds-services`` endpoints from ``settings.cors_origins`` (``*`` or exact origins).

    Preflights (``OPTIONS``) are answered by Flask's automatic OPTIONS response, before and without
    authentication; this adds the CORS headers to them and to the actual responses (401s included, so a
    browser client can read the status). Credentials are never allowed: clients send bearer tokens, not
    cookies, and ``*`` with credentials is forbidden anyway.
    """
    origins = tuple(o.strip().rstrip("/") for o in settings.cors_origins if o.strip())
    if not origins:
        return
    any_origin = "*" in origins
    allowed = frozenset(origins)

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith(DISCOVERY_PATH):
            return response
        if any_origin:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.vary.add("Origin")
        else:
            response.vary.add("Origin")
            return response
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response
