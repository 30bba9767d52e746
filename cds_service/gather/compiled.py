"""The checked reader's Observation, decoded in compiled code: msgspec structs made from ``gather.checked``'s own
type table, for the Observations a hook keeps (issue 15).

``gather.checked`` reads a dict that orjson built, element by element, in Python. ``read_observation_bytes``
reads the same Observation from its raw JSON bytes (what ``gather.lazy`` keeps) in one msgspec call, into structs
generated from the very ``_Type`` declarations the checked reader walks: the same elements, the same required
ones, the same codes (``Literal``), integers in range, booleans only ``true`` and ``false``, no empty list or
string, no unknown element (msgspec's ``forbid_unknown_fields``). What msgspec cannot say cheaply is said by the
struct's ``__post_init__``, with the checked reader's own functions: codes, URIs, ids and references; dates (the
same ``date`` / ``datetime`` / partial-date string); at most one element of a choice group, exactly one of a
required group. One scan of the raw bytes first (``_UNICODE_SPACES_ONLY``, ``_EMPTY_OBJECT`` and two substring
searches) leaves to the Python reader any resource where a free-text string could be one the checked reader
refuses (an escape such as ``\\u0000``, a DEL, a string of Unicode spaces only) or an object is empty.

So it accepts only what the checked reader accepts, with the same content (tests/gather/test_checked.py checks
both on every Observation of the corpora and of the mutations); anything else is None, and the caller reads the
resource as before (``gather.checked``, then ``fhir.resources``). Integer decimals beyond int64 are declined too
(msgspec's bound; the checked reader's is 64 bits either sign). The structs are read by attribute like the checked
``JsonNode`` and the fhir.resources model: every other element of the model reads None (class attributes); the
root's class is named ``Observation``; ``repr`` shows element names, never values. They are not tracked by the
garbage collector (a JSON tree holds no cycles).

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from cds_service.gather import checked

__all__ = ["read_observation_bytes", "struct_of", "prepare"]

# One scan of the raw bytes (substring searches and a regular expression, in C) stands in for the checks the
# Python reader makes on every free-text string: anything that could make a string one the checked reader
# refuses, or an object empty, sends the resource to the Python reader. That is a backslash (any escape:
# "\u0000", "\ud800", "\u00a0"...), a DEL, a string made only of the non-ASCII characters Python counts as
# whitespace (U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000, in UTF-8), an empty
# object; an empty string is refused by msgspec (min_length). JSON allows no raw control character in a string and
# only ASCII whitespace outside strings, and with no backslash a string holds no quote: so a match of the
# Unicode-space pattern is a whole string, and without a match every non-empty JSON string is a valid FHIR string.
_UNICODE_SPACES_ONLY = re.compile(
    rb'"(?:\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80)+"')
_EMPTY_OBJECT = re.compile(rb"\{[ \t\n\r]*\}")
# Codes, URIs, ids and references are checked by the checked reader's own functions in __post_init__ (codes and
# URIs remembered there, as terminology: a long record repeats a few dozen); msgspec's pattern would call a
# regular expression per string at ~1.3 us, as long as the rest of the decoding.
_TERMS = (checked._code, checked._uri, checked._id, checked._reference_string)
_TEXT = Annotated[str, Meta(min_length=1)]

_PRIMITIVES: dict[Callable[[Any], Any], Any] = {
    checked._string: _TEXT,  # free text and terminology: valid FHIR strings once the scan found nothing
    checked._term: _TEXT,
    checked._boolean: bool,
    checked._integer: Annotated[int, Meta(ge=-2_147_483_648, le=2_147_483_647)],
    checked._positive_int: Annotated[int, Meta(ge=1, le=2_147_483_647)],
    checked._unsigned_int: Annotated[int, Meta(ge=0, le=2_147_483_647)],
    # the JSON number as given (the checked reader keeps it so too); a float is finite: msgspec refuses 1e400
    checked._decimal: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | float,
}
# Dates keep the checked reader's own readers (run in __post_init__): the same value, or a refusal.
_DATES = (checked._date_time, checked._date, checked._instant)

_structs: dict[int, type] = {}


_Checks = tuple[tuple[str, Callable[[Any], Any], bool], ...]


def _post_init(terms: _Checks, dates: _Checks, choices: tuple[frozenset[str], ...],
               one_required: tuple[frozenset[str], ...]) -> Callable[[Any], None]:
    """The checks msgspec has no words for; a ValueError here is msgspec's ValidationError for the caller.

    Written out as source for each type (as ``dataclasses`` writes its ``__init__``): this runs for every
    Coding, Quantity and Reference of every kept Observation, and a loop over a table of checks costs it twice
    as much. The names are element names from checked.py's tables, never data."""
    lines = ["def __post_init__(self):", "    try:"]
    env: dict[str, Any] = {"_Decline": checked._Decline}
    for i, (name, check, repeats) in enumerate(terms):
        env[f"check{i}"] = check
        lines += [f"        v = self.{name}", "        if v is not None:",
                  f"            for x in v: check{i}(x)" if repeats else f"            check{i}(v)"]
    for i, (name, read, repeats) in enumerate(dates):
        env[f"date{i}"] = read
        lines += [f"        v = self.{name}", "        if v is not None:",
                  f"            self.{name} = " + (f"[date{i}(x) for x in v]" if repeats else f"date{i}(v)")]
    lines += ["        pass", "    except _Decline:",
              "        raise ValueError('a code, URI, id, reference or date the checked reader refuses') from None"]
    for group, wrong in [*((g, "> 1") for g in choices), *((g, "!= 1") for g in one_required)]:
        present = " + ".join(f"(self.{n} is not None)" for n in sorted(group))
        lines += [f"    if {present} {wrong}:", "        raise ValueError('a choice group broken')"]
    for name in (*(t[0] for t in terms), *(d[0] for d in dates), *(n for g in (*choices, *one_required) for n in g)):
        if not name.isidentifier():
            raise ValueError(f"not an element name: {name!r}")
    exec("\n".join(lines), env)  # noqa: S102 - source made above from the type tables' element names only
    return env["__post_init__"]  # type: ignore[no-any-return]


def _repr(self: Any) -> str:
    # Element names, never values (a repr can reach a traceback or a log line; values are patient data).
    return f"{type(self).__name__}({', '.join(f for f in self.__struct_fields__ if getattr(self, f) is not None)})"


def struct_of(spec: checked._Type) -> type:
    """The msgspec struct of one checked type (made once; its element types' structs first)."""
    key = id(spec)  # each checked type is one module-level constant (Quantity and SimpleQuantity share a model)
    found = _structs.get(key)
    if found is not None:
        return found
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    dates: list[tuple[str, Callable[[Any], Any], bool]] = []
    terms: list[tuple[str, Callable[[Any], Any], bool]] = []
    for name, (read, repeats) in spec.elements.items():
        if isinstance(read, checked._Type):
            kind: Any = struct_of(read)
        elif read in _DATES:
            kind = str  # read and converted by __post_init__
            dates.append((name, read, repeats))
        elif hasattr(read, "allowed"):
            kind = Literal[read.allowed]  # type: ignore[valid-type]
        elif read in _TERMS:
            kind = str
            terms.append((name, read, repeats))
        else:
            kind = _PRIMITIVES[read]
        if repeats:
            kind = Annotated[list[kind], Meta(min_length=1)]  # type: ignore[valid-type]
        # Absent elements read None; an explicit null is refused (the type does not admit it), as by the checked
        # reader.
        fields.append((name, kind) if name in spec.required else (name, kind, None))
    listed = checked._listed_fields().get(spec.model_path)
    others = (set(listed) if listed is not None else checked.model_field_names(spec)) - spec.elements.keys()
    namespace: dict[str, Any] = dict.fromkeys(others)
    namespace["__repr__"] = _repr
    if dates or terms or spec.choices or spec.one_required:
        namespace["__post_init__"] = _post_init(tuple(terms), tuple(dates), spec.choices, spec.one_required)
    made = msgspec.defstruct(spec.name, fields, kw_only=True, forbid_unknown_fields=True, gc=False,
                             namespace=namespace, module=__name__)
    _structs[key] = made
    return made


_decode_observation: Callable[[Any], Any] | None = None


def prepare() -> None:
    """Make the structs and their decoder now (the service's warm-up), not in the first hook call."""
    global _decode_observation
    if _decode_observation is None:
        _decode_observation = msgspec.json.Decoder(struct_of(checked.OBSERVATION)).decode


def read_observation_bytes(raw: Any) -> Any | None:
    """The Observation in ``raw`` (its JSON bytes, or a buffer such as ``msgspec.Raw``) as the checked reader
    would read it, or None when the Python readers must decide."""
    data = bytes(raw)  # (a copy of a few hundred bytes: the substring searches below are bytes methods)
    if b"\\" in data or b"\x7f" in data or _EMPTY_OBJECT.search(data) is not None:
        return None
    if not data.isascii() and _UNICODE_SPACES_ONLY.search(data) is not None:
        return None
    if _decode_observation is None:
        prepare()
    try:
        return _decode_observation(data)  # type: ignore[misc]
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
