"""Hostile and honest upstreams for the gathering tests, as small real HTTP servers on loopback (real sockets,
their own threads), and the service itself on a real HTTP socket (werkzeug's threaded server running
``create_app`` with a fixed clock) for tests that need the evaluation time fixed.

``Upstream``: a FHIR-ish server whose answer to each GET comes from ``route(path, headers) -> Reply``; every
request is recorded (path, headers) so a test can see what the service sent where (tokens, cookies).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from werkzeug.serving import make_server


@dataclass
class Reply:
    """One answer: status, headers, and a body given whole (``body``) or as pieces sent with a pause before each
    (``pieces``, ``pause``: a dripping or streaming server). ``chunked`` sends it with chunked transfer coding
    (no Content-Length)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    pieces: Iterator[bytes] | None = None
    pause: float = 0.0
    chunked: bool = False


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


def fhir_json(resource: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, orjson.dumps(resource), {"Content-Type": "application/fhir+json", **headers})


def searchset(resources: list[dict], base: str = "", *, full_urls: list[str | None] | None = None,
              next_url: str | None = None) -> dict:
    """A searchset Bundle of ``resources`` (fullUrls: ``base/Type/id`` unless given)."""
    entries = []
    for n, r in enumerate(resources):
        url = full_urls[n] if full_urls is not None else (f"{base}/{r['resourceType']}/{r.get('id')}" if base
                                                           else None)
        entry: dict[str, Any] = {"resource": r, "search": {"mode": "match"}}
        if url:
            entry["fullUrl"] = url
        entries.append(entry)
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "entry": entries}
    if next_url:
        out["link"] = [{"relation": "next", "url": next_url}]
    return out


class Upstream:
    """A real HTTP server on 127.0.0.1 (a free port) answering GETs through ``route``."""

    def __init__(self, route: Callable[[str, dict[str, str]], Reply], prefix: str = "/fhir") -> None:
        self.route = route
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        self.open_connections = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer.open_connections += 1

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with outer._lock:
                        outer.open_connections -= 1

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    outer.seen.append(Seen(self.path, headers))
                reply = outer.route(self.path, headers)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif reply.pieces is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                try:
                    if reply.pieces is None and not reply.chunked:
                        self.wfile.write(reply.body)
                        return
                    pieces = reply.pieces if reply.pieces is not None else iter([reply.body])
                    for piece in pieces:
                        if reply.pause and outer.stop.wait(reply.pause):
                            return
                        if outer.stop.is_set():
                            return
                        if reply.chunked:
                            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        else:
                            self.wfile.write(piece)
                        self.wfile.flush()
                    if reply.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the service hung up on us
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = self.origin + prefix
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        with self._lock:
            return [s.path for s in self.seen]

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drip(body: bytes, every: float) -> Reply:
    """``body`` one byte at a time, ``every`` seconds apart, with its Content-Length (a slow loris upstream)."""
    return Reply(200, b"", {"Content-Type": "application/fhir+json", "Content-Length": str(len(body))},
                 pieces=iter([bytes([b]) for b in body]), pause=every)


def big_page(total_bytes: int) -> Reply:
    """A searchset of about ``total_bytes`` streamed in 64 KiB pieces, chunked (no Content-Length to refuse on)."""
    head = b'{"resourceType":"Bundle","type":"searchset","entry":['
    entry = (b'{"resource":{"resourceType":"Condition","id":"c%d","subject":{"reference":"Patient/ts01-patient"},'
             b'"note":[{"text":"' + b"x" * 900 + b'"}]}},')

    def pieces() -> Iterator[bytes]:
        sent = 0
        n = 0
        buf = bytearray(head)
        while sent < total_bytes:
            while len(buf) < 65536:
                buf += entry.replace(b"%d", str(n).encode())
                n += 1
            sent += len(buf)
            yield bytes(buf)
            buf = bytearray()
        yield b'{"resource":{"resourceType":"Basic","id":"end"}}]}'

    return Reply(200, b"", {"Content-Type": "application/fhir+json"}, pieces=pieces(), chunked=True)


def gzip_bomb_body(decoded_bytes: int) -> bytes:
    """A gzip stream that decodes to ``decoded_bytes`` of JSON-looking whitespace (built in 1 MiB steps: the test
    process never holds the decoded form)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(b'{"resourceType":"Bundle","type":"searchset","entry":[')]
    block = b" " * (1024 * 1024)
    for _ in range(decoded_bytes // len(block)):
        out.append(z.compress(block))
    out.append(z.compress(b"]}"))
    out.append(z.flush())
    return b"".join(out)


def gzip_bomb(body: bytes) -> Reply:
    """A gzip bomb (``gzip_bomb_body``) sent with Content-Encoding: gzip and its (small) Content-Length."""
    return Reply(200, body, {"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"})


@contextmanager
def service_over_http(app: Any) -> Iterator[str]:
    """Serve ``app`` on a real loopback socket (threaded werkzeug server); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def fhir_threads() -> int:
    """Threads of the service's FHIR fetches alive in this process."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("trialscreen-fhir"))


def established_to(port: int) -> int:
    """TCP connections of this process to 127.0.0.1:``port`` still established (from /proc/net/tcp)."""
    import os

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    hex_port = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if remote.endswith(":" + hex_port) and state == "01" and inode in inodes:
                count += 1
    return count


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


__all__ = ["Upstream", "Reply", "Seen", "fhir_json", "searchset", "drip", "big_page", "gzip_bomb", "gzip_bomb_body",
           "service_over_http", "fhir_threads", "established_to", "wait_for"]
