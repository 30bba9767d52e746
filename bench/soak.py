"""soak: 5,000 hook calls from 8 concurrent clients against ``trialscreen serve`` (gunicorn, 2 workers) on loopback.

The server is started by this script on 127.0.0.1 (a free port) with authentication off, a temporary state
folder (SQLite store), a 256 KiB body limit and Prometheus multiprocess metrics, and stopped at the end. Each
client is a thread with its own ``requests.Session``. The calls are a fixed, seeded mix:

    valid          patient-view with the full prefetch of a fixture patient (all 46 in turn)   -> 200 {"cards": [...]}
    malformed      a JSON body cut in half                                                      -> 400 OperationOutcome
    wrong-hook     hook "order-sign"                                                            -> 400 OperationOutcome
    no-context     no "context"                                                                 -> 400 OperationOutcome
    oversize       a body over the size limit                                                   -> 413 OperationOutcome

Targets (exit status 1 if one fails):
  * 0 unexpected errors: a 5xx, a status other than the one expected for the kind, a body that is not the
    expected JSON, or a failed connection;
  * the workers' resident memory (RSS) at the end is at most 10% above the start. "Start" is measured after a
    warm-up of ``--warmup`` calls (not counted in the 5,000) that brings every fixture patient and every kind of
    call through both workers once, so lazily loaded models and caches are in place; the RSS right after boot
    is printed too, for information;
  * the same two workers at the end (none died or was restarted), and ``/metrics`` counting every call.
Latency p50/p99 is reported per kind (no target: this machine's absolute times say little).

Bounded: ``--calls`` requests, ``--max-seconds`` wall time (the run stops sending and fails when it is over).
Only 127.0.0.1 is contacted.

    python bench/soak.py [--calls 5000] [--clients 8] [--workers 2] [--warmup 200] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
import requests
from _common import machine, table, verdict

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the only address this script talks to
MAX_BODY = 256 * 1024
MEMORY_GROWTH_LIMIT = 0.10
KINDS = {"valid": 200, "malformed": 400, "wrong-hook": 400, "no-context": 400, "oversize": 413}
WEIGHTS = {"valid": 70, "malformed": 8, "wrong-hook": 8, "no-context": 8, "oversize": 6}
SERVICE_ID = "trialscreen-nct06880354"
HOOK_COUNT = re.compile(r'^trialscreen_hook_duration_seconds_count\{hook="[^"]+",outcome="\w+"\} (\S+)$', re.MULTILINE)


@dataclass
class Call:
    kind: str
    status: int | None
    seconds: float
    problem: str | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- the request bodies -------------------------------------------------------------------------------------
def build_bodies(base: str) -> dict[str, list[bytes]]:
    """Pre-serialised bodies per kind (so the clients spend their time waiting for the server)."""
    from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for

    templates = requests.get(f"{base}/cds-services", timeout=30).json()["services"][0]["prefetch"]
    patients = load_fixture_patients()
    valid = []
    for p in patients:
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                "context": {"patientId": p.patient_id, "userId": "Practitioner/soak"},
                "prefetch": prefetch_for(p, templates)}
        valid.append(orjson.dumps(body))
    sample = orjson.loads(valid[0])
    wrong_hook = orjson.dumps({**sample, "hook": "order-sign"})
    no_context = orjson.dumps({k: v for k, v in sample.items() if k != "context"})
    oversize = orjson.dumps({**sample, "extension": {"padding": "x" * (MAX_BODY + 16 * 1024)}})
    assert len(oversize) > MAX_BODY and all(len(b) < MAX_BODY for b in valid)
    return {"valid": valid, "malformed": [b[: len(b) // 2] for b in valid[:10]], "wrong-hook": [wrong_hook],
            "no-context": [no_context], "oversize": [oversize]}


def plan(calls: int, seed: int) -> list[tuple[str, int]]:
    """(kind, body index) for each call: a seeded mix, every valid patient in turn."""
    rng = random.Random(seed)
    kinds = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=calls)
    counters: Counter[str] = Counter()
    out = []
    for kind in kinds:
        out.append((kind, counters[kind]))
        counters[kind] += 1
    return out


# --- the clients ---------------------------------------------------------------------------------------------
def check(kind: str, resp: requests.Response) -> str | None:
    """Why a response is wrong for its kind of call (None when it is right)."""
    expected = KINDS[kind]
    if resp.status_code >= 500:
        return f"HTTP {resp.status_code}"
    if resp.status_code != expected:
        return f"HTTP {resp.status_code}, expected {expected}"
    try:
        body = resp.json()
    except ValueError:
        return "body is not JSON"
    if expected == 200:
        return None if isinstance(body, dict) and isinstance(body.get("cards"), list) else "no cards list"
    if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"):
        return "error without an OperationOutcome"
    if "Traceback" in resp.text:
        return "stack trace in the body"
    return None


def run_clients(base: str, bodies: dict[str, list[bytes]], work: list[tuple[str, int]], clients: int,
                stop_at: float) -> list[Call]:
    """Send ``work`` from ``clients`` threads (each with its own Session); stop sending at ``stop_at``."""
    url = f"{base}/cds-services/{SERVICE_ID}"
    results: list[Call] = []
    lock = threading.Lock()
    queue = iter(work)
    queue_lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        local: list[Call] = []
        while time.monotonic() < stop_at:
            with queue_lock:
                item = next(queue, None)
            if item is None:
                break
            kind, n = item
            data = bodies[kind][n % len(bodies[kind])]
            started = time.perf_counter()
            try:
                resp = session.post(url, data=data, headers=headers, timeout=60)
                problem = check(kind, resp)
                status: int | None = resp.status_code
            except requests.RequestException as exc:
                problem, status = f"{type(exc).__name__}", None
            local.append(Call(kind, status, time.perf_counter() - started, problem))
        session.close()
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=client, name=f"soak-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --- the server ----------------------------------------------------------------------------------------------
def start_server(state_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALSCREEN_")}
    env.update({"TRIALSCREEN_AUTH_REQUIRED": "false", "TRIALSCREEN_STATE_DIR": str(state_dir / "state"),
                "TRIALSCREEN_LOG_LEVEL": "WARNING", "TRIALSCREEN_MAX_BODY_BYTES": str(MAX_BODY),
                "PROMETHEUS_MULTIPROC_DIR": str(state_dir / "metrics")})
    log = open(state_dir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--host", HOST, "--port", str(port),
                             "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)


def wait_ready(base: str, proc: subprocess.Popen[bytes], workers: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if requests.get(f"{base}/readyz", timeout=5).status_code == 200 and len(worker_pids(proc)) == workers:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not become ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The gunicorn workers: the children of the master (``trialscreen serve`` execs gunicorn in place)."""
    try:
        return sorted(c.pid for c in psutil.Process(proc.pid).children())
    except psutil.NoSuchProcess:
        return []


def rss_mib(pids: list[int]) -> dict[int, float]:
    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids}


def hook_calls_counted(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=30).text
    return sum(float(v) for v in HOOK_COUNT.findall(text))


# --- main ----------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="wall-time bound of the whole run")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)

    started = time.monotonic()
    stop_at = started + args.max_seconds
    tmp = Path(tempfile.mkdtemp(prefix="trialscreen-soak-"))
    port = _free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(tmp, port, args.workers)
    try:
        wait_ready(base, proc, args.workers)
        pids_boot = worker_pids(proc)
        rss_boot = rss_mib(pids_boot)
        bodies = build_bodies(base)
        warm = [("valid", n) for n in range(len(bodies["valid"]))] * 2
        warm += plan(max(0, args.warmup - len(warm)), args.seed + 1)
        warm_results = run_clients(base, bodies, warm, args.clients, stop_at)
        pids_start = worker_pids(proc)
        rss_start = rss_mib(pids_start)
        t0 = time.perf_counter()
        results = run_clients(base, bodies, plan(args.calls, args.seed), args.clients, stop_at)
        elapsed = time.perf_counter() - t0
        pids_end = worker_pids(proc)
        rss_end = rss_mib(pids_end) if pids_end == pids_start else {}
        counted = hook_calls_counted(base)
    finally:
        stop_server(proc)
        server_log = (tmp / "server.log").read_text(errors="replace") if (tmp / "server.log").exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)

    by_kind: dict[str, list[Call]] = defaultdict(list)
    for c in results:
        by_kind[c.kind].append(c)
    problems = Counter(f"{c.kind}: {c.problem}" for c in results if c.problem)
    warm_problems = Counter(f"{c.kind}: {c.problem}" for c in warm_results if c.problem)
    rows = []
    for kind in KINDS:
        calls = by_kind.get(kind, [])
        times = [c.seconds for c in calls]
        rows.append([kind, KINDS[kind], len(calls), sum(1 for c in calls if c.problem),
                     f"{percentile(times, 0.5) * 1000:.1f}", f"{percentile(times, 0.99) * 1000:.1f}"])
    all_times = [c.seconds for c in results]
    rows.append(["all", "", len(results), sum(problems.values()), f"{percentile(all_times, 0.5) * 1000:.1f}",
                 f"{percentile(all_times, 0.99) * 1000:.1f}"])

    print(f"soak: {machine()}; gunicorn {args.workers} workers on {HOST}, {args.clients} clients, "
          f"{len(results)} calls in {elapsed:.1f} s ({len(results) / elapsed:.0f} calls/s), "
          f"warm-up {len(warm_results)}")
    print()
    print(table(["kind", "expected", "calls", "unexpected", "p50 ms", "p99 ms"], rows))
    print()
    mem_rows = []
    growth = []
    for pid in pids_start:
        end = rss_end.get(pid)
        ratio = end / rss_start[pid] if end else float("nan")
        growth.append(ratio)
        mem_rows.append([pid, f"{rss_boot.get(pid, float('nan')):.1f}", f"{rss_start[pid]:.1f}",
                         f"{end:.1f}" if end else "gone", f"{ratio:.3f}"])
    print(table(["worker pid", "RSS boot MiB", "RSS start MiB", "RSS end MiB", "end/start"], mem_rows))
    print()
    for what, count in sorted((problems + warm_problems).items()):
        print(f"  unexpected: {what} x{count}")

    sent_everything = len(results) == args.calls
    same_workers = pids_start == pids_end and pids_boot == pids_start
    metrics_ok = counted == len(results) + len(warm_results)
    memory_ok = bool(growth) and all(r <= 1 + MEMORY_GROWTH_LIMIT for r in growth)
    errors_ok = not problems and not warm_problems
    worst = max(growth) if growth else float("nan")
    print(f"targets: unexpected errors 0 ({verdict(errors_ok)}); all {args.calls} calls sent within "
          f"{args.max_seconds:.0f} s ({verdict(sent_everything)}); same {args.workers} workers throughout "
          f"({verdict(same_workers)}); /metrics counted {counted:.0f} of {len(results) + len(warm_results)} "
          f"({verdict(metrics_ok)})")
    ok = errors_ok and sent_everything and same_workers and metrics_ok and memory_ok
    if not ok and server_log:
        print("server log (tail):\n" + server_log[-3000:])
    print(f"soak ratio: worker RSS end/start {worst:.3f} (target <= {1 + MEMORY_GROWTH_LIMIT:.2f}: "
          f"{verdict(memory_ok)}); unexpected errors {sum(problems.values())}/{len(results)}; "
          f"p50 {percentile(all_times, 0.5) * 1000:.1f} ms, p99 {percentile(all_times, 0.99) * 1000:.1f} ms; "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
