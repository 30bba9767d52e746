"""The lazy front end (gather.lazy) gives the hook what parse_json_body gives it, decodes only what is needed, and
never changes a screening: every fixture patient at several evaluation times and the benchmarks' long records
screen identically, keeping the same resources, as through the plain parser; tricky bodies are accepted and
refused alike; a LazyObservation reads as the dict it stands for. (tests/gather/test_checked.py runs every
resource and mutation through it too: ``_lazy_agrees``.)"""

from __future__ import annotations

import copy
import os
import pickle
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from builders import AT

from cds_service.config import Settings, load_knowledge
from cds_service.errors import InputError
from cds_service.gather import lazy as lazy_module
from cds_service.gather.lazy import CODE_PLACES, HEAD, LazyObservation, parse_request
from cds_service.gather.prefetch import build_templates, discovery_prefetch, gather
from cds_service.gather.record import observation_codings, relevant_to
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.json_body import parse_json_body
from cds_service.pipeline import screen

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = Path(os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ROOT.parent / "shared" / "synthea"))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
from _common import aml_record, full_prefetch, hook_body, patient_id_of  # noqa: E402 - the benchmarks' records

KNOWLEDGE = load_knowledge(Settings.from_env({}))
TEMPLATES = build_templates(KNOWLEDGE.tables)
PATIENTS = load_fixture_patients()


def lazy(body: bytes) -> Any:
    return parse_request(body, parse_json_body)


def plain_copy(value: Any) -> Any:
    """``value`` with every LazyObservation replaced by its whole resource (a plain dict)."""
    if isinstance(value, LazyObservation):
        return value.plain()
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def _lazies(value: Any) -> list[LazyObservation]:
    out: list[LazyObservation] = []
    if isinstance(value, LazyObservation):
        out.append(value)
    elif isinstance(value, dict):
        for v in dict.values(value):
            out.extend(_lazies(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(_lazies(v))
    return out


def _screened(body: bytes, parse: Any, at: Any) -> tuple[Any, dict[str, list[str]], int]:
    """(screening JSON, ids kept per type, LazyObservations decoded) of one hook body through ``parse``."""
    request = parse(body)
    lazies = _lazies(request)
    keep = relevant_to(KNOWLEDGE.tables, at=at, rules=KNOWLEDGE.rules)
    gathered = gather(request["context"]["patientId"], request.get("prefetch"), TEMPLATES, None, keep=keep)
    if gathered.record is None:
        return None, {}, 0
    kept = {kind: sorted(getattr(r, "id", None) or "" for r in items)
            for kind, items in gathered.record.resources.items()}
    result = screen(gathered.record, at, KNOWLEDGE).to_json()
    return result, kept, sum(1 for o in lazies if o._plain is not None)


def _fixture_bodies() -> list[tuple[str, bytes]]:
    templates = discovery_prefetch(TEMPLATES)
    return [(p.source, orjson.dumps(hook_body(p.patient_id, prefetch_for(p, templates)))) for p in PATIENTS]


@pytest.mark.parametrize("days", [0, 30, 120, 800])
def test_every_fixture_patient_screens_and_keeps_alike(days):
    at = AT + timedelta(days=days)
    bodies = _fixture_bodies()
    assert len(bodies) >= 30
    lazy_seen = 0
    for source, body in bodies:
        assert plain_copy(lazy(body)) == parse_json_body(body), source
        fast = _screened(body, lazy, at)
        slow = _screened(body, parse_json_body, at)
        assert fast[:2] == slow[:2], source
        lazy_seen += len(_lazies(lazy(body)))
    assert lazy_seen > 100  # the fixtures' Observations did take the lazy path


@pytest.mark.parametrize("size, days", [(1_000, 0), (1_000, 45), (10_000, 0), (10_000, 400)])
def test_the_bench_records_screen_alike_and_most_observations_stay_raw(size, days):
    resources = aml_record(size)
    body = orjson.dumps(hook_body(patient_id_of(resources), full_prefetch(TEMPLATES, resources)))
    at = AT + timedelta(days=days)
    fast = _screened(body, lazy, at)
    slow = _screened(body, parse_json_body, at)
    assert fast[0] is not None and fast[:2] == slow[:2]
    observations = sum(1 for r in resources if r["resourceType"] == "Observation")
    assert fast[2] < observations * 0.6, (fast[2], observations)  # decoded: only those kept (and horizon anchors)


def _bundle_body(*resources: Any, extra: bytes = b"") -> bytes:
    entries = b",".join(b'{"fullUrl":"https://ehr.example.org/fhir/Observation/x","resource":' + r + b"}"
                        for r in resources)
    return (b'{"hook":"patient-view","hookInstance":"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",'
            b'"context":{"patientId":"p1"},"prefetch":{"observations":{"resourceType":"Bundle","type":"searchset",'
            b'"entry":[' + entries + b"]}" + extra + b"}}")


_OBS = b'{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org",' \
       b'"code":"1742-6"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-09-01T10:00:00Z",' \
       b'"valueQuantity":{"value":VALUE,"unit":"U/L"}}'

TRICKY = [
    _bundle_body(_OBS.replace(b"VALUE", b"40")),
    _bundle_body(_OBS.replace(b"VALUE", b"1e400")),  # overflows a double: orjson refuses, msgspec skips it raw
    _bundle_body(_OBS.replace(b"VALUE", b"-1E+400")),
    _bundle_body(_OBS.replace(b"VALUE", b"1" * 400)),
    _bundle_body(_OBS.replace(b"VALUE", b"1.5e0300")),  # 1.5e300: fine, but looks like an overflow at first
    _bundle_body(_OBS.replace(b"VALUE", b"123456789012345678901234567890")),  # beyond 64 bits: a float
    _bundle_body(_OBS.replace(b"VALUE", b"NaN")),
    _bundle_body(_OBS.replace(b"VALUE", b'"\\ud800"')),  # a lone surrogate
    _bundle_body(_OBS.replace(b"VALUE", b'"\xed\xa0\x80"')),  # a UTF-8-encoded surrogate
    _bundle_body(_OBS.replace(b"VALUE", b'"\xff"')),  # not UTF-8
    _bundle_body(_OBS.replace(b"VALUE", "\"µ\"".encode())),
    _bundle_body(_OBS.replace(b"VALUE", b"01")),
    _bundle_body(_OBS.replace(b"VALUE", b"[1,]")),
    _bundle_body(_OBS.replace(b"VALUE", b"[" * 1100 + b"]" * 1100)),
    _bundle_body(_OBS.replace(b"VALUE", b"40").replace(b'"id":"o1"', b'"id":"o1","id":"o2"')),  # last one wins
    _bundle_body(_OBS.replace(b"VALUE", b"40").replace(b'"code":{', b'"code":[],"code":{')),
    _bundle_body(_OBS.replace(b"VALUE", b"40").replace(b'"Observation"', b'"Observ\\u0061tion"')),
    _bundle_body(_OBS.replace(b"VALUE", b"40").replace(b'"id":"o1"', b'"id":123456789012345678901')),
    _bundle_body(_OBS.replace(b"VALUE", b"40"), b'[]', b'null', b'"text"'),
    _bundle_body(_OBS.replace(b"VALUE", b"40"), extra=b',"entry":[]'),  # a second entry list wins
    _bundle_body(_OBS.replace(b"VALUE", b"40")).replace(b'"resourceType":"Bundle"', b'"resourceType":"Other"'),
    _bundle_body(_OBS.replace(b"VALUE", b"40")).replace(b'"prefetch":', b'"prefetch":[],"x":'),
    b"[1, 2]", b"", b"  ", b"null", b'"text"', b"{}", b'\xef\xbb\xbf{}', b'{"prefetch": null}',
    b'{"prefetch": {"a": null, "b": [1], "c": {"resourceType": "Bundle", "entry": {"x": 1}}}}',
    b'  {"hook" : "patient-view" , "prefetch" : { "k" : { "resourceType" : "Bundle" , "entry" : [ { "resource" : '
    + _OBS.replace(b"VALUE", b"40") + b' } ] } } }  ',
]


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return ("value", plain_copy(parse(body)))
    except InputError as exc:
        return ("refused", str(exc))


@pytest.mark.parametrize("body", TRICKY, ids=range(len(TRICKY)))
def test_tricky_bodies_are_accepted_and_refused_alike(body):
    assert _outcome(lazy, body) == _outcome(parse_json_body, body)


def test_a_lazy_observation_reads_as_its_resource():
    raw = orjson.loads(_OBS.replace(b"VALUE", b"40"))
    fresh = lambda: lazy(_bundle_body(_OBS.replace(b"VALUE", b"40")))["prefetch"]["observations"]["entry"][0][  # noqa: E731
        "resource"]
    obs = fresh()
    assert isinstance(obs, LazyObservation) and isinstance(obs, dict) and obs._plain is None
    assert {k: dict.get(obs, k) for k in HEAD if k in raw} == {k: raw[k] for k in HEAD if k in raw}
    assert obs.codings == observation_codings(raw)
    assert obs._plain is None and "value" not in repr(obs) and "40" not in repr(obs)
    assert obs.get("valueQuantity") == raw["valueQuantity"] and obs._plain is not None  # decoded on demand
    assert list(obs) == list(raw) and dict(obs) == raw and obs == raw
    for read in (lambda o: o["status"], lambda o: "status" in o, lambda o: len(o), lambda o: list(o.items()),
                 lambda o: copy.deepcopy(o), lambda o: pickle.loads(pickle.dumps(o)), lambda o: {**o},
                 lambda o: o.copy(), lambda o: orjson.dumps(dict(o))):
        o = fresh()
        expected = read(raw)
        assert read(o) == expected


def test_the_code_places_are_those_observation_codings_reads():
    """``codings`` are computed from CODE_PLACES alone: observation_codings must read nothing else."""
    class Recording(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            asked.add(key)
            return dict.get(self, key, default)

    asked: set[str] = set()
    observation_codings(Recording({k: None for k in CODE_PLACES}))
    assert asked == set(CODE_PLACES)


def _whole_translation_may_overflow(raw: bytes) -> bool:
    """The overflow pre-check on the whole buffer at once (what the chunked one must answer)."""
    shapes = raw.translate(lazy_module._NUMBER_SHAPES, b"+")
    return b"0e000" in shapes or lazy_module._LONG_RUN in shapes


@pytest.mark.parametrize("shape", [b"1e400", b"1e+400", b"7" * 309, b"5" * 200 + b"+" * 50 + b"5" * 109, b"1e3",
                                   b"9" * 308, b"+" * 10])
@pytest.mark.parametrize("offset", [-400, -309, -5, -3, -1, 0, 1, 300])
def test_the_chunked_overflow_check_answers_as_the_whole_translation(shape, offset):
    """A shape straddling a chunk boundary (or two) is found as in the whole buffer translated at once, and only
    then (the prefetch is checked a quarter MiB at a time: issue 15's memory target)."""
    for boundary in (lazy_module._CHUNK, 2 * lazy_module._CHUNK):
        start = boundary + offset
        raw = b'{"a":"' + b"x" * (start - 6) + shape + b"x" * (lazy_module._CHUNK + 500) + b'"}'
        assert lazy_module._may_overflow(raw) == _whole_translation_may_overflow(raw), (shape, offset, boundary)
        assert lazy_module._may_overflow(memoryview(raw)) == _whole_translation_may_overflow(raw)


# --- FHIR server answers (gather.fhir_client reads every page through parse_bundle) ----------------------------------

def _searchset(*resources: bytes, extra: bytes = b"") -> bytes:
    entries = b",".join(b'{"fullUrl":"https://fhir.example.org/fhir/Observation/x","resource":' + r
                        + b',"search":{"mode":"match"}}' for r in resources)
    return (b'{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"https://x/Observation"}],'
            b'"entry":[' + entries + b"]" + extra + b"}")


TRICKY_PAGES = [_searchset(_OBS.replace(b"VALUE", value)) for value in (
    b"40", b"1e400", b"-1E+400", b"1" * 400, b"1.5e0300", b"123456789012345678901234567890", b"NaN", b'"\\ud800"',
    b'"\xed\xa0\x80"', b'"\xff"', "\"µ\"".encode(), b"01", b"[1,]", b"[" * 1100 + b"]" * 1100)] + [
    _searchset(_OBS.replace(b"VALUE", b"40").replace(b'"id":"o1"', b'"id":"o1","id":"o2"')),
    _searchset(_OBS.replace(b"VALUE", b"40"), b'[]', b'null', b'"text"'),
    _searchset(_OBS.replace(b"VALUE", b"40"), extra=b',"entry":[]'),
    _searchset(_OBS.replace(b"VALUE", b"40")).replace(b'"resourceType":"Bundle"', b'"resourceType":"Other"'),
    b"[1, 2]", b"", b"null", b"{}", b'\xef\xbb\xbf{}', b'{"resourceType": "OperationOutcome", "issue": []}',
]


def _page_outcome(parse: Any, blob: bytes) -> Any:
    try:
        return ("value", plain_copy(parse(blob)))
    except orjson.JSONDecodeError:  # fhir_client: "the FHIR response is not JSON", whatever orjson's words
        return ("refused",)


@pytest.mark.parametrize("blob", TRICKY_PAGES, ids=range(len(TRICKY_PAGES)))
def test_a_fhir_answer_decodes_and_is_refused_as_orjson_decodes_and_refuses_it(blob):
    assert _page_outcome(lazy_module.parse_bundle, blob) == _page_outcome(orjson.loads, blob)


def test_the_pages_of_the_bench_records_and_of_synthea_decode_as_orjson_does():
    """The long Observation answers (the bench record, 1,000 and 10,000; Synthea's records as searchsets) are
    the same values, their Observations left raw."""
    records = [aml_record(1_000), aml_record(10_000)]
    if SYNTHEA.is_dir():
        records += [[e["resource"] for e in orjson.loads(path.read_bytes())["entry"]]
                    for path in sorted(SYNTHEA.glob("*.json"))]
    raw_seen = 0
    for resources in records:
        blob = _searchset(*(orjson.dumps(r) for r in resources))
        got = lazy_module.parse_bundle(blob)
        raw_seen += sum(isinstance(e["resource"], LazyObservation) and e["resource"]._plain is None
                        for e in got["entry"])
        assert got == orjson.loads(blob)  # (compares each Observation whole: decodes it)
    assert raw_seen >= 10_000, raw_seen
