"""Fixtures for the CDS Hooks service tests: the app with its knowledge loaded once (helpers: hookhelp.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from builders import AT

from cds_service.config import Knowledge, Settings, load_knowledge
from cds_service.hooks.app import create_app


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge(Settings.from_env({}))


@pytest.fixture
def make_app(knowledge, tmp_path) -> Callable[..., Any]:
    """An app factory with test defaults (fixed clock, no auth, an allowlist for the local test servers, its
    SQLite store in the test's own temp folder, never in the working tree)."""

    def make(**overrides: Any):
        base = {"environ": {}, "knowledge": knowledge, "clock": lambda: AT, "auth_required": False,
                "fhir_allowlist": ("https://ehr.example.org/fhir",), "state_dir": tmp_path / "state"}
        base.update(overrides)
        return create_app(base)

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


