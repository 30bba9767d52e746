"""The service uses the configured database: the report page works the same on SQLite and PostgreSQL."""

from __future__ import annotations

from report_sample import sample_screening
from sqlalchemy import text

from cds_service.hooks.app import create_app
from cds_service.hooks.report import STORE_KEY, create_report_link


def test_report_page_through_the_app_on_each_backend(backend):
    settings = backend()
    overrides = {"state_dir": settings.state_dir, "auth_required": False}
    if settings.database_url:
        overrides["database_url"] = settings.database_url
    app = create_app(overrides)
    store = app.extensions[STORE_KEY]
    try:
        assert store.engine.dialect.name == ("postgresql" if settings.database_url else "sqlite")
        url = create_report_link(app, sample_screening(), "http://cds.test")
        resp = app.test_client().get(url.removeprefix("http://cds.test"))
        assert resp.status_code == 200 and resp.get_data(as_text=True).count('class="item"') == 46
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM screening_report")).scalar_one() == 1
    finally:
        store.close()
