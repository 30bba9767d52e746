"""``trialscreen serve`` with 2 gunicorn workers: ``/metrics`` adds up both workers (multiprocess mode), health
and readiness answer, and a previous run's metric files are cleared at start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from serving import free_port, stop_process_group, wait_until_answering

from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for

HOOK_COUNT = re.compile(r'^trialscreen_hook_duration_seconds_count\{hook="patient-view",outcome="(\w+)"\} (\S+)$',
                        re.MULTILINE)


def _hook_counts(text: str) -> dict[str, float]:
    return {outcome: float(value) for outcome, value in HOOK_COUNT.findall(text)}


def test_serve_metrics_add_up_every_worker(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: must be cleared
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALSCREEN_")}
    env.update({"TRIALSCREEN_STATE_DIR": str(tmp_path / "state"), "TRIALSCREEN_LOG_LEVEL": "WARNING",
                "TRIALSCREEN_AUTH_REQUIRED": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base}/healthz", proc)
        assert requests.get(f"{base}/readyz", timeout=30).status_code == 200
        assert not (metrics_dir / "counter_999999.db").exists()

        templates = requests.get(f"{base}/cds-services", timeout=10).json()["services"][0]["prefetch"]
        patient = load_fixture_patients()[0]
        url = f"{base}/cds-services/trialscreen-nct06880354"
        calls = 24

        def call(n: int) -> int:
            body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                    "context": {"patientId": patient.patient_id}, "prefetch": prefetch_for(patient, templates)}
            if n % 4 == 3:
                body["hook"] = "order-sign"  # a refused call: outcome client_error
            return requests.post(url, json=body, timeout=30, headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(4) as pool:  # concurrent calls keep both workers busy
            statuses = list(pool.map(call, range(calls)))
        assert statuses == [400 if n % 4 == 3 else 200 for n in range(calls)]
        seen = set()
        for _ in range(6):
            text = requests.get(f"{base}/metrics", timeout=10, headers={"Connection": "close"}).text
            seen.add(tuple(sorted(_hook_counts(text).items())))
        # Whichever worker answered the scrape, the totals are those of all workers.
        assert seen == {(("client_error", calls / 4), ("ok", calls * 3 / 4))}
        workers = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("histogram_*.db")}
        assert len(workers) == 2, workers  # both workers served hook calls and wrote their own files
    finally:
        stop_process_group(proc)
