"""Starting ``trialscreen serve`` (or any server process) in a test and waiting for it on a deadline.

A loaded machine can take tens of seconds to start gunicorn and its workers: readiness is polled until a
deadline (not a fixed count of tries), and every kind of request failure (refused, timed out, reset) means
"not yet", until the process has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests

READY_DEADLINE_SECONDS = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, proc: subprocess.Popen | None = None, *,
                         deadline_seconds: float = READY_DEADLINE_SECONDS) -> requests.Response:
    """GET ``url`` until it answers 2xx; fail with the reason when the process exits or the deadline passes."""
    deadline = time.monotonic() + deadline_seconds
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} before {url} answered ({last})")
        try:
            resp = requests.get(url, timeout=10)
        except requests.RequestException as exc:  # refused, timed out, reset: the server is still starting
            last = type(exc).__name__
        else:
            if resp.ok:
                return resp
            last = f"HTTP {resp.status_code}"
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {deadline_seconds:.0f} s ({last})")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (gunicorn and its workers), SIGKILL it if it does not stop."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
