"""URL normalisation for the FHIR allowlist and for comparing FHIR bases (RFC 3986 section 6.2.2).

The allowlist decides where the EHR's access token may go, so a URL is compared only after it is put in one
canonical form: scheme and host lower-cased, the default port made explicit, percent-encodings of unreserved
characters decoded and the others upper-cased, dot-segments (``.``, ``..``) removed, and the path compared as
a list of segments (``/m`` allows ``/m`` and ``/m/x``, never ``/mx`` or ``/m/../x``). A URL that cannot be put in
that form (not http(s), credentials in it, an encoded slash or dot-segment that a server might decode after us,
control characters) is not one we send anything to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["NormalUrl", "normalise", "DEFAULT_PORTS"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD = re.compile(r"[\x00-\x20\x7f\\]")  # controls, spaces and backslashes: parsers disagree on them


@dataclass(frozen=True)
class NormalUrl:
    """An absolute http(s) URL in canonical form: its origin and its path segments (query kept apart)."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]
    query: str = ""

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments) if self.segments else ""

    def within(self, base: NormalUrl) -> bool:
        """True when this URL is ``base`` or below it (same origin, base's segments a prefix of ours)."""
        return ((self.scheme, self.host, self.port) == (base.scheme, base.host, base.port)
                and self.segments[:len(base.segments)] == base.segments)

    def text(self) -> str:
        """The canonical URL (port shown only when not the default)."""
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"


def _normalise_pct(segment: str) -> str | None:
    """Decode percent-encoded unreserved characters, upper-case the rest; None for an encoded '/' or a stray '%'."""
    def repl(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else f"%{m.group(1).upper()}"

    if "%" in _PCT.sub("", segment):
        return None  # a '%' not followed by two hex digits
    out = _PCT.sub(repl, segment)
    if "%2F" in out or "%5C" in out or "%00" in out:
        return None  # an encoded slash/backslash/NUL: a server may decode it into a path separator after our check
    return out


def _remove_dot_segments(raw: list[str]) -> list[str] | None:
    """RFC 3986 5.2.4 on a list of segments; None when '..' would climb above the root."""
    out: list[str] = []
    for seg in raw:
        if seg == ".":
            continue
        if seg == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(seg)
    return out


def normalise(url: str) -> NormalUrl | None:
    """The canonical form of an absolute http(s) URL, or None when it is not one we would contact."""
    if not isinstance(url, str) or _BAD.search(url.strip()):
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None \
            or parts.password is not None or "@" in parts.netloc:
        return None  # credentials in the URL are a classic trick to disguise the real host
    host = parts.hostname.lower().rstrip(".")
    if not host or "%" in host:
        return None
    raw_segments = parts.path.split("/")[1:] if parts.path else []
    decoded: list[str] = []
    for seg in raw_segments:
        norm = _normalise_pct(seg)
        if norm is None:
            return None
        decoded.append(norm)
    # Dot-segments are removed after decoding, so '%2e%2e' counts as '..' (as a server decoding it would).
    segments = _remove_dot_segments(decoded)
    if segments is None:
        return None
    # Empty segments ('//') are kept inside the path but a trailing slash is not significant for a base.
    while segments and segments[-1] == "":
        segments.pop()
    if any(s == "" for s in segments):
        return None  # 'a//b': servers disagree on what it means; nothing is sent there
    # The query is sent as given: only the origin and the path decide trust.
    return NormalUrl(scheme, host, port or DEFAULT_PORTS[scheme], tuple(segments), parts.query)
