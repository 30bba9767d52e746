"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.yaml``, and hook timing.

* ``GET /healthz``: the process answers (liveness; checks nothing else, so a slow database never gets a
  healthy worker killed).
* ``GET /readyz``: ready to serve hook calls: the code tables and trial rules are loaded and the database takes
  a write (one probe row inserted and deleted, committed, within the store timeout; for SQLite, at least 1 MiB
  free in its folder); 503 with the failing check named otherwise (readiness: take the replica out of the load
  balancer, do not restart it).
* ``GET /metrics``: Prometheus text format (see ``cds_service.observability``).
* ``GET /openapi.yaml``: the OpenAPI 3.1 description of the service. The file lives at the repository root
  (``openapi.yaml``) and is shipped inside the package as ``cds_service/openapi.yaml`` (a symlink in the source
  tree, a real file in a wheel), so an installed service serves the same document.

None of these needs CDS client authentication, and none returns data about a patient.
"""

from __future__ import annotations

import time
from functools import lru_cache
from importlib import resources

from flask import Blueprint, Flask, Response, current_app, g, request

from cds_service.hooks.app import json_response, state
from cds_service.hooks.discovery import HOOK, SERVICE_ID
from cds_service.observability import METRICS_CONTENT_TYPE, record_hook, render_metrics

__all__ = ["bp", "install_operations", "openapi_document", "OPENAPI_MEDIA_TYPE"]

bp = Blueprint("operations", __name__)
OPENAPI_MEDIA_TYPE = "application/yaml"
_HOOK_RULE = "/cds-services/<service_id>"


@lru_cache(maxsize=1)
def openapi_document() -> bytes:
    """The OpenAPI document as shipped with the package (read once)."""
    return resources.files("cds_service").joinpath("openapi.yaml").read_bytes()


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the worker is up and answering."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: code tables and trial rules loaded, database writable within the store timeout."""
    svc = state(current_app)
    checks: dict[str, str] = {}
    tables = getattr(svc.knowledge, "tables", None)
    checks["code_tables"] = "ok" if tables is not None and getattr(tables, "value_sets", None) else "not loaded"
    checks["trial_rules"] = "ok" if getattr(svc.knowledge, "rules", None) is not None else "not loaded"
    store = current_app.extensions.get("trialscreen.store")
    checks["database"] = store.writable() if store is not None else "not configured"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of this service (all gunicorn workers' under ``trialscreen serve``)."""
    resp = Response(render_metrics(), status=200)
    resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this service."""
    return Response(openapi_document(), status=200, mimetype=OPENAPI_MEDIA_TYPE)


def install_operations(app: Flask) -> None:
    """Register the operations endpoints and time every hook call (from the start of the request, as logged)
    into the hook latency histogram."""
    app.register_blueprint(bp)

    @app.after_request
    def _hook_observed(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else None
        # g.started is set by the request logging, the app's first before_request hook: calls refused by the
        # authentication (401) are timed too.
        started = getattr(g, "started", None)
        if rule == _HOOK_RULE and request.method == "POST" and started is not None:
            service_id = (request.view_args or {}).get("service_id")
            record_hook(HOOK if service_id == SERVICE_ID else "unknown", response.status_code,
                        time.perf_counter() - started)
        return response
