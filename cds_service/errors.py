"""TrialScreen's one exception tree.

    TrialScreenError
    ├── ConfigurationError      a code table, trial rule file or setting is invalid (fails start-up)
    ├── InputError              a record, bundle or request body cannot be read (the caller's fault: 4xx / exit 2)
    └── FhirError               the EHR's FHIR server could not give us data
        ├── FhirUnavailable     network error, timeout, 5xx, deadline passed
        ├── FhirUnauthorized    401 / 403
        └── FhirNotTrusted      the server is not on the allowlist (nothing was sent)

Library errors (requests, jsonschema, pydantic) are wrapped once, at the boundary that called the library.
"""

from __future__ import annotations

__all__ = [
    "TrialScreenError",
    "ConfigurationError",
    "InputError",
    "FhirError",
    "FhirUnavailable",
    "FhirUnauthorized",
    "FhirNotTrusted",
]


class TrialScreenError(Exception):
    """Base of every error TrialScreen raises on purpose."""


class ConfigurationError(TrialScreenError):
    """A code table, trial rule file or setting is invalid."""


class InputError(TrialScreenError):
    """Input (a file, a bundle, a request body) cannot be read."""


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


class FhirNotTrusted(FhirError):
    """The FHIR server is not on the configured allowlist: nothing was sent to it."""
