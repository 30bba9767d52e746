"""throughput: the production server (`trialscreen serve`, gunicorn, 2 workers) on 127.0.0.1 under 16 concurrent
clients posting patient-view calls with full prefetch of a ~1,000-resource record, for 30 s.

Baseline: the JSON-only endpoint (POST /bench/json-only, same body) under the same load, same server, run in
alternation with the hook: 3 s slices, json-only / hook / hook / json-only ... (30 s of each in all), the same
client processes throughout, so that a drift in the shared machine's load falls on both alike (before issue 15
they ran one after the other). The RATIOS line gives the ratio over all slices and the spread of the ratios of
each pair of slices.
Target (issue 15): the hook's requests/s at least 0.4 of the baseline's, with zero errors.

The server runs with TRIALSCREEN_AUTH_REQUIRED=false and TRIALSCREEN_BENCH_ENDPOINTS=true, its state in a
temporary directory, and the real clock; the record's dates are moved by whole days from the other benchmarks'
fixed clock to today, so that the server reads it as they do (the same results inside their recency windows,
the same work per call: tests/gather/test_relevance.py). The clients are 4 processes of 4 threads (one Python process
could not keep 16 connections busy). Both endpoints are warmed up first.

    python bench/throughput.py [--seconds 30] [--clients 16] [--size 1000] [--slice 3]
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

TARGET = 0.4  # issue 15
PROCESSES = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client_process(body: bytes, threads: int, commands: mp.Queue, results: mp.Queue) -> None:
    """A client process kept for the whole run: ``threads`` clients with their own connections. For each command
    ``(url, seconds)`` they post ``body`` back to back for ``seconds`` and the process puts (latencies, errors);
    ``None`` ends it. Kept alive between slices so that switching endpoint costs no process start-up."""
    sessions = [requests.Session() for _ in range(threads)]
    while (command := commands.get()) is not None:
        url, seconds = command
        stop_at = time.perf_counter() + seconds
        lat: list[float] = []
        errors: dict[str, int] = {}
        lock = threading.Lock()

        def run(session: requests.Session, url: str = url, stop_at: float = stop_at,
                lat: list[float] = lat, errors: dict[str, int] = errors, lock: threading.Lock = lock) -> None:
            mine: list[float] = []
            bad: dict[str, int] = {}
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    resp = session.post(url, data=body, headers=JSON_HEADERS, timeout=60)
                    why = None if resp.status_code == 200 and resp.content.startswith(b'{"cards":') \
                        else f"HTTP {resp.status_code}"
                except requests.RequestException as exc:
                    why = type(exc).__name__
                if why is None:
                    mine.append(time.perf_counter() - t0)
                else:
                    bad[why] = bad.get(why, 0) + 1
            with lock:
                lat.extend(mine)
                for why, n in bad.items():
                    errors[why] = errors.get(why, 0) + n

        workers = [threading.Thread(target=run, args=(s,)) for s in sessions]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        results.put((lat, errors))


class Clients:
    """``clients`` concurrent clients in ``PROCESSES`` processes (one Python process could not keep 16
    connections busy), started once and reused for every slice of the run."""

    def __init__(self, body: bytes, clients: int) -> None:
        ctx = mp.get_context("spawn")
        self.results: mp.Queue = ctx.Queue()
        per = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
        self.commands = [ctx.Queue() for n in per if n]
        self.procs = [ctx.Process(target=_client_process, args=(body, n, q, self.results))
                      for n, q in zip([n for n in per if n], self.commands, strict=True)]
        for p in self.procs:
            p.start()

    def run(self, url: str, seconds: float) -> tuple[list[float], dict[str, int], float]:
        """All clients post to ``url`` for ``seconds``: (latencies, errors by kind, elapsed wall time)."""
        t0 = time.perf_counter()
        for q in self.commands:
            q.put((url, seconds))
        got = [self.results.get(timeout=seconds + 120) for _ in self.commands]
        elapsed = time.perf_counter() - t0
        errors: dict[str, int] = {}
        for _lat, bad in got:
            for why, n in bad.items():
                errors[why] = errors.get(why, 0) + n
        return [x for r in got for x in r[0]], errors, elapsed

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


def interleaved_load(clients: Clients, urls: dict[str, str], seconds: float,
                     slice_seconds: float) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Each endpoint under the same clients for ``seconds`` in all, in alternating slices of ``slice_seconds``
    (A B B A A B ...: each pair in turn starts with the other endpoint), so that a drift in the machine's load
    (it is shared) falls on both alike. Returns per endpoint requests/s, p50, p99 (ms), errors and requests, and
    the ratio (second endpoint / first) of each pair of slices."""
    names = list(urls)
    slices = max(1, round(seconds / slice_seconds))
    per = seconds / slices
    lat: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, dict[str, int]] = {n: {} for n in names}
    busy = dict.fromkeys(names, 0.0)
    pair_ratios: list[float] = []
    for k in range(slices):
        order = names if k % 2 == 0 else names[::-1]
        rps: dict[str, float] = {}
        for name in order:
            got, bad, elapsed = clients.run(urls[name], per)
            lat[name].extend(got)
            for why, n in bad.items():
                errors[name][why] = errors[name].get(why, 0) + n
            # The slice's own length (clients stop posting at ``per``; the last answers come in just after).
            busy[name] += min(elapsed, per + 1)
            rps[name] = len(got) / min(elapsed, per + 1)
        if rps[names[0]]:
            pair_ratios.append(rps[names[1]] / rps[names[0]])
    out: dict[str, dict[str, float]] = {}
    for name in names:
        got = sorted(lat[name])
        if not got:
            out[name] = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": errors[name], "n": 0}
            continue
        p99 = got[min(len(got) - 1, int(round(0.99 * (len(got) - 1))))]
        out[name] = {"rps": len(got) / busy[name], "p50": statistics.median(got) * 1000, "p99": p99 * 1000,
                     "errors": errors[name], "n": len(got)}
    return out, pair_ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=1_000)
    parser.add_argument("--slice", type=float, default=3.0, help="seconds per slice of one endpoint")
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
        clients = Clients(body, args.clients)
        try:
            urls = {"json-only": base + BASELINE_URL, "patient-view": base + service_url()}
            for url in urls.values():
                clients.run(url, min(3.0, args.seconds))  # warm-up (both workers, both endpoints)
            res, pair_ratios = interleaved_load(clients, urls, args.seconds, args.slice)
        finally:
            clients.close()
        for name, r in res.items():
            kinds = ", ".join(f"{n} {why}" for why, n in sorted(r["errors"].items())) or "0"
            rows.append([name, f"{r['rps']:.1f}", f"{r['p50']:.0f}", f"{r['p99']:.0f}", r["n"], kinds])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    ratio = res["patient-view"]["rps"] / res["json-only"]["rps"] if res["json-only"]["rps"] else 0.0
    errors = sum(sum(r["errors"].values()) for r in res.values())
    spread = (f"; slice pairs {min(pair_ratios):.2f}-{max(pair_ratios):.2f}, "
              f"median {statistics.median(pair_ratios):.2f}" if pair_ratios else "")
    print(f"throughput: gunicorn 2 workers, {args.clients} clients, {args.seconds:g} s per endpoint in alternating "
          f"{args.slice:g} s slices, "
          f"{len(resources):,}-resource prefetch ({len(body) / 1e6:.2f} MB) ({machine()})\n")
    print(table(["endpoint", "req/s", "p50 ms", "p99 ms", "requests", "errors"], rows))
    ok = ratio >= TARGET and errors == 0
    print()
    print(f"RATIOS throughput: hook/json-only req/s = {ratio:.2f} ({1 / ratio if ratio else float('inf'):.1f}x "
          f"fewer{spread}), errors {errors} (target >= {TARGET:g}, zero errors: {verdict(ok)}); {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
