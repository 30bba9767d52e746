"""The fault test's real components: its own PostgreSQL cluster, a TCP relay that can stop answering, an ext4
file system on a loop device that can be made read-only or filled, and ``trialscreen serve`` (gunicorn).

Everything here is started by the test and stopped by it, by process id; the shared PostgreSQL on port 5432 is
never touched. Each helper raises :class:`Unavailable` with the reason when the machine cannot provide it
(no PostgreSQL binaries, not root, no loop devices), so the test can skip, or fail under CI.
"""

from __future__ import annotations

import glob
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

__all__ = ["Unavailable", "PgCluster", "Relay", "LoopFs", "Server", "free_port", "ci"]


class Unavailable(Exception):
    """This machine cannot provide the component (the message says why)."""


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)


# --- PostgreSQL -------------------------------------------------------------------------------------------------
class PgCluster:
    """A PostgreSQL cluster of the test's own (initdb in ``folder``), on a free loopback port, trust auth."""

    def __init__(self, folder: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise Unavailable("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (Debian package postgresql)")
        self.bin = Path(found[-1]).parent
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no 'postgres' user to run the cluster") from None
            self.user = "postgres"
        folder.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(folder, self.user)
        done = self._as_user([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                              "--no-sync", "-E", "UTF8"])
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {done.stderr.strip()[-300:]}")

    def _as_user(self, args: list[str]) -> subprocess.CompletedProcess:
        return _run(args, user=self.user, cwd=self.folder)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        done = self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                              str(self.folder / "postgres.log"), "-w", "-t", "30", "start"])
        if done.returncode != 0:
            raise Unavailable(f"pg_ctl start failed: {(done.stderr or done.stdout).strip()[-300:]}")

    def stop(self) -> None:
        self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"])


# --- a TCP relay that can stop answering -------------------------------------------------------------------------
class Relay:
    """Relays a loopback port to ``target_port``; :meth:`blackhole` makes it stop answering, like a route that
    drops every packet: new connections are accepted and never answered, open ones relay nothing more.
    :meth:`restore` relays again and resets the connections that were held (as a dead route's would be)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.setblocking(False)
        self._silent = False
        self._stop = threading.Event()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)
        self._thread.start()

    def blackhole(self) -> None:
        with self._lock:
            self._silent = True

    def restore(self) -> None:
        with self._lock:
            self._silent = False
            doomed = list(self._held) + list(self._pairs)
            self._held.clear()
        for sock in doomed:
            self._drop(sock, reset=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._pairs) + self._held:
            self._drop(sock)
        self.listener.close()

    def _drop(self, sock: socket.socket, *, reset: bool = False) -> None:
        with self._lock:
            peer = self._pairs.pop(sock, None)
            if peer is not None:
                self._pairs.pop(peer, None)
        for s in (sock, peer):
            if s is None or s.fileno() == -1:  # already closed (dropped with its peer)
                continue
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:  # SO_LINGER 0: the peer sees a reset, as when a dead route finally times out
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                sock = key.fileobj
                if sock is self.listener:
                    self._accept()
                    continue
                with self._lock:
                    silent = self._silent
                    peer = self._pairs.get(sock)  # type: ignore[arg-type]
                if peer is None:
                    continue
                if silent:  # hold the bytes: nothing goes through, nothing comes back
                    continue
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)  # type: ignore[arg-type]
                    continue
                try:
                    peer.sendall(data)
                except OSError:
                    self._drop(sock)  # type: ignore[arg-type]
            if self._silent:
                time.sleep(0.05)  # readable sockets stay readable while held: do not spin

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with self._lock:
            if self._silent:
                self._held.append(client)
                return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            client.close()  # the server is down: refuse, as the server's own port would
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(5)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
        self._selector.register(client, selectors.EVENT_READ)
        self._selector.register(upstream, selectors.EVENT_READ)


# --- an ext4 file system on a loop device --------------------------------------------------------------------------
class LoopFs:
    """A small ext4 file system (no reserved blocks) mounted at ``mount``, made read-only with ``chattr +i``
    (refuses writes through files already open too, and can be undone while the service runs) or filled."""

    def __init__(self, folder: Path, size_mb: int = 24) -> None:
        if os.geteuid() != 0:
            raise Unavailable("mounting a loop file system needs root")
        for tool in ("mkfs.ext4", "mount", "umount", "chattr"):
            if shutil.which(tool) is None:
                raise Unavailable(f"{tool} is not installed (Debian: e2fsprogs, mount)")
        self.image = folder / "state.img"
        self.mount = folder / "mnt"
        self.mount.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as handle:
            handle.truncate(size_mb << 20)
        done = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)])
        if done.returncode != 0:
            raise Unavailable(f"mkfs.ext4 failed: {done.stderr.strip()[-200:]}")
        done = _run(["mount", "-o", "loop", str(self.image), str(self.mount)])
        if done.returncode != 0:
            raise Unavailable(f"cannot loop-mount a file system: {done.stderr.strip()[-200:]}")
        self.filler = self.mount / "filler"

    def read_only(self, on: bool) -> None:
        done = _run(["chattr", "-R", "+i" if on else "-i", str(self.mount / "state")])
        assert done.returncode == 0, done.stderr

    def fill(self) -> None:
        chunk = b"\0" * (1 << 16)
        with open(self.filler, "wb") as handle:
            try:
                while True:
                    handle.write(chunk)
                    handle.flush()
            except OSError:
                pass

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        _run(["chattr", "-R", "-i", str(self.mount)])
        _run(["umount", str(self.mount)])
        self.image.unlink(missing_ok=True)


# --- the production server -------------------------------------------------------------------------------------------
class Server:
    """``trialscreen serve`` (gunicorn, 2 workers) on a free port with ``env`` (TRIALSCREEN_* settings)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("TRIALSCREEN_", "PROMETHEUS_"))}
        full.update({"TRIALSCREEN_LOG_LEVEL": "WARNING", **env})
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "cds_service.cli", "serve", "--port", str(self.port),
                                      "--workers", "2"], env=full, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"trialscreen serve exited {self.proc.returncode}: "
                                     f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        log = self.log.read_text(errors="replace")[-2000:]
        raise AssertionError(f"trialscreen serve not ready in {seconds} s: {log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own gunicorn master and its workers
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()
