"""Integration-test fixtures: one real local FHIR R4 server (sekmet-fhir) per test session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ has no __init__.py: make tests/fhir_server.py importable however pytest is invoked
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fhir_server import PIP_REQUIREMENT, LocalFhirServer, server_installed  # noqa: E402


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[LocalFhirServer]:
    """A started LocalFhirServer shared by the whole session; stopped (and its temp dir removed) at the end.

    Skips only when the server package is not installed. Under CI (``CI`` set to a true value) a missing
    package is an error instead, so integration tests can never be skipped silently there.
    """
    if not server_installed():
        msg = f"FHIR server package not installed: pip install {PIP_REQUIREMENT}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{msg} (CI must run the integration tests)")
        pytest.skip(msg)
    server = LocalFhirServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
