"""Population screening on Apache Spark: the same ``screen()`` over NDJSON (or Parquet) grouped by patient.

    lines -> (candidate patient, line)        gather.bulk.patient_key, as the command line's index
          -> groupByKey (patient)             one record per patient, on whichever executor holds the group
          -> build_record + screen(record, at) the pipeline, unchanged, once per patient
          -> the worklist (Parquet or CSV)    columns as ``trialscreen screen --format csv``, candidates first,
                                              Parquet with each patient's screening JSON too

Resources that name no patient (Medication, ...) are shared: those of the types the criteria read are collected
once and broadcast to every executor, so a patient's ``medicationReference`` resolves whichever file the
Medication came in (a formulary is thousands of rows, not millions). Groups without a Patient resource are
counted, not screened (as the command line does).

Install with ``pip install 'trialscreen[spark]'``; run locally (``python -m cds_service.spark_job --master
local[2] ...``) or submit this file to a cluster where trialscreen is installed on every node (docs/population.md)::

    spark-submit --master yarn cds_service/spark_job.py s3://bucket/export/ --out s3://bucket/worklist \\
        --at 2026-10-01T09:00:00Z

Input ``--input-format parquet``: a table with one JSON resource per row in a ``resource`` string column (NDJSON
loaded as text), or else each row's columns turned back into JSON (``to_json(struct(*))``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson

from cds_service.gather.bulk import patient_key, referenced_shared, shared_key
from cds_service.gather.record import RESOURCE_TYPES

__all__ = ["screen_population", "write_worklist", "main", "WORKLIST_COLUMNS"]

WORKLIST_COLUMNS = ("patient", "name", "status", "blocking", "to_check", "eligible_from")
_knowledge: Any = None  # per Python worker process: the code tables are loaded once, not per patient


def _keyed(line: str) -> list[tuple[str, tuple[str, str, bytes]]]:
    """(candidate patient, (type, id, line)) for a resource that names a patient; ("", ...) for a shared one;
    nothing for a blank line or a resource no one can reach (no patient, no id)."""
    text = line.strip()
    if not text:
        return []
    body = text.encode("utf-8")
    try:
        res = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"an input line is not JSON ({exc})") from None
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        raise ValueError("an input line is not a FHIR resource")
    rid = res.get("id") if isinstance(res.get("id"), str) else ""
    key = patient_key(res)
    if key is not None:
        return [(key, (res["resourceType"], rid, body))]
    if shared_key(res) is not None and res["resourceType"] in RESOURCE_TYPES:
        return [("", (res["resourceType"], rid, body))]
    return []


def _screen_groups(groups: Iterable[tuple[str, Iterable[tuple[str, str, bytes]]]], shared: dict[tuple[str, str], bytes],
                   at_iso: str) -> Iterator[dict[str, Any]]:
    """Screen each patient's group (runs on the executors)."""
    global _knowledge
    from cds_service.cards.worklist import sort_key
    from cds_service.config import Settings, load_knowledge
    from cds_service.gather.record import build_record, relevant_to
    from cds_service.pipeline import screen
    from cds_service.population import _patient_name, as_json, summarise

    if _knowledge is None:
        _knowledge = load_knowledge(Settings.from_env())
    at = datetime.fromisoformat(at_iso)
    keep = relevant_to(_knowledge.tables, at=at, rules=_knowledge.rules)
    shared_types = {t for t, _ in shared}
    by_id: dict[str, list[tuple[str, bytes]]] = {}
    for (t, i), b in shared.items():
        by_id.setdefault(i, []).append((t, b))

    def lookup(rtype: str | None, rid: str) -> tuple[str, bytes] | None:
        if rtype is None:
            found = sorted(by_id.get(rid, ()))
            return found[0] if found else None
        body = shared.get((rtype, rid))
        return (rtype, body) if body is not None else None

    for pid, items in groups:
        # The order of the command line's index: the Patient first, then by type and id; a resource seen twice
        # is kept once. Whatever order the lines came in, the record is the same.
        rows = sorted(set(items), key=lambda r: (r[0] != "Patient", r[0], r[1], r[2]))
        seen: set[tuple[str, str]] = set()
        bodies = []
        for rtype, rid, body in rows:
            if rid and (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
            bodies.append(body)
        if not rows or rows[0][0] != "Patient":
            yield {"orphan": len(bodies)}
            continue
        resources = [orjson.loads(b) for b in bodies]
        resources.extend(referenced_shared(bodies, shared_types, lookup))
        record = build_record(f"Patient/{pid}", resources, keep=keep)
        outcome = summarise(screen(record, at, _knowledge), _patient_name(resources), as_json, _knowledge,
                            record.patient)
        row = outcome.row()
        k0, k1, k2, k3, k4 = sort_key(row)
        yield {"orphan": 0, "patient": pid, "name": row.name, "status": row.status,
               "blocking": " ".join(row.blocking), "to_check": row.to_check,
               "eligible_from": row.eligible_from.isoformat() if row.eligible_from else "",
               "screening": orjson.dumps(outcome.rendered).decode(), "k0": k0, "k1": k1, "k2": k2, "k3": k3,
               "k4": k4}


def _lines(spark: Any, paths: Sequence[str], input_format: str) -> Any:
    if input_format == "ndjson":
        return spark.sparkContext.textFile(",".join(paths))
    from pyspark.sql import functions as F

    df = spark.read.parquet(*paths)
    column = df["resource"] if "resource" in df.columns else F.to_json(F.struct(*df.columns))
    return df.select(column.alias("line")).rdd.map(lambda r: r[0])


def screen_population(spark: Any, paths: Sequence[str], at: datetime, *, input_format: str = "ndjson") -> \
        tuple[Any, int]:
    """(worklist DataFrame sorted candidates first, number of resources whose patient is absent)."""
    from pyspark.sql import types as T

    keyed = _lines(spark, paths, input_format).flatMap(_keyed)
    shared = dict(keyed.filter(lambda kv: kv[0] == "").map(lambda kv: ((kv[1][0], kv[1][1]), kv[1][2]))
                  .reduceByKey(min).collect())  # one line per (type, id), whichever order the files came in
    bshared = spark.sparkContext.broadcast(shared)
    at_iso = at.isoformat()
    rows = (keyed.filter(lambda kv: kv[0] != "").groupByKey()
            .mapPartitions(lambda groups: _screen_groups(groups, bshared.value, at_iso))).cache()
    orphans = int(rows.map(lambda r: r["orphan"]).sum())
    schema = T.StructType([
        T.StructField("patient", T.StringType()), T.StructField("name", T.StringType()),
        T.StructField("status", T.StringType()), T.StructField("blocking", T.StringType()),
        T.StructField("to_check", T.IntegerType()), T.StructField("eligible_from", T.StringType()),
        T.StructField("screening", T.StringType()), T.StructField("k0", T.IntegerType()),
        T.StructField("k1", T.IntegerType()), T.StructField("k2", T.StringType()),
        T.StructField("k3", T.IntegerType()), T.StructField("k4", T.StringType())])
    names = [f.name for f in schema.fields]
    df = spark.createDataFrame(rows.filter(lambda r: not r["orphan"] and "patient" in r)
                               .map(lambda r: tuple(r[n] for n in names)), schema)
    return df.orderBy("k0", "k1", "k2", "k3", "k4").drop("k0", "k1", "k2", "k3", "k4"), orphans


def write_worklist(df: Any, out: str, fmt: str = "parquet") -> None:
    """Parquet: every column (the screening JSON included); CSV: the worklist columns, one file, sorted."""
    if fmt == "parquet":
        df.write.mode("overwrite").parquet(out)
    else:
        # One partition keeps the sorted order in one file a coordinator can open (a worklist is one row per
        # patient: small next to the records).
        (df.select(*WORKLIST_COLUMNS).coalesce(1).write.mode("overwrite")
         .option("header", True).option("emptyValue", "").csv(out))


def main(argv: Sequence[str] | None = None) -> int:
    from cds_service.cli import parse_at

    parser = argparse.ArgumentParser(prog="spark_job", description="Screen a Bulk Data export on Spark.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="NDJSON files/folders (or Parquet)")
    parser.add_argument("--out", required=True, help="where the worklist is written (a folder)")
    parser.add_argument("--at", type=parse_at, required=True, help="evaluation time, ISO 8601")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--input-format", choices=("ndjson", "parquet"), default="ndjson")
    parser.add_argument("--master", default=None, help="e.g. local[2] (default: what spark-submit says)")
    args = parser.parse_args(argv)
    import os

    from pyspark.sql import SparkSession

    if (args.master or "").startswith("local"):  # local workers: this interpreter, where trialscreen is installed
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("trialscreen-population")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    try:
        df, orphans = screen_population(spark, args.paths, args.at, input_format=args.input_format)
        write_worklist(df, args.out, args.format)
        if orphans:
            print(f"spark_job: {orphans:,} resource(s) name a patient absent from the input: not screened",
                  file=sys.stderr)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
