"""``POST /cds-services/<id>``: the patient-view hook.

    request -> validate (400 / 404) -> gather the record (prefetch, then the trusted FHIR server; 412) ->
    screen -> cards

Without a Patient there is nothing to screen: the answer is 412 with an OperationOutcome naming the cause
("fhirServer is not on this service's allowlist", "the FHIR server has no Patient with this id", ...), as the
CDS Hooks specification provides for data the service cannot obtain; it is never ``{"cards": []}``, which
means "screened, nothing to show". Once a Patient is in hand, everything a FHIR server does wrong ends as "not
retrieved" kinds in the screening and a sentence in the card, never as an error response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected

from cds_service.cards.card import build_cards, with_report, without_report
from cds_service.cards.report import patient_header, with_header
from cds_service.errors import BodyTooLarge, InputError, PreconditionFailed, ServiceNotFound, UnsupportedMediaType
from cds_service.gather.fhir_client import Deadline, FhirClient
from cds_service.gather.lazy import parse_request
from cds_service.gather.prefetch import gather
from cds_service.gather.record import relevant_to
from cds_service.gather.transport import CallTransport
from cds_service.hooks.app import ServiceState, json_response, state
from cds_service.hooks.discovery import HOOK, SERVICE_ID
from cds_service.hooks.json_body import parse_json_body
from cds_service.hooks.schemas import validate_request
from cds_service.observability import record_screening
from cds_service.pipeline import screen

__all__ = ["bp", "handle", "read_body"]

bp = Blueprint("patient_view", __name__)
log = logging.getLogger("trialscreen.hook")


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "(no host)"
    except ValueError:
        return "(unparseable)"


def _report_url(svc: ServiceState, screening: object) -> str | None:
    """The report link; "" when the report could not be stored (None when there is no report store)."""
    if svc.save_report is None:
        return None
    try:
        token = svc.save_report(screening)
    except Exception as exc:  # a failing report store must not cost the clinician the card
        log.error("report store failed: card sent without its report link", extra={"error": type(exc).__name__})
        return ""
    if not token:
        return ""
    base = svc.settings.public_url.rstrip("/") if svc.settings.public_url else request.url_root.rstrip("/")
    return f"{base}/report/{token}"


def _no_patient_cause(client: FhirClient | None, why: str | None) -> str:
    """Why no Patient could be obtained, in words an integrator can act on (no patient data: no id, no name)."""
    if why == "the Patient resource could not be read":
        return "the Patient resource for context.patientId could not be read (it is not a valid FHIR R4 Patient)"
    if client is not None and not client.trusted:
        return ("fhirServer is not on this service's allowlist and the prefetch holds no Patient: nothing could be "
                "read to screen (add the server to TRIALSCREEN_FHIR_ALLOWLIST, or prefetch the Patient)")
    if client is None:
        return "the prefetch holds no Patient for context.patientId and there is no fhirServer to read it from"
    if why in (None, "no Patient resource"):
        return "the FHIR server has no Patient with the id in context.patientId"
    return f"the Patient for context.patientId could not be read from the FHIR server: {why}"


def handle(svc: ServiceState, body: object, request_id: str) -> dict:
    """Answer one validated-or-not patient-view request body (raises InputError subclasses for 4xx)."""
    if isinstance(body, dict) and isinstance(body.get("hook"), str) and body["hook"] != HOOK:
        raise InputError(f"hook {body['hook'][:100]!r} is not served by this service (it serves {HOOK})",
                         field="hook")
    req = validate_request(body)
    settings = svc.settings
    patient_id = req["context"]["patientId"]
    deadline = Deadline(settings.fhir_deadline_seconds)
    client = None
    server = req.get("fhirServer")
    if server:
        auth = req.get("fhirAuthorization") or {}
        # The call's own HTTP state (session without cookies, pinned addresses, threads, byte caps), closed
        # below whatever happens: nothing of it is shared with another call or outlives this one.
        transport = CallTransport(private_networks=svc.private_networks,
                                  max_response_bytes=settings.fhir_max_response_bytes,
                                  max_call_bytes=settings.fhir_max_call_bytes)
        client = FhirClient(server, token=auth.get("access_token"), allowlist=svc.allowlist,
                            max_pages=settings.fhir_max_pages, deadline=deadline, request_id=request_id,
                            transport=transport)
        if not client.trusted:
            log.warning("fhirServer is not on the allowlist: nothing is fetched from it",
                        extra={"host": _host(server)})
    at = svc.clock()  # one evaluation time for the date horizon and the screening
    # Same screening, fewer models to validate: resources no criterion can use, and Observations beyond their
    # date horizon, are skipped before validation.
    try:
        gathered = gather(patient_id, req.get("prefetch"), svc.templates, client, request_id=request_id,
                          keep=relevant_to(svc.knowledge.tables, at=at, rules=svc.knowledge.rules))
    finally:
        if client is not None:
            client.close()
    if gathered.record is None:
        cause = _no_patient_cause(client, gathered.why)
        log.info("no patient record to screen: 412", extra={"reason": cause, "fetched": len(gathered.fetched_keys)})
        raise PreconditionFailed(cause, field="context.patientId")
    screening = screen(gathered.record, at, svc.knowledge)
    card_args = dict(rules=svc.knowledge.rules, hook_instance=req["hookInstance"],
                     explain_ineligibility=settings.explain_ineligibility, tables=svc.knowledge.tables)
    cards = build_cards(screening, report_url=None, **card_args)
    if cards:  # store a report only when a card links to it: no screening is kept for a patient without one
        url = _report_url(svc, with_header(screening.to_json(), patient_header(gathered.record.patient, at)))
        if url:
            cards = with_report(cards, url)  # the same cards as built with the link (tests/cards), built once
        elif url == "":  # the store failed: the card all the same, saying why it has no report link
            cards = without_report(cards)
    log.info("screened", extra={"hook": HOOK, "screening_status": screening.status, "cards": len(cards),
                                "not_retrieved": sorted(screening.not_retrieved) or None,
                                "fetched": len(gathered.fetched_keys)})
    record_screening(screening.status, len(cards))
    return {"cards": cards}


def _is_json(mimetype: str) -> bool:
    """application/json, application/fhir+json or another ``+json`` type (werkzeug lower-cases it)."""
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def read_body() -> bytes:
    """The request body; BodyTooLarge (413) above ``max_body_bytes``; InputError (400) for a body that does not
    arrive in time.

    werkzeug answers 413 itself when the Content-Length says the body is too large. A chunked body (no
    Content-Length, as gunicorn passes it on) is instead cut at the limit without a word: one more byte left in
    the input then means the body was too large (not "invalid JSON").
    """
    try:
        raw = request.get_data(cache=False)
    except (TimeoutError, ClientDisconnected):
        # Under `trialscreen serve` the body is read on a deadline (gunicorn_worker.py): a body shorter than its
        # Content-Length, or one sent too slowly, ends here (werkzeug reports the worker's TimeoutError, and a
        # client that closed early, as ClientDisconnected) rather than holding a thread.
        raise InputError("the request body did not arrive in full in time (fewer bytes than its Content-Length, "
                         "or sent too slowly)") from None
    except (ParseException, NoMoreData):  # gunicorn found the body's framing broken (a bad chunk size, ...)
        raise InputError("the request body is not valid HTTP (its chunked encoding is broken, or it ended "
                         "early)") from None
    if request.content_length is not None and len(raw) < request.content_length:
        raise InputError("the request body is shorter than its Content-Length (the client closed the connection "
                         "before sending all of it)")
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise BodyTooLarge("request body too large")
    return raw


def read_json_request(service_id: str, what: str, parse: Callable[[bytes], Any] = parse_json_body) -> Any:
    """The JSON body of a call to one of this service's endpoints: 404 for another service id, 415 for a body
    not declared as JSON, 413 above the size limit, 400 for a body that is not JSON (``parse_json_body``: orjson
    for small bodies, json.loads for large ones, the same answers)."""
    if service_id != SERVICE_ID:
        raise ServiceNotFound("no CDS service with this id", field="id")
    if not _is_json(request.mimetype):
        raise UnsupportedMediaType(f"Content-Type must be application/json ({what} is JSON)")
    return parse(read_body())


def _lazy_body(body: bytes) -> Any:
    """The hook's body: its prefetched Observations decoded only when needed (gather.lazy, issue 15)."""
    return parse_request(body, parse_json_body)


@bp.post("/cds-services/<service_id>")
def patient_view(service_id: str) -> Response:
    """The patient-view hook of the screening service."""
    body = read_json_request(service_id, "a CDS Hooks request", _lazy_body)
    return json_response(handle(state(current_app), body, getattr(g, "request_id", "-")))
