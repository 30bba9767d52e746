"""``GET /report/<token>``: the screening report page, and the links to it that cards carry.

The app factory calls :func:`init_reports` once (it opens the store, runs the migrations and registers the
blueprint); the patient-view service calls :func:`create_report_link` with the screening JSON and gets an
absolute URL with an opaque random token in it (never a patient id). Responses are never cached
(``Cache-Control: no-store``), send no referrer, and the page runs nothing: ``default-src 'none'`` with
inline styles only.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from cds_service.cards.report import build_report, render_missing_html, render_report_html
from cds_service.config import Settings
from cds_service.errors import StoreUnavailable
from cds_service.rules import TrialRules
from cds_service.store import ReportStore, Store, StoreGate, open_store

__all__ = ["STORE_KEY", "SECURITY_HEADERS", "init_reports", "create_report_link", "report_blueprint", "report_saver",
           "report_store_of"]

STORE_KEY = "trialscreen.store"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
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


def report_blueprint(reports: ReportStore, rules: TrialRules, gate: StoreGate | None = None) -> Blueprint:
    """A blueprint serving stored reports from ``reports``, labelled with ``rules``; reads go through ``gate``
    (a 503 page when the database does not answer in time)."""
    bp = Blueprint("report", __name__)
    gate = gate or StoreGate(1.0)

    @bp.get("/report/<path:token>")  # any path below /report/ gets the same 404 page, not Flask's
    def show_report(token: str) -> Response:
        try:
            screening, expires = gate.run("report read", lambda: (reports.get(token), reports.expires_at(token)))
        except StoreUnavailable:
            return _unavailable_page(rules.trial_id)
        if screening is None:
            return _page(render_missing_html(rules.trial_id), 404)
        view = build_report(screening, rules, expires_at=expires)
        return _page(render_report_html(view), 200)

    @bp.get("/report/")
    @bp.get("/report")
    def no_report() -> Response:
        return _page(render_missing_html(rules.trial_id), 404)

    return bp


def init_reports(app: Flask, settings: Settings, rules: TrialRules, store: Store | None = None) -> Store:
    """Open the store (migrating the schema), keep it on the app and register the report blueprint.

    Under ``trialscreen serve`` this runs once, in gunicorn's master: workers are forks of the built app, so a
    worker restarted while the database is down still boots and serves cards.
    """
    if store is None:
        store = open_store(settings)
    app.extensions[STORE_KEY] = store
    app.register_blueprint(report_blueprint(store.reports, rules, store.gate))
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
