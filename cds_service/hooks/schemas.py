"""JSON Schema of a CDS Hooks 2.0.1 ``patient-view`` request, and validation that names the bad field.

The schema checks the envelope (``hook``, ``hookInstance``, ``fhirServer``, ``fhirAuthorization``,
``context``, ``prefetch``), not the FHIR resources inside the prefetch: those are parsed one by one later,
and an invalid one is skipped and reported as a data problem rather than failing the whole call.
``context.patientId`` must be a FHIR id, because it is put into the URLs of FHIR queries. A pattern must match
the whole string: ``$`` is the end of the string, as in JSON Schema, not Python's "or before a final newline".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema

from cds_service.errors import InputError

__all__ = ["REQUEST_SCHEMA", "validate_request", "FHIR_ID"]

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
_UUID = r"^(urn:uuid:)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string", "minLength": 1, "maxLength": 100},
        "hookInstance": {"type": "string", "pattern": _UUID},
        "fhirServer": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
        "fhirAuthorization": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
            "properties": {
                "access_token": {"type": "string", "minLength": 1, "maxLength": 16384},
                "token_type": {"type": "string", "pattern": "^[Bb][Ee][Aa][Rr][Ee][Rr]$"},
                "expires_in": {"type": "integer", "minimum": 0},
                "scope": {"type": "string"},
                "subject": {"type": "string"},
                "patient": {"type": "string"},
            },
        },
        "context": {
            "type": "object",
            "required": ["patientId"],
            "properties": {
                "patientId": {"type": "string", "pattern": FHIR_ID},
                "userId": {"type": "string"},
                "encounterId": {"type": "string"},
            },
        },
        "prefetch": {
            "type": "object",
            # Not oneOf [null, object]: a failed branch formats the repr of the whole (megabytes) value.
            "additionalProperties": {
                "type": ["object", "null"],
                "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string", "minLength": 1}},
            },
        },
        "extension": {"type": "object"},
    },
    "dependentRequired": {"fhirAuthorization": ["fhirServer"]},
}



@lru_cache(maxsize=64)
def _whole_string(pattern: str) -> re.Pattern[str]:
    """``pattern`` with a final ``$`` meaning the end of the string, as in the ECMA-262 regexes JSON Schema
    patterns are: Python's ``$`` also matches before a final newline, so ``"<uuid>\\n"`` matched ``^<uuid>$``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not _whole_string(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# The 2020-12 validator with "pattern" anchored as JSON Schema means it (see _whole_string).
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})
_VALIDATOR = _Validator(REQUEST_SCHEMA)


def _bad_prefetch_value(error: jsonschema.ValidationError) -> str | None:
    """The prefetch key whose value is neither null nor an object, if that is the error."""
    path = list(error.absolute_path)
    if len(path) == 2 and path[0] == "prefetch" and error.validator == "type":
        return str(path[1])
    return None


def _path(error: jsonschema.ValidationError) -> str:
    key = _bad_prefetch_value(error)
    if key is not None:
        return f"prefetch.{key}"
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        # "'patientId' is a required property": name the missing field itself
        missing = error.message.split("'")[1] if error.message.count("'") >= 2 else ""
        parts.append(missing)
    elif error.validator == "dependentRequired":
        parts.append("fhirServer")
    return ".".join(p for p in parts if p) or "(request body)"


def _message(error: jsonschema.ValidationError, where: str) -> str:
    if _bad_prefetch_value(error) is not None:
        return f"{where} must be a FHIR resource (an object with resourceType) or null"
    if error.validator == "required":
        return f"{where} is required"
    if error.validator == "dependentRequired":
        return "fhirServer is required when fhirAuthorization is given"
    if error.validator == "pattern":
        if where == "context.patientId":
            return "context.patientId must be a FHIR id (letters, digits, '-' and '.', up to 64)"
        if where == "hookInstance":
            return "hookInstance must be a UUID"
        if where == "fhirServer":
            return "fhirServer must be an http(s) URL"
        if where == "fhirAuthorization.token_type":
            return "fhirAuthorization.token_type must be Bearer"
        return f"{where} has the wrong format"
    if error.validator == "type":
        return f"{where} must be of type {error.validator_value}"
    return f"{where} is invalid ({error.validator})"


def validate_request(body: Any) -> dict[str, Any]:
    """The request body if it is a valid patient-view request; else InputError (400) naming the bad field."""
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(body))
    if error is not None:
        where = _path(error)
        raise InputError(_message(error, where), field=where)
    return body
