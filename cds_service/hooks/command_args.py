"""The service commands' arguments (``serve``, ``demo``, ``purge-reports``, ``feedback-report``,
``fixtures upload``), kept apart from their code so that ``trialscreen --help`` or ``trialscreen screen``
never import the service (Flask, SQLAlchemy, Alembic, requests, PyJWT): each command's module is imported
only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from cds_service.shipped import FIXTURE_TIME, shipped_dir

__all__ = ["add_service_commands"]

Handler = Callable[[argparse.Namespace], int]


def _run(module: str, name: str) -> Handler:
    """A handler that imports ``module`` when the command runs, then calls its ``name``."""

    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return handler


def _parse_since(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:  # argparse prefixes "argument --since:"
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_service_commands(subparsers: argparse._SubParsersAction,
                         parse_at: Callable[[str], datetime]) -> None:
    """Add the service commands to the ``trialscreen`` command (``parse_at`` reads an ISO 8601 time)."""
    commands = "cds_service.hooks.commands"
    p = subparsers.add_parser("serve", help="run the CDS Hooks service with gunicorn")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4,
                   help="request threads per worker (default 4): how many requests one worker serves at once")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds a worker's event loop may stall before gunicorn restarts it (default 30)")
    p.set_defaults(func=_run(commands, "_cmd_serve"))

    p = subparsers.add_parser("demo", help="serve on 127.0.0.1 and replay a patient-view call per fixture patient")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 = any free port)")
    p.add_argument("--no-serve", action="store_true", help="exit after the replay instead of serving on")
    p.add_argument("--fixtures", type=Path, default=shipped_dir("fixtures"), help="folder of fixture records")
    p.add_argument("--at", type=parse_at, default=None,
                   help=f"evaluation time (default {FIXTURE_TIME.isoformat()}, the fixtures' date)")
    p.set_defaults(func=_run(commands, "_cmd_demo"))

    p = subparsers.add_parser("purge-reports", help="delete expired screening reports now (they also go on write)")
    p.set_defaults(func=_run(commands, "_cmd_purge_reports"))

    p = subparsers.add_parser("feedback-report", help="acceptance and override rates of the cards, by reason and "
                                                      "period")
    p.add_argument("--since", type=_parse_since, default=None, metavar="DATE",
                   help="only feedback with an outcome time on or after DATE (YYYY-MM-DD, UTC)")
    p.add_argument("--by", choices=("month", "week"), default="month", help="period (default month)")
    p.set_defaults(func=_run("cds_service.hooks.feedback_report", "_cmd_feedback_report"))

    p = subparsers.add_parser("fixtures", help="work with the fixture patients")
    fsub = p.add_subparsers(dest="fixtures_command")
    p.set_defaults(func=_run(commands, "_cmd_fixtures_help"), fixtures_parser=p)
    u = fsub.add_parser("upload", help="PUT the fixture patients to a FHIR server as transaction Bundles")
    u.add_argument("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL")
    u.add_argument("--id-prefix", default="ts-", metavar="PREFIX",
                   help="prefix for every uploaded resource id, so a shared server has no clashes (default ts-)")
    u.add_argument("--fixtures", type=Path, default=shipped_dir("fixtures"), help="folder of fixture records")
    u.add_argument("--token", default=os.environ.get("TRIALSCREEN_UPLOAD_TOKEN") or None,
                   help="bearer token for the FHIR server (default: $TRIALSCREEN_UPLOAD_TOKEN)")
    u.set_defaults(func=_run(commands, "_cmd_fixtures_upload"))
