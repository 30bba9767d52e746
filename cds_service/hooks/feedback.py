"""``POST /cds-services/<id>/feedback``: what the clinician did with a card (CDS Hooks 2.0 "Feedback").

Body::

    {"feedback": [{"card": "<card uuid>", "outcome": "accepted" | "overridden",
                   "acceptedSuggestions": [{"id": "<suggestion uuid>"}],          # accepted only (required)
                   "overrideReason": {"reason": {Coding}, "userComment": "..."},  # overridden only (optional)
                   "outcomeTimestamp": "2026-10-01T09:30:00Z"}]}

The body is checked against :data:`FEEDBACK_SCHEMA` (400 OperationOutcome naming the bad field, e.g.
``feedback[0].outcome``), every item is stored through the store's ``FeedbackStore`` (idempotent: the same
feedback sent twice, a retried request, is stored once), and the answer is ``200`` with an empty body. The
whole body is validated before anything is stored, and all its items are stored in one transaction, so a bad
item (a time outside the representable range, a NUL character or a lone surrogate no database text can hold)
stores nothing and answers 400. When the database cannot store it in time the answer is ``503`` with
``Retry-After`` and nothing is stored: never ``200`` for feedback that was dropped. Nothing of the body is
logged (a user comment may name the patient).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import jsonschema
from flask import Blueprint, Response, current_app

from cds_service.errors import InputError
from cds_service.hooks.patient_view import read_json_request
from cds_service.store import FeedbackItem, Store

__all__ = ["bp", "FEEDBACK_SCHEMA", "parse_feedback", "MAX_ITEMS"]

bp = Blueprint("feedback", __name__)
log = logging.getLogger("trialscreen.feedback")

MAX_ITEMS = 100
_ID = {"type": "string", "minLength": 1, "maxLength": 128}
_CODING = {
    "type": "object",
    "required": ["code"],
    "properties": {
        "system": {"type": "string", "maxLength": 512},
        "code": {"type": "string", "minLength": 1, "maxLength": 128},
        "display": {"type": "string", "maxLength": 1024},
    },
}
FEEDBACK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": _ID,
                    "outcome": {"enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array", "minItems": 1, "maxItems": 50,
                        "items": {"type": "object", "required": ["id"], "properties": {"id": _ID}},
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {"reason": _CODING, "userComment": {"type": "string", "maxLength": 4000}},
                    },
                    "outcomeTimestamp": {"type": "string", "minLength": 10, "maxLength": 64},
                },
                # CDS Hooks 2.0: acceptedSuggestions is required for an accepted outcome; an override reason
                # belongs to an overridden one.
                "allOf": [
                    {"if": {"properties": {"outcome": {"const": "accepted"}}, "required": ["outcome"]},
                     "then": {"required": ["acceptedSuggestions"], "not": {"required": ["overrideReason"]}}},
                    {"if": {"properties": {"outcome": {"const": "overridden"}}, "required": ["outcome"]},
                     "then": {"not": {"required": ["acceptedSuggestions"]}}},
                ],
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(FEEDBACK_SCHEMA)


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _field_of(error: jsonschema.ValidationError) -> str:
    """The JSON path of the offending field, naming a missing required property too."""
    where = _path(error)
    if error.validator == "required" and isinstance(error.message, str) and error.message.endswith(
            "is a required property"):
        missing = error.message.split("'")[1] if "'" in error.message else ""
        if missing:
            return f"{where}.{missing}" if where != "(body)" else missing
    if error.validator == "not" and isinstance(error.validator_value, dict):
        (name,) = error.validator_value.get("required") or ("",)
        return f"{where}.{name}" if name else where
    return where


def _message(error: jsonschema.ValidationError, field: str) -> str:
    if error.validator == "not":
        if field.endswith("overrideReason"):
            return f"{field}: an override reason is only allowed with outcome 'overridden'"
        return f"{field}: accepted suggestions are only allowed with outcome 'accepted'"
    if error.validator == "required":
        return f"{field} is required"
    if error.validator == "enum":
        return f"{field} must be one of {', '.join(repr(v) for v in error.validator_value)}"
    return f"{field}: {error.message[:200]}"


def _timestamp(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{field} is not an ISO 8601 date-time", field=field) from None
    if value.tzinfo is None:
        raise InputError(f"{field} needs a time zone (e.g. 2026-10-01T09:30:00Z)", field=field)
    try:
        value.astimezone(UTC)  # stored in UTC: 0001-01-01T00:00:00+01:00 is before year 1 there
    except OverflowError:
        raise InputError(f"{field} is outside the range of storable times (years 1 to 9999 in UTC)",
                         field=field) from None
    return value


def _check_text(value: Any, field: str) -> None:
    """Refuse strings no database text column can hold: NUL (PostgreSQL) and lone surrogates (not UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InputError(f"{field} contains a NUL character, which cannot be stored", field=field)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{field} is not valid Unicode text (a lone surrogate)", field=field) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(item, f"{field}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _check_text(item, f"{field}[{n}]")


def parse_feedback(body: Any, service_id: str) -> list[FeedbackItem]:
    """Validate a feedback body and return its items (raises InputError naming the bad field)."""
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        # the deepest error inside an ``allOf``/``if`` names the real field; otherwise the first one
        error = errors[0]
        for e in errors:
            if e.context:
                error = min(e.context, key=lambda c: len(c.absolute_path))
                break
        field = _field_of(error)
        raise InputError(_message(error, field), field=field)
    items = []
    for n, entry in enumerate(body["feedback"]):
        _check_text(entry, f"feedback[{n}]")
        reason = (entry.get("overrideReason") or {})
        coding = reason.get("reason") or {}
        items.append(FeedbackItem(
            service_id=service_id,
            card_uuid=entry["card"],
            outcome=entry["outcome"],
            outcome_timestamp=_timestamp(entry["outcomeTimestamp"], f"feedback[{n}].outcomeTimestamp"),
            accepted_suggestions=tuple(s["id"] for s in entry.get("acceptedSuggestions") or ()),
            override_reason_code=coding.get("code"),
            override_reason_system=coding.get("system"),
            override_comment=reason.get("userComment"),
        ))
    return items


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """Store the feedback on this service's cards; 200 with an empty body (503 with Retry-After when the
    database cannot store it: the app's StoreUnavailable handler)."""
    body = read_json_request(service_id, "CDS Hooks feedback")  # 413 above the limit, chunked bodies included
    items = parse_feedback(body, service_id)  # every item checked before any is stored
    from cds_service.hooks.report import STORE_KEY

    store: Store = current_app.extensions[STORE_KEY]
    stored = store.gate.run("feedback save", lambda: store.feedback.add_all(items))
    log.info(f"feedback received: {stored} new, {len(items) - stored} already stored",
             extra={"service": service_id, "count": len(items)})
    return Response(b"", status=200)
