"""parse_json_body: orjson below the size threshold, json.loads above it, the same answers either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hookhelp import SERVICE_URL, aml_patient, full_prefetch, hook_body
from test_conformance import check_outcome

from cds_service.errors import InputError
from cds_service.hooks import json_body
from cds_service.hooks.bench import BENCH_JSON_ONLY
from cds_service.hooks.json_body import NOT_JSON, ORJSON_MAX_BYTES, parse_json_body

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "fixtures").glob("*.json"))
JSON = {"Content-Type": "application/json"}

# orjson_max_bytes=0 forces json.loads on any body, a huge one orjson on any body.
BRANCHES = {"orjson": 1 << 40, "json": 0}


def _outcome(raw: bytes, branch: str) -> str:
    """The parsed value's repr (so 1 and 1.0, -0.0 and 0.0, and key orders differ), or "refused"."""
    try:
        value = parse_json_body(raw, orjson_max_bytes=BRANCHES[branch])
    except InputError as exc:
        assert str(exc) == NOT_JSON and exc.status == 400
        return "refused"
    return repr(value)


def _both(raw: bytes) -> tuple[Any, Any]:
    return _outcome(raw, "orjson"), _outcome(raw, "json")


def test_the_threshold_is_2_mib():
    assert ORJSON_MAX_BYTES == 2 * 1024 * 1024


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name[:2])
def test_both_parsers_give_the_same_objects_for_every_fixture(path):
    raw = path.read_bytes()
    by_orjson, by_json = _both(raw)
    assert by_orjson != "refused"
    assert by_orjson == by_json
    assert parse_json_body(raw, orjson_max_bytes=0) == orjson.loads(raw)


def test_both_parsers_give_the_same_objects_for_a_hook_body(app):
    raw = orjson.dumps(hook_body(full_prefetch(app, *aml_patient()), extension={
        "org.example.text": "é ü 中文 😀 \"quoted\" back\\slash \n\t\u0000 \u2028",
        "org.example.numbers": [0, -0, -0.0, 1.5, 1e-7, 1e300, 2**63 - 1, -(2**63), 2**64 - 1,
                                0.1, 123456.789, 3.0],
    }))
    by_orjson, by_json = _both(raw)
    assert by_orjson == by_json != "refused"


# Each body: both parsers accept it with the same result, or both refuse it.
EDGE_CASES = {
    "nan": b"NaN",
    "nan-in-object": b'{"hook": "patient-view", "x": NaN}',
    "infinity": b"[Infinity]",
    "minus-infinity": b'{"value": -Infinity}',
    "lower-nan": b"[nan]",
    "overflowing-exponent": b"[1e400]",
    "overflowing-negative": b"[-1e400]",
    "just-over-max-double": b"[1.7976931348623159e308]",
    "max-double": b"[1.7976931348623157e308]",
    "underflow": b"[1e-400]",
    "400-digit-int": b"[" + b"1" * 400 + b"]",
    "5000-digit-int": b"[" + b"1" * 5000 + b"]",
    "30-digit-int": b"[123456789012345678901234567890]",
    "2**64": b"[18446744073709551616]",
    "2**64-1": b"[18446744073709551615]",
    "-2**63": b"[-9223372036854775808]",
    "-2**63-1": b"[-9223372036854775809]",
    "exponent-forms": b"[1E2, 1e+2, 1.0e-2, -0, -0.0, 0e0]",
    "leading-zero": b"[01]",
    "bare-minus": b"[-]",
    "trailing-dot": b"[1.]",
    "leading-dot": b"[.5]",
    "plus-sign": b"[+1]",
    "hex": b"[0x10]",
    "lone-high-surrogate": b'["\\ud800"]',
    "lone-low-surrogate": b'["\\udc00"]',
    "reversed-pair": b'["\\udc00\\ud800"]',
    "high-then-letter": b'["\\ud800\\u0041"]',
    "lone-surrogate-as-key": b'{"\\uDBFF": 1}',
    "lone-surrogate-deep": b'{"a": [{"b": ["ok", "\\ud83d"]}]}',
    "valid-pair": b'["\\ud83d\\ude00", "\\uD83D\\uDE00"]',
    "escaped-backslash-then-ud800": b'["\\\\ud800"]',
    "utf8-encoded-surrogate": b'["\xed\xa0\x80"]',
    "bad-utf8": b"\xff\xfe\xfd",
    "bad-utf8-in-string": b'{"hook": "patient-\xc3("}',
    "overlong-utf8": b'["\xc0\xaf"]',
    "utf8-bom": b"\xef\xbb\xbf{}",
    "utf16": '{"hook": "patient-view"}'.encode("utf-16"),
    "utf16-le-no-bom": '{"a": 1}'.encode("utf-16-le"),
    "duplicate-keys": b'{"a": 1, "b": 2, "a": 3}',
    "duplicate-keys-nested": b'{"x": {"k": [1]}, "x": {"k": [2], "j": 0}}',
    "empty": b"",
    "whitespace-only": b" \n\t ",
    "json-whitespace": b" \t\n\r{}\r\n",
    "form-feed": b"{}\x0c",
    "nbsp": b"\xc2\xa0{}",
    "truncated": b'{"hook": "patient-view", "context": {"patientId": "p1"',
    "truncated-string": b'{"hook": "patient-vi',
    "trailing-comma": b'{"hook": "patient-view",}',
    "trailing-comma-array": b"[1, 2,]",
    "single-quotes": b"{'hook': 'patient-view'}",
    "unquoted-key": b"{hook: 1}",
    "comment": b"{} // x",
    "extra-data": b"{} {}",
    "control-char-in-string": b'["a\x01b"]',
    "escaped-nul": b'["\\u0000"]',
    "bad-escape": b'["\\x41"]',
    "short-unicode-escape": b'["\\u12"]',
    "nul-bytes": b"\x00" * 10,
    "top-level-array": b"[]",
    "top-level-null": b"null",
    "top-level-true": b"true",
    "top-level-number": b"3.5",
    "top-level-string": b'"patient-view"',
    "tru": b"tru",
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep-nesting-in-object": b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    "moderate-nesting": b"[" * 500 + b"]" * 500,
}


@pytest.mark.parametrize("raw", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_both_parsers_accept_and_refuse_the_same_bodies(raw):
    by_orjson, by_json = _both(raw)
    assert by_orjson == by_json


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("name", ["nan", "nan-in-object", "infinity", "minus-infinity", "overflowing-exponent",
                                  "400-digit-int", "5000-digit-int", "bad-utf8", "bad-utf8-in-string",
                                  "utf8-encoded-surrogate", "utf8-bom", "utf16", "truncated", "truncated-string",
                                  "empty", "extra-data", "lone-high-surrogate", "lone-low-surrogate",
                                  "reversed-pair", "lone-surrogate-as-key", "lone-surrogate-deep",
                                  "deep-nesting", "deep-nesting-in-object"])
def test_bad_bodies_are_refused_with_the_services_400(branch, name):
    with pytest.raises(InputError, match="^the request body is not valid JSON$") as caught:
        parse_json_body(EDGE_CASES[name], orjson_max_bytes=BRANCHES[branch])
    assert caught.value.status == 400
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("branch", BRANCHES)
def test_duplicate_keys_last_value_wins_at_the_first_keys_place(branch):
    value = parse_json_body(b'{"a": 1, "b": 2, "a": 3}', orjson_max_bytes=BRANCHES[branch])
    assert list(value.items()) == [("a", 3), ("b", 2)]


@pytest.mark.parametrize("branch", BRANCHES)
def test_a_surrogate_pair_is_one_character_and_an_escaped_backslash_is_text(branch):
    limit = BRANCHES[branch]
    assert parse_json_body(b'["\\ud83d\\ude00"]', orjson_max_bytes=limit) == ["\U0001f600"]
    assert parse_json_body(b'["\\\\ud800"]', orjson_max_bytes=limit) == ["\\ud800"]


@pytest.mark.parametrize("branch", BRANCHES)
def test_integers_beyond_64_bits_are_floats_as_orjson_gives_them(branch):
    limit = BRANCHES[branch]
    assert parse_json_body(b"[18446744073709551615, -9223372036854775808]", orjson_max_bytes=limit) == \
        [18446744073709551615, -9223372036854775808]
    big = parse_json_body(b"[18446744073709551616, -9223372036854775809]", orjson_max_bytes=limit)
    assert big == [1.8446744073709552e19, -9.223372036854776e18]
    assert all(type(v) is float for v in big)


@pytest.mark.parametrize("branch", BRANCHES)
@pytest.mark.parametrize("raw", [b"[]", b"null", b"true", b"3.5", b'"patient-view"', b"[{}]"])
def test_a_non_object_top_level_is_returned_for_the_caller_to_judge(branch, raw):
    assert parse_json_body(raw, orjson_max_bytes=BRANCHES[branch]) == orjson.loads(raw)


def test_the_size_decides_the_parser(monkeypatch):
    used = []
    real = json_body._stdlib_loads
    monkeypatch.setattr(json_body, "_stdlib_loads", lambda raw: used.append(len(raw)) or real(raw))
    parse_json_body(b"[1]", orjson_max_bytes=4)
    assert used == []
    parse_json_body(b"[12]", orjson_max_bytes=4)
    assert used == [4]
    monkeypatch.setattr(json_body, "ORJSON_MAX_BYTES", 3)
    parse_json_body(b"[1]")
    assert used == [4, 3]


# --- through the app ----------------------------------------------------------------------------------------------
@pytest.fixture
def json_branch_calls(monkeypatch) -> list[int]:
    """Records the size of every body parsed by json.loads (the real threshold is kept)."""
    used: list[int] = []
    real = json_body._stdlib_loads
    monkeypatch.setattr(json_body, "_stdlib_loads", lambda raw: used.append(len(raw)) or real(raw))
    return used


def _large_body(app, marker: Any = "fine") -> bytes:
    """A patient-view body of ~3 MB (over the threshold): an AML candidate and a padded request extension."""
    pad = [f"padding line {i:06d} " + "x" * 80 for i in range(30_000)]
    raw = orjson.dumps(hook_body(full_prefetch(app, *aml_patient()),
                                 extension={"org.example.pad": pad, "org.example.value": marker}))
    assert len(raw) > ORJSON_MAX_BYTES
    return raw


def test_a_large_body_is_decoded_lazily_and_screened(app, client, json_branch_calls):
    """The hook decodes its body with gather.lazy (issue 15): parse_json_body, and so its json.loads branch, is
    only the fallback for bodies the lazy decoder does not answer for (the tests below)."""
    raw = _large_body(app)
    resp = client.post(SERVICE_URL, data=raw, headers=JSON)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    assert len(resp.get_json()["cards"]) == 1
    assert json_branch_calls == []


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_a_large_body_with_nan_or_infinity_is_400(app, client, json_branch_calls, constant):
    raw = _large_body(app, "@MARK@").replace(b'"@MARK@"', constant)
    resp = client.post(SERVICE_URL, data=raw, headers=JSON)
    check_outcome(resp, 400)
    assert resp.get_json()["issue"][0]["diagnostics"] == NOT_JSON
    assert json_branch_calls == [len(raw)]


@pytest.mark.parametrize("bad", [b'"\\ud800"', b'"\xed\xa0\x80"', b'"\xff"'])
def test_a_large_body_with_a_lone_surrogate_or_bad_utf8_is_400(app, client, json_branch_calls, bad):
    raw = _large_body(app, "@MARK@").replace(b'"@MARK@"', bad)
    check_outcome(client.post(SERVICE_URL, data=raw, headers=JSON), 400)
    assert json_branch_calls == [len(raw)]


@pytest.mark.parametrize("raw", [b"[]", b"null", b"true", b"3.5", b'"patient-view"', b"[{}]"])
def test_a_non_object_body_is_still_400_on_the_json_branch(client, monkeypatch, json_branch_calls, raw):
    monkeypatch.setattr(json_body, "ORJSON_MAX_BYTES", 0)
    check_outcome(client.post(SERVICE_URL, data=raw, headers=JSON), 400)
    assert json_branch_calls == [len(raw)]


def test_the_bench_baseline_uses_the_same_parser(app, make_app, json_branch_calls):
    client = make_app(bench_endpoints=True).test_client()
    ok = client.post(BENCH_JSON_ONLY, data=_large_body(app), headers=JSON)
    assert ok.status_code == 200 and ok.get_json() == {"cards": []}
    nan = client.post(BENCH_JSON_ONLY, data=_large_body(app, "@MARK@").replace(b'"@MARK@"', b"NaN"),
                      headers=JSON)
    assert nan.status_code == 400
    assert len(json_branch_calls) == 2
    small = client.post(BENCH_JSON_ONLY, data=b'{"x": NaN}', headers=JSON)
    assert small.status_code == 400 and len(json_branch_calls) == 2
    assert client.post(BENCH_JSON_ONLY, data=b"[]", headers=JSON).status_code == 400
