"""The HTTP state of one hook call's FHIR fetches: created with the call, closed with it, shared with no other.

* **Session**: a fresh ``requests.Session`` per hook call, ``trust_env=False`` (no proxy variables, no
  ``.netrc``), and a cookie policy that stores nothing, so a ``Set-Cookie`` answered for one user's token is never
  sent back, not even later in the same call. The token travels per request in ``Authorization`` only.
* **DNS pinning**: each host name is resolved once per call (``pin``); every connection of the call goes to that
  address (the TLS name check still uses the host name). An address that is loopback, private, link-local,
  reserved, multicast or unspecified is refused unless it lies in ``private_networks`` (setting
  ``fhir_private_networks``), so an allowlisted name that is re-pointed at an internal address gets nothing.
* **Deadline**: the call's threads are its own (``executor``); every socket the call opens is recorded, and
  ``abort`` shuts them down, which ends any read in progress at once (a server dripping one byte a second keeps
  each socket read short, so per-read timeouts alone never end it). ``close`` aborts and releases everything:
  nothing of one call outlives it.
* **Size caps**: ``read_body`` reads at most ``max_response_bytes`` per response and ``max_call_bytes`` per call,
  both on the bytes received (compressed) and on the bytes decoded, decompressing itself in small steps so that a
  gzip bomb never expands beyond the cap in memory, before any parsing.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["CallTransport", "TooLarge", "Refused", "parse_networks", "ACCEPT_ENCODING"]

ACCEPT_ENCODING = "gzip, deflate"
_RAW_CHUNK = 16 * 1024  # bytes read from the socket per step
_DECODE_STEP = 256 * 1024  # most bytes one decompression step may produce


class TooLarge(Exception):
    """A response, or the call's responses together, exceeded a byte cap."""


class Refused(Exception):
    """A host that may not be contacted (it resolves to a private address that is not listed, or not at all)."""


class Aborted(Exception):
    """The call's deadline passed while a body was being read."""


def parse_networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """CIDR blocks (or single addresses); ValueError names an entry that is not one."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP network: {v!r}") from exc
    return tuple(out)


def _special(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
            or ip.is_unspecified or not ip.is_global)


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Any, request: Any) -> bool:  # never store a cookie
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:  # never send one
        return False


class CallTransport:
    """Sessions, pins, threads, sockets and byte counts of one hook call (see the module doc)."""

    def __init__(self, *, private_networks: tuple[Any, ...] = (), max_response_bytes: int = 16 * 1024 * 1024,
                 max_call_bytes: int = 24 * 1024 * 1024, max_threads: int = 8, user_agent: str = "TrialScreen",
                 accept: str = "application/fhir+json") -> None:
        self.private_networks = private_networks
        self.max_response_bytes = max_response_bytes
        self.max_call_bytes = max_call_bytes
        self._lock = threading.Lock()
        self._pins: dict[str, str] = {}
        self._refused: dict[str, str] = {}
        self._resolve_lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self.call_bytes = 0
        self._max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.cookies.set_policy(_NoCookies())
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_threads, max_retries=0)
        self._install_pinning(adapter)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"Accept": accept, "User-Agent": user_agent,
                                     "Accept-Encoding": ACCEPT_ENCODING})

    # --- threads -----------------------------------------------------------------------------------------
    @property
    def executor(self) -> ThreadPoolExecutor:
        """This call's own threads (created on first use, shut down by ``close``)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._max_threads,
                                                    thread_name_prefix="trialscreen-fhir")
            return self._executor

    # --- DNS pinning -------------------------------------------------------------------------------------
    def pin(self, host: str, port: int) -> str:
        """The address ``host`` is reached at for the rest of this call; Refused when it may not be contacted."""
        with self._resolve_lock:  # one resolution per name, even when the call's threads connect at once
            return self._pin(host, port)

    def _pin(self, host: str, port: int) -> str:
        with self._lock:
            if host in self._pins:
                return self._pins[host]
            if host in self._refused:
                raise Refused(self._refused[host])
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            # An address written in the allowlist itself is the operator's explicit choice: no resolution, no
            # rebinding. (Names only get here through the allowlist too; their addresses are checked below.)
            with self._lock:
                return self._pins.setdefault(host, str(literal))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise Refused(f"{host} could not be resolved") from exc
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise Refused(f"{host} could not be resolved")
        chosen = None
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if _special(ip) and not any(ip in net for net in self.private_networks):
                continue
            chosen = text
            break
        if chosen is None:
            why = (f"{host} resolves to a private or loopback address that is not listed in "
                   "fhir_private_networks (nothing sent)")
            with self._lock:
                self._refused[host] = why
            raise Refused(why)
        with self._lock:
            return self._pins.setdefault(host, chosen)

    def _pinned(self, host: str, port: int) -> str:
        if self.aborted:
            raise ConnectionAbortedError("the hook call is over")
        return self.pin(host.rstrip("."), port)  # resolved at the first connection of the call, then reused

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            if self._closed:
                sock.close()
                raise ConnectionAbortedError("the hook call is over")
            self._sockets.append(sock)

    def _install_pinning(self, adapter: HTTPAdapter) -> None:
        transport = self

        def new_conn(base: type, self: Any) -> socket.socket:
            real = self._dns_host
            self._dns_host = transport._pinned(real, self.port)
            try:
                sock = base._new_conn(self)
            finally:
                self._dns_host = real
            transport._opened(sock)
            return sock

        http_conn = type("PinnedHTTPConnection", (HTTPConnection,),
                         {"_new_conn": lambda self: new_conn(HTTPConnection, self)})
        https_conn = type("PinnedHTTPSConnection", (HTTPSConnection,),
                          {"_new_conn": lambda self: new_conn(HTTPSConnection, self)})
        http_pool = type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn})
        https_pool = type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})
        adapter.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}

    # --- the end of the call -----------------------------------------------------------------------------
    @property
    def aborted(self) -> bool:
        with self._lock:
            return self._closed

    def abort(self) -> None:
        """Shut down every socket of the call: reads in progress end now, no new connection is opened."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """Abort, close the session and let the call's threads finish (they end at once: their sockets are
        shut)."""
        self.abort()
        self.session.close()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # --- bodies ------------------------------------------------------------------------------------------
    def _count(self, n: int) -> None:
        with self._lock:
            self.call_bytes += n
            total = self.call_bytes
        if total > self.max_call_bytes:
            raise TooLarge(f"the FHIR answers of this hook call exceed {self.max_call_bytes} bytes "
                           "(fhir_max_call_bytes)")

    def read_body(self, resp: requests.Response, deadline_end: float) -> bytearray:
        """The decoded body of a streamed response, within the caps and the deadline (TooLarge, Aborted)."""
        cap = self.max_response_bytes
        too_large = f"the FHIR response exceeds {cap} bytes (fhir_max_response_bytes)"
        length = resp.headers.get("Content-Length")
        if length and length.strip().isdigit() and int(length) > cap:
            raise TooLarge(too_large)
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("identity", ""):
            decoder = None
        elif encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decoder = zlib.decompressobj()
        else:
            raise TooLarge(f"the FHIR response has an unsupported Content-Encoding ({encoding[:20]})")
        out = bytearray()
        received = 0
        raw = resp.raw
        while True:
            if time.monotonic() >= deadline_end or self.aborted:
                raise Aborted("deadline passed")
            # read1: what one receive brings (a server dripping a byte at a time cannot hold this loop past the
            # deadline by keeping each socket read short)
            chunk = raw.read1(_RAW_CHUNK, decode_content=False)
            if not chunk:
                break
            received += len(chunk)
            if received > cap:
                raise TooLarge(too_large)
            if decoder is None:
                self._count(len(chunk))
                out += chunk
            else:
                data = chunk
                while data:
                    piece = decoder.decompress(data, _DECODE_STEP)
                    out += piece
                    if len(out) > cap:
                        raise TooLarge(too_large)
                    self._count(len(piece))
                    data = decoder.unconsumed_tail
        if decoder is not None:
            piece = decoder.flush(_DECODE_STEP)  # what is left is at most one step (the input is all consumed)
            out += piece
            if len(out) > cap:
                raise TooLarge(too_large)
            self._count(len(piece))
        return out
