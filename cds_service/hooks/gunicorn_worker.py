"""The gunicorn worker ``trialscreen serve`` runs: gunicorn's threaded worker, with every request read on a deadline.

A slow client must never hold what other callers need (issue 10). gunicorn's sync worker gives a connection the
whole process while it reads the request, and its threaded worker gives it a thread as soon as one byte has
arrived: two connections sending their headers a byte at a time were enough to keep ``/healthz`` from answering.
This worker changes how a request is read and leaves the rest of gunicorn's ``gthread`` worker as it is:

* **The request is collected by the worker's event loop, not by a thread.** A new connection (and a kept-alive
  one that becomes readable) is read without blocking, whatever bytes have arrived, until its headers are
  complete and, for a body of at most ``LOOP_BODY_MAX_BYTES`` (a ``Content-Length``, no ``Expect``), until its
  body is too; only then is it handed to a thread, with those bytes. Waiting connections hold no thread (up to
  ``LOOP_BUFFER_MAX_BYTES`` collected per worker: past that, a request goes to a thread as it is).
* **Deadlines.** Headers not complete within ``request_header_timeout_seconds``: 408 and closed (no thread was
  ever used). The body must arrive within ``request_body_timeout_seconds`` of the headers, with no gap longer than
  ``request_idle_timeout_seconds``; when it does not (a body shorter than its ``Content-Length``, a drip) the
  request goes to a thread whose first read of the missing bytes fails at once, and the app answers 400
  (``patient_view.read_body`` turns the ``TimeoutError`` raised here into an ``InputError``). A body the event loop
  does not collect (chunked, ``Expect: 100-continue``) is read by a thread under the same deadlines, counted from
  the end of the headers, so it holds that thread until the body deadline at most.
* **Writes are bounded too**: a client that stops reading its answer holds a thread for at most the body timeout.

The worker process is never killed or restarted for what a client sends: gunicorn's worker timeout only watches
the event loop, which never blocks. The timeouts are ``TRIALSCREEN_*`` settings (``cds_service.config``); a
reverse proxy in front should enforce its own (docs/deployment.md).

This subclasses gunicorn 27's ``gthread`` worker and relies on its structure (``TConn``, the poller callbacks and
the pending-connection sweep); ``pyproject.toml`` pins gunicorn to 27.x for that reason, and
``tests/security/test_slow_clients.py`` exercises each path through a real ``trialscreen serve``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from cds_service.config import Settings

__all__ = ["DeadlineThreadWorker", "RequestReadTimeout", "LOOP_BODY_MAX_BYTES", "LOOP_BUFFER_MAX_BYTES"]

# Bodies up to this size are collected by the event loop (the app refuses larger ones with 413 by default).
LOOP_BODY_MAX_BYTES = 20 * 1024 * 1024
# All requests being collected by one worker's event loop hold at most this much; beyond, they go to threads (the
# app would hold the same bytes once it reads them).
LOOP_BUFFER_MAX_BYTES = 64 * 1024 * 1024

# How long a closed connection is still read from, so the kernel does not reset it under the last response.
LINGER_SECONDS = 2.0

_END_OF_HEADERS = b"\r\n\r\n"
_TIMEOUT_TEXT = b"the request headers did not arrive in time\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT))


class RequestReadTimeout(TimeoutError):
    """The request (its headers or its body) did not arrive within its deadline.

    A ``TimeoutError``: gunicorn's body drain already treats one as "close the connection", and the app answers a
    body read that raises one with 400.
    """


def body_length(head: bytes) -> int | None:
    """How many body bytes follow the header block ``head``, when the event loop can wait for them: 0 for no
    body; None when a thread must read it (chunked, ``Expect: 100-continue``, several or unreadable
    ``Content-Length`` fields: the parser decides what those mean)."""
    lengths = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            lengths.append(value.strip())
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 12:
        return None
    return int(lengths[0])


class _Limits:
    """The read and write timeouts of every connection of one worker (seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.header = settings.request_header_timeout_seconds
        self.body = settings.request_body_timeout_seconds
        self.idle = settings.request_idle_timeout_seconds
        self.write = max(settings.request_body_timeout_seconds, settings.request_idle_timeout_seconds)


class _DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, with each ``recv`` bounded by the connection's current deadline and idle time."""

    def __init__(self, conn: _DeadlineConn, initial: bytes) -> None:
        super().__init__(conn.sock)
        self._conn = conn
        if initial:
            self.unread(initial)

    def chunk(self, size_hint: int | None = None) -> bytes:
        conn = self._conn
        remaining = conn.read_deadline - time.monotonic()
        if remaining <= 0:
            raise RequestReadTimeout("the request did not arrive within its deadline")
        self.sock.settimeout(min(remaining, conn.limits.idle))
        try:
            return super().chunk(size_hint)
        except TimeoutError:  # socket.timeout: a gap longer than the idle time, or the deadline reached
            raise RequestReadTimeout("the request did not arrive within its deadline") from None
        finally:
            # Left for the response: a client that does not read its answer holds the thread this long at most.
            self.sock.settimeout(conn.limits.write)


class _DeadlineConn(TConn):
    """A connection with the bytes the event loop collected for its next request and the deadline of its reads."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, limits: _Limits) -> None:
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.received = bytearray()
        self.collected = False  # the event loop collected this request (headers, maybe body)
        self.late = False  # ... and gave up waiting for its body: the next read of the socket must fail
        self.wanted: int | None = None  # bytes of headers + body to wait for, once the headers are in
        self.body_deadline: float | None = None  # set when the event loop saw the end of the headers
        self.read_deadline = time.monotonic() + limits.header
        self.last_read = time.monotonic()
        self.linger: Any = None  # the worker's non-blocking graceful close, set by the worker

    def init(self) -> None:
        was_initialized = self.initialized
        super().init()
        if not was_initialized and hasattr(self.parser, "unreader"):
            # Everything after accept() is read through the deadline reader, starting with the collected bytes.
            self.parser.unreader = _DeadlineUnreader(self, bytes(self.received))
            self.received.clear()

    def close(self, graceful: bool = False) -> None:
        # gthread closes "gracefully" on its event loop: half-close, then up to 2 s of blocking reads until the
        # client closes too. A client that never does would stall every other connection of the worker for those
        # 2 s; the worker lingers on its poller instead (DeadlineThreadWorker.linger).
        if graceful and self.linger is not None:
            self.linger(self)
        else:
            super().close(graceful)

    def take_received(self) -> None:
        """Give the collected bytes to the parser of an already initialised (kept-alive) connection."""
        if self.initialized and self.received:
            self.parser.unreader.unread(bytes(self.received))
            self.received.clear()


class DeadlineThreadWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker in which no slow client can hold a thread (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _Limits(Settings.from_env())
        self.collecting: set[_DeadlineConn] = set()  # connections whose request the event loop is reading
        self.buffered = 0  # bytes they hold
        self.lingering: dict[socket.socket, float] = {}  # half-closed sockets, until when they may linger
        # More than the parser accepts anyway: past this, the parser answers 431/414 itself.
        self.max_header_bytes = (self.cfg.limit_request_line + 4
                                 + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2))

    # --- collecting the request, in the event loop ---------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:  # TLS bytes cannot be collected raw; TLS is the reverse proxy's job here
            super().accept(listener)
            return
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _DeadlineConn(self.cfg, sock, addr, listener.getsockname(), self.limits)  # non-blocking
        conn.linger = self.linger
        self._collect(conn)

    def on_client_socket_readable(self, conn: _DeadlineConn, client: socket.socket) -> None:
        """A kept-alive connection has a new request coming: collect it like a new connection's."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._collect(conn)

    def _collect(self, conn: _DeadlineConn) -> None:
        conn.sock.setblocking(False)
        conn.read_deadline = conn.last_read = time.monotonic()
        conn.read_deadline += self.limits.header
        conn.wanted = conn.body_deadline = None
        conn.late = False
        self.collecting.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: _DeadlineConn, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.wanted is None:  # the client went away before sending a whole request head
                self._stop_collecting(conn)
                self.nr_conns -= 1
                conn.close()
            else:  # closed in the middle of the body: the app sees the short body (400)
                self._hand_over(conn)
            return
        now = time.monotonic()
        conn.last_read = now
        start = max(0, len(conn.received) - len(_END_OF_HEADERS) + 1)
        conn.received += data
        self.buffered += len(data)
        if conn.wanted is None:
            end = conn.received.find(_END_OF_HEADERS, start)
            if end < 0:
                if len(conn.received) > self.max_header_bytes:
                    self._hand_over(conn)  # the parser refuses it (431 / 414)
                return
            end += len(_END_OF_HEADERS)
            conn.body_deadline = conn.read_deadline = now + self.limits.body
            length = body_length(bytes(conn.received[:end]))
            if length is None or length > LOOP_BODY_MAX_BYTES:
                self._hand_over(conn)  # a thread reads the body, on the same body deadline
                return
            conn.wanted = end + length
        if len(conn.received) >= conn.wanted or self.buffered > LOOP_BUFFER_MAX_BYTES:
            self._hand_over(conn)

    def _stop_collecting(self, conn: _DeadlineConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if conn in self.collecting:
            self.collecting.discard(conn)
            self.buffered -= len(conn.received)

    def _hand_over(self, conn: _DeadlineConn, *, late: bool = False) -> None:
        self._stop_collecting(conn)
        conn.take_received()
        conn.collected = True
        conn.late = late
        conn.data_ready = True  # gthread's own wait for a first byte is not needed: the request is here
        self.enqueue_req(conn)

    # --- closing, in the event loop --------------------------------------------------------------------------
    def linger(self, conn: _DeadlineConn) -> None:
        """Close ``conn`` as RFC 9112 section 9.6 asks (send FIN, read what the client still sends until it closes,
        for ``LINGER_SECONDS`` at most), from the poller: nothing waits on it."""
        sock = conn.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self._on_linger_bytes)
        except (OSError, ValueError, KeyError):
            TConn.close(conn)
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _on_linger_bytes(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(sock)

    def _end_linger(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            sock.close()
        except OSError:
            pass

    def murder_pending(self) -> None:
        """gunicorn's sweep of idle connections, plus the deadlines of the requests being collected (late headers
        get 408 and the connection closed; a late body goes to a thread, to be answered 400 by the app) and of
        the sockets lingering after a close."""
        super().murder_pending()
        now = time.monotonic()
        for sock in [s for s, until in self.lingering.items() if until <= now]:
            self._end_linger(sock)
        for conn in [c for c in self.collecting
                     if c.read_deadline <= now or (c.wanted is not None and now - c.last_read > self.limits.idle)]:
            if conn.wanted is not None:
                self._hand_over(conn, late=True)
                continue
            self._stop_collecting(conn)
            if conn.received:  # a client that sent nothing at all (an idle keep-alive) just gets closed
                try:
                    conn.sock.send(_REQUEST_TIMEOUT)  # non-blocking, best effort: the client may not read
                except OSError:
                    pass
            self.nr_conns -= 1
            conn.close()

    # --- the request, in a thread --------------------------------------------------------------------------------
    def handle(self, conn: _DeadlineConn) -> Any:
        # A request the event loop collected keeps its deadline (a parser reading past the collected bytes, for an
        # oversized header block, is still bound by it). One gthread hands over directly (pipelined behind the
        # previous request) gets a fresh header deadline.
        if not isinstance(conn, _DeadlineConn):  # a TLS connection, accepted by gthread itself
            return super().handle(conn)
        if not conn.collected:
            conn.read_deadline = time.monotonic() + self.limits.header
        return super().handle(conn)

    def handle_request(self, req: Any, conn: _DeadlineConn) -> bool:
        if not isinstance(conn, _DeadlineConn):
            return super().handle_request(req, conn)
        if conn.late:
            conn.read_deadline = time.monotonic()  # the body was given up on: the app's next read fails (400)
        elif conn.collected and conn.body_deadline is not None:  # counted from the end of the headers
            conn.read_deadline = conn.body_deadline
        else:  # headers the event loop did not see end (pipelined, oversized)
            conn.read_deadline = time.monotonic() + self.limits.body
        conn.collected = conn.late = False
        conn.wanted = conn.body_deadline = None
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn: _DeadlineConn, keepalive: bool) -> bool:
        # gthread drains a body the app did not read before keeping the connection; a broken one (a bad chunk
        # size) raised out of the drain and gunicorn wrote a second, 400 response after the app's. The answer has
        # been sent: close the connection instead.
        try:
            return super()._keepalive_after(conn, keepalive)
        except (ParseException, NoMoreData, OSError):
            return False
