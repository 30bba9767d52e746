"""TrialScreen: a CDS Hooks 2.0 service that screens patients for clinical trial NCT06880354.

The pipeline, one folder per step:  hooks/ (request) -> gather/ (record) -> facts/ (normalise)
-> criteria/ (evaluate) -> cards/ (present). Only hooks/ and gather/ do I/O. ``screen(record, at)`` in
``pipeline.py`` is the one entry point. ``create_app`` builds the Flask service (imported lazily so the engine
and the command line do not load Flask).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "screen"]


def create_app(overrides: dict[str, Any] | None = None) -> Any:
    """Build the Flask application (see ``cds_service.hooks.app``)."""
    from cds_service.hooks.app import create_app as _create_app

    return _create_app(overrides)


def screen(*args: Any, **kwargs: Any) -> Any:
    """``cds_service.pipeline.screen``: screen one record as of ``at``."""
    from cds_service.pipeline import screen as _screen

    return _screen(*args, **kwargs)
