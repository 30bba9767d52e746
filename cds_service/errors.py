"""TrialScreen's one exception tree.

    TrialScreenError
    ├── ConfigurationError      a code table, trial rule file or setting is invalid (fails start-up)
    ├── InputError              a record, bundle or request body cannot be read (the caller's fault: 4xx / exit 2)
    │   ├── ServiceNotFound     no CDS service with that id (404)
    │   ├── BodyTooLarge        the request body is over the size limit (413)
    │   ├── UnsupportedMediaType the request body is not declared as JSON (415)
    │   └── PreconditionFailed  prefetch data missing and no usable FHIR server to fetch it from (412)
    ├── StoreUnavailable        the database did not read or write in time (503 with Retry-After)
    └── FhirError               the EHR's FHIR server could not give us data
        ├── FhirUnavailable     network error, timeout, 5xx, deadline passed
        ├── FhirUnauthorized    401 / 403
        ├── FhirNotFound        404 / 410 (no such resource, or the server does not support the search)
        └── FhirNotTrusted      the server is not on the allowlist (nothing was sent)

Library errors (requests, jsonschema, pydantic) are wrapped once, at the boundary that called the library.
"""

from __future__ import annotations

__all__ = [
    "TrialScreenError",
    "ConfigurationError",
    "InputError",
    "ServiceNotFound",
    "BodyTooLarge",
    "UnsupportedMediaType",
    "PreconditionFailed",
    "StoreUnavailable",
    "FhirError",
    "FhirUnavailable",
    "FhirUnauthorized",
    "FhirNotFound",
    "FhirNotTrusted",
]


class TrialScreenError(Exception):
    """Base of every error TrialScreen raises on purpose."""


class ConfigurationError(TrialScreenError):
    """A code table, trial rule file or setting is invalid."""


class InputError(TrialScreenError):
    """Input (a file, a bundle, a request body) cannot be read.

    ``status`` is the HTTP status the service answers with; ``field`` names the offending part of a request
    (a JSON path such as ``context.patientId``) when there is one; ``code`` is the OperationOutcome issue code.
    """

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ServiceNotFound(InputError):
    """No CDS service with that id."""

    status = 404
    code = "not-found"


class BodyTooLarge(InputError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "too-long"


class UnsupportedMediaType(InputError):
    """The request's Content-Type is not JSON (415)."""

    status = 415
    code = "not-supported"


class PreconditionFailed(InputError):
    """Prefetch data is missing and there is no FHIR server to fetch it from (CDS Hooks: 412)."""

    status = 412
    code = "required"


class StoreUnavailable(TrialScreenError):
    """The database could not be read or written within the store timeout (down, unreachable, read-only, full).

    Answered 503 with ``Retry-After: retry_after`` where the call needs the store (feedback, the replay check,
    the report page); the hook itself degrades instead (the card without its report link).
    """

    status = 503
    retry_after = 5

    def __init__(self, message: str) -> None:
        super().__init__(message)


class FhirError(TrialScreenError):
    """The FHIR server could not give us data. ``outcome`` carries the server's OperationOutcome if any."""

    def __init__(self, message: str, *, status: int | None = None, outcome: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class FhirUnavailable(FhirError):
    """Network error, timeout, 5xx or the deadline passed."""


class FhirUnauthorized(FhirError):
    """The FHIR server refused our token (401/403)."""


class FhirNotFound(FhirError):
    """404 / 410: the resource does not exist, or the server does not support the search."""


class FhirNotTrusted(FhirError):
    """The FHIR server is not on the configured allowlist: nothing was sent to it."""
