"""hook-prefetch: one patient-view call with full prefetch, for records of ~100, 1,000 and 10,000 resources.

Baseline: POST /bench/json-only in the same app (reads and parses the same body as JSON, answers no cards).
Both go through the same Flask app, request hooks and WSGI test client, timed in alternation.
Target (issue 15): the hook call costs at most 2.5x the baseline at 1,000 and 1.5x at 10,000 resources.

    python bench/hook_prefetch.py [--repeat N]
"""

from __future__ import annotations

import argparse

import orjson
from _common import (
    BASELINE_URL,
    JSON_HEADERS,
    SIZES,
    aml_record,
    bench_app,
    full_prefetch,
    hook_body,
    interleaved_medians,
    machine,
    ms,
    patient_id_of,
    ratios_line,
    service_url,
    table,
)

TARGET = {1_000: 2.5, 10_000: 1.5}  # issue 15


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=0, help="timed runs per size (default: by size)")
    args = parser.parse_args(argv)
    app = bench_app()
    from cds_service.hooks.app import state

    templates = state(app).templates
    client = app.test_client()
    url = service_url()
    rows, ratios = [], {}
    for size in SIZES:
        resources = aml_record(size)
        body = orjson.dumps(hook_body(patient_id_of(resources), full_prefetch(templates, resources)))

        def hook(body: bytes = body) -> None:
            resp = client.post(url, data=body, headers=JSON_HEADERS)
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
            assert resp.json["cards"], "the generated AML patient should get a card"

        def baseline(body: bytes = body) -> None:
            resp = client.post(BASELINE_URL, data=body, headers=JSON_HEADERS)
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]

        repeat = args.repeat or {100: 41, 1_000: 21, 10_000: 9}.get(size, 9)
        t = interleaved_medians({"hook": hook, "baseline": baseline}, repeat=repeat, warmup=2)
        ratio = t["hook"] / t["baseline"]
        ratios[size] = ratio
        rows.append([f"{len(resources):,}", f"{len(body) / 1e6:.2f}", ms(t["baseline"]), ms(t["hook"]),
                     f"{ratio:.2f}x", repeat])
    print(f"hook-prefetch: patient-view with full prefetch vs the JSON-only endpoint ({machine()})\n")
    print(table(["resources", "body MB", "json-only ms", "hook ms", "ratio", "runs"], rows))
    print()
    print(ratios_line("hook-prefetch", ratios, TARGET))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
