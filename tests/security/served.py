"""The production server for the security tests: ``trialscreen serve`` (gunicorn) in its own process group,
ready when ``/healthz`` answers, stopped (and its workers with it) when the test ends. Helpers to see which
worker processes it has (a worker killed or restarted shows as a changed set) and to talk raw HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    base_url: str
    port: int
    log_path: Path

    def workers(self) -> set[int]:
        """The pids of the gunicorn master's worker processes now."""
        out = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid:  # ppid
                out.add(int(stat.parent.name))
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(tmp_path: Path, env: Mapping[str, str] | None = None, *, workers: int = 2, threads: int = 4,
          ready_seconds: float = 60.0) -> Iterator[Served]:
    """Run ``trialscreen serve`` on a free loopback port with ``env`` added to a TRIALSCREEN_-free environment."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRIALSCREEN_")}
    full.update({"TRIALSCREEN_STATE_DIR": str(tmp_path / "state"), "TRIALSCREEN_LOG_LEVEL": "WARNING",
                 "TRIALSCREEN_AUTH_REQUIRED": "false", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    full.update(env or {})
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port),
                                 "--workers", str(workers), "--threads", str(threads)],
                                env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(proc, f"http://127.0.0.1:{port}", port, log_path)
    try:
        deadline = time.monotonic() + ready_seconds
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"trialscreen serve exited ({proc.returncode}):\n{served.log()[-3000:]}")
            try:
                if requests.get(f"{served.base_url}/healthz", timeout=5).status_code == 200 \
                        and len(served.workers()) == workers:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"trialscreen serve not ready in {ready_seconds} s:\n{served.log()[-3000:]}")
            time.sleep(0.2)
        yield served
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def raw_connection(port: int, timeout: float = 30.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout)."""
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except TimeoutError:
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP response, or None when nothing (or no status line) came back."""
    first = response.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None
