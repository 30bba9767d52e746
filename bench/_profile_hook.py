"""Profile of patient-view calls with full prefetch (cProfile through the Flask test client): where a call goes.

Not a benchmark (``make bench`` skips files starting with "_"): it prints the top functions by cumulative
and by own time over ``--calls`` calls of a ``--size``-resource record, after two warm-up calls.

    python bench/_profile_hook.py [--size 1000] [--calls 20] [--top 40]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import orjson
from _common import JSON_HEADERS, aml_record, bench_app, full_prefetch, hook_body, patient_id_of, service_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="cumulative,tottime")
    args = parser.parse_args(argv)
    app = bench_app()
    from cds_service.hooks.app import state

    resources = aml_record(args.size)
    body = orjson.dumps(hook_body(patient_id_of(resources), full_prefetch(state(app).templates, resources)))
    client = app.test_client()
    url = service_url()

    def call() -> None:
        resp = client.post(url, data=body, headers=JSON_HEADERS)
        assert resp.status_code == 200 and resp.json["cards"], resp.status_code

    call()
    call()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.calls):
        call()
    prof.disable()
    for key in args.sort.split(","):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
        print(f"--- {args.calls} calls, {args.size:,} resources, sorted by {key}")
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
