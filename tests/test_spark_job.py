"""The Spark job in local mode (``local[2]``): the same worklist and screenings as ``trialscreen screen`` on the
same Bulk export of the fixtures and of Synthea. Needs ``pip install -e '.[spark]'`` (and Java 17); skipped
without pyspark locally, an error under CI (``.ci/run`` installs the extra)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "gather"))
from test_bulk import AT, AT_ISO, FIXTURES, SYNTHEA, bundle_resources, write_export  # noqa: E402

from cds_service.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("pyspark is not installed: CI must run the Spark tests (pip install -e '.[spark]')")
        pytest.skip("pyspark is not installed (pip install -e '.[spark]')")
    # The Python workers must be this interpreter (the one with trialscreen and its dependencies).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("trialscreen-test")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _cli(args: list[str]) -> str:
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        assert main(args) == 0
    finally:
        sys.stdout = old
    return out.getvalue()


def _export(tmp_path: Path) -> Path:
    resources = bundle_resources([FIXTURES])
    if SYNTHEA.is_dir():
        resources += bundle_resources(sorted(SYNTHEA.glob("*.json")))
    return write_export(resources, tmp_path / "export", seed=2)


def test_spark_worklist_and_screenings_equal_the_command_line(spark, tmp_path):
    from cds_service.spark_job import screen_population, write_worklist

    export = _export(tmp_path)
    with (export / "Condition.ndjson").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"resourceType": "Condition", "id": "ghost",
                            "subject": {"reference": "Patient/not-exported"}}) + "\n")
    df, orphans = screen_population(spark, [str(export)], AT)
    assert orphans == 1
    write_worklist(df, str(tmp_path / "parquet"), "parquet")
    write_worklist(df, str(tmp_path / "csv"), "csv")
    got = {r["patient"]: json.loads(r["screening"]) for r in spark.read.parquet(str(tmp_path / "parquet")).collect()}
    cli = {s["patient"].removeprefix("Patient/"): s
           for s in map(json.loads, _cli(["screen", str(export), "--format", "json", "--at", AT_ISO]).splitlines())}
    assert len(got) == len(cli) and sorted(got) == sorted(cli)
    for pid, s in got.items():
        assert s == cli[pid], pid  # status, all 46 results, evidence (in the same order)
    assert len(next(iter(got.values()))["criteria"]) == 46
    [part] = list((tmp_path / "csv").glob("part-*.csv"))
    spark_rows = list(csv.reader(io.StringIO(part.read_text(encoding="utf-8"))))
    cli_rows = list(csv.reader(io.StringIO(_cli(["screen", str(export), "--format", "csv", "--at", AT_ISO]))))
    assert spark_rows == cli_rows  # the same worklist, row for row, in the same order


def test_a_cross_file_exclusion_on_spark(spark, tmp_path):
    from cds_service import spark_job

    export = write_export(bundle_resources([FIXTURES / "09-ineligible-allo-hsct-3-months.json"]), tmp_path / "e")
    spark_job_df = spark_job.screen_population(spark, [str(export)], AT)[0]
    [row] = spark_job_df.collect()
    assert row["patient"] == "ts09-patient" and row["status"] == "ineligible" and row["blocking"] == "E5"
