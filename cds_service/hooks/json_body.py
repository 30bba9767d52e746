"""The one parser of request bodies (the patient-view and feedback endpoints, and the benchmarks' baseline).

Two parsers behind one function, chosen by the body's size:

* below ``ORJSON_MAX_BYTES``: ``orjson.loads``, the faster one;
* from ``ORJSON_MAX_BYTES`` up: the standard library's ``json.loads``, which needs far less memory at its peak.

Both give the same Python objects for the same valid body and refuse the same bad bodies with the same
``InputError("the request body is not valid JSON")`` (400); the ``json`` branch is configured to match
``orjson``:

* ``NaN``, ``Infinity``, ``-Infinity``: refused (``json.loads`` accepts them unless ``parse_constant`` raises).
* A number too large for a double (``1e400``, 400 digits): refused (``json.loads`` would give ``inf``).
* An integer outside [-2**63, 2**64 - 1]: a float, as ``orjson`` gives it (``json.loads`` would give an exact
  int, which the service's ``orjson.dumps`` of a response could not write).
* Invalid UTF-8, UTF-8-encoded surrogates, a byte order mark, UTF-16/32: refused (the ``json`` branch decodes
  the bytes itself, strictly: ``json.loads`` given bytes would guess the encoding and let surrogates through).
* A lone surrogate escape (``"\\ud800"``, or a low surrogate first): refused (``json.loads`` would keep it in
  the string, where encoding it as UTF-8 later fails); a valid pair (``"\\ud83d\\ude00"``) is the one character.
* Duplicate keys in an object: accepted by both; the last value wins, at the place of the first key.
* Nesting: ``orjson`` refuses 1,024 levels and more; ``json.loads`` refuses (``RecursionError``) from about the
  interpreter's recursion limit (1,000) less the stack in use, so a body over the threshold nested between
  ~950 and 1,023 levels deep is refused where a smaller one is accepted. FHIR resources nest a few dozen
  levels at most.

The body is never logged or quoted in the error.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from cds_service.errors import InputError

__all__ = ["ORJSON_MAX_BYTES", "NOT_JSON", "parse_json_body"]

# orjson is ~25% faster than json.loads on large bodies, but its parser holds a document of ~17x the body at
# its peak (~166 MB for a 9.7 MB body) before the Python objects exist; json.loads peaks at ~6x (~59 MB; the
# objects both return are ~5x). Below 2 MiB the difference is a few tens of MB at most and speed wins; above
# it, memory (the hook's peak target is 10x the body, bench/memory.py).
ORJSON_MAX_BYTES = 2 * 1024 * 1024

NOT_JSON = "the request body is not valid JSON"

_INT_MIN = -(2**63)  # orjson returns an int in [_INT_MIN, _INT_MAX], a float outside it
_INT_MAX = 2**64 - 1
# Where a lone surrogate might be: a \u escape of U+D800..U+DFFF. A match may be a valid pair or the text of an
# escaped backslash ("\\ud800"); the parsed strings are then checked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """Raised inside json.loads for what orjson refuses."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused("number too large")
    return value


def _int_as_orjson(text: str) -> int | float:
    value = int(text)
    if _INT_MIN <= value <= _INT_MAX:
        return value
    return _finite_float(text)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                            parse_int=_int_as_orjson)


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in ``value`` still holds a surrogate code point (json.loads joins
    valid pairs, so any left is a lone one)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _stdlib_loads(raw: bytes) -> Any:
    text = raw.decode("utf-8")  # strict: no BOM sniffing, no surrogates (json.loads(bytes) would allow both)
    value = _DECODER.decode(text)
    del text
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise _Refused("lone surrogate")
    return value


def parse_json_body(raw: bytes, *, orjson_max_bytes: int | None = None) -> Any:
    """Parse a request body as JSON: ``orjson`` below ``orjson_max_bytes`` (default ``ORJSON_MAX_BYTES``),
    ``json.loads`` (configured to accept and refuse what orjson does, see the module) from there up.

    Any JSON value is returned (a non-object top level is the caller's to judge). Raises
    ``InputError("the request body is not valid JSON")`` (400) for a body that is not JSON.
    """
    limit = ORJSON_MAX_BYTES if orjson_max_bytes is None else orjson_max_bytes
    try:
        if len(raw) < limit:
            return orjson.loads(raw)
        return _stdlib_loads(raw)
    except (ValueError, RecursionError):  # orjson/json JSONDecodeError, UnicodeDecodeError, _Refused, int limit
        raise InputError(NOT_JSON) from None
