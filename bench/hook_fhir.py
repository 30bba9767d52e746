"""hook-fhir: the patient-view call without prefetch, fetching from a real local FHIR server loaded with the
generated record (~100, 1,000, 10,000 resources).

Servers (``--server``): ``hapi`` (default), the HAPI FHIR JPA test server of tests/hapi (Jetty: it serves
requests concurrently, as a hospital's server does), started with a maximum page size of 1000; ``sekmet``,
sekmet-fhir (tests/fhir_server.py), which answers one request at a time, so that "all queries at once" costs
about their sum there.

Baseline: the slowest single FHIR query the service makes for that patient (one prefetch template rendered
for the patient, with its paging, through the service's own FhirClient), each timed alone.
Target: the whole hook call costs at most 1.3x that slowest query (the queries overlap instead of adding up).
Also shown: the sum of the queries timed alone, and all of them run at once through the service's client
(``fetch_all``, concurrent), which says how much the server lets them overlap.

Settings for the run (so that 10,000 resources are read whole, not cut by the service's limits):
fhir_page_size=1000 (the servers' cap here), fhir_max_pages=50, fhir_deadline_seconds=120. The bench checks
that the server honoured the page size (a smaller cap would turn one query into many round trips, which makes
the slowest query longer and the ratio flatter than a hospital's server would).

    python bench/hook_fhir.py [--server hapi|sekmet] [--repeat N] [--sizes 100,1000]
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
from _common import (
    JSON_HEADERS,
    ROOT,
    SIZES,
    aml_record,
    bench_app,
    hook_body,
    interleaved_medians,
    machine,
    ms,
    ratios_line,
    service_url,
    table,
)

sys.path.insert(0, str(ROOT / "tests"))
from fhir_server import LocalFhirServer, server_installed  # noqa: E402
from hapi_server import HapiServer, HapiUnavailable, tools_missing  # noqa: E402

TARGET = 1.3
JUDGED = (1_000, 10_000)  # the sizes: at ~100 resources fixed costs, not overlap, decide the ratio
PAGE_SIZE = 1000


def _server(name: str) -> tuple[object | None, str]:
    """The server to run (not started), or None and why it cannot run here."""
    if name == "sekmet":
        if not server_installed():
            return None, "sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1)"
        return LocalFhirServer(), "sekmet-fhir (one request at a time)"
    missing = tools_missing()
    if missing:
        return None, f"HAPI needs {', '.join(missing)} (apt-get install openjdk-17-jdk-headless maven)"
    return HapiServer(heap="1536m", max_page_size=PAGE_SIZE), "HAPI FHIR JPA (Jetty, concurrent)"


def _page_size_honoured(base: str, query: str) -> int:
    """How many entries the server puts on the first page of ``query`` when asked for PAGE_SIZE."""
    import requests

    sep = "&" if "?" in query else "?"
    bundle = requests.get(f"{base}/{query}{sep}_count={PAGE_SIZE}", headers={"Accept": "application/fhir+json"},
                          timeout=120).json()
    return len(bundle.get("entry", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=0, help="timed runs per size (default: by size)")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--server", choices=("hapi", "sekmet"), default="hapi")
    args = parser.parse_args(argv)
    fhir, label = _server(args.server)
    if fhir is None:
        print(f"hook-fhir: {label}: skipped")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    from cds_service.gather.fhir_client import Deadline, FhirClient, Query
    from cds_service.hooks.app import state
    from cds_service.hooks.demo_data import FixturePatient, transaction_for

    rows, ratios = [], {}
    try:
        fhir.start()  # type: ignore[attr-defined]
    except HapiUnavailable as exc:
        print(f"hook-fhir: {exc}: skipped")
        return 0
    server = fhir
    try:
        base = server.base_url
        app = bench_app(fhir_allowlist=(base,), fhir_page_size=1000, fhir_max_pages=50, fhir_deadline_seconds=120)
        svc = state(app)
        client = app.test_client()
        for size in sizes:
            resources = aml_record(size)
            prefix = f"b{size}-"
            patient = FixturePatient(resources[0]["id"], "bench", resources)
            t0 = time.perf_counter()
            server.load_bundle(transaction_for(patient, prefix))
            server.analyze()
            load_s = time.perf_counter() - t0
            pid = prefix + resources[0]["id"]
            n_obs = sum(r["resourceType"] == "Observation" for r in resources)
            first_page = _page_size_honoured(base, f"Observation?patient={pid}")
            if first_page < min(PAGE_SIZE, n_obs):
                raise SystemExit(f"hook-fhir: the server put {first_page} Observations on a page asked for "
                                 f"{PAGE_SIZE} ({n_obs} exist): its page-size cap would turn queries into "
                                 "round trips")
            body = orjson.dumps(hook_body(pid, fhirServer=base))

            def hook(body: bytes = body) -> None:
                resp = client.post(service_url(), data=body, headers=JSON_HEADERS)
                assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
                cards = resp.json["cards"]
                assert cards, "the generated AML patient should get a card"
                screening = cards[0]["extension"]["org.trialscreen.screening"]
                assert not screening.get("not_retrieved"), screening.get("not_retrieved")

            queries = {t.key: Query(t.kind, t.render(pid)) for t in svc.templates}

            def one(query: Query) -> None:
                fc = FhirClient(base, token=None, allowlist=svc.allowlist, max_pages=50, deadline=Deadline(120))
                result = fc.search(query)
                assert result.error is None, result.error

            def fetch_all(queries: dict[str, Query] = queries) -> None:
                # All queries at once, as the service runs them: shows how far the server lets them overlap.
                fc = FhirClient(base, token=None, allowlist=svc.allowlist, max_pages=50, deadline=Deadline(120))
                assert not any(r.error for r in fc.fetch_all(queries).values())

            repeat = args.repeat or {100: 15, 1_000: 11, 10_000: 5}.get(size, 5)
            fns = {"hook": hook, "fetch_all": fetch_all, **{k: (lambda q=q: one(q)) for k, q in queries.items()}}
            t = interleaved_medians(fns, repeat=repeat, warmup=1)
            slowest_key = max(queries, key=lambda k: t[k])
            all_queries = sum(t[k] for k in queries)
            ratio = t["hook"] / t[slowest_key]
            ratios[size] = ratio
            rows.append([f"{len(resources):,}", f"{load_s:.1f}", len(queries), f"{slowest_key}",
                         ms(t[slowest_key]), ms(all_queries), ms(t["fetch_all"]), ms(t["hook"]), f"{ratio:.2f}x",
                         repeat])
    finally:
        server.stop()
    print(f"hook-fhir: patient-view without prefetch, from {label} on 127.0.0.1 ({machine()})\n")
    print(table(["resources", "load s", "queries", "slowest query", "slowest ms", "sum of queries ms",
                 "all queries at once ms", "hook ms", "ratio", "runs"], rows))
    print()
    print(ratios_line("hook-fhir", ratios, TARGET, scope=" the slowest single query",
                      judged=[k for k in JUDGED if k in ratios]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
