"""gunicorn settings module for ``trialscreen serve`` (``gunicorn --config python:cds_service.hooks.gunicorn_conf``).

Only what must run inside gunicorn's master lives here: when a worker exits, its live Prometheus gauges are
removed from ``PROMETHEUS_MULTIPROC_DIR`` (counters and histograms stay, so totals survive worker restarts).
Everything else is on the command line ``serve`` builds.
"""

from __future__ import annotations

import os
from typing import Any

from cds_service.observability import MULTIPROC_ENV


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker has exited."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
