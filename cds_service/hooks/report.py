"""``GET /report/<token>``: the screening report page, and the links to it that cards carry.

The app factory calls :func:`init_reports` once (it opens the store, runs the migrations and registers the
blueprint); the patient-view service calls :func:`create_report_link` with the screening JSON and gets an
absolute URL with an opaque random token in it (never a patient id). Responses are never cached
(``Cache-Control: no-store``), send no referrer, cannot be framed by another page, and the page runs nothing:
``default-src 'none'`` with inline styles only. Lookups of unknown tokens are limited per client address (429
with ``Retry-After``, see ``cds_service.hooks.rate_limit``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from cds_service.cards.report import build_report, render_missing_html, render_report_html
from cds_service.config import Settings
from cds_service.errors import StoreUnavailable
from cds_service.facts.codes import CodeTables
from cds_service.hooks.rate_limit import REPORT_LOOKUPS_REFUSED, MissLimiter, client_address
from cds_service.rules import TrialRules
from cds_service.store import ReportStore, Store, StoreGate, open_store

__all__ = ["STORE_KEY", "SECURITY_HEADERS", "init_reports", "create_report_link", "report_blueprint", "report_saver",
           "report_store_of"]

STORE_KEY = "trialscreen.store"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # the shape of a report token (cds_service.store.reports)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    # frame-ancestors / X-Frame-Options: no other page may frame the report (clickjacking); the second for
    # browsers that predate CSP level 2.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}


def _page(html: str, status: int) -> Response:
    resp = Response(html, status=status, mimetype="text/html")
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _unavailable_page(trial_id: str) -> Response:
    title = html.escape(f"{trial_id} screening report" if trial_id else "Screening report")
    resp = _page(f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>"
                 f"<body><h1>{title}</h1><p>The report cannot be read right now (its database is unavailable). "
                 "Try again in a minute; the card in the chart still shows the screening.</p></body></html>", 503)
    resp.headers["Retry-After"] = str(StoreUnavailable.retry_after)
    return resp


def _too_many(retry_after: int) -> Response:
    REPORT_LOOKUPS_REFUSED.labels(page="report").inc()
    resp = Response("Too many requests for unknown screening reports from this address; try again later.\n",
                    status=429, mimetype="text/plain")
    resp.headers.update(SECURITY_HEADERS)
    resp.headers["Retry-After"] = str(retry_after)
    return resp


def report_blueprint(reports: ReportStore, rules: TrialRules, gate: StoreGate | None = None,
                     settings: Settings | None = None, tables: CodeTables | None = None) -> Blueprint:
    """A blueprint serving stored reports from ``reports``, labelled with ``rules``; reads go through ``gate``
    (a 503 page when the database does not answer in time); lookups of unknown tokens are limited per client
    address by ``settings`` (``report_rate_limit_*``, ``trusted_proxy_count``; see ``cds_service.hooks.rate_limit``)."""
    settings = settings or Settings()
    bp = Blueprint("report", __name__)
    gate = gate or StoreGate(1.0)
    limiter = MissLimiter(settings.report_rate_limit_misses, settings.report_rate_limit_window_seconds)

    def missing() -> Response:
        return _page(render_missing_html(rules.trial_id), 404)

    @bp.get("/report/<path:token>")  # any path below /report/ gets the same 404 page, not Flask's
    def show_report(token: str) -> Response:
        who = client_address(request.remote_addr, request.headers, settings.trusted_proxy_count)
        wait = limiter.retry_after(who)
        if wait is not None:  # refused before the lookup: a refused request tests no guess
            return _too_many(wait)
        def read() -> tuple[Any, Any]:
            found = reports.get(token)
            return found, (reports.expires_at(token) if found is not None else None)

        screening = expires = None
        # fullmatch: the store's own check lets a token followed by a newline through to the database
        if _TOKEN.fullmatch(token):
            try:
                screening, expires = gate.run("report read", read)
            except StoreUnavailable:
                return _unavailable_page(rules.trial_id)
        if screening is None:
            limiter.miss(who)
            return missing()
        view = build_report(screening, rules, expires_at=expires, tables=tables)
        return _page(render_report_html(view), 200)

    @bp.get("/report/")
    @bp.get("/report")
    def no_report() -> Response:
        return missing()

    return bp


def init_reports(app: Flask, settings: Settings, rules: TrialRules, store: Store | None = None,
                 tables: CodeTables | None = None) -> Store:
    """Open the store (migrating the schema), keep it on the app and register the report blueprint.

    Under ``trialscreen serve`` this runs once, in gunicorn's master: workers are forks of the built app, so a
    worker restarted while the database is down still boots and serves cards.
    """
    if store is None:
        store = open_store(settings)
    app.extensions[STORE_KEY] = store
    app.register_blueprint(report_blueprint(store.reports, rules, store.gate, settings, tables))
    return store


def report_saver(store: Store) -> Callable[[Any], str]:
    """A ``save_report`` callable for the service state: store a Screening (or its JSON) and return the token."""

    def save(screening: Any) -> str:
        """The new report's token; StoreUnavailable when it cannot be stored within the store timeout."""
        data = screening.to_json() if hasattr(screening, "to_json") else screening
        return store.gate.run("report save", lambda: store.reports.create(data, store.report_ttl))

    return save


def report_store_of(app_or_store: Flask | Store | ReportStore) -> tuple[ReportStore, timedelta]:
    """The report store and report lifetime behind an app (after :func:`init_reports`), a Store or a ReportStore."""
    if isinstance(app_or_store, ReportStore):
        return app_or_store, timedelta(hours=24)
    if isinstance(app_or_store, Store):
        return app_or_store.reports, app_or_store.report_ttl
    store = app_or_store.extensions.get(STORE_KEY)
    if not isinstance(store, Store):
        raise RuntimeError("the report store is not initialised: call init_reports(app, ...) in create_app")
    return store.reports, store.report_ttl


def create_report_link(app_or_store: Flask | Store | ReportStore | None, screening_json: Mapping[str, Any],
                       base_url: str) -> str:
    """Store ``screening_json`` and return the absolute URL of its report page (``<base_url>/report/<token>``).

    ``app_or_store`` may be the Flask app (or None inside a request: the current app), a ``Store`` or a
    ``ReportStore``. ``base_url`` is the service's public base URL (``settings.public_url`` or the request's
    host URL); the token in the link is random and carries no patient data.
    """
    target: Any = app_or_store if app_or_store is not None else current_app._get_current_object()
    reports, ttl = report_store_of(target)
    token = reports.create(screening_json, ttl)
    return f"{base_url.rstrip('/')}/report/{token}"
