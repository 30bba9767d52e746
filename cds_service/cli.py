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
from typing import TYPE_CHECKING

from cds_service.errors import ConfigurationError

if TYPE_CHECKING:
    from cds_service.pipeline import Screening

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


def _cmd_screen(args: argparse.Namespace) -> int:
    import orjson

    from cds_service.config import Settings, load_knowledge
    from cds_service.criteria.registry import check_registry
    from cds_service.errors import InputError
    from cds_service.gather.bundles import records_from_paths
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
    text: list[Screening] = []  # the text checklist opens with a summary line per patient: it needs them all
    for item in records_from_paths([Path(p) for p in args.paths], knowledge.tables, at=at,
                                   rules=knowledge.rules):
        if isinstance(item, InputError):
            print(f"trialscreen: {item}", file=sys.stderr)
            status = 2
            continue
        result = screen(item, at, knowledge)
        screened += 1
        if args.format == "json":
            out.write(orjson.dumps(result.to_json()).decode() + "\n")
        else:
            text.append(result)
    if text:
        from cds_service.cards.checklist import format_checklist

        out.write(format_checklist(text, knowledge.rules, tables=knowledge.tables, verbose=args.verbose))
    out.flush()
    if not screened and not status:  # an empty file or a folder without records is a mistake worth a word
        print("trialscreen: no patient record found in " + ", ".join(args.paths) +
              " (empty files, or folders without .json/.ndjson files)", file=sys.stderr)
        return 2
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialscreen", description="Screen patients for NCT06880354.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("screen", help="screen FHIR bundles / NDJSON files / folders of them")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--at", type=parse_at, default=None, help="evaluation time, ISO 8601 (default: now)")
    p.add_argument("--format", choices=("json", "text"), default="text",
                   help="text: a checklist per patient (default); json: JSON Lines, one object per patient")
    p.add_argument("--verbose", action="store_true",
                   help="text: every criterion's reason and all of its evidence (default: what decided each result)")
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
