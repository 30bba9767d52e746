"""The gunicorn worker ``trialscreen serve`` runs: gunicorn's threaded worker, with every request read on a deadline.

A slow client must never hold what other callers need (issue 10). gunicorn's sync worker gives a connection the
whole process while it reads the request, and its threaded worker gives it a thread as soon as one byte has
arrived: two connections sending their headers a byte at a time were enough to keep ``/healthz`` from answering.
This worker changes three things and leaves the rest of gunicorn's ``gthread`` worker as it is:

* **Headers are collected by the worker's event loop, not by a thread.** A new connection (and a kept-alive one
  that becomes readable) is read without blocking, whatever bytes have arrived, until the blank line ending the
  headers; only then is it handed to a thread, with those bytes. A connection whose headers are not complete
  within ``request_header_timeout_seconds`` is answered 408 and closed, without ever having held a thread.
* **The body is read on a deadline.** Once the headers are in, the whole body must arrive within
  ``request_body_timeout_seconds``, and no wait between two reads may exceed ``request_idle_timeout_seconds``: a
  body shorter than its ``Content-Length`` is answered 400 after the idle timeout (``patient_view.read_body``
  turns the ``TimeoutError`` raised here into an ``InputError``), never held until gunicorn's worker timeout.
* **Writes are bounded too**: a client that stops reading its answer holds a thread for at most the body timeout.

The worker process itself is never killed or restarted for what a client sends: gunicorn's worker timeout only
watches the event loop, which never blocks. The timeouts are ``TRIALSCREEN_*`` settings (``cds_service.config``);
a reverse proxy in front should enforce its own, shorter ones (docs/deployment.md).

This subclasses gunicorn 27's ``gthread`` worker and relies on its structure (``TConn``, the poller callbacks and
the pending-connection sweep); ``pyproject.toml`` pins gunicorn to 27.x for that reason, and
``tests/security/test_slow_clients.py`` exercises each path through a real ``trialscreen serve``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from cds_service.config import Settings

__all__ = ["DeadlineThreadWorker", "RequestReadTimeout"]

_END_OF_HEADERS = b"\r\n\r\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 45\r\n\r\nthe request headers did not arrive in time.\r\n")


class RequestReadTimeout(TimeoutError):
    """The request (its headers or its body) did not arrive within its deadline.

    A ``TimeoutError``: gunicorn's body drain already treats one as "close the connection", and the app answers a
    body read that raises one with 400.
    """


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


class _Limits:
    """The read and write timeouts of every connection of one worker (seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.header = settings.request_header_timeout_seconds
        self.body = settings.request_body_timeout_seconds
        self.idle = settings.request_idle_timeout_seconds
        self.write = max(settings.request_body_timeout_seconds, settings.request_idle_timeout_seconds)


class _DeadlineConn(TConn):
    """A connection that carries the bytes its headers arrived in and the deadline of its current read."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, limits: _Limits) -> None:
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.received = bytearray()
        self.headers_collected = False
        self.read_deadline = time.monotonic() + limits.header

    def init(self) -> None:
        was_initialized = self.initialized
        super().init()
        if not was_initialized and hasattr(self.parser, "unreader"):
            # Everything after accept() is read through the deadline reader, starting with the buffered headers.
            self.parser.unreader = _DeadlineUnreader(self, bytes(self.received))
            self.received.clear()

    def take_received(self) -> None:
        """Give the bytes collected by the event loop to the parser of an already initialised connection."""
        if self.initialized and self.received:
            self.parser.unreader.unread(bytes(self.received))
            self.received.clear()


class DeadlineThreadWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker in which no slow client can hold a thread (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _Limits(Settings.from_env())
        self.header_conns: deque[_DeadlineConn] = deque()  # waiting for their headers, oldest deadline first
        # More than the parser accepts anyway: past this, the parser answers 431/414 itself.
        self.max_header_bytes = (self.cfg.limit_request_line + 4
                                 + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2))

    # --- headers, in the event loop ---------------------------------------------------------------------------
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
        self._await_headers(conn)

    def on_client_socket_readable(self, conn: _DeadlineConn, client: socket.socket) -> None:
        """A kept-alive connection has a new request coming: collect its headers like a new connection's."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_headers(conn)

    def _await_headers(self, conn: _DeadlineConn) -> None:
        conn.sock.setblocking(False)
        conn.read_deadline = time.monotonic() + self.limits.header
        self.header_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_header_bytes, conn))

    def _on_header_bytes(self, conn: _DeadlineConn, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before sending a request
            self._forget_header_conn(conn)
            self.nr_conns -= 1
            conn.close()
            return
        start = max(0, len(conn.received) - len(_END_OF_HEADERS) + 1)
        conn.received += data
        if conn.received.find(_END_OF_HEADERS, start) < 0 and len(conn.received) <= self.max_header_bytes:
            return
        self._forget_header_conn(conn)
        conn.take_received()
        conn.headers_collected = True
        conn.data_ready = True  # gthread's own wait for a first byte is not needed: the headers are here
        self.enqueue_req(conn)

    def _forget_header_conn(self, conn: _DeadlineConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            self.header_conns.remove(conn)
        except ValueError:
            pass

    def murder_pending(self) -> None:
        """gunicorn's sweep of idle connections, plus: connections whose headers are late get 408 and are closed."""
        super().murder_pending()
        now = time.monotonic()
        while self.header_conns and self.header_conns[0].read_deadline <= now:
            conn = self.header_conns.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            if conn.received:  # a client that sent nothing at all (an idle keep-alive) just gets closed
                try:
                    conn.sock.send(_REQUEST_TIMEOUT)  # non-blocking, best effort: the client may not read
                except OSError:
                    pass
            self.nr_conns -= 1
            conn.close()

    # --- the request, in a thread --------------------------------------------------------------------------------
    def handle(self, conn: _DeadlineConn) -> Any:
        # Headers collected by the event loop keep the deadline they were collected on (a parser reading past them,
        # for an oversized header block, is still bound by it). A request gthread hands over directly (one
        # pipelined behind the previous request) gets a fresh header deadline. The body gets its own deadline
        # once the headers are parsed (handle_request).
        if not conn.headers_collected:
            conn.read_deadline = time.monotonic() + self.limits.header
        conn.headers_collected = False
        return super().handle(conn)

    def handle_request(self, req: Any, conn: _DeadlineConn) -> bool:
        conn.read_deadline = time.monotonic() + self.limits.body
        return super().handle_request(req, conn)
