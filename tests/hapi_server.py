"""A real HAPI FHIR JPA server (R4, H2 in memory) as a test process: build, start, load, stop.

The server is the project's own small Maven module ``tests/hapi`` (HAPI FHIR's JPA server modules from Maven
Central, Jetty, H2); ``scripts/build_hapi.sh`` builds it once per source hash into
``~/.cache/trialscreen-hapi/<hash>/`` (jar + class path into ``~/.m2``). One process serves two bases over one
database:

* ``/fhir``: open (what the integration tests and the walkthrough use);
* ``/secure/fhir``: every request but ``/metadata`` needs ``Authorization: Bearer <token>``, else HAPI's own
  401 with an OperationOutcome and ``WWW-Authenticate``.

:class:`HapiServer` has the same surface as ``fhir_server.LocalFhirServer`` (``base_url``, ``load_bundle``,
``analyze``, ``log_tail``, ``start``/``stop``), so the ``fhir_server`` fixture runs every integration test on
both servers. Start: port 0 (the JVM binds any free port and prints it: no race for a port), then poll
``/fhir/metadata`` until a deadline. Stop: SIGTERM to its process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from fhir_server import FHIR_JSON, FhirServerError, _die_with_parent, _outcome_text, _posts_to_puts

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build_hapi.sh"
DEFAULT_TOKEN = "trialscreen-test-token"
_READY_RE = re.compile(r"TRIALSCREEN-HAPI READY http://[0-9.]+:(\d+)/fhir .* HAPI (\S+) in ([0-9.]+)s")


class HapiUnavailable(RuntimeError):
    """Java or Maven is missing, or the build failed: the HAPI tests cannot run on this machine."""


def tools_missing() -> list[str]:
    """The commands the build needs and this machine lacks (empty when it can build)."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def build(timeout: float = 1800.0) -> Path:
    """Build (or find cached) the HAPI test server; return its cache directory (jar, classpath.txt, version)."""
    missing = tools_missing()
    if missing:
        raise HapiUnavailable(f"cannot build the HAPI test server: {', '.join(missing)} not found "
                              "(apt-get install openjdk-17-jdk-headless maven)")
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise HapiUnavailable(f"scripts/build_hapi.sh took more than {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise HapiUnavailable(f"scripts/build_hapi.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    out = Path(done.stdout.strip().splitlines()[-1])
    if not (out / "trialscreen-hapi.jar").is_file():
        raise HapiUnavailable(f"scripts/build_hapi.sh printed {out}, which holds no trialscreen-hapi.jar")
    return out


class HapiServer:
    """One HAPI FHIR JPA server process, empty at start (H2 in memory), on 127.0.0.1."""

    def __init__(self, *, build_dir: Path | None = None, startup_timeout: float = 600.0,
                 stop_timeout: float = 20.0, heap: str = "768m", token: str = DEFAULT_TOKEN,
                 max_page_size: int | None = None) -> None:
        """
        :param build_dir: a cache directory from :func:`build` (default: build or find it at start).
        :param startup_timeout: seconds until ``/fhir/metadata`` must answer (a loaded 2-core machine took 86 s).
        :param heap: the JVM's ``-Xmx``.
        :param token: the bearer token ``/secure/fhir`` accepts.
        :param max_page_size: the largest ``_count`` the server honours (default: HAPI's own, 50).
        """
        self.build_dir = build_dir
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.heap = heap
        self.token = token
        self.max_page_size = max_page_size
        self.port: int | None = None
        self.version: str | None = None
        self.start_seconds: float | None = None  # from process start to /metadata answering
        self.peak_rss_mib: float | None = None  # the JVM's VmHWM, read just before it is stopped
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._http = requests.Session()

    @classmethod
    def attach(cls, base_url: str, token: str = DEFAULT_TOKEN) -> HapiServer:
        """A handle on a HAPI test server already running (``make hapi``): :meth:`stop` leaves it running."""
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/fhir/?", base_url)
        if not found:
            raise ValueError(f"expected http://127.0.0.1:<port>/fhir, not {base_url!r}")
        server = cls(token=token)
        server.port = int(found.group(1))
        meta = requests.get(f"{server.base_url}/metadata", headers={"Accept": FHIR_JSON}, timeout=30).json()
        server.version = meta.get("software", {}).get("version")
        server.start_seconds = 0.0
        return server

    @property
    def base_url(self) -> str:
        """The open FHIR base, ``http://127.0.0.1:<port>/fhir``."""
        if self.port is None:
            raise FhirServerError("HAPI server not started")
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def secure_base_url(self) -> str:
        """The bearer-protected FHIR base over the same data, ``http://127.0.0.1:<port>/secure/fhir``."""
        if self.port is None:
            raise FhirServerError("HAPI server not started")
        return f"http://127.0.0.1:{self.port}/secure/fhir"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise FhirServerError("HAPI server not started")
        return self.workdir / "hapi.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> HapiServer:
        """Start the JVM and wait until ``/fhir/metadata`` answers an R4 CapabilityStatement."""
        if self.running:
            raise FhirServerError("HAPI server already running")
        if self.build_dir is None:
            self.build_dir = build()
        classpath = (self.build_dir / "classpath.txt").read_text().strip()
        self.workdir = Path(tempfile.mkdtemp(prefix="trialscreen-hapi-"))
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        cmd = [
            "java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", f"-Djava.io.tmpdir={self.workdir}",
            "-Dtrialscreen.hapi.port=0", "-Dtrialscreen.hapi.host=127.0.0.1",
            f"-Dtrialscreen.hapi.token={self.token}",
            *([f"-Dtrialscreen.hapi.maxPageSize={self.max_page_size}"] if self.max_page_size else []),
            "-cp", f"{self.build_dir / 'trialscreen-hapi.jar'}:{classpath}", "org.trialscreen.hapi.HapiTestServer",
        ]
        started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise FhirServerError(f"HAPI exited with {self._proc.returncode} during start-up.\n"
                                      f"--- log tail ---\n{self.log_tail()}")
            if self.port is None:
                found = _READY_RE.search(self.log_path.read_text(errors="replace"))
                if found:
                    self.port, self.version = int(found.group(1)), found.group(2)
            if self.port is not None:
                try:
                    resp = self._http.get(f"{self.base_url}/metadata", timeout=10,
                                          headers={"Accept": FHIR_JSON})
                    if resp.status_code == 200 and resp.json().get("fhirVersion", "").startswith("4.0"):
                        self.start_seconds = time.monotonic() - started
                        return
                except (requests.RequestException, ValueError):
                    pass  # Jetty bound, HAPI not serving yet
            time.sleep(0.5)
        raise FhirServerError(f"HAPI not ready after {self.startup_timeout:.0f}s.\n--- log tail ---\n"
                              f"{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after ``stop_timeout``; remove the temporary directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self.peak_rss_mib = _peak_rss_mib(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._http.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> HapiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, FhirServerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def load_bundle(self, bundle: dict[str, Any], *, keep_ids: bool = False,
                    timeout: float = 600.0) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle to ``/fhir``; same contract as ``LocalFhirServer.load_bundle``.

        HAPI resolves ``urn:uuid:`` references and conditional references (``Practitioner?identifier=...``,
        which Synthea writes) inside the transaction; a conditional reference that matches nothing fails the
        whole transaction (load hospital and practitioner bundles first).
        """
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise ValueError("load_bundle expects a Bundle resource (dict)")
        if bundle.get("type") not in ("transaction", "batch"):
            raise ValueError(f"load_bundle expects a transaction or batch Bundle, not {bundle.get('type')!r}")
        if keep_ids:
            bundle = _posts_to_puts(bundle)
        resp = self._http.post(self.base_url, data=json.dumps(bundle, separators=(",", ":")),
                               headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, timeout=timeout)
        if resp.status_code != 200:
            raise FhirServerError(f"Bundle POST failed: HTTP {resp.status_code}: {_outcome_text(resp)}")
        out: dict[str, Any] = resp.json()
        failed = [e["response"] for e in out.get("entry", [])
                  if not str(e.get("response", {}).get("status", "")).startswith(("200", "201"))]
        if failed:
            raise FhirServerError(f"{len(failed)} bundle entries failed, first: {json.dumps(failed[0])[:2000]}")
        return out

    def analyze(self) -> None:
        """Nothing to do: HAPI indexes every resource in the write's own transaction (sekmet needs ANALYZE)."""


def _peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (``VmHWM``) in MiB, or None when /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    """By hand: ``python tests/hapi_server.py [bundle.json ...]``: build, start on a free port, load, serve."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the HAPI FHIR test server on 127.0.0.1 (a free port).")
    parser.add_argument("bundles", nargs="*", type=Path, help="transaction Bundle JSON files to load, in order")
    parser.add_argument("--keep-ids", action="store_true", help="load urn:uuid POST entries as PUT Type/uuid")
    args = parser.parse_args(argv)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    server = HapiServer()
    server.start()
    try:
        for path in args.bundles:
            server.load_bundle(json.loads(path.read_text()), keep_ids=args.keep_ids)
            print(f"loaded {path}", flush=True)
        print(f"HAPI {server.version} FHIR R4 base: {server.base_url} (secure: {server.secure_base_url}, "
              f"started in {server.start_seconds:.1f}s; Ctrl-C stops)", flush=True)
        while server.running:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
