"""throughput: the production server (`trialscreen serve`, gunicorn, 2 workers) on 127.0.0.1 under 16 concurrent
clients posting patient-view calls with full prefetch of a ~1,000-resource record, for 30 s.

Baseline: the JSON-only endpoint (POST /bench/json-only, same body) under the same load, same server.
Target: the hook's requests/s at least 1/3 of the baseline's, with zero errors.

The server runs with TRIALSCREEN_AUTH_REQUIRED=false and TRIALSCREEN_BENCH_ENDPOINTS=true, its state in a
temporary directory, and the real clock; the record's dates are moved by whole days from the other benchmarks'
fixed clock to today, so that the server reads it as they do (the same results inside their recency windows,
the same work per call: tests/gather/test_relevance.py). The clients are 4 processes of 4 threads (one Python process
could not keep 16 connections busy). Each phase is preceded by a short warm-up.

    python bench/throughput.py [--seconds 30] [--clients 16] [--size 1000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests
from _common import (
    BASELINE_URL,
    JSON_HEADERS,
    ROOT,
    aml_record,
    full_prefetch,
    hook_body,
    load_average,
    machine,
    patient_id_of,
    service_url,
    table,
    verdict,
)

TARGET = 1 / 3
PROCESSES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client_process(url: str, body: bytes, threads: int, seconds: float, queue: mp.Queue) -> None:
    """``threads`` clients posting ``body`` back to back until ``seconds`` have passed; puts (latencies, errors)."""
    stop_at = time.perf_counter() + seconds
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def run() -> None:
        session = requests.Session()
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                resp = session.post(url, data=body, headers=JSON_HEADERS, timeout=60)
                ok = resp.status_code == 200 and resp.content.startswith(b'{"cards":')
            except requests.RequestException:
                ok = False
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                bad += 1
        with lock:
            lat.extend(mine)
            errors[0] += bad

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((lat, errors[0]))


def load(url: str, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    """Run ``clients`` concurrent clients for ``seconds``: requests/s, p50, p99 (ms) and errors."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    per = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
    procs = [ctx.Process(target=_client_process, args=(url, body, n, seconds, queue)) for n in per if n]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    elapsed = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    if not lat:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": errors, "n": 0}
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    return {"rps": len(lat) / min(elapsed, seconds + 1), "p50": statistics.median(lat) * 1000, "p99": p99 * 1000,
            "errors": errors, "n": len(lat)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=1_000)
    args = parser.parse_args(argv)

    from cds_service.config import Settings, load_knowledge
    from cds_service.gather.prefetch import build_templates

    settings = Settings.from_env({})
    templates = build_templates(load_knowledge(settings).tables, page_size=settings.fhir_page_size)
    # The server screens at its own (real) clock: the record is moved to today, as the other benchmarks' records
    # sit at their fixed clock, so that the same results are inside their recency windows (and the same work done).
    resources = aml_record(args.size, as_of=datetime.now(UTC))
    body = orjson.dumps(hook_body(patient_id_of(resources), full_prefetch(templates, resources)))

    port = _free_port()
    state_dir = tempfile.mkdtemp(prefix="trialscreen-bench-")
    env = {**os.environ, "TRIALSCREEN_AUTH_REQUIRED": "false", "TRIALSCREEN_BENCH_ENDPOINTS": "true",
           "TRIALSCREEN_STATE_DIR": state_dir, "TRIALSCREEN_LOG_LEVEL": "WARNING"}
    trialscreen = Path(sys.executable).with_name("trialscreen")
    cmd = [str(trialscreen), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    log = open(Path(state_dir) / "server.log", "wb")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    rows, res = [], {}
    try:
        for _ in range(300):  # up to 30 s for gunicorn and both workers
            try:
                if requests.get(f"{base}/cds-services", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None:
                raise SystemExit(f"the server exited: see {state_dir}/server.log")
            time.sleep(0.1)
        else:
            raise SystemExit("the server did not answer within 30 s")
        for name, path in (("json-only", BASELINE_URL), ("patient-view", service_url())):
            load(base + path, body, args.clients, min(3.0, args.seconds))  # warm-up (both workers)
            res[name] = r = load(base + path, body, args.clients, args.seconds)
            rows.append([name, f"{r['rps']:.1f}", f"{r['p50']:.0f}", f"{r['p99']:.0f}", r["n"], r["errors"]])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    ratio = res["patient-view"]["rps"] / res["json-only"]["rps"] if res["json-only"]["rps"] else 0.0
    errors = sum(r["errors"] for r in res.values())
    print(f"throughput: gunicorn 2 workers, {args.clients} clients, {args.seconds:g} s, "
          f"{len(resources):,}-resource prefetch ({len(body) / 1e6:.2f} MB) ({machine()})\n")
    print(table(["endpoint", "req/s", "p50 ms", "p99 ms", "requests", "errors"], rows))
    ok = ratio >= TARGET and errors == 0
    print()
    print(f"RATIOS throughput: hook/json-only req/s = {ratio:.2f} ({1 / ratio if ratio else float('inf'):.1f}x "
          f"fewer), errors {errors} (target >= 0.33, zero errors: {verdict(ok)}); {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
