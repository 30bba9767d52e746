"""The population worklist: one row per patient, candidates first, as CSV or as an HTML page linking to each
patient's report page (``cards/report.py``).

Pure presentation: rows in, text out (the caller opens the files). A row carries the patient's id and name (a
worklist is read by the study team, who need to know whom to call; it is never logged), the status, the blocking
criteria, how many items are still to check, and, when every blocking item is a time window that will pass
(a washout), the date from which the patient may be eligible.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import IO

from cds_service.cards.report import STATUS_LABELS, template_environment

__all__ = ["WorklistRow", "CSV_HEADER", "sort_key", "write_csv", "render_worklist_html", "report_filename"]

CSV_HEADER = ("patient", "name", "status", "blocking", "to_check", "eligible_from")
# Candidates first, then the patients a washout will free (soonest first), then the other ineligible ones, then
# those the trial cannot concern.
_ORDER = {"potential-candidate": 0, "ineligible": 1, "not-applicable": 2}
_SAFE = re.compile(r"[^A-Za-z0-9.\-]")


@dataclass(frozen=True)
class WorklistRow:
    patient: str  # "Patient/<id>"
    name: str
    status: str
    blocking: tuple[str, ...]
    to_check: int
    eligible_from: date | None


def sort_key(row: WorklistRow) -> tuple[int, int, str, int, str]:
    """Candidates first (fewest items to check first); among the ineligible, those with an "eligible from" date
    first, soonest first."""
    waits = row.eligible_from is None
    return (_ORDER.get(row.status, 3), int(waits) if row.status == "ineligible" else 0,
            row.eligible_from.isoformat() if row.eligible_from else "", row.to_check, row.patient)


def write_csv(rows: Iterable[WorklistRow], out: IO[str]) -> int:
    """Write the header and the rows (already sorted) as CSV; the number of rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    n = 0
    for r in rows:
        writer.writerow([r.patient.removeprefix("Patient/"), _cell(r.name), r.status, " ".join(r.blocking),
                         r.to_check, r.eligible_from.isoformat() if r.eligible_from else ""])
        n += 1
    return n


def _cell(text: str) -> str:
    """A name as a spreadsheet cell: a leading = + - @ would be read as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report_filename(patient: str) -> str:
    """The file name of a patient's report page: the id where it is a safe file name, else a hash of it."""
    pid = patient.removeprefix("Patient/")
    if pid and not _SAFE.search(pid) and not pid.startswith("."):
        return f"{pid}.html"
    return "p-" + hashlib.sha256(pid.encode()).hexdigest()[:16] + ".html"


def render_worklist_html(rows: Iterable[WorklistRow], *, trial_id: str, short_title: str, evaluated_at: str,
                         reports_dir: str = "patients") -> str:
    """The worklist page: one row per patient (already sorted), each linking to ``reports_dir/<file>``."""
    items = [{"row": r, "id": r.patient.removeprefix("Patient/"), "label": STATUS_LABELS.get(r.status, r.status),
              "href": f"{reports_dir}/{report_filename(r.patient)}"} for r in rows]
    counts = {s: sum(1 for i in items if i["row"].status == s) for s in _ORDER}
    return template_environment().get_template("worklist.html").render(
        items=items, counts=counts, labels=STATUS_LABELS, trial_id=trial_id, short_title=short_title,
        evaluated_at=evaluated_at)
