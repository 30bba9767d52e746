"""``GET /report/<token>``: the stored screening as a page, 404 when unknown or expired, strict headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from report_sample import PATIENT, sample_rules, sample_screening

from cds_service.config import Settings
from cds_service.hooks.report import STORE_KEY, create_report_link, init_reports, report_store_of
from cds_service.store import open_store


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return _Clock()


@pytest.fixture
def app(tmp_path, clock):
    settings = Settings(state_dir=tmp_path, report_ttl_hours=24)
    flask_app = Flask("test-report")
    store = init_reports(flask_app, settings, sample_rules(), store=open_store(settings, clock=clock))
    yield flask_app
    store.close()


def test_link_is_absolute_with_an_opaque_token(app):
    url = create_report_link(app, sample_screening(), "https://cds.example.org/")
    assert url.startswith("https://cds.example.org/report/")
    token = url.rsplit("/", 1)[1]
    assert len(token) == 32 and "ts-report" not in url and "0007" not in url


def test_report_page_shows_the_screening(app):
    url = create_report_link(app, sample_screening(), "http://localhost")
    resp = app.test_client().get(url.replace("http://localhost", ""))
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "Screening report: NCT06880354" in html and PATIENT in html
    assert "Link expires" in html and "2026-10-02 09:00 UTC" in html


def test_security_headers(app):
    url = create_report_link(app, sample_screening(), "")
    for path in (url, "/report/" + "x" * 32, "/report/"):
        resp = app.test_client().get(path)
        assert resp.headers["Cache-Control"] == "no-store"
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "style-src 'unsafe-inline'" in csp and "script-src" not in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("token", ["A" * 32, "short", "..%2F..%2Fetc", "a" * 100, "Patient-ts-report-0007"])
def test_unknown_token_is_404_page(app, token):
    resp = app.test_client().get(f"/report/{token}")
    assert resp.status_code == 404
    assert "Screening report not available" in resp.get_data(as_text=True)


def test_expired_token_is_404_and_purged_on_next_write(app, clock):
    url = create_report_link(app, sample_screening(), "")
    clock.now += timedelta(hours=24)
    assert app.test_client().get(url).status_code == 404
    create_report_link(app, sample_screening(), "")
    reports, ttl = report_store_of(app)
    assert ttl == timedelta(hours=24)
    assert reports.purge_expired() == 0  # already deleted by the write above


def test_link_from_store_objects(app):
    store = app.extensions[STORE_KEY]
    assert "/report/" in create_report_link(store, sample_screening(), "http://x")
    assert "/report/" in create_report_link(store.reports, sample_screening(), "http://x")
    with app.app_context():
        assert "/report/" in create_report_link(None, sample_screening(), "http://x")


def test_uninitialised_app_is_a_clear_error():
    with pytest.raises(RuntimeError, match="init_reports"):
        create_report_link(Flask("bare"), sample_screening(), "http://x")
