"""``trialscreen serve``: gunicorn in this very process, with the app built once before the workers fork.

The app is built in the master (``preload_app``): a bad configuration stops the service with one readable
line before any worker starts, the database is migrated once, and the code tables, rules and warm-up
(hooks/warmup.py) are paid for once; each worker is a fork of a warm process. What must not cross a fork is
renewed in every worker (``post_fork``): the database connection pool.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from cds_service.hooks.gunicorn_conf import child_exit
from cds_service.hooks.report import STORE_KEY

__all__ = ["gunicorn_options", "run_gunicorn"]


# The threaded worker with read deadlines (gunicorn_worker.py): no slow client can hold a worker or a thread.
WORKER_CLASS = "cds_service.hooks.gunicorn_worker.DeadlineThreadWorker"


def gunicorn_options(host: str, port: int, workers: int, timeout: int, threads: int = 4) -> dict[str, Any]:
    """The gunicorn settings ``trialscreen serve`` runs with (everything else is gunicorn's default)."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "threads": threads,
        "timeout": timeout,
        # No control socket: gunicorn's default path ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl)
        # is the same for every instance a user runs, so a second instance would take over (or remove) the first
        # one's socket, and nothing here uses gunicornc; signals (HUP, TERM, TTIN/TTOU) still manage the master.
        "control_socket_disable": True,
        "graceful_timeout": 20,
        "worker_tmp_dir": tempfile.gettempdir(),
        "preload_app": True,
        "child_exit": child_exit,
    }


class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, app: Flask, options: Mapping[str, Any]) -> None:
        self._app = app
        self._options = dict(options)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def _post_fork(app: Flask) -> Any:
    def post_fork(server: Any, worker: Any) -> None:
        store = app.extensions.get(STORE_KEY)
        if store is not None:  # connections opened by the master must never be shared with a worker
            store.engine.dispose(close=False)
            store.gate.after_fork()
            try:  # the worker's own first connection, now rather than in its first hook call
                with store.engine.connect():
                    pass
            except Exception:  # noqa: BLE001 - an unreachable database is the readiness check's to report
                pass

    return post_fork


def run_gunicorn(app: Flask, options: Mapping[str, Any]) -> None:
    """Serve ``app`` with gunicorn until it is stopped (SIGTERM stops the workers gracefully)."""
    _Server(app, {**options, "post_fork": _post_fork(app)}).run()
