"""population_bulk: Bulk Data NDJSON (one file per type) screened per patient: memory, throughput and --jobs.

The population is synthesised: patient i is a copy of one of the fixtures' or Synthea's records (1 in 50 a
Synthea record, whose records are long) with every id and reference re-ided ``<id>-<i>``, written as
Patient.ndjson, Condition.ndjson, ... (lines of a type interleaved across patients, as an export has them).

* **memory**: peak RSS of ``trialscreen screen FOLDER --format json`` (a fresh process, output to /dev/null) at
  100, 1,000 and 10,000 patients (``os.wait4``'s ru_maxrss). Target: the largest within 1.5x the smallest.
* **throughput**: seconds per patient of the Bulk path (index + screen, this process) against the per-patient
  path the command had before (each patient's bundle file read and screened, ``records_from_paths``), on the
  same patients in the same process. Target: at most 1.0x.
* **--jobs**: the Bulk path with 2 worker processes against 1 (``--jobs`` N; N = 2 on a 2-CPU machine). Target:
  at most 0.6x (near-linear would be 0.5x); on a machine other sessions share, read it with the load average.

    python bench/population_bulk.py [--sizes 100,1000,10000] [--throughput-size 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _common import AT, AT_ISO, FIXTURES, ROOT, SYNTHEA, load_average, machine, table

MEMORY_TARGET = 1.5
THROUGHPUT_TARGET = 1.0
JOBS_TARGET = 0.6
_REF = re.compile(r'"reference":"([^"]+)"')


def templates() -> list[list[dict[str, Any]]]:
    """Records to copy: each fixture bundle's patients, and Synthea's (1 in 50 of the population)."""
    from cds_service.gather.bundles import group_by_patient, read_path

    out: list[list[dict[str, Any]]] = []
    for path in sorted(FIXTURES.glob("*.json")):
        for source, resources, urls in read_path(path):
            out.extend(raw.resources for raw in group_by_patient(resources, urls, source)
                       if raw.resources and raw.resources[0]["resourceType"] == "Patient")
    synthea: list[list[dict[str, Any]]] = []
    if SYNTHEA.is_dir():
        for path in sorted(SYNTHEA.glob("*.json"))[:5]:
            for source, resources, urls in read_path(path):
                synthea.extend(raw.resources for raw in group_by_patient(resources, urls, source)
                               if raw.resources and raw.resources[0]["resourceType"] == "Patient")
    mixed = []
    for n, t in enumerate(out * 2):
        mixed.append(t)
        if synthea and n % 49 == 48:
            mixed.append(synthea[(n // 49) % len(synthea)])
    return mixed


def _reid(resources: list[dict[str, Any]], n: int) -> list[bytes]:
    """The record's lines with every id, and every reference to one of its ids, made ``<id>-<n>``."""
    ids = {r.get("id") for r in resources if r.get("id")}
    out = []
    for r in resources:
        text = orjson.dumps({**r, "id": f"{r['id']}-{n}"} if r.get("id") else r).decode()

        def sub(m: re.Match[str]) -> str:
            ref = m.group(1)
            head, _, last = ref.rpartition("/") if not ref.startswith("urn:uuid:") else ("urn:uuid", ":", ref[9:])
            if last in ids:
                return f'"reference":"{head}{"/" if head != "urn:uuid" else ":"}{last}-{n}"'
            return m.group(0)

        out.append(_REF.sub(sub, text).encode())
    return out


def write_population(folder: Path, size: int, tpls: list[list[dict[str, Any]]]) -> Path:
    """``size`` patients as one NDJSON file per type, streamed (one patient's lines in memory at a time)."""
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    try:
        for n in range(size):
            record = tpls[n % len(tpls)]
            for res, line in zip(record, _reid(record, n), strict=True):
                kind = res["resourceType"]
                if kind not in handles:
                    handles[kind] = (folder / f"{kind}.ndjson").open("wb")
                handles[kind].write(line + b"\n")
    finally:
        for h in handles.values():
            h.close()
    return folder


def write_bundles(folder: Path, size: int, tpls: list[list[dict[str, Any]]]) -> Path:
    """The same patients as one collection bundle each (the per-patient input of the baseline)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(size):
        record = tpls[n % len(tpls)]
        entries = b",".join(b'{"resource":' + line + b"}" for line in _reid(record, n))
        (folder / f"p{n:06d}.json").write_bytes(b'{"resourceType":"Bundle","type":"collection","entry":['
                                                + entries + b"]}")
    return folder


def peak_rss(folder: Path, jobs: int = 1) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of the command on ``folder`` in a fresh process."""
    cmd = [sys.executable, "-m", "cds_service.cli", "screen", str(folder), "--format", "json", "--at", AT_ISO,
           "--jobs", str(jobs)]
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, cwd=ROOT)
        _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0, f"screen exited {status}"
    return usage.ru_maxrss / 1024, elapsed


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the --jobs workers), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn(*args)``."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, cpu_seconds() - c0


def bulk_seconds(folder: Path, jobs: int = 1) -> float:
    from cds_service.gather.bulk import BulkIndex
    from cds_service.population import screen_index

    t0 = time.perf_counter()
    with BulkIndex.build([folder]) as index:
        for _ in screen_index(index, AT, jobs=jobs):
            pass
    return time.perf_counter() - t0


def bundle_seconds(folder: Path) -> float:
    from cds_service.config import default_knowledge
    from cds_service.gather.bundles import records_from_paths
    from cds_service.pipeline import screen

    knowledge = default_knowledge()
    t0 = time.perf_counter()
    for record in records_from_paths([folder], knowledge.tables, at=AT, rules=knowledge.rules):
        screen(record, AT, knowledge)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--throughput-size", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tpls = templates()
    rows, rss = [], {}
    with tempfile.TemporaryDirectory(prefix="trialscreen-bench-bulk-") as tmp:
        for size in sizes:
            folder = write_population(Path(tmp) / f"bulk-{size}", size, tpls)
            mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            rss[size], seconds = peak_rss(folder)
            rows.append([f"{size:,}", f"{mb:.0f}", f"{rss[size]:.0f}", f"{seconds:.1f}",
                         f"{size / seconds:.0f}"])
            if size != args.throughput_size:
                for f in folder.iterdir():
                    f.unlink()
        n = args.throughput_size
        bulk_dir = Path(tmp) / f"bulk-{n}"
        if not bulk_dir.is_dir():
            write_population(bulk_dir, n, tpls)
        bundle_dir = write_bundles(Path(tmp) / f"bundles-{n}", n, tpls)
        bulk_seconds(bulk_dir)  # warm-up: code tables, models and caches loaded in this process
        t_bulk, t_bundle, t_jobs = [], [], []
        for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits all three alike
            t_bundle.append(timed(bundle_seconds, bundle_dir))
            t_bulk.append(timed(bulk_seconds, bulk_dir))
            t_jobs.append(timed(bulk_seconds, bulk_dir, args.jobs))

    def median(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return sorted(runs)[len(runs) // 2]

    (w_bulk, c_bulk), (w_bundle, c_bundle), (w_jobs, c_jobs) = median(t_bulk), median(t_bundle), median(t_jobs)
    med = w_bulk, w_bundle, w_jobs
    memory_ratio = max(rss.values()) / min(rss.values())
    throughput_ratio = med[0] / med[1]
    jobs_ratio = med[2] / med[0]
    print(f"population_bulk: Bulk NDJSON screened per patient ({machine()})\n")
    print(table(["patients", "NDJSON MB", "peak RSS MB", "command s", "patients/s"], rows))
    print()
    print(table(["path", f"wall s for {n:,} patients", "ms/patient", "CPU s (all processes)", "runs"],
                [["per-patient bundles (before)", f"{w_bundle:.2f}", f"{w_bundle / n * 1000:.2f}", f"{c_bundle:.2f}",
                  args.repeat],
                 ["bulk index + screen, 1 process", f"{w_bulk:.2f}", f"{w_bulk / n * 1000:.2f}", f"{c_bulk:.2f}",
                  args.repeat],
                 [f"bulk, --jobs {args.jobs}", f"{w_jobs:.2f}", f"{w_jobs / n * 1000:.2f}", f"{c_jobs:.2f}",
                  args.repeat]]))
    print()

    def met(ratio: float, target: float) -> str:
        return "met" if ratio <= target else "NOT met"

    print(f"RATIOS population_bulk: peak RSS {max(sizes):,}/{min(sizes):,} patients = {memory_ratio:.2f}x "
          f"(target <= {MEMORY_TARGET:g}x: {met(memory_ratio, MEMORY_TARGET)}), bulk/per-patient time = "
          f"{throughput_ratio:.2f}x (target <= {THROUGHPUT_TARGET:g}x: {met(throughput_ratio, THROUGHPUT_TARGET)}), "
          f"--jobs {args.jobs}/1 time = {jobs_ratio:.2f}x (target <= {JOBS_TARGET:g}x: "
          f"{met(jobs_ratio, JOBS_TARGET)}); {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
