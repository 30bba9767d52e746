"""A limit on failed report lookups per client address, so report tokens cannot be guessed at speed (issue 10).

A report token has 128+ random bits and guessing one is hopeless even at the ~144 guesses a second an attack
run reached; the limit makes it hopeless by a much wider margin and makes the attempt visible. Each client
address has a bucket of ``misses`` lookups of an unknown or expired token, refilled evenly over ``window``
seconds; a lookup that finds its report costs nothing, so clinicians opening the links on their cards are never
limited. While an address's bucket is empty every report request from it is answered 429 with ``Retry-After``
(before any lookup: a guess cannot be tested by a refused request), and counted in
``trialscreen_report_lookups_refused_total``.

The client address is the connection's, unless ``trusted_proxy_count`` reverse proxies are configured: then it is
the address the outermost trusted proxy saw, taken from the right of ``X-Forwarded-For`` (each proxy appends the
address it was called from; entries further left were written by the caller and prove nothing). The buckets live
in each worker process (gunicorn runs several): the service-wide limit is at most workers times the setting;
the reverse proxy can enforce a global one (docs/deployment.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from prometheus_client import Counter

__all__ = ["MissLimiter", "client_address", "REPORT_LOOKUPS_REFUSED"]

# Labelled (by the page refused) so that no value exists before the first refusal: an unlabelled counter would open
# its multiprocess file at import, before `trialscreen serve` has created PROMETHEUS_MULTIPROC_DIR.
REPORT_LOOKUPS_REFUSED = Counter("trialscreen_report_lookups_refused_total",
                                 "Report page requests refused with 429: too many unknown or expired tokens from "
                                 "one client address", ("page",))

_MAX_ADDRESSES = 10_000  # buckets kept; the least recently seen go first (a full one is the same as a new one)


def client_address(remote_addr: str | None, headers: Mapping[str, str], trusted_proxy_count: int) -> str:
    """The caller's address: the connection's, or with ``trusted_proxy_count`` proxies in front, the entry of
    ``X-Forwarded-For`` the outermost trusted proxy appended."""
    remote = remote_addr or "unknown"
    if trusted_proxy_count <= 0:
        return remote
    forwarded = [a.strip() for a in (headers.get("X-Forwarded-For") or "").split(",") if a.strip()]
    # The hops the trusted proxies vouch for: the connection's own address is the innermost proxy.
    hops = forwarded + [remote]
    return hops[-(trusted_proxy_count + 1)] if len(hops) > trusted_proxy_count else hops[0]


class MissLimiter:
    """Token buckets per key: ``misses`` per ``window_seconds``, thread-safe, at most ``_MAX_ADDRESSES`` keys."""

    def __init__(self, misses: int, window_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(misses)
        self.rate = misses / window_seconds if window_seconds > 0 else float("inf")
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` may try again, or None when it may now."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key, now)
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def miss(self, key: str) -> None:
        """``key`` looked up a token that does not exist: one less left in its bucket."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            tokens = self._tokens(key, now)
            self._buckets[key] = (max(0.0, tokens - 1.0), now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > _MAX_ADDRESSES:
                self._buckets.popitem(last=False)
