"""Prometheus metrics: hook latency, FHIR request latency and errors, screenings and cards by status.

The metric objects are process-wide (prometheus_client's default registry). Under gunicorn every worker is
its own process, so ``trialscreen serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the
workers start: prometheus_client then keeps each worker's values in memory-mapped files there, and
``GET /metrics`` (on whichever worker answers) adds up all workers' files. Without that variable (tests,
``trialscreen demo``, a single process) the in-process registry is served.

Labels never carry data: hook names, outcome classes, FHIR resource types, error classes and screening
statuses are all small fixed sets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["HOOK_LATENCY", "FHIR_LATENCY", "FHIR_ERRORS", "SCREENINGS", "CARDS", "observe_fhir", "record_hook",
           "record_screening", "render_metrics", "METRICS_CONTENT_TYPE", "MULTIPROC_ENV", "outcome_of"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format generate_latest() writes, under the content type every Prometheus version accepts.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Hook calls take from a few milliseconds (a refused request) to the FHIR deadline (3 s by default) and more.
_HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
_FHIR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)

HOOK_LATENCY = Histogram("trialscreen_hook_duration_seconds", "Time to answer a CDS hook call",
                         ("hook", "outcome"), buckets=_HOOK_BUCKETS)
FHIR_LATENCY = Histogram("trialscreen_fhir_request_duration_seconds",
                         "Time of one FHIR GET (a read or one page of a search), by resource type",
                         ("resource_type",), buckets=_FHIR_BUCKETS)
FHIR_ERRORS = Counter("trialscreen_fhir_request_errors_total", "FHIR GETs that failed, by resource type and error",
                      ("resource_type", "error"))
SCREENINGS = Counter("trialscreen_screenings_total", "Patients screened by the hook, by screening status",
                     ("status",))
CARDS = Counter("trialscreen_cards_total", "Cards returned by the hook, by screening status", ("status",))

_KNOWN_TYPES = frozenset({"Patient", "Condition", "Observation", "Procedure", "MedicationRequest",
                          "MedicationStatement", "MedicationAdministration", "Medication", "Immunization",
                          "AllergyIntolerance", "DiagnosticReport"})


def _resource_label(kind: str) -> str:
    # A query's kind comes from our own templates, but a next link or a reference may name anything: keep the
    # label set small and free of data.
    return kind if kind in _KNOWN_TYPES else "other"


def outcome_of(status: int) -> str:
    """The outcome label of a hook call from its HTTP status: ``ok``, ``client_error`` or ``server_error``."""
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def record_hook(hook: str, status: int, seconds: float) -> None:
    """Observe one hook call's duration under its hook and outcome."""
    HOOK_LATENCY.labels(hook=hook, outcome=outcome_of(status)).observe(seconds)


def record_screening(status: str, cards: int) -> None:
    """Count one screening and the cards it produced, by screening status."""
    SCREENINGS.labels(status=status).inc()
    if cards:
        CARDS.labels(status=status).inc(cards)


@contextmanager
def observe_fhir(kind: str) -> Iterator[None]:
    """Time one FHIR GET for ``kind``; an exception leaving the block is counted as an error (and re-raised)."""
    label = _resource_label(kind)
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        FHIR_ERRORS.labels(resource_type=label, error=type(exc).__name__).inc()
        raise
    finally:
        FHIR_LATENCY.labels(resource_type=label).observe(time.perf_counter() - started)


def render_metrics() -> bytes:
    """The metrics in the Prometheus text format: all gunicorn workers' when multiprocess mode is on."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
