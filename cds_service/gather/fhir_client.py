"""Fetching a patient's data from the EHR's FHIR server: trusted servers only, concurrent, paged, on a deadline.

The ``fhirServer`` of a hook request is chosen by the caller, so it is treated as hostile until proved
otherwise: only servers on the configured allowlist are contacted, every URL we are about to send the
EHR's token to (a page's ``next`` link, a redirect target) is checked against it again, and redirects are
never followed automatically. The access token is passed per request in the ``Authorization`` header; it
is never stored on a session and never logged.

Every URL is compared in canonical form (``urls.normalise``) and the canonical URL is what is sent. Each hook
call has its own HTTP state (``transport.CallTransport``: session without cookies, DNS pins, threads, sockets,
byte caps), closed with the call. Queries for the different kinds of data run concurrently on the call's own
threads. Each query follows its Bundle's ``next`` links up to ``fhir_max_pages``. An overall deadline bounds
the whole fetch, body reads included: when it passes, the call's sockets are shut, the service answers with what
it has and every unfinished kind is reported *not retrieved* ("deadline passed").
Every failure (timeouts, refused connections, 401/403/404/410/429/5xx,
non-JSON bodies, Bundles carrying error OperationOutcomes) ends up as a reason string for the kind, never
as an exception out of ``fetch_all``.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests

from cds_service.errors import FhirError, FhirNotFound, FhirNotTrusted, FhirUnauthorized, FhirUnavailable
from cds_service.gather.lazy import parse_bundle
from cds_service.gather.transport import Aborted, CallTransport, Refused, TooLarge
from cds_service.gather.urls import NormalUrl, normalise
from cds_service.observability import observe_fhir

__all__ = ["Allowlist", "Deadline", "FhirClient", "KindResult", "Query", "FHIR_JSON"]

log = logging.getLogger("trialscreen.fhir")

FHIR_JSON = "application/fhir+json"
_ACCEPT = f"{FHIR_JSON}, application/json;q=0.9"
_MAX_REDIRECTS = 3
_MAX_MEDICATION_READS = 50
_RETRY_STATUSES = {429, 502, 503, 504}
# Retries (GETs are idempotent, so retrying is safe): at most one per URL, for 429/502/503/504, a refused or
# reset connection and a body cut off mid-way; only when the wait (Retry-After, else a short pause) plus a
# minimal request still fits before the deadline.
_RETRY_PAUSE = 0.2  # seconds, when the server does not say how long
_MIN_REQUEST_TIME = 0.25  # seconds a retried request needs at least to be worth sending


# --- the allowlist -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Allowlist:
    """Trusted FHIR servers: base URLs or prefixes. A URL is trusted when, both put in canonical form
    (``urls.normalise``: case, default port, percent-encoding, dot-segments), its scheme, host and port equal an
    entry's and the entry's path segments are a prefix of its path segments. ``http://`` is trusted only when an
    entry names ``http://`` itself."""

    entries: tuple[NormalUrl, ...] = ()

    @classmethod
    def parse(cls, values: tuple[str, ...] | list[str]) -> Allowlist:
        """Parse the configured entries; ValueError names an entry that is not an http(s) URL."""
        out = []
        for value in values:
            origin = normalise(value)
            if origin is None or origin.query:
                raise ValueError(f"not an http(s) base URL: {value!r}")
            out.append(origin)
        return cls(tuple(out))

    def allows(self, url: str) -> bool:
        """True when ``url`` may be sent the EHR's token."""
        return self.canonical(url) is not None

    def canonical(self, url: str) -> str | None:
        """The canonical form of ``url`` (what is sent) when it is trusted, else None."""
        target = normalise(url)
        if target is None:
            return None
        if any(target.within(e) for e in self.entries):
            return target.text()
        return None


# --- deadline, queries, results ----------------------------------------------------------------------------
class Deadline:
    """A point in time (monotonic clock) after which no more waiting is done."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.end - time.monotonic()

    def passed(self) -> bool:
        """True once the deadline is reached."""
        return self.remaining() <= 0


@dataclass(frozen=True)
class Query:
    """One query: the kind of data it retrieves (a resource type) and its URL relative to the server base."""

    kind: str
    url: str


@dataclass
class KindResult:
    """What one query gave: its resources, and why it is incomplete (None when complete)."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    full_urls: list[str | None] = field(default_factory=list)  # each resource's Bundle entry fullUrl


def _reason(exc: FhirError) -> str:
    return str(exc)


class FhirClient:
    """Reads from one trusted FHIR server with the EHR's token. Create one per hook call and ``close`` it when
    the call ends: its HTTP state (``transport.CallTransport``: session, pinned addresses, threads, sockets,
    byte counts) is the call's own."""

    def __init__(self, base_url: str, *, token: str | None, allowlist: Allowlist, max_pages: int,
                 deadline: Deadline, request_id: str = "-", transport: CallTransport | None = None) -> None:
        self.base = base_url.rstrip("/") + "/"
        self._token = token
        self.allowlist = allowlist
        self.max_pages = max(1, max_pages)
        self.deadline = deadline
        self.request_id = request_id
        self.trusted = allowlist.allows(self.base)
        canonical = allowlist.canonical(self.base)
        if canonical is not None:
            self.base = canonical.rstrip("/") + "/"
        self.transport = (transport or CallTransport(accept=_ACCEPT)) if self.trusted else None

    def __repr__(self) -> str:  # never show the token
        return f"FhirClient({self.base!r}, trusted={self.trusted})"

    def close(self) -> None:
        """End the call's HTTP state: sockets shut, session closed, threads released."""
        if self.transport is not None:
            self.transport.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request ---------------------------------------------------------------------------------------
    def get_json(self, url: str) -> dict[str, Any]:
        """GET one URL (absolute, or relative to the base) and return its JSON object; raises FhirError."""
        url = urljoin(self.base, url)
        retried = False
        for _hop in range(_MAX_REDIRECTS + 2):  # redirects, plus the one retry
            canonical = self.allowlist.canonical(url)
            if canonical is None:
                raise FhirNotTrusted(f"{_host(url)} is not on the FHIR allowlist (nothing sent)")
            url = canonical  # what was checked is what is sent
            remaining = self.deadline.remaining()
            if remaining <= 0:
                raise FhirUnavailable("deadline passed")
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
            transport = self.transport
            if transport is None:  # unreachable: an untrusted base is refused above
                raise FhirNotTrusted("the FHIR server is not on the allowlist (nothing sent)")
            if transport.aborted:
                raise FhirUnavailable("deadline passed")
            try:
                resp = transport.session.get(url, headers=headers, timeout=(min(remaining, 2.0), remaining),
                                             allow_redirects=False, stream=True)
            except Refused as exc:
                raise FhirNotTrusted(str(exc)) from exc
            except requests.Timeout as exc:
                if self.deadline.remaining() <= 0.05:  # the per-call timeout was the overall deadline
                    raise FhirUnavailable("deadline passed") from exc
                raise FhirUnavailable("the FHIR server timed out") from exc
            except requests.ConnectionError as exc:
                if transport.aborted or self.deadline.passed():
                    raise FhirUnavailable("deadline passed") from exc
                if not retried and self._retry_fits(_RETRY_PAUSE):
                    retried = True
                    time.sleep(_RETRY_PAUSE)
                    continue
                raise FhirUnavailable("the FHIR server could not be reached") from exc
            except requests.RequestException as exc:
                raise FhirUnavailable(f"request failed ({type(exc).__name__})") from exc
            try:
                status = resp.status_code
                if status in (301, 302, 303, 307, 308):
                    location = resp.headers.get("Location")
                    if not location:
                        raise FhirUnavailable(f"HTTP {status} without a Location")
                    url = urljoin(url, location)
                    if not self.allowlist.allows(url):
                        raise FhirNotTrusted(f"redirected to {_host(url)}, which is not on the FHIR allowlist "
                                             "(not followed)")
                    continue
                if status in _RETRY_STATUSES and not retried:
                    wait_s = _retry_after(resp.headers.get("Retry-After"))
                    if wait_s is not None and self._retry_fits(wait_s):
                        retried = True
                        time.sleep(wait_s)
                        continue
                if status in (401, 403):
                    raise FhirUnauthorized(f"the FHIR server refused the access token (HTTP {status})", status=status)
                if status in (404, 410):
                    raise FhirNotFound(f"not found (HTTP {status})", status=status)
                if status == 429:
                    raise FhirUnavailable("the FHIR server is rate-limiting us (HTTP 429)", status=status)
                if status >= 400:
                    raise FhirUnavailable(f"the FHIR server answered HTTP {status}", status=status)
                if status != 200:
                    raise FhirUnavailable(f"unexpected HTTP {status}", status=status)
                try:
                    return _json_body(resp, transport, self.deadline)
                except _CutOff:
                    if retried or not self._retry_fits(0):
                        raise
                    retried = True
                    continue
            finally:
                resp.close()
        raise FhirUnavailable("too many redirects")

    def _retry_fits(self, wait_s: float) -> bool:
        """True when waiting ``wait_s`` and then sending one more request still ends before the deadline."""
        return wait_s + _MIN_REQUEST_TIME < self.deadline.remaining()

    # --- a search with paging ------------------------------------------------------------------------------
    def search(self, query: Query) -> KindResult:
        """Run one query (a read or a search) and follow ``next`` links; failures become ``error``."""
        out = KindResult()
        url: str | None = query.url
        pages = 0
        try:
            while url is not None:
                if pages >= self.max_pages:
                    out.error = f"more than {self.max_pages} pages of results (the rest was not read)"
                    break
                with observe_fhir(query.kind):  # latency and errors by resource type (Prometheus)
                    body = self.get_json(url)
                pages += 1
                if body.get("resourceType") != "Bundle":
                    if body.get("resourceType") == "OperationOutcome":
                        raise FhirUnavailable("the FHIR server answered with an OperationOutcome")
                    out.resources.append(body)
                    out.full_urls.append(None)
                    break
                problem = _collect_entries(body, query.kind, out.resources, out.full_urls)
                if problem:
                    out.error = problem
                    break
                url = _next_link(body)
        except FhirError as exc:
            out.error = _reason(exc)
        return out

    # --- everything at once --------------------------------------------------------------------------------
    def fetch_all(self, queries: Mapping[str, Query]) -> dict[str, KindResult]:
        """Run the queries concurrently; whatever is not finished by the deadline is "deadline passed"."""
        if not self.trusted or self.transport is None:
            return {k: KindResult(error="the FHIR server is not on the allowlist (nothing sent)") for k in queries}
        executor = self.transport.executor  # this call's own threads
        futures: dict[str, Future[KindResult]] = {k: executor.submit(self.search, q) for k, q in queries.items()}
        wait(list(futures.values()), timeout=max(self.deadline.remaining(), 0))
        if not all(f.done() for f in futures.values()):
            # The deadline passed: shut the call's sockets so that no read (a dripping server's included) goes on
            # after the answer, and nothing of this call is left holding a thread or a connection.
            self.transport.abort()
        out: dict[str, KindResult] = {}
        for key, fut in futures.items():
            if not fut.done():
                fut.cancel()
                out[key] = KindResult(error="deadline passed")
                continue
            try:
                out[key] = fut.result()
            except Exception as exc:  # a bug in parsing must not become a 500: the kind is simply not retrieved
                log.error("fhir query failed unexpectedly", extra={"request_id": self.request_id,
                                                                   "error": type(exc).__name__})
                out[key] = KindResult(error="internal error while reading the FHIR response")
        return out

    def read_many(self, references: list[str]) -> tuple[list[dict[str, Any]], str | None]:
        """Read resources by relative reference ("Medication/x") concurrently; (resources, first failure)."""
        refs = references[:_MAX_MEDICATION_READS]
        results = self.fetch_all({ref: Query(ref.split("/", 1)[0], ref) for ref in refs})
        found, failure = [], None
        for ref in refs:
            r = results[ref]
            found.extend(r.resources)
            if r.error and failure is None:
                failure = f"{ref}: {r.error}"
        if len(references) > len(refs) and failure is None:
            failure = f"more than {_MAX_MEDICATION_READS} referenced resources"
        return found, failure


# --- helpers -----------------------------------------------------------------------------------------------
class _CutOff(FhirUnavailable):
    """The connection broke while the body was read (worth one retry: the GET is idempotent)."""


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc.rsplit("@", 1)[-1] or "(no host)"
    except ValueError:
        return "(unparseable URL)"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait before retrying: ``Retry-After`` in seconds or as an HTTP date, a short default when the
    server does not say; None when it cannot be read (do not retry). Whether it fits is the caller's check."""
    if value is None:
        return _RETRY_PAUSE
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(seconds, 0.0)
    return seconds if 0 <= seconds < float("inf") else None


def _json_body(resp: requests.Response, transport: CallTransport, deadline: Deadline) -> dict[str, Any]:
    """The response's JSON object, its bytes read within the caps and the deadline before parsing."""
    try:
        blob = transport.read_body(resp, deadline.end)
    except TooLarge as exc:
        raise FhirUnavailable(str(exc)) from exc
    except Aborted as exc:
        raise FhirUnavailable("deadline passed") from exc
    except (requests.RequestException, OSError, ValueError, zlib.error) as exc:
        if transport.aborted or deadline.passed():
            raise FhirUnavailable("deadline passed") from exc
        if isinstance(exc, zlib.error):
            raise FhirUnavailable("the FHIR response's compression is broken") from exc
        raise _CutOff("the FHIR response was cut off") from exc
    except Exception as exc:  # urllib3's own errors (ProtocolError, ReadTimeoutError) on a shut socket
        if transport.aborted or deadline.passed():
            raise FhirUnavailable("deadline passed") from exc
        raise _CutOff("the FHIR response was cut off") from exc
    try:
        # Its Observations left raw until a criterion could use them (gather.lazy, issue 15): the same value as
        # orjson.loads and the same refusals; the pages of a long Observation query are most of a call's work.
        body = parse_bundle(blob)
    except orjson.JSONDecodeError as exc:
        raise FhirUnavailable("the FHIR response is not JSON") from exc
    finally:
        del blob
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirUnavailable("the FHIR response is not a FHIR resource")
    return body


def _collect_entries(bundle: Mapping[str, Any], kind: str, into: list[dict[str, Any]],
                     urls_into: list[str | None] | None = None) -> str | None:
    """Append a searchset's matches (and includes) to ``into``; a reason if the Bundle reports an error."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        return "the Bundle's entry is not a list"
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        res = entry.get("resource")
        if not isinstance(res, dict):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, Mapping) else None
        if res.get("resourceType") == "OperationOutcome":
            problem = outcome_error(res)
            if problem:
                return problem
            continue  # warnings and information (e.g. an ignored search parameter)
        if mode in (None, "match", "include"):
            into.append(res)
            if urls_into is not None:
                full_url = entry.get("fullUrl")
                urls_into.append(full_url if isinstance(full_url, str) else None)
    return None


def outcome_error(outcome: Mapping[str, Any]) -> str | None:
    """A short reason when an OperationOutcome holds an error or fatal issue (its code, not its text, which
    may quote data), else None."""
    issues = outcome.get("issue")
    if not isinstance(issues, list) or not issues:
        return "the server reported a failure (OperationOutcome without issues)"
    for issue in issues:
        if isinstance(issue, Mapping) and issue.get("severity") in ("error", "fatal"):
            code = issue.get("code")
            return f"the server reported an error ({code})" if isinstance(code, str) else \
                "the server reported an error"
    return None


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
