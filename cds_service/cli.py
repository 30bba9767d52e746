"""The ``trialscreen`` command: ``screen`` records from files (and, from the service modules, ``serve``,
``demo``, ``fixtures upload``).

``now()`` is read here, at the edge, and nowhere deeper: every rule takes the evaluation time as input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cds_service.errors import ConfigurationError

if TYPE_CHECKING:
    pass

# Start-up time is most of a short command's time: each command imports what it uses when it runs (the engine
# for ``screen``, the service for the others), so ``--help`` and ``screen`` never load Flask or SQLAlchemy.

__all__ = ["main"]

def parse_at(text: str) -> datetime:
    """An ``--at`` value: ISO 8601, ``Z`` allowed; a time without zone is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # argparse prefixes "argument --at:"
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _cmd_screen(args: argparse.Namespace) -> int:
    from cds_service.config import Settings, load_knowledge
    from cds_service.criteria.registry import check_registry
    from cds_service.errors import InputError
    from cds_service.gather.bulk import ndjson_files
    from cds_service.gather.bundles import expand_paths, records_from_paths
    from cds_service.pipeline import screen
    from cds_service.population import summarise
    from cds_service.runtime import tune_gc

    if args.format == "html" and args.out is None:
        print("trialscreen: --format html writes a worklist page and one report page per patient: give --out DIR",
              file=sys.stderr)
        return 2
    tune_gc()
    settings = Settings.from_env()
    knowledge = load_knowledge(settings)
    check_registry(knowledge.rules)
    at = args.at
    status = 0
    screened = 0
    sink = _Sink(args.format, sys.stdout, args.out, knowledge, at, verbose=getattr(args, "verbose", False))
    render = sink.render
    paths = [Path(p) for p in args.paths]
    try:
        # NDJSON is Bulk Data: all NDJSON files together are one population, joined per patient (gather/bulk.py);
        # bundles (.json) are whole records each, read as before.
        bundles = [p for p in expand_paths(paths) if p.suffix.lower() != ".ndjson"]
        for item in records_from_paths(bundles, knowledge.tables, at=at, rules=knowledge.rules):
            if isinstance(item, InputError):
                print(f"trialscreen: {item}", file=sys.stderr)
                status = 2
                continue
            sink.write(summarise(screen(item, at, knowledge), _model_name(item.patient), render, knowledge,
                                 item.patient))
            screened += 1
        bulk = ndjson_files(paths)
        if bulk:
            n, bulk_status = _screen_bulk(bulk, args, sink, knowledge)
            screened += n
            status = status or bulk_status
    finally:
        sink.close()
    if not screened and not status:  # an empty file or a folder without records is a mistake worth a word
        print("trialscreen: no patient record found in " + ", ".join(args.paths) +
              " (empty files, or folders without .json/.ndjson files)", file=sys.stderr)
        return 2
    return status


def _model_name(patient: Any) -> str:
    """"Given Family" of a parsed Patient's first name ('' when none): shown on the worklist only."""
    for entry in getattr(patient, "name", None) or ():
        text = " ".join([*(entry.given or ()), *([entry.family] if entry.family else [])]) or entry.text or ""
        if text:
            return str(text)
    return ""


class _Sink:
    """Where screenings go, by ``--format``: JSON lines or checklists as they come; a CSV worklist (sorted at the
    end from rows spooled on disk); or an HTML worklist in ``--out`` with one report page per patient."""

    def __init__(self, fmt: str, out: TextIO, out_dir: Path | None, knowledge: Any, at: datetime, *,
                 verbose: bool = False) -> None:
        import tempfile

        from cds_service.population import as_json_line, as_report_html, as_text, as_text_verbose

        self.fmt, self.out, self.knowledge, self.at = fmt, out, knowledge, at
        text = as_text_verbose if verbose else as_text
        self.render = {"json": as_json_line, "text": text, "csv": None, "html": as_report_html}[fmt]
        # The text checklist opens with every patient's summary line: the lines are kept (short), the patients'
        # blocks spooled on disk until the end, so a large population's checklist does not grow in memory.
        self.heads: list[str] = []
        self.blocks = tempfile.TemporaryFile("w+", encoding="utf-8") if fmt == "text" else None
        self.spool = None
        self.out_dir = out_dir
        if fmt in ("csv", "html"):
            from cds_service.gather.bulk import RowSpool

            self.spool = RowSpool()
        if fmt == "html":
            assert out_dir is not None
            (out_dir / "patients").mkdir(parents=True, exist_ok=True)

    def write(self, outcome: Any) -> None:
        from cds_service.cards.worklist import report_filename

        if self.fmt == "json":
            self.out.write(outcome.rendered.decode())
        elif self.fmt == "text":
            assert self.blocks is not None
            head, block = outcome.rendered
            self.blocks.write(("\n\n" if self.heads else "") + block)
            self.heads.append(head)
        else:
            assert self.spool is not None
            self.spool.add(outcome.row())
            if self.fmt == "html":
                assert self.out_dir is not None
                (self.out_dir / "patients" / report_filename(outcome.patient)).write_text(outcome.rendered,
                                                                                          encoding="utf-8")

    def close(self) -> None:
        from cds_service.cards.worklist import render_worklist_html, write_csv

        try:
            if self.blocks is not None and self.heads:
                import shutil

                from cds_service.cards.checklist import LEGEND

                self.out.write("\n".join(self.heads) + "\n\n" + LEGEND + "\n\n")
                self.blocks.seek(0)
                shutil.copyfileobj(self.blocks, self.out)
                self.out.write("\n")
            if self.spool is not None and self.fmt == "csv":
                write_csv(self.spool.sorted_rows(), self.out)
            elif self.spool is not None and self.fmt == "html":
                assert self.out_dir is not None
                rules = self.knowledge.rules
                page = render_worklist_html(self.spool.sorted_rows(), trial_id=rules.trial_id,
                                            short_title=rules.short_title, evaluated_at=self.at.isoformat())
                (self.out_dir / "index.html").write_text(page, encoding="utf-8")
            self.out.flush()
        finally:
            if self.blocks is not None:
                self.blocks.close()
            if self.spool is not None:
                self.spool.close()


def _progress(total: int) -> Any:
    """A progress bar on stderr (tqdm), silent when stderr is not a terminal (a log file, a pipe, CI)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="patient", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False,
                dynamic_ncols=True)


def _screen_bulk(files: list[Path], args: argparse.Namespace, sink: _Sink, knowledge: Any) -> tuple[int, int]:
    """Screen NDJSON files as one Bulk Data population; (patients screened, exit status)."""
    from cds_service.errors import InputError
    from cds_service.gather.bulk import BulkIndex
    from cds_service.population import screen_index

    try:
        index = BulkIndex.build(files)
    except InputError as exc:
        print(f"trialscreen: {exc}", file=sys.stderr)
        return 0, 2
    screened = 0
    with index, _progress(index.count()) as bar:
        orphans = index.orphans()
        for outcome in screen_index(index, args.at, jobs=args.jobs, render=sink.render, knowledge=knowledge,
                                    progress=bar.update):
            screened += 1
            sink.write(outcome)
    if orphans.resources:
        print(f"trialscreen: {orphans.summary()}", file=sys.stderr)
    return screened, 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Bulk Data export from a FHIR server into --out, and with --screen the population screened in one step."""
    import os

    from cds_service.gather.bulk_export import ExportError, ExportRequest, run_export

    token = os.environ.get("TRIALSCREEN_FHIR_TOKEN") or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            print(f"trialscreen: --token-file: cannot be read ({exc.strerror or exc})", file=sys.stderr)
            return 2
    req = ExportRequest(base_url=args.fhir_server, out_dir=args.out, group=args.group, since=args.since,
                        token=token, timeout=args.timeout)
    bars: dict[str, Any] = {}

    def status(text: str) -> None:
        if sys.stderr.isatty():
            print(f"\rtrialscreen: export {text}\033[K", end="", file=sys.stderr, flush=True)

    def progress(done: int, total: int | None, name: str) -> None:
        from tqdm import tqdm

        bar = bars.get(name)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[name] = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr,
                                    disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        result = run_export(req, status=status, progress=progress)
    except ExportError as exc:
        print(f"\ntrialscreen: export: {exc}" if sys.stderr.isatty() else f"trialscreen: export: {exc}",
              file=sys.stderr)
        return 4
    finally:
        for bar in bars.values():
            bar.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    skipped = f" ({result.skipped} already complete)" if result.skipped else ""
    errors = f"; the server reported {len(result.errors)} error file(s) in {args.out}/errors" if result.errors else ""
    print(f"trialscreen: exported {len(result.files)} file(s) to {args.out}{skipped}{errors}", file=sys.stderr)
    if not args.screen:
        return 0
    if not result.files:
        print("trialscreen: the export holds no file to screen", file=sys.stderr)
        return 2
    args.paths = [str(p) for p in result.files]
    args.out = args.report_dir
    return _cmd_screen(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialscreen", description="Screen patients for NCT06880354.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("screen", help="screen FHIR bundles / NDJSON files / folders of them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--at", type=parse_at, default=None, help="evaluation time, ISO 8601 (default: now)")
    p.add_argument("--format", choices=("json", "text", "csv", "html"), default="text",
                   help="text: a checklist per patient (default); json: JSON Lines, one object per patient; "
                        "csv: a worklist, one row per patient, candidates first; html: a worklist page "
                        "(--out DIR/index.html) linking to each patient's report page (DIR/patients/)")
    p.add_argument("--verbose", action="store_true",
                   help="text: every criterion's reason and all of its evidence (default: what decided each result)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="--format html: the folder the pages are written to")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="NDJSON (Bulk Data) input: screen with N processes (default 1)")
    p.set_defaults(func=_cmd_screen)
    e = sub.add_parser("export", help="FHIR Bulk Data export ($export) from a FHIR server, optionally screened",
                       description="Kick off a Bulk Data export of the resource types the criteria read, poll it, "
                                   "download the NDJSON into --out (a second run resumes), and with --screen screen "
                                   "it. The bearer token, if any, is read from TRIALSCREEN_FHIR_TOKEN or "
                                   "--token-file (never from the command line, where other users can see it).")
    e.add_argument("--fhir-server", required=True, metavar="URL", help="the FHIR server's base URL")
    e.add_argument("--group", default=None, metavar="ID", help="export Group/ID's patients (default: all patients)")
    e.add_argument("--since", type=parse_at, default=None, help="only resources changed since (ISO 8601, _since)")
    e.add_argument("--out", type=Path, default=Path("bulk-export"), metavar="DIR",
                   help="where the NDJSON goes (default: ./bulk-export)")
    e.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="give up (and cancel the job) if the export is not ready by then (default 3600)")
    e.add_argument("--token-file", type=Path, default=None, metavar="PATH", help="a file holding the bearer token")
    e.add_argument("--screen", action="store_true", help="screen the export once downloaded")
    e.add_argument("--at", type=parse_at, default=None, help="--screen: evaluation time (default: now)")
    e.add_argument("--format", choices=("json", "text", "csv", "html"), default="text", help="--screen: as screen's")
    e.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="--screen: worker processes")
    e.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                   help="--screen --format html: the folder the worklist pages are written to")
    e.set_defaults(func=_cmd_export)
    from cds_service.hooks.command_args import add_service_commands

    add_service_commands(sub, parse_at)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "at", None) is None and args.command in ("screen", "export"):
        args.at = datetime.now(UTC)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"trialscreen: configuration error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
