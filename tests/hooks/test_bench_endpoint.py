"""The benchmarks' JSON-only baseline endpoint exists only when TRIALSCREEN_BENCH_ENDPOINTS is set."""

from cds_service.config import Settings


def test_bench_endpoint_is_off_by_default(make_app):
    assert Settings.from_env({}).bench_endpoints is False
    resp = make_app().test_client().post("/bench/json-only", json={"hook": "patient-view"})
    assert resp.status_code == 404


def test_bench_endpoint_from_the_environment_parses_the_body_and_answers_no_cards(make_app):
    assert Settings.from_env({"TRIALSCREEN_BENCH_ENDPOINTS": "true"}).bench_endpoints is True
    client = make_app(bench_endpoints=True).test_client()
    resp = client.post("/bench/json-only", json={"hook": "patient-view", "prefetch": {"patient": None}})
    assert resp.status_code == 200
    assert resp.json == {"cards": []}
    bad = client.post("/bench/json-only", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
