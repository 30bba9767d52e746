"""The population worklist: CSV and HTML from `trialscreen screen` on a Bulk export of the fixtures."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import date
from pathlib import Path

import pytest

from cds_service.cards.worklist import WorklistRow, report_filename, sort_key, write_csv
from cds_service.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gather"))
from test_bulk import AT_ISO, FIXTURES, bundle_resources, write_export  # noqa: E402

_ORDER = {"potential-candidate": 0, "ineligible": 1, "not-applicable": 2}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_export(bundle_resources([FIXTURES]), tmp_path_factory.mktemp("worklist") / "export")


@pytest.fixture(scope="module")
def screenings(export) -> dict[str, dict]:
    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        assert main(["screen", str(export), "--format", "json", "--at", AT_ISO]) == 0
    finally:
        sys.stdout = old
    return {s["patient"].removeprefix("Patient/"): s for s in map(json.loads, out.getvalue().splitlines())}


def _blocking(s: dict) -> list[str]:
    return [c["id"] for c in s["criteria"] if (c["kind"], c["result"]) in {("inclusion", "not-met"),
                                                                            ("exclusion", "met")}]


def test_csv_one_row_per_patient_candidates_first(export, screenings, capsys):
    assert main(["screen", str(export), "--format", "csv", "--at", AT_ISO]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [*rows[0]] == ["patient", "name", "status", "blocking", "to_check", "eligible_from"]
    assert sorted(r["patient"] for r in rows) == sorted(screenings)
    assert [_ORDER[r["status"]] for r in rows] == sorted(_ORDER[r["status"]] for r in rows)
    for r in rows:
        s = screenings[r["patient"]]
        assert r["status"] == s["status"]
        assert r["blocking"].split() == _blocking(s)
        assert int(r["to_check"]) == sum(1 for c in s["criteria"] if c["result"] == "unknown")
    by_id = {r["patient"]: r for r in rows}
    assert by_id["ts01-patient"]["name"] == "Maren Lindqvist"
    # A washout: fixture 09's transplant blocks until its E5 date; fixture 07 (APL) has no such date.
    [e5] = [c for c in screenings["ts09-patient"]["criteria"] if c["id"] == "E5"]
    assert by_id["ts09-patient"]["blocking"] == "E5" and by_id["ts09-patient"]["eligible_from"] == e5["until"]
    assert by_id["ts07-patient"]["eligible_from"] == ""
    ineligible = [r for r in rows if r["status"] == "ineligible"]
    dated = [r["eligible_from"] for r in ineligible if r["eligible_from"]]
    assert dated and [r["eligible_from"] for r in ineligible[:len(dated)]] == sorted(dated)


def test_html_worklist_links_every_patient_to_their_report(export, screenings, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["screen", str(export), "--format", "html", "--out", str(out), "--at", AT_ISO, "--jobs", "2"]) == 0
    assert capsys.readouterr().out == ""
    page = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<td><a href="(patients/[^"]+)">([^<]+)</a></td>', page)
    assert sorted(pid for _href, pid in links) == sorted(screenings)
    for href, pid in links:
        report = (out / href).read_text(encoding="utf-8")
        assert f"Patient/{pid}" in report
        label = {"potential-candidate": "Potential candidate", "ineligible": "Not eligible",
                 "not-applicable": "Not applicable"}[screenings[pid]["status"]]
        assert label in report


def test_html_needs_an_output_folder(export, capsys):
    assert main(["screen", str(export), "--format", "html", "--at", AT_ISO]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_sorting_and_cells():
    rows = [WorklistRow("Patient/c", "", "not-applicable", (), 0, None),
            WorklistRow("Patient/b", "", "ineligible", ("I2",), 1, None),
            WorklistRow("Patient/a", "", "ineligible", ("E5",), 3, date(2027, 1, 2)),
            WorklistRow("Patient/z", "", "ineligible", ("E2c",), 3, date(2026, 10, 11)),
            WorklistRow("Patient/y", "=HYPERLINK(\"x\")", "potential-candidate", (), 12, None),
            WorklistRow("Patient/x", "", "potential-candidate", (), 10, None)]
    assert [r.patient for r in sorted(rows, key=sort_key)] == [
        "Patient/x", "Patient/y", "Patient/z", "Patient/a", "Patient/b", "Patient/c"]
    buf = io.StringIO()
    assert write_csv(sorted(rows, key=sort_key), buf) == 6
    assert "'=HYPERLINK" in buf.getvalue()  # a name is never a spreadsheet formula
    assert report_filename("Patient/ts01-patient") == "ts01-patient.html"
    assert re.fullmatch(r"p-[0-9a-f]{16}\.html", report_filename("Patient/../../etc"))


def test_progress_bar_only_on_a_terminal(export):
    """stderr a terminal: tqdm draws a bar; not a terminal: nothing (the other tests read stderr as a pipe)."""
    master, slave = pty.openpty()
    # A new pty is 0 columns wide, where a bar has no room: give it a terminal's size.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run([sys.executable, "-m", "cds_service.cli", "screen", str(export), "--format", "csv",
                               "--at", AT_ISO], stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT, timeout=300,
                              check=True)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    assert proc.returncode == 0
    assert re.search(rb"\d+/\d+ \[", b"".join(chunks)), b"".join(chunks)[:300]
