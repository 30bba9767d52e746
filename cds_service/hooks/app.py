"""The Flask application factory: settings, knowledge, error handling, request ids and JSON logs.

``create_app(overrides)`` reads the settings once (environment + overrides), loads and checks the code
tables, the trial rules and the criterion registry (a bad table stops start-up, before anyone is
answered), builds the prefetch templates, and registers the CDS Hooks endpoints. Everything the request
handlers need lives in one ``ServiceState`` at ``app.extensions["trialscreen"]``.

Errors: every ``TrialScreenError`` and every werkzeug ``HTTPException`` becomes a FHIR ``OperationOutcome``
with the right 4xx; anything else is logged (exception type and place, never data) and answered with a
500 OperationOutcome without a stack trace. Request bodies over ``max_body_bytes`` get 413.

Logs: one JSON object per line on stderr; one line per request with its request id, method, route,
status and duration. Bodies, tokens and patient ids are never logged.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException

from cds_service.config import Knowledge, Settings, load_knowledge
from cds_service.criteria.registry import check_registry
from cds_service.errors import ConfigurationError, InputError, StoreUnavailable, TrialScreenError
from cds_service.gather.fhir_client import Allowlist
from cds_service.gather.prefetch import PrefetchTemplate, build_templates
from cds_service.gather.transport import parse_networks
from cds_service.runtime import tune_gc

__all__ = ["create_app", "ServiceState", "state", "operation_outcome", "json_response", "JsonFormatter"]

log = logging.getLogger("trialscreen.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Only these record attributes are ever written to a log line (an allowlist: nothing else can leak).
_LOG_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "service", "hook", "screening_status",
               "cards", "not_retrieved", "fetched", "host", "error", "where", "count", "reason")


@dataclass
class ServiceState:
    """What the request handlers share: settings, knowledge, templates, the allowlist and a clock.

    ``save_report`` is the screening-report store (issue 3 item 5): a callable that stores a screening and
    returns an opaque token; when set, cards link to ``<public url>/report/<token>``.
    """

    settings: Settings
    knowledge: Knowledge
    templates: tuple[PrefetchTemplate, ...]
    allowlist: Allowlist
    private_networks: tuple[Any, ...] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    save_report: Callable[[Any], str] | None = None


def state(app: Flask) -> ServiceState:
    """The ServiceState of an app built by ``create_app``."""
    return app.extensions["trialscreen"]


# --- JSON logging ------------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the allowlisted fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _LOG_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        return orjson.dumps(out, default=str).decode()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None and has_request_context():
            record.request_id = getattr(g, "request_id", None)
        return True


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("trialscreen")
    try:
        logger.setLevel(level.upper())
    except ValueError as exc:
        raise ConfigurationError(f"TRIALSCREEN_LOG_LEVEL: {exc}") from exc
    if not any(getattr(h, "_trialscreen", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(_RequestIdFilter())
        handler._trialscreen = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for h in logger.handlers:
        if not any(isinstance(f, _RequestIdFilter) for f in h.filters):
            h.addFilter(_RequestIdFilter())


# --- responses ---------------------------------------------------------------------------------------------
def json_response(body: Any, status: int = 200, *, mimetype: str = "application/json") -> Response:
    """A JSON response (serialised with orjson)."""
    return Response(orjson.dumps(body), status=status, mimetype=mimetype)


_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                412: "required", 413: "too-long", 415: "not-supported", 429: "throttled"}


def operation_outcome(status: int, message: str, *, code: str | None = None, expression: str | None = None) -> \
        Response:
    """A FHIR OperationOutcome error response."""
    issue: dict[str, Any] = {"severity": "error", "code": code or _ISSUE_CODES.get(status, "exception"),
                             "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return json_response({"resourceType": "OperationOutcome", "issue": [issue]}, status,
                         mimetype="application/fhir+json")


# --- the factory -------------------------------------------------------------------------------------------
def _split_overrides(overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(Settings)}
    settings_over: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in names:
            settings_over[key] = value
        elif key in ("clock", "knowledge", "environ"):
            extra[key] = value
        else:
            raise ConfigurationError(f"unknown setting {key!r}")
    return settings_over, extra


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the TrialScreen CDS Hooks service.

    ``overrides``: Settings fields to override (tests), plus ``clock`` (a callable returning the evaluation
    time), ``knowledge`` (already loaded Knowledge) and ``environ`` (a mapping used instead of os.environ).
    """
    settings_over, extra = _split_overrides(overrides)
    settings = Settings.from_env(extra.get("environ"), **settings_over)
    _configure_logging(settings.log_level)
    knowledge = extra.get("knowledge") or load_knowledge(settings)
    check_registry(knowledge.rules)
    try:
        allowlist = Allowlist.parse(settings.fhir_allowlist)
    except ValueError as exc:
        raise ConfigurationError(f"TRIALSCREEN_FHIR_ALLOWLIST: {exc}") from exc
    try:
        private_networks = parse_networks(settings.fhir_private_networks)
    except ValueError as exc:
        raise ConfigurationError(f"TRIALSCREEN_FHIR_PRIVATE_NETWORKS: {exc}") from exc
    templates = build_templates(knowledge.tables, page_size=settings.fhir_page_size)
    app = Flask("cds_service")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["TRAP_HTTP_EXCEPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    svc = ServiceState(settings, knowledge, templates, allowlist, private_networks)
    if "clock" in extra:
        svc.clock = extra["clock"]
    app.extensions["trialscreen"] = svc
    # The screening-report page and its store (SQLite/PostgreSQL, migrated here); cards link to it.
    from cds_service.hooks.report import init_reports, report_saver

    svc.save_report = report_saver(init_reports(app, settings, knowledge.rules, tables=knowledge.tables))
    if settings.bench_endpoints:  # the benchmarks' JSON-only baseline (bench/); off unless asked for
        from cds_service.hooks.bench import register_bench_endpoints

        register_bench_endpoints(app)
    tune_gc()  # a hook call allocates ~100,000s of objects: see cds_service/runtime.py

    _install_request_logging(app)
    _install_authentication(app, settings)
    _install_error_handlers(app)

    from cds_service.hooks.discovery import bp as discovery_bp
    from cds_service.hooks.patient_view import bp as patient_view_bp

    app.register_blueprint(discovery_bp)
    app.register_blueprint(patient_view_bp)
    from cds_service.hooks.ops import install_operations  # /healthz, /readyz, /metrics, /openapi.yaml

    install_operations(app)
    from cds_service.hooks.feedback import bp as feedback_bp

    app.register_blueprint(feedback_bp)
    from cds_service.hooks.warmup import warm_up

    # What the first call would otherwise build (readers, UCUM registry, statements...): see warmup.py.
    warm_up(svc, app.extensions.get("trialscreen.store"))
    log.info("service ready", extra={"count": len(templates)})
    return app


def _install_request_logging(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            response.headers["X-Request-ID"] = rid
        started = getattr(g, "started", None)
        duration = round((time.perf_counter() - started) * 1000, 1) if started else None
        # The route template, never the raw path (a path may carry a report token).
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        log.info("request", extra={"method": request.method, "route": route, "status": response.status_code,
                                   "duration_ms": duration})
        return response


# --- authentication (issue 4) ------------------------------------------------------------------------------
def _install_authentication(app: Flask, settings: Settings) -> None:
    """CDS client authentication (JWT bearer on hook and feedback POSTs, bare 401 otherwise) and CORS.

    See ``cds_service.hooks.auth``: trusted clients are loaded now (a bad file stops start-up), replays are
    refused through the database store, and ``auth_required=False`` logs a warning.
    """
    from cds_service.hooks.auth import install_authentication, install_cors

    install_cors(app, settings)
    install_authentication(app, settings)


# --- errors ------------------------------------------------------------------------------------------------
def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(InputError)
    def _input_error(exc: InputError) -> Response:
        log.info("request refused", extra={"status": exc.status, "reason": exc.code, "where": exc.field})
        return operation_outcome(exc.status, str(exc), code=exc.code, expression=exc.field)

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable) -> Response:
        # the call needs the database (feedback, the replay check): refused honestly, to be retried
        route = request.url_rule.rule if request.url_rule is not None else None
        log.warning("refused: the database is unavailable", extra={"status": 503, "route": route})
        response = operation_outcome(503, "the service's database is unavailable; retry later", code="transient")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(TrialScreenError)
    def _trialscreen_error(exc: TrialScreenError) -> Response:
        # Configuration and FHIR errors are handled where they happen; one reaching here is our fault.
        log.error("unhandled service error", extra={"error": type(exc).__name__})
        return operation_outcome(500, "internal error", code="exception")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = {413: "request body too large", 404: "no such endpoint",
                   405: "method not allowed"}.get(status, exc.name)
        response = operation_outcome(status, message)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        tb = exc.__traceback__
        where = None
        while tb is not None:
            where = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
            tb = tb.tb_next
        log.error("unexpected error", extra={"error": type(exc).__name__, "where": where})
        return operation_outcome(500, "internal error", code="exception")
