"""The lazy front end of the hook: the request body decoded once, each prefetched Observation kept as raw bytes
until something needs more of it than its codes, dates and patient reference (issue 15).

``parse_request(body)`` gives what ``hooks.json_body.parse_json_body`` gives (the same dicts, lists and values)
but for the ``resource`` of each entry of a prefetch Bundle that is an Observation: that one is a
``LazyObservation``, a ``dict`` holding only the elements the code filter, the date horizon and the
patient-reference check read (``HEAD``: resourceType, id, subject/patient/beneficiary, effective[x]), with its
codes in the places ``record.observation_codings`` reads them computed once per distinct set of those places
(``codings``; a long record repeats the same few dozen). Any other element asked of it (``get``, ``[]``, ``in``,
iteration, ``len``...) first decodes the whole resource into it, so code that does not know about laziness reads
the same resource as before, only later. ``record.build_record`` reads the ones it keeps straight from their
raw bytes into typed structs (``compiled``: ``gather.compiled``, the checked reader's types and rules in msgspec)
and, where that reader declines, decodes them (``plain``) for the checked reader or ``fhir.resources``: the
checked reader's accept/decline contract holds either way, and the ~60% of a long record that the date horizon
skips is never decoded.

The body is decoded with msgspec (a compiled decoder: ``msgspec.Raw`` keeps a value's bytes without building
it) and every value that is built, with orjson, as ``parse_json_body`` does for bodies under 2 MiB. The same bodies
are accepted and refused: anything msgspec refuses, a body that is not UTF-8, one whose top level or prefetch is
not an object, and any number in a resource left raw that could overflow a double (orjson refuses those; msgspec
does not look at bytes it skips) send the body to ``parse_json_body``, which answers as before. A body over the
size where ``parse_json_body`` switches to ``json.loads`` is decoded lazily too: the values built are the same
(json_body's tests), and the peak memory is far lower.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from msgspec import UNSET, Raw, UnsetType

from cds_service.gather.compiled import read_observation_bytes
from cds_service.gather.record import observation_codings, raw_effective

__all__ = ["LazyObservation", "parse_request", "parse_bundle", "HEAD", "CODE_PLACES"]

# The elements ``record.observation_codings`` reads codes from: decoded once per distinct bytes (``_codings``).
CODE_PLACES = ("code", "valueCodeableConcept", "dataAbsentReason", "interpretation", "referenceRange", "method",
               "component")
# The elements a LazyObservation holds before it is decoded whole: what the code filter (``Relevance``), the
# date horizon (``raw_effective``), ``prefetch._own_resources`` (resourceType, id, the patient reference) and
# ``bundles.patient_reference_of`` read. The code places are not held: reading one decodes the whole resource.
HEAD = ("resourceType", "id", "subject", "patient", "beneficiary", "effectiveDateTime", "effectiveInstant",
        "effectivePeriod")


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    """A Bundle entry of the usual shape; any other (more elements, a fullUrl not a string) is read key by key."""

    fullUrl: str | UnsetType = UNSET  # noqa: N815
    resource: Raw | UnsetType = UNSET
    search: Raw | UnsetType = UNSET


class _Headed(msgspec.Struct):
    """``HEAD`` decoded and ``CODE_PLACES`` as raw bytes, in that order, skipping the rest: a whole entry list
    read in one C call (``_entries``), or one resource (``_resource``). An element of HEAD of another JSON type
    (a subject with an identifier object...) makes that list take the entry-by-entry path, and that resource be
    decoded whole."""

    resourceType: str | UnsetType = UNSET  # noqa: N815 - FHIR's element names
    id: str | UnsetType = UNSET
    subject: dict[str, str] | UnsetType = UNSET
    patient: dict[str, str] | UnsetType = UNSET
    beneficiary: dict[str, str] | UnsetType = UNSET
    effectiveDateTime: str | UnsetType = UNSET  # noqa: N815
    effectiveInstant: str | UnsetType = UNSET  # noqa: N815
    effectivePeriod: dict[str, str] | UnsetType = UNSET  # noqa: N815
    code: Raw | UnsetType = UNSET
    valueCodeableConcept: Raw | UnsetType = UNSET  # noqa: N815
    dataAbsentReason: Raw | UnsetType = UNSET  # noqa: N815
    interpretation: Raw | UnsetType = UNSET
    referenceRange: Raw | UnsetType = UNSET  # noqa: N815
    method: Raw | UnsetType = UNSET
    component: Raw | UnsetType = UNSET


class _HeadedEntry(msgspec.Struct):
    resource: _Headed | UnsetType = UNSET


_HEAD_KEYS = frozenset(HEAD)
_UNREAD = object()
assert tuple(_Headed.__struct_fields__) == HEAD + CODE_PLACES  # noqa: S101 - a definition-time invariant
_decode_entries = msgspec.json.Decoder(list[_Entry]).decode
_decode_headed = msgspec.json.Decoder(list[_HeadedEntry]).decode
_decode_one_headed = msgspec.json.Decoder(_Headed).decode
_decode_entry = msgspec.json.Decoder(_Entry).decode
_decode_object = msgspec.json.Decoder(dict[str, Raw]).decode
_decode_array = msgspec.json.Decoder(list[Raw]).decode
_decode_value = msgspec.json.Decoder(Raw).decode
_loads = orjson.loads


class LazyObservation(dict):
    """An Observation of which only ``HEAD`` is decoded (a real dict: ``isinstance(x, dict)`` holds, as for the
    resources it stands for). ``codings``: ``record.observation_codings`` of the whole resource, computed from
    its code places; ``when``: ``record.raw_effective`` of it, from its head. Reading any element outside
    ``HEAD`` decodes the whole resource into the dict first. (C code that reads a dict's storage directly, such
    as ``orjson.dumps``, sees only the head: nothing in the service serialises a raw resource.)"""

    __slots__ = ("_raw", "_plain", "codings", "when")

    def plain(self) -> dict[str, Any]:
        """The whole resource as a plain dict (orjson, as parse_json_body would have built it); the dict itself
        is filled with it too, in the same order."""
        full = self._plain
        if full is None:
            full = self._plain = _loads(memoryview(self._raw))
            dict.clear(self)
            dict.update(self, full)
        return full

    def compiled(self) -> Any | None:
        """The resource as the checked reader would read it, decoded from its raw bytes in compiled code
        (``gather.compiled``), or None when the Python readers must decide (then ``plain``)."""
        return read_observation_bytes(self._raw)

    def get(self, key: Any, default: Any = None) -> Any:
        if self._plain is None and key not in _HEAD_KEYS:
            self.plain()
        return dict.get(self, key, default)

    def __getitem__(self, key: Any) -> Any:
        if self._plain is None and key not in _HEAD_KEYS:
            self.plain()
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        if self._plain is None and key not in _HEAD_KEYS:
            self.plain()
        return dict.__contains__(self, key)

    def __eq__(self, other: object) -> bool:
        mine = self.plain()
        return mine == (other.plain() if isinstance(other, LazyObservation) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyObservation({'decoded' if self._plain is not None else 'head only'})"  # never values

    def __reduce__(self) -> Any:
        return (dict, (self.plain(),))


def _whole(name: str) -> Callable[..., Any]:
    """A dict method of LazyObservation that needs the whole resource: decode it, then do as dict does."""
    base = getattr(dict, name)

    def method(self: LazyObservation, *args: Any, **kwargs: Any) -> Any:
        self.plain()
        return base(self, *args, **kwargs)
    method.__name__ = name
    return method


for _name in ("__iter__", "__len__", "__reversed__", "__or__", "__ror__", "__ior__", "keys", "items", "values",
              "copy", "setdefault", "pop", "popitem", "update", "__setitem__", "__delitem__", "clear"):
    setattr(LazyObservation, _name, _whole(_name))


class _NotLazy(Exception):
    """This body is one the lazy decoder does not answer for: parse_json_body decides."""


# A number that could overflow a double (which orjson refuses) needs an exponent of three digits or more, or
# 309 digits: with digits mapped to "0", e/E to "e" and "+" dropped, it leaves "0e000" or 309 "0"s. Strings can
# look like that too (a UUID "5e953..."): then the resources left raw are checked one by one, exactly (orjson).
_SHAPES = bytearray(b" " * 256)
for _digit in b"0123456789":
    _SHAPES[_digit] = ord("0")
_SHAPES[ord("e")] = _SHAPES[ord("E")] = ord("e")
_NUMBER_SHAPES = bytes(_SHAPES)
_LONG_RUN = b"0" * 309


_CHUNK = 1 << 18


def _may_overflow(raw: Any) -> bool:
    """Does ``raw`` (bytes or a buffer such as ``msgspec.Raw``) hold the shape of a number that could overflow?

    Translated a quarter MiB at a time, each piece after the last 308 translated bytes of the one before (the
    translation is byte by byte, so the pieces join into the whole one, and a 309-byte shape spans at most two):
    a whole 10 MB prefetch copied and translated at once doubled the hook's peak memory (bench/memory.py)."""
    view = memoryview(raw)
    if len(view) <= _CHUNK:
        shapes = bytes(view).translate(_NUMBER_SHAPES, b"+")
        return b"0e000" in shapes or _LONG_RUN in shapes
    tail = b""
    for start in range(0, len(view), _CHUNK):
        shapes = tail + bytes(view[start:start + _CHUNK]).translate(_NUMBER_SHAPES, b"+")
        if b"0e000" in shapes or _LONG_RUN in shapes:
            return True
        tail = shapes[-(len(_LONG_RUN) - 1):]
    return False


class _Memo:
    """What one request's (or one answer's) decoding remembers, and forgets with it: the codings of each distinct
    set of code places (terminology), and the horizon's reading of each distinct effective[x] string (a lab
    panel's results share one time). Never kept beyond the call: dates are the patient's."""

    __slots__ = ("codings", "dates")

    def __init__(self) -> None:
        self.codings: dict[bytes, tuple[tuple[str, str], ...]] = {}
        self.dates: dict[str, Any] = {}


def parse_request(body: bytes, parse_json_body: Callable[[bytes], Any]) -> Any:
    """The request body as ``parse_json_body`` (``hooks.json_body``'s, passed in: gather/ does not import
    hooks/) would give it, the prefetch Bundles' Observations lazy (module docstring); for a body the lazy
    decoder does not answer for, what ``parse_json_body`` answers (the same InputError for one that is not
    JSON)."""
    try:
        return _parse(body)
    except (_NotLazy, msgspec.DecodeError, msgspec.ValidationError, orjson.JSONDecodeError, RecursionError,
            UnicodeDecodeError):
        return parse_json_body(body)


def _parse(body: bytes) -> Any:
    if not body.isascii():
        body.decode("utf-8")  # strict: UnicodeDecodeError (then parse_json_body refuses it) for bad UTF-8
    parts = _decode_object(body)  # ValidationError when the body is not an object: parse_json_body decides
    out: dict[str, Any] = {}
    lazy: list[LazyObservation] = []
    memo = _Memo()
    prefetch = None
    for key, value in parts.items():
        if key == "prefetch":
            out[key] = _prefetch(value, lazy, memo)
            prefetch = value
        else:
            out[key] = _loads(memoryview(value))
    # Only the prefetch holds resources left raw (everything else was decoded by orjson): the hook instance, a
    # UUID, would often look like an overflow ("5e953").
    if prefetch is not None:
        _refuse_overflows(prefetch, lazy)  # then parse_json_body refuses the body
    return out


def _refuse_overflows(raw: Any, lazy: list[LazyObservation]) -> None:
    """orjson.JSONDecodeError when a resource left raw in ``raw`` holds a number orjson refuses (one beyond a
    double), as decoding all of ``raw`` with orjson would: ``_may_overflow`` over all of it first, then exactly,
    resource by resource, only if that found the shape of one."""
    if lazy and _may_overflow(raw):
        for obs in lazy:
            if _may_overflow(obs._raw):
                _loads(memoryview(obs._raw))


def parse_bundle(blob: bytes) -> Any:
    """A FHIR server's answer (a searchset Bundle) as ``orjson.loads`` gives it, but each entry's Observation a
    ``LazyObservation`` (as in a hook's prefetch: the answers to the service's Observation queries are the long
    ones). ``orjson.JSONDecodeError`` for anything ``orjson.loads`` refuses; an answer the lazy decoder does not
    answer for (not an object, an entry of another shape...) is what ``orjson.loads`` gives."""
    try:
        if not blob.isascii():
            blob.decode("utf-8")  # strict: bad UTF-8 goes to orjson, which refuses it
        lazy: list[LazyObservation] = []
        out = _prefetch_value(_decode_value(blob), lazy, _Memo())
    except (_NotLazy, msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return _loads(blob)  # orjson answers: the same value, or the same refusal
    _refuse_overflows(blob, lazy)
    return out


def _starts(raw: Raw, char: bytes) -> bool:
    return memoryview(raw)[:1] == char


def _prefetch(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> Any:
    if not _starts(raw, b"{"):
        return _loads(memoryview(raw))  # not an object: the request schema refuses it
    return {key: _prefetch_value(value, lazy, memo) for key, value in _decode_object(raw).items()}


def _prefetch_value(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> Any:
    if not _starts(raw, b"{"):
        return _loads(memoryview(raw))
    parts = _decode_object(raw)
    kind, entry = parts.get("resourceType"), parts.get("entry")
    if kind is None or entry is None or bytes(kind) != b'"Bundle"' or not _starts(entry, b"["):
        return _loads(memoryview(raw))  # a resource, an OperationOutcome, a Bundle without entries: as before
    out: dict[str, Any] = {}
    for key, value in parts.items():
        if key == "entry":
            try:
                out[key] = _entries(value, lazy, memo)
            except msgspec.ValidationError:  # an entry or a resource head of another shape: one by one
                out[key] = [_entry(item, lazy, memo) for item in _decode_array(value)]
        else:
            out[key] = _loads(memoryview(value))
    return out


def _entry(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> Any:
    try:
        entry = _decode_entry(raw)
    except msgspec.ValidationError:
        return _entry_by_key(raw, lazy, memo)
    out: dict[str, Any] = {}
    if entry.fullUrl is not UNSET:
        out["fullUrl"] = entry.fullUrl
    resource = entry.resource
    if resource is not UNSET:
        out["resource"] = _resource(resource, lazy, memo) if _starts(resource, b"{") else \
            _loads(memoryview(resource))
    if entry.search is not UNSET:
        out["search"] = _loads(memoryview(entry.search))
    return out


def _entries(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> list[dict[str, Any]]:
    """An entry list of the usual shape, each resource an object with its head of the usual types, in two C
    calls over the whole list (raw entries, then every resource's head and code places) instead of several per
    entry: the same values as ``_entry`` gives for each (tests/gather/test_lazy.py)."""
    entries = _decode_entries(raw)
    heads = _decode_headed(raw)
    out: list[dict[str, Any]] = []
    append = out.append
    for entry, headed in zip(entries, heads, strict=True):
        item: dict[str, Any] = {}
        if entry.fullUrl is not UNSET:
            item["fullUrl"] = entry.fullUrl
        resource = entry.resource
        if resource is not UNSET:
            head = headed.resource  # decoded from the same bytes: present, and an object, as ``resource`` is
            if head is not UNSET and head.resourceType == "Observation":
                item["resource"] = _lazy_observation(resource, head, lazy, memo)
            else:
                item["resource"] = _loads(memoryview(resource))
        if entry.search is not UNSET:
            item["search"] = _loads(memoryview(entry.search))
        append(item)
    return out


def _lazy_observation(raw: Raw, head: _Headed, lazy: list[LazyObservation], memo: _Memo) -> LazyObservation:
    """A LazyObservation of ``raw`` from its head and code places as ``_Headed`` decoded them."""
    obs = LazyObservation()
    obs._raw = raw
    obs._plain = None
    # The present elements of HEAD, in HEAD's order, written out (a loop over the struct's fields costs this
    # function a third of its time; test_lazy checks the head against the plain resource's).
    plain: dict[str, Any] = {"resourceType": head.resourceType}
    if head.id is not UNSET:
        plain["id"] = head.id
    if head.subject is not UNSET:
        plain["subject"] = head.subject
    if head.patient is not UNSET:
        plain["patient"] = head.patient
    if head.beneficiary is not UNSET:
        plain["beneficiary"] = head.beneficiary
    moment = head.effectiveDateTime
    if moment is not UNSET:
        plain["effectiveDateTime"] = moment
    if head.effectiveInstant is not UNSET:
        plain["effectiveInstant"] = head.effectiveInstant
    if head.effectivePeriod is not UNSET:
        plain["effectivePeriod"] = head.effectivePeriod
    dict.update(obs, plain)
    # raw_effective of the plain head (the date horizon asks it of every Observation), once per distinct
    # effectiveDateTime: raw_effective reads that one first whenever it is there.
    if moment is UNSET:
        obs.when = raw_effective(plain)
    else:
        when = memo.dates.get(moment, _UNREAD)
        if when is _UNREAD:
            when = memo.dates[moment] = raw_effective(plain)
        obs.when = when
    places = (head.code, head.valueCodeableConcept, head.dataAbsentReason, head.interpretation,
              head.referenceRange, head.method, head.component)  # CODE_PLACES, in order
    key = b"\x00".join([b"" if v is UNSET else bytes(v) for v in places])  # a JSON value never holds a NUL
    found = memo.codings.get(key)
    if found is None:
        found = memo.codings[key] = observation_codings(
            {name: _loads(memoryview(v)) for name, v in zip(CODE_PLACES, places, strict=True) if v is not UNSET})
    obs.codings = found
    lazy.append(obs)
    return obs


def _entry_by_key(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> Any:
    if not _starts(raw, b"{"):
        return _loads(memoryview(raw))
    out: dict[str, Any] = {}
    for key, value in _decode_object(raw).items():
        if key == "resource" and _starts(value, b"{"):
            out[key] = _resource(value, lazy, memo)
        else:
            out[key] = _loads(memoryview(value))
    return out


def _resource(raw: Raw, lazy: list[LazyObservation], memo: _Memo) -> Any:
    try:
        head = _decode_one_headed(raw)
    except msgspec.ValidationError:
        return _loads(memoryview(raw))  # an element of HEAD of another shape: decoded whole, as before
    if head.resourceType != "Observation":
        return _loads(memoryview(raw))  # not an Observation: decoded whole, as before
    return _lazy_observation(raw, head, lazy, memo)
