"""Integration-test fixtures: the real local FHIR R4 servers, each started once per test session.

``fhir_server`` is parametrized over the two servers: ``sekmet`` (sekmet-fhir, a pure-Python server from PyPI)
and ``hapi`` (a HAPI FHIR JPA server built from Maven Central, ``tests/hapi_server.py``). Every test that takes
``fhir_server`` runs on both; pytest groups the tests by server, so each one starts only once.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# tests/ has no __init__.py: make tests/fhir_server.py importable however pytest is invoked
_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from fhir_server import PIP_REQUIREMENT, LocalFhirServer, server_installed  # noqa: E402
from hapi_server import HapiServer, HapiUnavailable, build  # noqa: E402


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(msg: str) -> None:
    """Skip, except under CI, where a server that cannot run is a failure (never a silent skip)."""
    if _in_ci():
        pytest.fail(f"{msg} (CI must run the integration tests on every server)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def sekmet_server() -> Iterator[LocalFhirServer]:
    """A started sekmet-fhir server shared by the whole session; stopped (and its temp dir removed) at the end."""
    if not server_installed():
        _unavailable(f"FHIR server package not installed: pip install {PIP_REQUIREMENT}")
    server = LocalFhirServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hapi_server(request: pytest.FixtureRequest) -> Iterator[HapiServer]:
    """A started HAPI FHIR JPA server shared by the whole session (built first if the cache lacks it).

    ``TRIALSCREEN_HAPI=0`` skips the HAPI tests on a developer machine (not under CI);
    ``TRIALSCREEN_HAPI_BASE=http://127.0.0.1:8091/fhir`` uses a HAPI test server already running (``make hapi``).
    """
    if os.environ.get("TRIALSCREEN_HAPI", "") == "0":
        _unavailable("HAPI tests turned off (TRIALSCREEN_HAPI=0)")
    if os.environ.get("TRIALSCREEN_HAPI_BASE"):
        yield HapiServer.attach(os.environ["TRIALSCREEN_HAPI_BASE"])
        return
    try:
        build_dir = build()
    except HapiUnavailable as exc:
        _unavailable(str(exc))
    server = HapiServer(build_dir=build_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        _report(request, f"HAPI FHIR {server.version}: started in {server.start_seconds:.1f}s, "
                         f"peak RSS {server.peak_rss_mib or 0:.0f} MiB (-Xmx{server.heap})")


_FIGURES: list[str] = []  # printed in the terminal summary (a fixture's teardown output is captured)


def _report(request: pytest.FixtureRequest, line: str) -> None:
    _FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _FIGURES:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session", params=["sekmet", "hapi"])
def fhir_server(request: pytest.FixtureRequest) -> Any:
    """The FHIR server a test runs against: each test that uses it runs once per server."""
    return request.getfixturevalue(f"{request.param}_server")


@dataclass(frozen=True)
class BulkExportData:
    """Data on the HAPI server for bulk export tests: the fixture patients under ``prefix``, in one Group."""

    server: HapiServer
    prefix: str
    group_id: str
    patient_ids: tuple[str, ...]
    counts: dict[str, int]  # resources per type, the Patients included (not the Group)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def group_export_url(self) -> str:
        """``[base]/Group/<id>/$export``: the kick-off URL that exports exactly these patients' data."""
        return f"{self.server.base_url}/Group/{self.group_id}/$export"


@pytest.fixture(scope="session")
def hapi_bulk_export(hapi_server: HapiServer) -> BulkExportData:
    """The fixture patients on HAPI under a prefix of their own, and a Group of them (``Group/<prefix>group``).

    The server is shared with every other HAPI test, so a test exports this Group (or filters by the prefix),
    never the whole system. HAPI's bulk export (batch2) is on; its maintenance pass runs every second.
    """
    from cds_service.hooks.demo_data import load_fixture_patients, transaction_for

    prefix = f"bx{uuid.uuid4().hex[:6]}-"
    patients = load_fixture_patients()
    counts: Counter[str] = Counter()
    for p in patients:
        bundle = transaction_for(p, prefix)
        hapi_server.load_bundle(bundle)
        counts.update(e["resource"]["resourceType"] for e in bundle["entry"])
    ids = tuple(prefix + p.patient_id for p in patients)
    group_id = f"{prefix}group"
    hapi_server.load_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Group", "id": group_id, "type": "person", "actual": True,
                     "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in ids]},
        "request": {"method": "PUT", "url": f"Group/{group_id}"}}]})
    return BulkExportData(hapi_server, prefix, group_id, ids, dict(counts))
