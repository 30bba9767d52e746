"""The service's commands: ``trialscreen serve``, ``trialscreen demo`` and ``trialscreen fixtures upload``.

* ``serve`` builds the app once (the configuration is checked, the database migrated, the process warmed up),
  then becomes gunicorn's master in the same process; the workers are forks of it, each with its own
  database pool (hooks/server.py).
* ``demo`` builds the app, serves it on 127.0.0.1 from a threaded WSGI server, replays a ``patient-view`` call
  with full prefetch for every fixture patient, prints the cards, and keeps serving until Ctrl-C.
* ``purge-reports`` deletes expired screening reports (for a cron job; writes purge them too).
* ``fixtures upload`` PUTs every fixture patient to a FHIR server as a transaction Bundle and prints each
  patient's id with the status the engine gives it at the fixtures' time.
"""

from __future__ import annotations

import argparse
import json
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
    expected_status,
    load_fixture_patients,
    prefetch_for,
    screen_fixture,
    transaction_for,
    valid_prefix,
)
from cds_service.pipeline import Screening
from cds_service.security.demo_client import DemoClient, make_demo_client
from cds_service.shipped import shipped_dir

__all__ = ["LocalServer", "serve_in_thread", "demo_settings", "demo_request_headers",
           "replay", "upload_fixtures"]

DEMO_SITE_TABLES = shipped_dir("site_tables")
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
    from cds_service.hooks.server import gunicorn_options, run_gunicorn

    prepare_metrics_dir()  # /metrics adds up every worker's values (set before the app builds its metrics)
    from cds_service.hooks.app import create_app

    # Built once, here in gunicorn's master (hooks/server.py): a bad configuration stops the service with one
    # readable line before any worker starts (a database that cannot be reached or written is a
    # ConfigurationError naming TRIALSCREEN_DATABASE_URL or TRIALSCREEN_STATE_DIR: exit 3), the database is
    # migrated once, and a worker gunicorn restarts is a fork of this app: it never migrates or connects to boot.
    app = create_app()
    print(f"trialscreen: serving on http://{args.host}:{args.port} with gunicorn ({args.workers} workers, "
          f"{args.threads} threads each)",
          file=sys.stderr, flush=True)
    run_gunicorn(app, gunicorn_options(args.host, args.port, args.workers, args.timeout, args.threads))
    return 0


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
                request_file = write_demo_request(Path(tmp) / "request.json", server.base_url, patients)
                print(_how_to_call(server.base_url, client, request_file), file=out, flush=True)
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


def write_demo_request(path: Path, base_url: str, patients: list[FixturePatient]) -> Path:
    """A ready patient-view request body for the first demo patient, with its prefetch as the running service's
    discovery asks for it, written to ``path`` (in the demo's own folder, deleted when the demo stops)."""
    with requests.Session() as session:
        service = _discovery(session, base_url)
    patient = patients[0]
    body = {"hook": service["hook"], "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/demo-hematologist", "patientId": patient.patient_id},
            "prefetch": prefetch_for(patient, service.get("prefetch") or {})}
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def _how_to_call(base_url: str, client: DemoClient, request_file: Path) -> str:
    """How a person calls the running demo: the demo's client identity and a ready curl command."""
    from cds_service.hooks.discovery import SERVICE_ID

    url = f"{base_url}/cds-services/{SERVICE_ID}"
    patient = json.loads(request_file.read_text(encoding="utf-8"))["context"]["patientId"]
    return textwrap.dedent(f"""
        Hook calls need a signed bearer token (CDS Hooks 2.0). This demo trusts its own ES384 key:
          issuer {client.iss}, kid {client.kid}
          private key         {client.key_file}
          trusted clients     {client.trusted_clients_file}
          (all deleted when the demo stops)
        A fresh token for the hook (audience {url}; valid 5 minutes, usable once):
          curl -X POST '{url}' -H 'Content-Type: application/json' \\
            -H 'Authorization: Bearer {client.token(url)}' -d @{request_file}
          (that file: a patient-view call for {patient}, with full prefetch)
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
