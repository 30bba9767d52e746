"""memory: peak memory of one patient-view call with a ~10,000-resource prefetch, minus the process's idle memory.

Measured with tracemalloc (Python allocations, which is where a request's memory goes): the app is built and
warmed up by one call first (code tables, models, caches loaded), then tracing starts, the peak is reset and
one call is made; "idle" is what is traced just before the call, so the figure is the call's own peak. The
request body (bytes) is created before tracing starts, as the server would hold it. The process's RSS
growth over the call (psutil) is shown too, for information (RSS does not shrink, so it is a high-water mark).
Target (issue 15): the peak is at most 4x the request body's size. Median of repeated calls.

    python bench/memory.py [--repeat N] [--size 10000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tracemalloc

import orjson
import psutil
from _common import (
    JSON_HEADERS,
    aml_record,
    bench_app,
    full_prefetch,
    hook_body,
    load_average,
    machine,
    patient_id_of,
    service_url,
    table,
    verdict,
)

TARGET = 4.0  # issue 15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args(argv)
    app = bench_app()
    from cds_service.hooks.app import state

    resources = aml_record(args.size)
    body = orjson.dumps(hook_body(patient_id_of(resources), full_prefetch(state(app).templates, resources)))
    del resources
    client = app.test_client()
    url = service_url()

    def call() -> None:
        resp = client.post(url, data=body, headers=JSON_HEADERS)
        assert resp.status_code == 200 and resp.json["cards"], resp.status_code

    call()  # warm-up: everything loaded once per process is loaded now
    proc = psutil.Process()
    peaks, rss = [], []
    for _ in range(args.repeat):
        gc.collect()
        tracemalloc.start()
        idle, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before = proc.memory_info().rss
        call()
        _, peak = tracemalloc.get_traced_memory()
        rss.append(proc.memory_info().rss - before)
        tracemalloc.stop()
        peaks.append(peak - idle)
    peak = statistics.median(peaks)
    ratio = peak / len(body)
    print(f"memory: one patient-view call, {args.size:,}-resource prefetch ({machine()})\n")
    print(table(["body MB", "peak over idle MB (tracemalloc)", "RSS growth MB (psutil)", "ratio", "runs"],
                [[f"{len(body) / 1e6:.2f}", f"{peak / 1e6:.1f}", f"{statistics.median(rss) / 1e6:.1f}",
                  f"{ratio:.2f}x", args.repeat]]))
    print()
    print(f"RATIOS memory: peak/body = {ratio:.2f}x (target <= {TARGET:g}x: {verdict(ratio <= TARGET)}); "
          f"{load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
