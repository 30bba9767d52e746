"""A real FHIR R4 server process on 127.0.0.1 for TrialScreen's integration tests.

Chosen server: ``sekmet-fhir`` **0.1.1** from PyPI (pin it exactly: ``pip install sekmet-fhir==0.1.1``).

Why this one:

* It is a pure-Python FHIR R4 (4.0.1) server (FastAPI + uvicorn) storing resources in one SQLite file, so
  it installs from PyPI alone - no JVM, no Docker, no database service, nothing fetched at run time - and
  starts in a few seconds on a 2-core CI machine.
* Its search covers everything TrialScreen reads: ``Patient/{id}``; ``?patient=`` on Condition, Observation,
  MedicationStatement, MedicationRequest, MedicationAdministration, Procedure, Immunization and
  AllergyIntolerance; token lists with ``system|code`` (``code=a,b,c``); date prefixes (``ge``/``le``/...);
  ``_sort`` (incl. ``-date``); ``_count``; paging through ``Bundle.link`` ``next`` (``_offset`` based).
* It processes ``transaction`` Bundles atomically (all-or-nothing, rollback on any failed entry), keeps
  client ids on ``PUT Type/id`` entries, and resolves ``urn:uuid:`` ``fullUrl`` references of ``POST`` entries
  (the way Synthea bundles are written) by giving each such entry a new server id and rewriting every
  reference to it. So :meth:`LocalFhirServer.load_bundle` needs no per-entry fallback.
* The alternative (Medplum's ``@medplum/fhir-router`` from npm) needs an HTTP wrapper written by us and does
  not page by itself.

How it is run here (see :meth:`LocalFhirServer.start`): a fresh temporary working directory holding its own
``settings.yaml`` and SQLite database (never shared state), the simulator (which reacts to MedicationRequest,
ServiceRequest, ... writes by creating resources of its own) and the inbound traffic log turned off, bound to
127.0.0.1 on a free port, readiness polled on ``/fhir/metadata``.

Quirks worth knowing (details in tests/integration/FHIR_SERVER.md):

* It does not start empty: it seeds 6 ``Basic`` resources (SubscriptionTopic definitions) at first start.
* ``POST`` entries always get a new random id (a Synthea Patient's id is not its urn:uuid); loading the same
  Synthea bundle twice creates a second copy. ``load_bundle(..., keep_ids=True)`` rewrites
  ``POST Type`` + ``urn:uuid:X`` entries to ``PUT Type/X`` so ids are kept and loading is idempotent.
* Unknown search parameters are ignored (with an OperationOutcome entry, ``search.mode = outcome``, in the
  searchset) unless the request carries ``Prefer: handling=strict``, which turns them into a 400.
* Inbound resources are checked structurally against the fhir.resources **R4B** models; with the default
  ``validation="strict"`` an invalid resource is rejected with 400 (all shared Synthea records pass).
* ``_sort`` is done with correlated sub-queries on the index table: after bulk loading run :meth:`analyze`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

SERVER_DISTRIBUTION = "sekmet-fhir"
SERVER_VERSION = "0.1.1"
PIP_REQUIREMENT = f"{SERVER_DISTRIBUTION}=={SERVER_VERSION}"
FHIR_JSON = "application/fhir+json"
_HOST = "127.0.0.1"  # loopback only, always
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id, as the server checks it


class FhirServerError(RuntimeError):
    """The local FHIR server failed to start, or refused a request made through the harness."""


def server_installed() -> bool:
    """True when the ``sekmet-fhir`` distribution is installed and its ``sekmet`` package importable."""
    try:
        importlib.metadata.version(SERVER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("sekmet") is not None


def installed_version() -> str | None:
    """Installed ``sekmet-fhir`` version, or None when it is not installed."""
    try:
        return importlib.metadata.version(SERVER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def _die_with_parent() -> None:
    """preexec_fn: on Linux, SIGTERM the server when its starter dies, so no orphan outlives a killed run.

    (The kernel ties this to the starting *thread*: start the server from a thread that outlives it.)
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


def _outcome_text(resp: requests.Response) -> str:
    """Short description of an error response (OperationOutcome diagnostics when there is one)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:2000]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in body.get("issue", []))[:4000]
    return json.dumps(body)[:2000]


class LocalFhirServer:
    """One ``sekmet-fhir`` process with its own temporary directory, settings file and SQLite database.

    Usage::

        server = LocalFhirServer()
        server.start()
        try:
            server.load_bundle(bundle)
            server.analyze()
            requests.get(f"{server.base_url}/Patient/ts-harness-1")
        finally:
            server.stop()

    It is also a context manager (``with LocalFhirServer() as server: ...``).
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        validation: str = "strict",
        python: str | None = None,
        keep_workdir: bool = False,
        port: int | None = None,
    ) -> None:
        """
        :param startup_timeout: seconds to wait for ``/fhir/metadata`` to answer 200.
        :param stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        :param validation: inbound structural validation: ``strict`` (400 on invalid resources), ``warn``
            (accept, note issues) or ``off``.
        :param python: interpreter that runs the server (default: the current one, which must have
            ``sekmet-fhir`` installed).
        :param keep_workdir: keep the temporary directory (settings, database, log) after :meth:`stop`.
        :param port: fixed loopback port (default: a free one, picked at start).
        """
        if validation not in ("strict", "warn", "off"):
            raise ValueError("validation must be 'strict', 'warn' or 'off'")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.validation = validation
        self.python = python or sys.executable
        self.keep_workdir = keep_workdir
        self.fixed_port = port
        self.workdir: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._http = requests.Session()

    # ------------------------------------------------------------------ properties

    @property
    def base_url(self) -> str:
        """FHIR R4 base URL, e.g. ``http://127.0.0.1:41234/fhir`` (no trailing slash)."""
        if self.port is None:
            raise FhirServerError("server not started")
        return f"http://{_HOST}:{self.port}/fhir"

    @property
    def db_path(self) -> Path:
        """The server's SQLite database file."""
        if self.workdir is None:
            raise FhirServerError("server not started")
        return self.workdir / "data" / "sekmet.db"

    @property
    def log_path(self) -> Path:
        """The server's combined stdout/stderr log."""
        if self.workdir is None:
            raise FhirServerError("server not started")
        return self.workdir / "server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalFhirServer:
        """Create a fresh working dir, start the server on a free loopback port and wait until it answers.

        Raises :class:`FhirServerError` (with the tail of the server log) when it does not come up within
        ``startup_timeout`` seconds. Returns ``self``.
        """
        if self.running:
            raise FhirServerError("server already running")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="trialscreen-fhir-"))
        self._http = requests.Session()
        last_error: FhirServerError | None = None
        for _attempt in range(1 if self.fixed_port else 3):  # a free port can be taken before the server binds
            self.port = self.fixed_port or _free_port()
            self._write_settings()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except FhirServerError as e:
                last_error = e
                addr_in_use = "address already in use" in self.log_tail().lower()
                self._terminate()
                if not addr_in_use:
                    break
        self._cleanup_workdir()
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``stop_timeout``) and remove its working dir."""
        self._terminate()
        self._http.close()
        self._cleanup_workdir()

    def __enter__(self) -> LocalFhirServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_settings(self) -> None:
        assert self.workdir is not None and self.port is not None
        data_dir = self.workdir / "data"
        data_dir.mkdir(exist_ok=True)
        settings = {
            "base_url": self.base_url,
            "public_url": f"http://{_HOST}:{self.port}",
            "host": _HOST,
            "port": self.port,
            "data_dir": str(data_dir),
            "db_path": str(self.db_path),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet_private.pem"),
            "log_inbound": False,  # no request/response body log in the database
            "simulator": {"enabled": False},  # no filler resources appearing after our writes
            "server_auth": {"types": ["none"]},
            "validation": {"inbound": self.validation, "validator_jar": None},
            "peers": {},
        }
        # JSON is valid YAML, and needs no YAML writer here
        (self.workdir / "settings.yaml").write_text(json.dumps(settings, indent=2) + "\n")

    def _spawn(self) -> None:
        assert self.workdir is not None and self.port is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            self.python, "-m", "sekmet.cli", "serve",
            "--config", str(self.workdir / "settings.yaml"),
            "--host", _HOST, "--port", str(self.port),
        ]
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")  # closed in _terminate
        self._proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/metadata"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise FhirServerError(
                    f"FHIR server exited with code {code} during startup.\n--- server log tail ---\n"
                    f"{self.log_tail()}")
            try:
                resp = self._http.get(url, timeout=2)
                if resp.status_code == 200 and resp.json().get("fhirVersion", "").startswith("4.0"):
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError):
                pass
            time.sleep(0.2)
        raise FhirServerError(
            f"FHIR server not ready on {url} after {self.startup_timeout:.0f}s.\n--- server log tail ---\n"
            f"{self.log_tail()}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _cleanup_workdir(self) -> None:
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log ('' when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, FhirServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ data

    def load_bundle(
        self, bundle: dict[str, Any], *, keep_ids: bool = False, timeout: float = 300.0
    ) -> dict[str, Any]:
        """POST a ``transaction`` (or ``batch``) Bundle to the base URL and return the response Bundle.

        The server does transactions itself: ``PUT Type/id`` entries keep their ids and ``urn:uuid:``
        references to ``POST`` entries are resolved server-side (new random ids). With ``keep_ids=True``
        every ``POST Type`` entry whose fullUrl is ``urn:uuid:X`` (and X a valid FHIR id) is sent as
        ``PUT Type/X`` instead, so Synthea records keep their ids and reloading them is idempotent.

        Raises :class:`FhirServerError` with the OperationOutcome text when the server refuses it (a
        transaction is then rolled back whole), and also when any entry of a ``batch`` failed.
        """
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise ValueError("load_bundle expects a Bundle resource (dict)")
        if bundle.get("type") not in ("transaction", "batch"):
            raise ValueError(f"load_bundle expects a transaction or batch Bundle, not {bundle.get('type')!r}")
        if keep_ids:
            bundle = _posts_to_puts(bundle)
        resp = self._http.post(
            self.base_url, data=json.dumps(bundle, separators=(",", ":")),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, timeout=timeout)
        if resp.status_code != 200:
            raise FhirServerError(f"Bundle POST failed: HTTP {resp.status_code}: {_outcome_text(resp)}")
        out: dict[str, Any] = resp.json()
        failed = [e["response"] for e in out.get("entry", [])
                  if not str(e.get("response", {}).get("status", "")).startswith(("200", "201"))]
        if failed:
            first = json.dumps(failed[0])[:2000]
            raise FhirServerError(f"{len(failed)} bundle entries failed, first: {first}")
        return out

    def analyze(self) -> None:
        """Run SQLite ``ANALYZE`` on the server's database (do it after bulk loading; ``_sort`` needs it).

        The server keeps one connection open; creating and dropping a scratch table changes the schema
        cookie so that connection reloads the schema and, with it, the fresh statistics.
        """
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            conn.execute("ANALYZE")
            conn.execute("CREATE TABLE IF NOT EXISTS trialscreen_stats_reload (x INTEGER)")
            conn.execute("DROP TABLE trialscreen_stats_reload")
        finally:
            conn.close()


def _posts_to_puts(bundle: dict[str, Any]) -> dict[str, Any]:
    """Copy of a transaction bundle with ``POST Type`` + ``urn:uuid:X`` entries turned into ``PUT Type/X``."""
    entries = []
    for entry in bundle.get("entry", []) or []:
        req = entry.get("request") or {}
        full = entry.get("fullUrl") or ""
        res = entry.get("resource") or {}
        rid = full[len("urn:uuid:"):] if full.startswith("urn:uuid:") else ""
        rtype = str(req.get("url", "")).strip("/")
        if (str(req.get("method", "")).upper() == "POST" and rid and _ID_RE.match(rid)
                and rtype == res.get("resourceType") and not req.get("ifNoneExist")):
            entry = {**entry, "resource": {**res, "id": rid},
                     "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
        entries.append(entry)
    return {**bundle, "entry": entries}


def main(argv: list[str] | None = None) -> int:
    """By hand: ``python tests/fhir_server.py [--port N] [bundle.json ...]`` - start, load, serve until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the test FHIR R4 server (sekmet-fhir) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    parser.add_argument("bundles", nargs="*", type=Path, help="transaction Bundle JSON files to load, in order")
    parser.add_argument("--keep-ids", action="store_true", help="load urn:uuid POST entries as PUT Type/uuid")
    args = parser.parse_args(argv)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, not only Ctrl-C
    server = LocalFhirServer(port=args.port, keep_workdir=False)
    server.start()
    try:
        for path in args.bundles:
            t0 = time.perf_counter()
            server.load_bundle(json.loads(path.read_text()), keep_ids=args.keep_ids)
            print(f"loaded {path} in {time.perf_counter() - t0:.2f}s", flush=True)
        if args.bundles:
            server.analyze()
        print(f"FHIR R4 base: {server.base_url}   (web console: {server.base_url[:-5]}/ui; Ctrl-C stops)",
              flush=True)
        while server.running:
            time.sleep(0.5)
        print(f"server exited:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
