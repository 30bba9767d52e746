"""Population screening: every patient of a Bulk Data index screened, one by one, in one or N processes.

    BulkIndex (gather/bulk.py, on disk) -> per patient: build_record -> screen(record, at) -> Outcome

Patients are read from the index in sorted batches, screened, and handed back in that order; at most a few
batches are in flight at once, so memory depends on the largest patient record, not on the population. With
``jobs`` > 1 the batches go to worker processes (each opens the index read-only and loads the code tables once).

No I/O here besides reading the index through ``gather.bulk``; the caller writes the output.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cds_service.criteria.result import Result

__all__ = ["Outcome", "as_json", "as_json_line", "as_report_html", "as_text", "as_text_verbose", "screen_index",
           "summarise"]

_BATCH = 25  # patients per task: enough to amortise the hand-over, few enough to keep every worker busy


@dataclass(frozen=True)
class Outcome:
    """One patient's worklist row, and the screening as the caller's ``render`` made it (None without one)."""

    patient: str
    status: str
    name: str
    blocking: tuple[str, ...]
    to_check: int
    eligible_from: date | None
    rendered: Any = None


    def row(self) -> Any:
        """The worklist row (``cards.worklist.WorklistRow``)."""
        from cds_service.cards.worklist import WorklistRow

        return WorklistRow(self.patient, self.name, self.status, self.blocking, self.to_check, self.eligible_from)


# (Screening, Knowledge, Patient resource or None) -> what the caller writes; a module-level function, so that
# it can be sent to workers. The Patient is there for the report page's header (name, MRN, birth date, age, sex).
Render = Callable[[Any, Any, Any], Any]


def summarise(screening: Any, name: str = "", render: Render | None = None, knowledge: Any = None,
              patient: Any = None) -> Outcome:
    """An Outcome from a Screening: blocking criteria (inclusions not met, exclusions that apply), items to check
    (unknown), and, when every blocking item is a time window with an end date, the date all have passed."""
    blocking = [c for c in screening.criteria if (c.kind == "inclusion" and c.result is Result.NOT_MET)
                or (c.kind == "exclusion" and c.result is Result.MET)]
    until = [c.until for c in blocking]
    eligible_from = max(until) if blocking and all(u is not None for u in until) else None  # type: ignore[type-var]
    return Outcome(
        patient=screening.patient,
        status=screening.status,
        name=name,
        blocking=tuple(c.id for c in blocking),
        to_check=sum(1 for c in screening.criteria if c.result is Result.UNKNOWN),
        eligible_from=eligible_from,
        rendered=render(screening, knowledge, patient) if render is not None else None,
    )


def as_json(screening: Any, knowledge: Any = None, patient: Any = None) -> dict[str, Any]:
    """``render`` for the JSON form (``Screening.to_json()``)."""
    return screening.to_json()


def as_json_line(screening: Any, knowledge: Any = None, patient: Any = None) -> bytes:
    """``render`` for JSON Lines: the serialised line, made in the worker."""
    import orjson

    return orjson.dumps(screening.to_json()) + b"\n"


def as_text(screening: Any, knowledge: Any, patient: Any = None) -> tuple[str, str]:
    """``render`` for the text checklist (``cards.checklist``): the patient's summary line and their block (the
    checklist opens with every patient's summary line, so the two are written apart)."""
    from cds_service.cards.checklist import format_patient, summary_line

    return (summary_line(screening, knowledge.rules),
            format_patient(screening, knowledge.rules, tables=knowledge.tables, verbose=False))


def as_text_verbose(screening: Any, knowledge: Any, patient: Any = None) -> tuple[str, str]:
    """``as_text`` with every criterion's reason and all of its evidence (``--verbose``)."""
    from cds_service.cards.checklist import format_patient, summary_line

    return (summary_line(screening, knowledge.rules),
            format_patient(screening, knowledge.rules, tables=knowledge.tables, verbose=True))


def as_report_html(screening: Any, knowledge: Any, patient: Any = None) -> str:
    """``render`` for the patient's report page (``cards.report``), with the header from the Patient resource."""
    from cds_service.cards.report import build_report, patient_header, render_report_html, with_header

    stored = screening.to_json()
    if patient is not None:
        stored = with_header(stored, patient_header(patient, screening.evaluated_at))
    return render_report_html(build_report(stored, knowledge.rules))


def _patient_name(resources: list[dict[str, Any]]) -> str:
    """"Given Family" from the Patient's first name entry ('' when none). Shown on the worklist only."""
    for res in resources:
        if res.get("resourceType") == "Patient":
            for entry in res.get("name") or ():
                if isinstance(entry, dict):
                    given = " ".join(g for g in entry.get("given") or () if isinstance(g, str))
                    family = entry.get("family") if isinstance(entry.get("family"), str) else ""
                    text = " ".join(p for p in (given, family) if p) or entry.get("text") or ""
                    if text:
                        return str(text)
            return ""
    return ""


class _Screener:
    """Screens patients of one index (one per process)."""

    def __init__(self, db_path: Path, at: datetime, render: Render | None, knowledge: Any = None) -> None:
        from cds_service.config import Settings, load_knowledge
        from cds_service.gather.bulk import BulkIndex
        from cds_service.gather.record import relevant_to

        self.knowledge = knowledge if knowledge is not None else load_knowledge(Settings.from_env())
        self.index = BulkIndex(db_path)
        self.at = at
        self.render = render
        self.keep = relevant_to(self.knowledge.tables, at=at, rules=self.knowledge.rules)

    def screen(self, ids: list[str]) -> list[Outcome]:
        from cds_service.gather.record import build_record
        from cds_service.pipeline import screen

        out = []
        for pid in ids:
            resources = self.index.resources_of(pid)
            record = build_record(f"Patient/{pid}", resources, keep=self.keep)
            out.append(summarise(screen(record, self.at, self.knowledge), _patient_name(resources), self.render,
                                 self.knowledge, record.patient))
        return out


_worker: _Screener | None = None
_inherited: Any = None  # the parent's knowledge, seen by forked workers (never pickled)


def _init_worker(db_path: str, at: datetime, render: Render | None) -> None:
    global _worker
    _worker = _Screener(Path(db_path), at, render, _inherited)


def _screen_in_worker(ids: list[str]) -> list[Outcome]:
    assert _worker is not None
    return _worker.screen(ids)


def _context() -> Any:
    """fork where it is safe (Linux, this process single-threaded): workers start in milliseconds with the code
    tables already loaded; spawn elsewhere (each worker imports and loads them itself, ~1-3 s)."""
    import sys
    import threading

    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def screen_index(index: Any, at: datetime, *, jobs: int = 1, render: Render | None = None,
                 knowledge: Any = None, progress: Callable[[int], None] | None = None) -> Iterator[Outcome]:
    """Every patient of ``index`` (a ``BulkIndex``) screened as of ``at``, in patient-id order.

    ``jobs``: worker processes (1: this process). ``render``: Screening -> ``Outcome.rendered`` (a module-level
    function, so that workers can be sent it). ``knowledge``: the loaded code tables and rules (default: loaded
    from the environment's settings). ``progress(n)`` is called as each batch of ``n`` patients is done.
    """
    global _inherited
    if knowledge is None:
        from cds_service.config import Settings, load_knowledge

        knowledge = load_knowledge(Settings.from_env())
    if jobs <= 1:
        screener = _Screener(index.db_path, at, render, knowledge)
        try:
            for ids in index.patient_ids(batch=_BATCH):
                batch = screener.screen(ids)
                yield from batch
                if progress is not None:
                    progress(len(batch))
        finally:
            screener.index.close()
        return
    ctx = _context()
    _inherited = knowledge if ctx.get_start_method() == "fork" else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(index.db_path), at, render)) as pool:
        pending: deque[Future[list[Outcome]]] = deque()
        for ids in index.patient_ids(batch=_BATCH):
            pending.append(pool.submit(_screen_in_worker, ids))
            if len(pending) >= 3 * jobs:  # a bounded window: results are handed back in order as they finish
                batch = pending.popleft().result()
                yield from batch
                if progress is not None:
                    progress(len(batch))
        while pending:
            batch = pending.popleft().result()
            yield from batch
            if progress is not None:
                progress(len(batch))
