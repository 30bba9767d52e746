"""Upstream size caps (issue 17): the bytes read per FHIR response (fhir_max_response_bytes, 16 MiB) and per
hook call (fhir_max_call_bytes, 24 MiB) are capped, received and decoded, while streaming and before parsing;
an oversized answer is "not retrieved".

* against ``trialscreen serve`` (gunicorn, as it runs in production): a hook call whose FHIR server answers the
  Procedure search with a 50 MB page (chunked, so no Content-Length to refuse it on), and one that answers with a
  gzip bomb (about 1 MB on the wire, 512 MiB decoded), leave the worker's resident memory within 50 MB of its
  idle size, during the call and after it; the figures are printed;
* in process, against real loopback servers: each cap on its own (Content-Length over the cap not read at all,
  chunked over the cap, decoded over the cap, the per-call total over several responses), and a gzip stream
  that is broken.
"""

from __future__ import annotations

import threading
import time
import zlib
from urllib.parse import unquote

import psutil
import pytest
import requests
from served import serve
from upstreams import Reply, Upstream, big_page, fhir_json, gzip_bomb, gzip_bomb_body, searchset

from cds_service.gather.fhir_client import Allowlist, Deadline, FhirClient, Query
from cds_service.gather.transport import CallTransport
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID

HOOK = f"/cds-services/{SERVICE_ID}"
PID = "ts01-patient"
MB = 1024 * 1024
LIMIT_MB = 50


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb_body(512 * MB)


def _rss(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_a_50_mb_page_and_a_gzip_bomb_leave_worker_memory_near_idle(tmp_path, bomb, capsys):
    ts01 = next(p for p in load_fixture_patients() if p.patient_id == PID)
    mode = {"what": "normal"}
    answers: dict[str, object] = {}

    def route(path: str, headers: dict[str, str]) -> Reply:
        rel = unquote(path.split("/fhir/", 1)[1])
        if rel.startswith("Procedure?") and mode["what"] == "page":
            return big_page(50 * 1000 * 1000)
        if rel.startswith("Procedure?") and mode["what"] == "bomb":
            return gzip_bomb(bomb)
        value = answers.get(rel)
        return fhir_json(value if value is not None else searchset([]))

    with Upstream(route) as upstream, serve(tmp_path, {"TRIALSCREEN_FHIR_ALLOWLIST": upstream.base,
                                                      "TRIALSCREEN_FHIR_DEADLINE_SECONDS": "20"},
                                            workers=1, threads=2) as server:
        templates = requests.get(server.base_url + "/cds-services", timeout=30).json()["services"][0]["prefetch"]
        prefetch = prefetch_for(ts01, templates)
        answers.update({t.replace("{{context.patientId}}", PID): prefetch[k] for k, t in templates.items()})
        procedures = [k for k, t in templates.items() if t.startswith("Procedure?")]
        sent = {k: v for k, v in prefetch.items() if k not in procedures}
        body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {"patientId": PID}, "fhirServer": upstream.base, "prefetch": sent}
        workers = server.workers()

        def call() -> dict:
            resp = requests.post(server.base_url + HOOK, json=body, timeout=120)
            assert resp.status_code == 200, resp.text
            return resp.json()

        for _ in range(5):  # warm: the worker's idle size is its size after ordinary calls
            call()
        idle = _rss(workers)
        figures = []
        for what in ("page", "bomb"):
            mode["what"] = what
            peak = [idle]
            done = threading.Event()

            def sample(done: threading.Event = done, peak: list[int] = peak) -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss(workers))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.monotonic()
            try:
                answer = call()
            finally:
                done.set()
                sampler.join()
            seconds = time.monotonic() - started
            mode["what"] = "normal"
            call()  # an ordinary call after it
            after = _rss(workers)
            figures.append((what, peak[0], after, seconds))
            for card in answer["cards"]:
                why = card["extension"]["org.trialscreen.screening"]["not_retrieved"]["Procedure"]
                assert "exceeds" in why, why
                assert "Screening incomplete" in card["detail"] and "procedures" in card["detail"]
            assert server.workers() == workers  # no worker died or was recycled
            assert peak[0] - idle < LIMIT_MB * MB, f"{what}: peak {(peak[0] - idle) / MB:.0f} MB over idle"
            assert after - idle < LIMIT_MB * MB, f"{what}: {(after - idle) / MB:.0f} MB over idle after the call"
    with capsys.disabled():
        print(f"\n[upstream limits] worker idle RSS {idle / MB:.1f} MB")
        for what, peak_rss, after, seconds in figures:
            label = "50 MB page" if what == "page" else f"gzip bomb ({len(bomb) / MB:.1f} MB -> 512 MiB)"
            print(f"[upstream limits] {label}: peak +{(peak_rss - idle) / MB:.1f} MB, after "
                  f"+{(after - idle) / MB:.1f} MB, call {seconds:.2f} s")


# --- each cap on its own, in process -------------------------------------------------------------------------
def _client(server: Upstream, **caps: int) -> FhirClient:
    return FhirClient(server.base, token=None, allowlist=Allowlist.parse((server.base,)), max_pages=5,
                      deadline=Deadline(20), transport=CallTransport(**caps))


def _search(client: FhirClient, url: str = "Condition?patient=p"):
    try:
        return client.search(Query("Condition", url))
    finally:
        client.close()


def test_a_content_length_over_the_cap_is_not_read():
    served: list[int] = []

    def route(path, headers):
        served.append(1)
        return Reply(200, b"{" + b" " * (2 * MB) + b"}", {"Content-Type": "application/fhir+json"})

    with Upstream(route) as server:
        result = _search(_client(server, max_response_bytes=MB))
    assert result.error and "exceeds 1048576 bytes" in result.error and served


def test_a_chunked_page_over_the_cap_is_cut_while_streaming():
    with Upstream(lambda p, h: big_page(5 * MB)) as server:
        client = _client(server, max_response_bytes=MB)
        transport = client.transport
        result = _search(client)
    assert "fhir_max_response_bytes" in str(result.error)
    assert transport is not None and transport.call_bytes <= MB + 64 * 1024  # read no further than the cap


def test_a_gzip_bomb_stops_at_the_decoded_cap():
    body = gzip_bomb_body(64 * MB)
    assert len(body) < MB  # small on the wire
    with Upstream(lambda p, h: gzip_bomb(body)) as server:
        client = _client(server, max_response_bytes=4 * MB)
        transport = client.transport
        result = _search(client)
    assert "fhir_max_response_bytes" in str(result.error)
    assert transport is not None and transport.call_bytes <= 4 * MB + 256 * 1024


def test_an_honest_gzip_answer_is_read():
    import gzip

    raw = b'{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Condition","id":"c"}}]}'
    with Upstream(lambda p, h: Reply(200, gzip.compress(raw), {"Content-Type": "application/fhir+json",
                                                               "Content-Encoding": "gzip"})) as server:
        result = _search(_client(server))
    assert result.error is None and [r["id"] for r in result.resources] == ["c"]


def test_a_broken_gzip_answer_is_not_retrieved():
    with Upstream(lambda p, h: Reply(200, b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"})) as server:
        result = _search(_client(server))
    assert result.error and "compression" in result.error


def test_an_unknown_content_encoding_is_not_read():
    with Upstream(lambda p, h: Reply(200, b"{}", {"Content-Encoding": "br"})) as server:
        result = _search(_client(server))
    assert result.error and "Content-Encoding" in result.error


def test_the_call_cap_counts_every_response_of_the_call():
    entry = {"resource": {"resourceType": "Condition", "id": "c", "note": [{"text": "x" * 1000}]}}
    page = fhir_json({"resourceType": "Bundle", "type": "searchset", "entry": [entry] * 400})  # ~420 KB
    with Upstream(lambda p, h: page) as server:
        client = _client(server, max_response_bytes=MB, max_call_bytes=MB + 512 * 1024)
        results = client.fetch_all({f"k{n}": Query("Condition", f"Condition?n={n}") for n in range(6)})
        client.close()
    errors = [r.error for r in results.values() if r.error]
    assert errors and all("fhir_max_call_bytes" in e for e in errors)
    assert len(errors) >= 3  # at most ~3 pages of 420 KB fit in 1.5 MiB


def test_the_caps_are_settings_with_their_defaults():
    from cds_service.config import Settings

    s = Settings.from_env({})
    assert (s.fhir_max_response_bytes, s.fhir_max_call_bytes) == (16 * MB, 24 * MB)
    s = Settings.from_env({"TRIALSCREEN_FHIR_MAX_RESPONSE_BYTES": "1000", "TRIALSCREEN_FHIR_MAX_CALL_BYTES": "2000",
                           "TRIALSCREEN_FHIR_PRIVATE_NETWORKS": "10.0.0.0/8, 127.0.0.1"})
    assert (s.fhir_max_response_bytes, s.fhir_max_call_bytes) == (1000, 2000)
    assert s.fhir_private_networks == ("10.0.0.0/8", "127.0.0.1")


def test_zlib_is_what_decodes(bomb):
    # the bomb fixture really is a bomb: its first MiB alone decodes far beyond its size
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert len(d.decompress(bomb[:MB], 64 * MB)) == 64 * MB


# --- JWKS fetches (cds_service/security/auth.py) ------------------------------------------------------------
def test_jwks_fetch_ignores_proxy_variables_and_caps_its_size(monkeypatch):
    from cds_service.security.auth import AuthError, _http_fetch

    sizes = {"/small": b'{"keys": []}', "/big": b'{"keys": [], "x": "' + b"a" * (2 * MB) + b'"}'}
    with Upstream(lambda p, h: Reply(200, sizes[p], {"Content-Type": "application/json"}), prefix="") as server:
        # a proxy that does not exist: used, it would fail the fetch
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        assert _http_fetch(server.origin + "/small", 5) == {"keys": []}
        with pytest.raises(AuthError, match="1 MiB"):
            _http_fetch(server.origin + "/big", 5)
        big_chunked = gzip_bomb(gzip_bomb_body(8 * MB))
        server.route = lambda p, h: big_chunked
        with pytest.raises(AuthError):
            _http_fetch(server.origin + "/bomb", 5)
