"""Every command the README and docs/ tell a person to run is run here exactly as written (from the checkout,
against local servers on the ports the docs name), or is listed below with the reason it cannot be.

Commands are the lines of fenced and indented code blocks that start a program (``.venv/bin/...``, ``make``,
``curl``, ``export``, ``docker``), with ``\\`` continuations joined and trailing ``# comments`` dropped. A new
command in the docs fails ``test_every_documented_command_is_run_or_excused`` until it is run or excused.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import stop_process_group, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
COMMAND = re.compile(r"^(\.venv/bin/|make |curl |export |docker |TRIALSCREEN_\w+=\S+ \.venv/bin/)")
VENV = ROOT / ".venv" / "bin"

# Documented commands that are not run here, by prefix, and why.
EXCUSED = {
    ".venv/bin/trialscreen fixtures upload --fhir-server https://hapi.fhir.org": "the public HAPI sandbox is on "
    "the internet, which tests do not reach; the same command against the local server is run",
    "export TRIALSCREEN_FHIR_ALLOWLIST=https://hapi.fhir.org": "names the public sandbox; its documented "
    "alternative, the local server, is the one run",
    "docker ": "this machine has no container engine running (the Dockerfile is read by tests/packaging)",
    "make test": "is what .ci/run runs",
    "make bench": "the benchmarks (bench/README.md) are run by hand, not in CI",
    ".venv/bin/python bench/": "the benchmarks (bench/README.md) are run by hand, not in CI",
    "make setup": "run by every other make target (make demo here, make test in .ci/run)",
    ".venv/bin/trialscreen export --fhir-server https://ehr.example.org": "names an EHR's server; the same export "
    "(kick-off, polling, download, resume, --screen) runs against a local $export server process in "
    "tests/integration/test_bulk_export_server.py",
    ".venv/bin/pip install -e '.[spark]'": ".ci/run installs the extra before make test",
    ".venv/bin/python -m cds_service.spark_job": "tests/test_spark_job.py runs the job in local[2] on the same kind "
    "of export (one Spark start costs about a minute)",
}


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every command line in a code block of the docs."""
    out = []
    for doc in DOCS:
        fenced = False
        pending = ""
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            code = line if fenced else (line[4:] if line.startswith("    ") else None)
            if code is None:
                continue
            code = (pending + " " + code.strip()) if pending else code.strip()
            if code.endswith("\\"):
                pending = code[:-1].rstrip()
                continue
            if pending or COMMAND.match(code):
                try:
                    shlex.split(code)
                except ValueError:  # a quoted argument goes on on the next line, as the shell reads it
                    pending = code
                    continue
            pending = ""
            if COMMAND.match(code):
                out.append((doc.relative_to(ROOT).as_posix(), re.sub(r"\s+#\s.*$", "", code).strip()))
    return out


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module", autouse=True)
def _needs_the_checkout_venv_and_ports():
    if not (VENV / "trialscreen").exists():
        pytest.skip("the docs' commands use the checkout's .venv (make setup)")
    busy = [p for p in (8080, 8090, 8091) if not _port_free(p)]
    if busy:
        why = f"the docs' ports {busy} are in use on this machine"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALSCREEN_")}
    env.update(extra)
    return env


def _exports(commands: list[tuple[str, str]], doc: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of one doc, as an environment (documented alternatives picked by caller)."""
    out = {}
    for file, command in commands:
        if file == doc and command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            out[name] = value
    return out


def _run(command: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def commands() -> list[tuple[str, str]]:
    return documented_commands()


RUN: set[str] = set()  # filled by the tests below with each command they ran as written


def _ran(commands: list[tuple[str, str]], command: str) -> str:
    assert any(c == command for _, c in commands), f"no longer documented as written: {command!r}"
    RUN.add(command)
    return command


def test_readme_screen_commands(commands):
    for command in (".venv/bin/trialscreen screen fixtures/ --at 2026-10-01T09:00:00Z",
                    ".venv/bin/trialscreen screen fixtures/ --at 2026-10-01T09:00:00Z --format json",
                    ".venv/bin/trialscreen screen fixtures/01-candidate-relapsed-aml.json "
                    "fixtures/07-ineligible-apl.json --at 2026-12-03T09:00:00Z"):
        done = _run(_ran(commands, command), _env())
        assert done.returncode == 0 and done.stdout.strip(), done.stderr[-1500:]


def test_population_commands(commands):
    """README's and docs/population.md's Bulk export, CSV worklist and HTML worklist, in that order."""
    for command in (".venv/bin/python scripts/bundles_to_bulk.py /tmp/bulk-export",
                    ".venv/bin/trialscreen screen /tmp/bulk-export --at 2026-10-01T09:00:00Z --format csv"):
        done = _run(_ran(commands, command), _env())
        assert done.returncode == 0 and done.stdout.strip(), done.stderr[-1500:]
    assert done.stdout.startswith("patient,name,status,blocking,to_check,eligible_from\n")
    html = (".venv/bin/trialscreen screen /tmp/bulk-export --at 2026-10-01T09:00:00Z --format html "
            "--out /tmp/worklist --jobs 2")
    done = _run(_ran(commands, html), _env())
    assert done.returncode == 0 and Path("/tmp/worklist/index.html").is_file(), done.stderr[-1500:]


def test_readme_demo_without_serving(commands):
    done = _run(_ran(commands, ".venv/bin/trialscreen demo --no-serve"), _env())
    assert done.returncode == 0 and "patients replayed" in done.stdout, done.stderr[-1500:]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in reversed(procs):
        stop_process_group(proc)


def _start(command: str, env: dict[str, str], procs: list[subprocess.Popen]) -> subprocess.Popen:
    proc = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(proc)
    return proc


def test_make_demo_serves_on_8080_until_stopped(commands, started):
    proc = _start(_ran(commands, "make demo"), _env(), started)
    resp = wait_until_answering("http://127.0.0.1:8080/cds-services", proc)
    assert resp.json()["services"][0]["id"] == "trialscreen-nct06880354"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def test_walkthrough_local_server_upload_serve_and_curl(commands, started):
    walk = "docs/walkthrough.md"
    fhir = _start(_ran(commands, ".venv/bin/python tests/fhir_server.py --port 8090"), _env(), started)
    wait_until_answering("http://127.0.0.1:8090/fhir/metadata", fhir)
    upload = _run(_ran(commands, ".venv/bin/trialscreen fixtures upload --fhir-server http://127.0.0.1:8090/fhir"),
                  _env())
    assert upload.returncode == 0 and re.search(r"^Uploaded (\d+) patients", upload.stdout, re.M), upload.stderr
    documented = re.search(r"Uploaded (\d+) patients", (ROOT / walk).read_text())[1]
    assert upload.stdout.startswith(f"Uploaded {documented} patients"), "the walkthrough's count is stale"

    env = _exports(commands, walk)
    for name in env:
        RUN.add(next(c for f, c in commands if f == walk and c.startswith(f"export {name}=")))
    # The allowlist line's documented alternative: the local server of step 1.
    env["TRIALSCREEN_FHIR_ALLOWLIST"] = "http://127.0.0.1:8090/fhir"
    # "For a first try with curl on your own machine only, set TRIALSCREEN_AUTH_REQUIRED=false".
    env["TRIALSCREEN_AUTH_REQUIRED"] = "false"
    env["TRIALSCREEN_STATE_DIR"] = str(ROOT / "var" / "doc-test")
    serve = _start(_ran(commands, ".venv/bin/trialscreen serve --host 127.0.0.1 --port 8080 --workers 2"),
                   _env(**env), started)
    wait_until_answering("http://127.0.0.1:8080/cds-services", serve)
    discovery = _run(_ran(commands, "curl -s http://localhost:8080/cds-services | python3 -m json.tool"), _env())
    assert discovery.returncode == 0 and '"trialscreen-nct06880354"' in discovery.stdout
    post = next(c for f, c in commands if f == walk and c.startswith("curl -s -X POST"))
    answer = _run(_ran(commands, post), _env())
    assert answer.returncode == 0, answer.stderr
    cards = json.loads(answer.stdout)["cards"]
    assert cards and "Possible candidate" in cards[0]["summary"]


def test_walkthrough_local_hapi_server_and_upload(commands, started):
    """Step 1's HAPI alternative: ``make hapi`` (builds once, then a JVM start of 20-30 s) and the upload."""
    if os.environ.get("TRIALSCREEN_HAPI", "") == "0" and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("HAPI tests turned off (TRIALSCREEN_HAPI=0)")
    hapi = _start(_ran(commands, "make hapi"), _env(), started)
    wait_until_answering("http://127.0.0.1:8091/fhir/metadata", hapi, deadline_seconds=900)
    upload = _run(_ran(commands, ".venv/bin/trialscreen fixtures upload --fhir-server http://127.0.0.1:8091/fhir"),
                  _env())
    documented = re.search(r"Uploaded (\d+) patients", (ROOT / "docs/walkthrough.md").read_text())[1]
    assert upload.returncode == 0 and upload.stdout.startswith(f"Uploaded {documented} patients"), upload.stderr


def test_security_guide_serve_lines_start(commands, started, tmp_path):
    """docs/security.md's two serve lines: with the sandbox's trusted clients, and with authentication off."""
    doc = "docs/security.md"
    env = _exports(commands, doc)
    for name in env:
        RUN.add(next(c for f, c in commands if f == doc and c.startswith(f"export {name}=")))
    for command, extra in ((".venv/bin/trialscreen serve --port 8080", env),
                           ("TRIALSCREEN_AUTH_REQUIRED=false .venv/bin/trialscreen serve", {})):
        proc = _start(_ran(commands, command), _env(TRIALSCREEN_STATE_DIR=str(tmp_path), **extra), started)
        wait_until_answering("http://127.0.0.1:8080/cds-services", proc)
        stop_process_group(proc)
    # README's production line, the same serve as the security guide's.
    _ran(commands, ".venv/bin/trialscreen serve --port 8080")


def test_every_documented_command_is_run_or_excused(commands):
    """Runs last in this module (pytest keeps file order): every command was run above, or is excused."""
    missing = [(f, c) for f, c in commands
               if c not in RUN and not any(c.startswith(prefix) for prefix in EXCUSED)]
    assert not missing, f"documented but neither run nor excused: {missing}"
