"""startup: how long the command line and the service take to start, as whole-process ratios.

Each pair is timed in alternation in this one run (medians), so load drift moves both sides alike:

* ``trialscreen screen`` of one fixture vs ``python -c 'import json'`` (target <= 10x);
* ``trialscreen --help`` vs ``python -c 'import json'`` (target <= 5x);
* ``trialscreen serve`` (2 workers) until its discovery answers vs a bare gunicorn + Flask app (2 workers) until
  its one route answers (target <= 3x);
* a new service's first patient-view call vs its tenth (target <= 1.5x).

    python bench/startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import requests
from _common import load_average, machine, ms, table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURE = ROOT / "fixtures" / "01-candidate-relapsed-aml.json"
TARGETS = {"screen": 10.0, "help": 5.0, "serve": 3.0, "first-call": 1.5}
BARE_APP = textwrap.dedent("""
    from flask import Flask

    app = Flask(__name__)


    @app.get("/")
    def index():
        return {"ok": True}
""")


def _env(state: Path | None = None) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE (set on some CI and sandbox machines) would make every run compile the project's
    # modules from source: an installed package has its bytecode (pip writes it), so the bench measures that.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRIALSCREEN_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"TRIALSCREEN_LOG_LEVEL": "WARNING", "TRIALSCREEN_AUTH_REQUIRED": "false"})
    if state is not None:
        env["TRIALSCREEN_STATE_DIR"] = str(state)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _started(argv: list[str], url: str, cwd: Path, state: Path) -> tuple[float, subprocess.Popen]:
    """Seconds from spawning ``argv`` until ``url`` answers 200, and the running process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=_env(state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = start + 180
    while time.perf_counter() < deadline:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - start, proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{argv[:4]} exited with {proc.returncode} before answering")
        time.sleep(0.01)
    _stop(proc)
    raise SystemExit(f"{url} did not answer within 180 s")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _hook_calls(base: str, calls: int) -> list[float]:
    from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for

    session = requests.Session()
    templates = session.get(f"{base}/cds-services", timeout=30).json()["services"][0]["prefetch"]
    patient = next(p for p in load_fixture_patients() if p.patient_id == "ts01-patient")
    prefetch = prefetch_for(patient, templates)
    times = []
    for _ in range(calls):
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": patient.patient_id}, "prefetch": prefetch}
        start = time.perf_counter()
        resp = session.post(f"{base}/cds-services/trialscreen-nct06880354", json=body, timeout=60)
        times.append(time.perf_counter() - start)
        resp.raise_for_status()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command (default 7)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="trialscreen-startup-"))
    (work / "bare_app.py").write_text(BARE_APP)
    baseline = [str(BIN / "python"), "-c", "import json"]
    samples: dict[str, list[float]] = {k: [] for k in ("baseline", "screen", "help", "bare", "serve")}
    first_ratios: list[float] = []
    for n in range(args.repeat + 1):  # the first round warms the page cache and is not counted
        times = {
            "baseline": _run(baseline, work),
            "screen": _run([str(BIN / "trialscreen"), "screen", str(FIXTURE), "--at", "2026-10-01T09:00:00Z"], work),
            "help": _run([str(BIN / "trialscreen"), "--help"], work),
        }
        port = _free_port()
        times["bare"], bare = _started([str(BIN / "python"), "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                                        "--workers", "2", "bare_app:app"], f"http://127.0.0.1:{port}/", work, work)
        _stop(bare)
        port = _free_port()
        state = work / f"state-{n}"
        times["serve"], served = _started([str(BIN / "trialscreen"), "serve", "--port", str(port), "--workers", "2"],
                                          f"http://127.0.0.1:{port}/cds-services", work, state)
        try:
            calls = _hook_calls(f"http://127.0.0.1:{port}", 10)
        finally:
            _stop(served)
        if n:
            for key, value in times.items():
                samples[key].append(value)
            first_ratios.append(calls[0] / calls[9])
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {"screen": med["screen"] / med["baseline"], "help": med["help"] / med["baseline"],
              "serve": med["serve"] / med["bare"], "first-call": statistics.median(first_ratios)}
    print(f"startup on {machine()}, {args.repeat} interleaved runs, load average {os.getloadavg()[0]:.2f}")
    print(table(("what", "median", "baseline", "ratio", "target"), [
        ("trialscreen screen (1 fixture)", ms(med["screen"]), ms(med["baseline"]) + " (import json)",
         f"{ratios['screen']:.2f}x", "<= 10x"),
        ("trialscreen --help", ms(med["help"]), ms(med["baseline"]) + " (import json)", f"{ratios['help']:.2f}x",
         "<= 5x"),
        ("serve -> first discovery", ms(med["serve"]), ms(med["bare"]) + " (bare gunicorn + Flask)",
         f"{ratios['serve']:.2f}x", "<= 3x"),
        ("first hook call / tenth", "", "", f"{ratios['first-call']:.2f}x", "<= 1.5x"),
    ]))
    met = [k for k in ratios if ratios[k] <= TARGETS[k]]
    missed = [k for k in ratios if ratios[k] > TARGETS[k]]
    outcome = "met" if not missed else ("NOT met" if not met else f"met at {', '.join(met)}; NOT met at "
                                                                  f"{', '.join(missed)}")
    values = ", ".join(f"{k}={r:.2f}x (<= {TARGETS[k]:g}x)" for k, r in ratios.items())
    print(f"RATIOS startup: {values}: {outcome}; {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
