"""FHIR Bulk Data export client: kick-off, polling, download (with resume) of the NDJSON a server exports.

    kick_off  GET [base]/Group/{id}/$export or [base]/Patient/$export, ``Prefer: respond-async``,
              ``_type`` limited to the resource types the criteria read (``gather.record.RESOURCE_TYPES``)
    poll      GET the status URL (Content-Location) until 200 + manifest; 202 waits as ``Retry-After`` says
              (seconds or an HTTP date, capped), 429 / 5xx are retried a few times, 404 / 410 mean the job is
              gone (expired or cancelled); past the deadline the job is cancelled (DELETE) and ExportTimeout
              raised
    download  each output file, streamed to ``<out>/<Type>.<n>.ndjson.part`` then renamed; a file already
              complete (listed in ``<out>/bulk-export.progress``) is skipped, a partial one resumed with ``Range``
              (a server that answers 200 instead of 206 sends the whole file again)

The manifest is saved as ``<out>/bulk-export.manifest`` (not .json: ``trialscreen screen <out>`` reads .json files
as bundles): a second run on the same folder resumes its downloads instead of starting a new export.

The bearer token is sent in the Authorization header only: to the kick-off and status URLs, and to the file URLs
only when the manifest says ``requiresAccessToken`` (files are often on storage that must not see it). It is
never logged, never written to disk and never put in an error message.

This module does network and file I/O (it is in ``gather/``); it logs URLs and counts, never resources.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from cds_service.gather.record import RESOURCE_TYPES

__all__ = ["ExportError", "ExportTimeout", "ExportRequest", "ExportResult", "run_export", "kick_off", "poll",
           "download", "criteria_types"]

log = logging.getLogger("trialscreen.export")

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
_CHUNK = 1 << 16


class ExportError(RuntimeError):
    """The export could not be done; the message says why (never with the token)."""


class ExportTimeout(ExportError):
    """The export was not ready before the deadline (the job was cancelled on the server)."""


def criteria_types() -> list[str]:
    """The resource types the criteria read: what ``_type`` asks for (Medication included: referenced)."""
    return list(RESOURCE_TYPES)


@dataclass
class ExportRequest:
    """What to export and how long to wait.

    ``timeout``: seconds from kick-off until the manifest must be ready; ``request_timeout``: seconds for any one
    HTTP exchange to start answering; ``max_wait``: the longest sleep between two polls, whatever Retry-After says;
    ``retries``: consecutive 429 / 5xx / connection failures tolerated while polling or downloading.
    """

    base_url: str
    out_dir: Path
    group: str | None = None
    since: datetime | None = None
    types: Sequence[str] = field(default_factory=criteria_types)
    token: str | None = None
    timeout: float = 3600.0
    request_timeout: float = 60.0
    max_wait: float = 120.0
    retries: int = 5


@dataclass
class ExportResult:
    manifest: dict[str, Any]
    files: list[Path]
    errors: list[Path]
    skipped: int  # files already complete from an earlier run


def _headers(req: ExportRequest, *, token: bool = True, accept: str = FHIR_JSON) -> dict[str, str]:
    h = {"Accept": accept}
    if token and req.token:
        h["Authorization"] = f"Bearer {req.token}"
    return h


def _outcome(resp: requests.Response) -> str:
    """The diagnostics of an OperationOutcome answer (or the start of the body), for an error message."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(issues, list):
        texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code") or "")
                 for i in issues if isinstance(i, dict)]
        return "; ".join(t for t in texts if t)[:300]
    return json.dumps(body)[:200]


def retry_after(value: str | None, default: float, *, now: Callable[[], datetime] | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait: a number of seconds or an HTTP date; ``default`` when
    absent or unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    moment = (now or (lambda: datetime.now(UTC)))()
    return max(0.0, (when - moment).total_seconds())


def kick_off(session: requests.Session, req: ExportRequest) -> str:
    """Start the export; the status URL (Content-Location)."""
    base = req.base_url.rstrip("/")
    url = f"{base}/Group/{req.group}/$export" if req.group else f"{base}/Patient/$export"
    params: dict[str, str] = {"_outputFormat": NDJSON}
    if req.types:
        params["_type"] = ",".join(req.types)
    if req.since is not None:
        params["_since"] = req.since.isoformat()
    headers = {**_headers(req), "Prefer": "respond-async"}
    log.info("bulk export kick-off: %s (%d types)", url, len(req.types))
    try:
        resp = session.get(url, params=params, headers=headers, timeout=req.request_timeout)
    except requests.RequestException as exc:
        raise ExportError(f"kick-off failed: {type(exc).__name__} at {url}") from None
    if resp.status_code != 202:
        raise ExportError(f"kick-off refused: HTTP {resp.status_code} from {url}: {_outcome(resp)}")
    location = resp.headers.get("Content-Location")
    if not location:
        raise ExportError(f"kick-off answered 202 without a Content-Location header ({url})")
    return location


def poll(session: requests.Session, status_url: str, req: ExportRequest, *,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll the status URL until the manifest is ready (see the module docstring); the manifest."""
    deadline = clock() + req.timeout
    failures = 0
    wait = 1.0
    while True:
        try:
            resp = session.get(status_url, headers=_headers(req), timeout=req.request_timeout)
        except requests.RequestException as exc:
            resp = None
            reason = type(exc).__name__
        if resp is not None and resp.status_code == 200:
            try:
                manifest = resp.json()
            except ValueError:
                raise ExportError(f"the export manifest is not JSON ({status_url})") from None
            if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                raise ExportError(f"the export manifest has no output list ({status_url})")
            return manifest
        if resp is not None and resp.status_code in (404, 410):
            raise ExportError(f"the export job is gone (HTTP {resp.status_code}: expired, cancelled or unknown): "
                              f"{_outcome(resp)}")
        if resp is not None and resp.status_code == 202:
            failures = 0
            if progress is not None:
                progress(resp.headers.get("X-Progress", "in progress"))
            delay = retry_after(resp.headers.get("Retry-After"), wait)
            wait = min(wait * 2, req.max_wait)  # no Retry-After: back off, 1 s, 2 s, 4 s, ...
        elif resp is not None and resp.status_code != 429 and resp.status_code < 500:
            raise ExportError(f"export status: HTTP {resp.status_code} from {status_url}: {_outcome(resp)}")
        else:
            failures += 1
            what = reason if resp is None else f"HTTP {resp.status_code}"
            if failures > req.retries:
                _cancel(session, status_url, req)
                raise ExportError(f"export status failed {failures} times in a row (last: {what}; "
                                  f"{_outcome(resp) if resp is not None else status_url})")
            log.warning("bulk export status: %s, retrying (%d/%d)", what, failures, req.retries)
            delay = retry_after(resp.headers.get("Retry-After") if resp is not None else None, 2.0 ** failures)
        delay = min(max(delay, 0.0), req.max_wait)
        if clock() + delay > deadline:
            _cancel(session, status_url, req)
            raise ExportTimeout(f"the export was not ready within {req.timeout:g} s (cancelled on the server)")
        sleep(delay)


def _cancel(session: requests.Session, status_url: str, req: ExportRequest) -> None:
    """Ask the server to drop the job (best effort: the server may be the reason we gave up)."""
    try:
        session.delete(status_url, headers=_headers(req), timeout=min(req.request_timeout, 10.0))
    except requests.RequestException:
        pass


def _load_progress(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((out_dir / "bulk-export.progress").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"complete": {}}
    return data if isinstance(data, dict) and isinstance(data.get("complete"), dict) else {"complete": {}}


def _save_progress(out_dir: Path, state: dict[str, Any]) -> None:
    tmp = out_dir / "bulk-export.progress.tmp"
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    tmp.replace(out_dir / "bulk-export.progress")


def _file_names(items: list[dict[str, Any]], prefix: str = "") -> list[tuple[str, str]]:
    """(url, local file name) per manifest item: ``<Type>.<n>.ndjson`` (a server may split a type)."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        url = item.get("url")
        if not isinstance(url, str):
            continue
        kind = "".join(ch for ch in str(item.get("type") or "Resource") if ch.isalnum()) or "Resource"
        n = seen[kind] = seen.get(kind, 0) + 1
        out.append((url, f"{prefix}{kind}.{n}.ndjson"))
    return out


def download(session: requests.Session, manifest: dict[str, Any], req: ExportRequest, *,
             progress: Callable[[int, int | None, str], Any] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> ExportResult:
    """Download every output (and error) file of the manifest into ``req.out_dir`` (see the module docstring).

    ``progress(bytes, total or None, name)`` is called as data arrives (a progress bar)."""
    out_dir = req.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    token = bool(manifest.get("requiresAccessToken"))
    state = _load_progress(out_dir)
    files: list[Path] = []
    errors: list[Path] = []
    skipped = 0
    plan = [(u, n, files) for u, n in _file_names(list(manifest.get("output") or []))]
    plan += [(u, n, errors) for u, n in _file_names(list(manifest.get("error") or []), prefix="errors/")]
    for url, name, bucket in plan:
        target = out_dir / name
        if state["complete"].get(name) == url and target.is_file():
            skipped += 1
            bucket.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _download_one(session, url, target, req, token=token, progress=progress, sleep=sleep)
        state["complete"][name] = url
        _save_progress(out_dir, state)
        bucket.append(target)
    return ExportResult(manifest, files, errors, skipped)


def _download_one(session: requests.Session, url: str, target: Path, req: ExportRequest, *, token: bool,
                  progress: Callable[[int, int | None, str], Any] | None,
                  sleep: Callable[[float], None]) -> None:
    part = target.with_name(target.name + ".part")
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = _headers(req, token=token, accept=NDJSON)
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with session.get(url, headers=headers, stream=True, timeout=req.request_timeout) as resp:
                if resp.status_code == 416 and have:  # nothing after what we have: the file was complete
                    break
                if resp.status_code in (429,) or resp.status_code >= 500:
                    raise _Retry(f"HTTP {resp.status_code}", resp.headers.get("Retry-After"))
                if resp.status_code not in (200, 206):
                    raise ExportError(f"download of {target.name} refused: HTTP {resp.status_code}"
                                      f"{' (the export has expired?)' if resp.status_code in (404, 410) else ''}: "
                                      f"{_outcome(resp)}")
                mode = "ab" if resp.status_code == 206 and have else "wb"  # 200: the server sent it all again
                if mode == "wb":
                    have = 0
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                log.info("bulk export download: %s%s", target.name, f" (resuming at {have} bytes)" if have else "")
                with part.open(mode) as f:
                    for chunk in resp.iter_content(_CHUNK):
                        f.write(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(have, total, target.name)
                if total is not None and have < total:
                    raise _Retry(f"connection closed at {have} of {total} bytes", None)
            break
        except (requests.RequestException, _Retry) as exc:
            failures += 1
            what = str(exc) if isinstance(exc, _Retry) else type(exc).__name__
            if failures > req.retries:
                raise ExportError(f"download of {target.name} failed {failures} times in a row (last: {what}); "
                                  "run the same command again to resume") from None
            log.warning("bulk export download of %s: %s, retrying (%d/%d)", target.name, what, failures,
                        req.retries)
            sleep(min(retry_after(exc.retry_after if isinstance(exc, _Retry) else None, 2.0 ** failures),
                      req.max_wait))
    part.replace(target)


class _Retry(Exception):
    def __init__(self, message: str, retry_after: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def run_export(req: ExportRequest, *, session: requests.Session | None = None,
               status: Callable[[str], None] | None = None,
               progress: Callable[[int, int | None, str], Any] | None = None,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> ExportResult:
    """Kick off (or resume, when ``out_dir/bulk-export.manifest`` is there), poll and download; the files written."""
    own = session is None
    session = session or requests.Session()
    try:
        req.out_dir.mkdir(parents=True, exist_ok=True)
        saved = req.out_dir / "bulk-export.manifest"
        manifest = None
        if saved.is_file():
            try:
                manifest = json.loads(saved.read_text(encoding="utf-8"))
            except ValueError:
                manifest = None
        if manifest is None:
            status_url = kick_off(session, req)
            manifest = poll(session, status_url, req, sleep=sleep, clock=clock, progress=status)
            saved.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        elif status is not None:
            status("resuming the downloads of the export in " + str(req.out_dir))
        return download(session, manifest, req, progress=progress, sleep=sleep)
    finally:
        if own:
            session.close()
