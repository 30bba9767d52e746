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
    from cds_service.criteria.result import Evidence
    from cds_service.pipeline import Screening

# Start-up time is most of a short command's time: each command imports what it uses when it runs (the engine
# for ``screen``, the service for the others), so ``--help`` and ``screen`` never load Flask or SQLAlchemy.

__all__ = ["main"]

_MARK = {"met": "[x]", "not-met": "[ ]", "unknown": "[?]"}


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


def _evidence_line(e: Evidence) -> str:
    """"Observation/alt-1: ALT 32 U/L (2026-09-27T07:30:00+00:00; 0.80 x ULN)"."""
    value = " ".join(str(b) for b in (e.value, e.unit) if b is not None and str(b) != "")
    what = ": ".join(p for p in (e.display, value) if p)
    extras = [str(b) for b in (e.date, e.note) if b is not None and str(b) not in value]
    return e.reference + (f": {what}" if what else "") + (f" ({'; '.join(extras)})" if extras else "")


def format_text(s: Screening) -> str:
    """A checklist a research coordinator can read."""
    lines = [f"{s.patient}  {s.status.upper()}  ({s.trial}, evaluated {s.evaluated_at.isoformat()})"]
    for c in s.criteria:
        mark = _MARK[c.result.value]
        if c.kind == "exclusion":  # for exclusions "met" is the bad outcome: show it as blocking
            mark = {"met": "[!]", "not-met": "[x]", "unknown": "[?]"}[c.result.value]
        until = f" [until {c.until.isoformat()}]" if c.until is not None else ""
        lines.append(f"  {mark} {c.id:<5} {c.result.value:<8} {c.reason}{until}")
        for e in c.evidence:
            lines.append(f"              - {_evidence_line(e)}")
    for p in s.problems:
        lines.append(f"  data problem: {p.reference}: {p.message}")
    for kind, why in s.not_retrieved.items():
        lines.append(f"  not retrieved: {kind}: {why}")
    return "\n".join(lines)


def _cmd_screen(args: argparse.Namespace) -> int:
    import orjson

    from cds_service.config import Settings, load_knowledge
    from cds_service.criteria.registry import check_registry
    from cds_service.errors import InputError
    from cds_service.gather.bulk import ndjson_files
    from cds_service.gather.bundles import expand_paths, records_from_paths
    from cds_service.pipeline import screen
    from cds_service.runtime import tune_gc

    tune_gc()
    settings = Settings.from_env()
    knowledge = load_knowledge(settings)
    check_registry(knowledge.rules)
    at = args.at
    status = 0
    screened = 0
    out = sys.stdout
    paths = [Path(p) for p in args.paths]
    # NDJSON is Bulk Data: all NDJSON files together are one population, joined per patient (gather/bulk.py);
    # bundles (.json) are whole records each, read as before.
    bundles = [p for p in expand_paths(paths) if p.suffix.lower() != ".ndjson"]
    for item in records_from_paths(bundles, knowledge.tables, at=at, rules=knowledge.rules):
        if isinstance(item, InputError):
            print(f"trialscreen: {item}", file=sys.stderr)
            status = 2
            continue
        result = screen(item, at, knowledge)
        screened += 1
        if args.format == "json":
            out.write(orjson.dumps(result.to_json()).decode() + "\n")
        else:
            out.write(format_text(result) + "\n\n")
    bulk = ndjson_files(paths)
    if bulk:
        n, bulk_status = _screen_bulk(bulk, args, out, knowledge)
        screened += n
        status = status or bulk_status
    out.flush()
    if not screened and not status:  # an empty file or a folder without records is a mistake worth a word
        print("trialscreen: no patient record found in " + ", ".join(args.paths) +
              " (empty files, or folders without .json/.ndjson files)", file=sys.stderr)
        return 2
    return status


def _screen_bulk(files: list[Path], args: argparse.Namespace, out: TextIO, knowledge: Any) -> tuple[int, int]:
    """Screen NDJSON files as one Bulk Data population; (patients screened, exit status)."""
    from cds_service.errors import InputError
    from cds_service.gather.bulk import BulkIndex
    from cds_service.population import as_json_line, screen_index

    try:
        index = BulkIndex.build(files)
    except InputError as exc:
        print(f"trialscreen: {exc}", file=sys.stderr)
        return 0, 2
    screened = 0
    with index:
        orphans = index.orphans()
        render = as_json_line if args.format == "json" else format_text
        for outcome in screen_index(index, args.at, jobs=args.jobs, render=render, knowledge=knowledge):
            screened += 1
            if args.format == "json":
                out.write(outcome.rendered.decode())
            else:
                out.write(outcome.rendered + "\n\n")
    if orphans.resources:
        print(f"trialscreen: {orphans.summary()}", file=sys.stderr)
    return screened, 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialscreen", description="Screen patients for NCT06880354.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("screen", help="screen FHIR bundles / NDJSON files / folders of them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--at", type=parse_at, default=None, help="evaluation time, ISO 8601 (default: now)")
    p.add_argument("--format", choices=("json", "text"), default="text",
                   help="text: a checklist per patient (default); json: JSON Lines, one object per patient")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="NDJSON (Bulk Data) input: screen with N processes (default 1)")
    p.set_defaults(func=_cmd_screen)
    from cds_service.hooks.command_args import add_service_commands

    add_service_commands(sub, parse_at)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "at", None) is None and args.command == "screen":
        args.at = datetime.now(UTC)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"trialscreen: configuration error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
