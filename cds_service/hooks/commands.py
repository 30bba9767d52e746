"""The service's commands: ``trialscreen serve``, ``trialscreen demo`` and ``trialscreen fixtures upload``.

* ``serve`` checks the configuration and migrates the database once, then replaces itself with gunicorn
  running ``cds_service.hooks.app:create_app()`` (workers import the app themselves: no engine or pool is
  shared across a fork).
* ``demo`` builds the app, serves it on 127.0.0.1 from a threaded WSGI server, replays a ``patient-view`` call
  with full prefetch for every fixture patient, prints the cards, and keeps serving until Ctrl-C.
* ``purge-reports`` deletes expired screening reports (for a cron job; writes purge them too).
* ``fixtures upload`` PUTs every fixture patient to a FHIR server as a transaction Bundle and prints each
  patient's id with the status the engine gives it at the fixtures' time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socketserver
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests

from cds_service.config import Settings, load_knowledge
from cds_service.criteria.result import Result
from cds_service.errors import ConfigurationError, InputError
from cds_service.hooks.demo_data import (
    FIXTURE_TIME,
    FixturePatient,
    default_fixtures_dir,
    expected_status,
    load_fixture_patients,
    prefetch_for,
    screen_fixture,
    transaction_for,
    valid_prefix,
)
from cds_service.pipeline import Screening
from cds_service.security.demo_client import DemoClient, make_demo_client

__all__ = ["add_service_commands", "LocalServer", "serve_in_thread", "demo_settings", "demo_request_headers",
           "APP_SPEC", "replay", "upload_fixtures"]

APP_SPEC = "cds_service.hooks.app:create_app()"
GUNICORN_CONFIG = "python:cds_service.hooks.gunicorn_conf"
WORKER_CLASS = "cds_service.hooks.gunicorn_worker.DeadlineThreadWorker"
DEMO_SITE_TABLES = Path(__file__).resolve().parents[2] / "examples" / "site-tables"
FHIR_JSON = "application/fhir+json"


# --- a real HTTP server in a thread (demo, browser tests) --------------------------------------------------
class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """No access log: a report URL carries a token, and the app logs each request itself."""


@dataclass
class LocalServer:
    """A WSGI app served on a loopback port by a thread; ``stop()`` shuts it down."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def serve_in_thread(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 0) -> LocalServer:
    """Serve ``app`` on ``host:port`` (0: a free port) from a daemon thread, one thread per request."""
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="trialscreen-http", daemon=True)
    thread.start()
    return LocalServer(server, thread)


# --- demo mode: the places issue 4 (authentication, CORS) plugs into ----------------------------------------
def demo_settings(state_dir: Path, client: DemoClient | None = None) -> dict[str, Any]:
    """Settings overrides for ``trialscreen demo``: its own SQLite store in ``state_dir``.

    Demo-only relaxations (CORS for the sandbox, the demo's own trusted client key) belong here, so that
    ``serve`` never gets them: any origin may call (``*``, never with credentials), and ``client``'s
    trusted-clients file (the demo's own key, plus any clients of ``TRIALSCREEN_TRUSTED_CLIENTS``) is trusted.
    """
    out: dict[str, Any] = {"state_dir": state_dir, "log_level": "WARNING",  # the terminal shows cards, not logs
                           "cors_origins": ("*",)}
    # The demo hospital's local codes (CLL1 has no LOINC) unless the environment names a site's own tables.
    if not os.environ.get("TRIALSCREEN_SITE_TABLES") and DEMO_SITE_TABLES.is_dir():
        out["site_tables"] = DEMO_SITE_TABLES
    if client is not None:
        out["trusted_clients"] = client.trusted_clients_file
    return out


def demo_request_headers(base_url: str, service_id: str, token: str | None = None) -> dict[str, str]:
    """HTTP headers for the demo's own hook calls, with ``Authorization: Bearer <token>`` when given."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


# --- serve --------------------------------------------------------------------------------------------------
def _gunicorn_argv(host: str, port: int, workers: int, timeout: int, threads: int = 4) -> list[str]:
    # The threaded worker with read deadlines (gunicorn_worker.py): no slow client can hold a worker or a thread.
    # No control socket: gunicorn's default path ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl) is
    # the same for every instance a user runs, so a second instance would take over (or remove) the first one's
    # socket, and nothing here uses gunicornc; signals (HUP, TERM, TTIN/TTOU) still manage the master.
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--worker-class", WORKER_CLASS, "--threads", str(threads),
            "--timeout", str(timeout), "--graceful-timeout", "20", "--worker-tmp-dir", tempfile.gettempdir(),
            "--no-control-socket", "--config", GUNICORN_CONFIG, APP_SPEC]


def prepare_metrics_dir(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Multiprocess Prometheus metrics for the gunicorn workers: ``PROMETHEUS_MULTIPROC_DIR`` as given (created,
    and emptied of a previous run's files) or a new temporary folder; set in ``environ`` for the workers."""
    from cds_service.observability import MULTIPROC_ENV

    given = environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # counters of a previous run would otherwise be added to this one's
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="trialscreen-metrics-"))
        environ[MULTIPROC_ENV] = str(folder)
    return folder


def _cmd_serve(args: argparse.Namespace) -> int:
    from cds_service.hooks.app import create_app

    # Fail here, with a readable message, rather than in every gunicorn worker; this also runs the database
    # migrations once before the workers start.
    app = create_app()
    store = app.extensions.get("trialscreen.store")
    if store is not None:
        store.close()
    argv = _gunicorn_argv(args.host, args.port, args.workers, args.timeout, args.threads)
    prepare_metrics_dir()  # /metrics adds up every worker's values
    print(f"trialscreen: serving on http://{args.host}:{args.port} with gunicorn ({args.workers} workers, "
          f"{args.threads} threads each)",
          file=sys.stderr, flush=True)
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


# --- demo ---------------------------------------------------------------------------------------------------
def _discovery(session: requests.Session, base_url: str) -> dict[str, Any]:
    resp = session.get(f"{base_url}/cds-services", timeout=30)
    resp.raise_for_status()
    services = resp.json().get("services") or []
    service = next((s for s in services if s.get("hook") == "patient-view"), None)
    if service is None:
        raise ConfigurationError("the service's discovery document lists no patient-view service")
    return service


def replay(base_url: str, patients: list[FixturePatient], *, session: requests.Session | None = None,
           sign: Callable[[str], str] | None = None) -> list[tuple[FixturePatient, int, dict[str, Any]]]:
    """POST a patient-view call with full prefetch for each patient; return (patient, HTTP status, body).

    ``sign(url)`` returns a fresh bearer token for the endpoint ``url`` (one per call: tokens are single-use).
    """
    session = session or requests.Session()
    service = _discovery(session, base_url)
    templates = service.get("prefetch") or {}
    url = f"{base_url}/cds-services/{service['id']}"
    out = []
    for p in patients:
        body = {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/demo-hematologist", "patientId": p.patient_id},
            "prefetch": prefetch_for(p, templates),
        }
        token = sign(url) if sign is not None else None
        resp = session.post(url, json=body, headers=demo_request_headers(base_url, service["id"], token), timeout=60)
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": resp.text[:500]}
        out.append((p, resp.status_code, payload))
    return out


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent) or [indent]


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


def _plain(markdown: str) -> str:
    """Markdown emphasis removed, for a terminal."""
    return _ITALIC.sub(r"\1", _BOLD.sub(r"\1", markdown))


def _detail_lines(detail: str, limit: int) -> list[str]:
    lines = [_plain(ln.rstrip()) for ln in detail.splitlines() if ln.strip()]
    shown = lines[:limit]
    if len(lines) > limit:
        shown.append(f"... ({len(lines) - limit} more lines in the card)")
    return shown


def format_cards(patient: FixturePatient, status: int, payload: Mapping[str, Any], *, detail_lines: int = 6,
                 verdict: str | None = None) -> str:
    """One patient's hook answer as terminal text: each card's summary, detail opening and links."""
    head = f"== {patient.patient_id}  ({patient.source})"
    lines = [head]
    if status != 200:
        issue = (payload.get("issue") or [{}])[0] if isinstance(payload, Mapping) else {}
        lines.append(f"   HTTP {status}: {issue.get('diagnostics') or payload}")
        return "\n".join(lines)
    cards = payload.get("cards") or []
    if not cards:
        why = f" ({verdict})" if verdict else ""
        lines.append(f"   no card{why}")
        return "\n".join(lines)
    for card in cards:
        lines.extend(_wrap(f"[{card.get('indicator', '?')}] {card.get('summary', '')}", "   "))
        for ln in _detail_lines(str(card.get("detail") or ""), detail_lines):
            lines.extend(_wrap(ln, "     | "))
        for link in card.get("links") or []:
            lines.append(f"     -> {link.get('label')}: {link.get('url')}")
        for s in card.get("suggestions") or []:
            lines.append(f"     suggestion: {s.get('label')}")
    return "\n".join(lines)


def _verdict(screening: Screening) -> str:
    """"ineligible: E3, I7d" - the status and the criteria that block."""
    if screening.status == "not-applicable":
        return "not-applicable: no AML diagnosis in the record"
    blocking = [c.id for c in screening.criteria
                if (c.kind == "inclusion" and c.result is Result.NOT_MET)
                or (c.kind == "exclusion" and c.result is Result.MET)]
    return f"{screening.status}: {', '.join(blocking)}" if blocking else screening.status


def _cmd_demo(args: argparse.Namespace) -> int:
    from cds_service.hooks.app import create_app

    out: TextIO = sys.stdout
    at = args.at or FIXTURE_TIME
    base = Settings.from_env()
    # The demo's own state: its SQLite store (unless TRIALSCREEN_DATABASE_URL is set) and its client key pair.
    tmp = tempfile.mkdtemp(prefix="trialscreen-demo-")
    try:
        client = make_demo_client(Path(tmp) / "client", also_trust=base.trusted_clients)
        overrides: dict[str, Any] = demo_settings(Path(tmp), client)
        if base.database_url:
            del overrides["state_dir"]
        overrides["clock"] = lambda: at
        try:
            patients = load_fixture_patients(args.fixtures)
        except InputError as exc:
            print(f"trialscreen: {exc}", file=sys.stderr)
            return 2
        app = create_app(overrides)
        try:
            server = serve_in_thread(app, "127.0.0.1", args.port)
        except OSError as exc:
            print(f"trialscreen: cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc}); "
                  "choose another port with --port", file=sys.stderr)
            return 2
        knowledge = app.extensions["trialscreen"].knowledge
        try:
            print(f"TrialScreen demo: CDS service at {server.base_url}/cds-services "
                  f"(evaluation time {at.isoformat()}, the fixtures' date)\n", file=out, flush=True)
            results = replay(server.base_url, patients, sign=client.token)
            with_cards = 0
            for patient, status, payload in results:
                cards = payload.get("cards") if status == 200 else None
                with_cards += bool(cards)
                verdict = None if cards else _verdict(screen_fixture(patient, knowledge, at))
                print(format_cards(patient, status, payload, verdict=verdict) + "\n", file=out, flush=True)
            failed = sum(1 for _, status, _ in results if status != 200)
            print(f"{len(results)} patients replayed: {with_cards} with a card, {failed} errors.", file=out)
            if args.no_serve:
                return 1 if failed else 0
            if threading.current_thread() is threading.main_thread():
                # SIGTERM (a service manager, `timeout`) stops like Ctrl-C, so the key pair and store are deleted
                signal.signal(signal.SIGTERM, _interrupt)
            try:
                print(f"\nStill serving at {server.base_url}/cds-services: point a CDS Hooks client at it. "
                      "Ctrl-C stops.", file=out, flush=True)
                print(_how_to_call(server.base_url, client), file=out, flush=True)
                threading.Event().wait()
            except KeyboardInterrupt:
                print("\nstopped", file=out)
            return 0
        finally:
            server.stop()
            store = app.extensions.get("trialscreen.store")
            if store is not None:
                store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _how_to_call(base_url: str, client: DemoClient) -> str:
    """How a person calls the running demo: the demo's client identity and a ready curl command."""
    from cds_service.hooks.discovery import SERVICE_ID

    url = f"{base_url}/cds-services/{SERVICE_ID}"
    return textwrap.dedent(f"""
        Hook calls need a signed bearer token (CDS Hooks 2.0). This demo trusts its own ES384 key:
          issuer {client.iss}, kid {client.kid}
          private key         {client.key_file}
          trusted clients     {client.trusted_clients_file}
          (all deleted when the demo stops)
        A fresh token for the hook (audience {url}; valid 5 minutes, usable once):
          curl -X POST '{url}' -H 'Content-Type: application/json' \\
            -H 'Authorization: Bearer {client.token(url)}' -d @request.json
        To use the CDS Hooks sandbox or another client, trust it in a file named by TRIALSCREEN_TRUSTED_CLIENTS
        (docs/security.md) and start the demo again: its clients are trusted alongside the demo's own key.
        Browsers may call from any origin (CORS *).""")


# --- fixtures upload ----------------------------------------------------------------------------------------
def upload_fixtures(fhir_server: str, patients: list[FixturePatient], prefix: str = "", *,
                    session: requests.Session | None = None, token: str | None = None,
                    timeout: float = 120.0) -> list[str]:
    """POST each patient as a transaction Bundle to ``fhir_server``; return the uploaded patient ids.

    Raises InputError naming the patient when the server refuses a Bundle (a transaction is all-or-nothing).
    """
    session = session or requests.Session()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    uploaded = []
    for p in patients:
        resp = session.post(fhir_server.rstrip("/"), json=transaction_for(p, prefix), headers=headers,
                            timeout=timeout)
        if resp.status_code not in (200, 201):
            raise InputError(f"{p.source}: the FHIR server refused the transaction for {prefix}{p.patient_id}: "
                             f"HTTP {resp.status_code} {_outcome_text(resp)}")
        uploaded.append(prefix + p.patient_id)
    return uploaded


def _outcome_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list):
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code"))
                         for i in issues[:3] if isinstance(i, dict))
    return str(body)[:300]


def _cmd_fixtures_upload(args: argparse.Namespace) -> int:
    try:
        prefix = valid_prefix(args.id_prefix)
        patients = load_fixture_patients(args.fixtures)
        knowledge = load_knowledge(Settings.from_env())
        upload_fixtures(args.fhir_server, patients, prefix, token=args.token)
    except requests.RequestException as exc:
        print(f"trialscreen: cannot reach the FHIR server: {type(exc).__name__}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"trialscreen: {exc}", file=sys.stderr)
        return 2
    print(f"Uploaded {len(patients)} patients to {args.fhir_server.rstrip('/')}.")
    print(f"Expected status = the engine's own verdict at the fixtures' time {FIXTURE_TIME.isoformat()} "
          "(screened locally; a service evaluating at another time can differ where data has aged).")
    width = max(len(prefix + p.patient_id) for p in patients)
    for p in patients:
        print(f"  {prefix + p.patient_id:<{width}}  {expected_status(p, knowledge):<20} {p.source}")
    return 0


def _parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _cmd_purge_reports(args: argparse.Namespace) -> int:
    from cds_service.store import open_store

    store = open_store(Settings.from_env())
    try:
        print(f"{store.reports.purge_expired()} expired screening reports deleted.")
    finally:
        store.close()
    return 0


def _cmd_fixtures_help(args: argparse.Namespace) -> int:
    args.fixtures_parser.print_help()
    return 2


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``demo`` and ``fixtures upload`` to the ``trialscreen`` command."""
    p = subparsers.add_parser("serve", help="run the CDS Hooks service with gunicorn")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4,
                   help="request threads per worker (default 4): how many requests one worker serves at once")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds a worker's event loop may stall before gunicorn restarts it (default 30)")
    p.set_defaults(func=_cmd_serve)

    p = subparsers.add_parser("demo", help="serve on 127.0.0.1 and replay a patient-view call per fixture patient")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 = any free port)")
    p.add_argument("--no-serve", action="store_true", help="exit after the replay instead of serving on")
    p.add_argument("--fixtures", type=Path, default=default_fixtures_dir(), help="folder of fixture records")
    p.add_argument("--at", type=_parse_at, default=None,
                   help=f"evaluation time (default {FIXTURE_TIME.isoformat()}, the fixtures' date)")
    p.set_defaults(func=_cmd_demo)

    p = subparsers.add_parser("purge-reports", help="delete expired screening reports now (they also go on write)")
    p.set_defaults(func=_cmd_purge_reports)

    from cds_service.hooks.feedback_report import add_feedback_report_command

    add_feedback_report_command(subparsers)

    p = subparsers.add_parser("fixtures", help="work with the fixture patients")
    fsub = p.add_subparsers(dest="fixtures_command")
    p.set_defaults(func=_cmd_fixtures_help, fixtures_parser=p)
    u = fsub.add_parser("upload", help="PUT the fixture patients to a FHIR server as transaction Bundles")
    u.add_argument("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL")
    u.add_argument("--id-prefix", default="ts-", metavar="PREFIX",
                   help="prefix for every uploaded resource id, so a shared server has no clashes (default ts-)")
    u.add_argument("--fixtures", type=Path, default=default_fixtures_dir(), help="folder of fixture records")
    u.add_argument("--token", default=os.environ.get("TRIALSCREEN_UPLOAD_TOKEN") or None,
                   help="bearer token for the FHIR server (default: $TRIALSCREEN_UPLOAD_TOKEN)")
    u.set_defaults(func=_cmd_fixtures_upload)
