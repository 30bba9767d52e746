"""Allowlist normalisation and DNS pinning (issues 10 and 17), through the real hook endpoint on a real socket
against a real loopback FHIR server that records every request:

* with ``http://127.0.0.1:<port>/m`` allowed, no ``next`` link and no redirect that normalises outside ``/m``
  (``/m/../escaped``, ``%2e%2e``, an encoded slash, ``/mx``) is followed: the bearer token never reaches
  ``/escaped``, and the kind is not retrieved; a URL that only looks different (scheme/host case, the default
  port, ``.`` segments, percent-encoded unreserved characters) is the same URL and is fetched;
* an allowlisted host NAME that resolves to loopback is refused unless ``fhir_private_networks`` lists it; each
  name is resolved once per hook call (the connection goes to the address checked).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
import requests
from upstreams import Reply, Upstream, fhir_json, searchset, service_over_http

from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import create_app, state
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID

HOOK = f"/cds-services/{SERVICE_ID}"
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)  # the fixtures' evaluation time
PID = "ts01-patient"
TOKEN = "allowlist-test-token"
PATIENT = {"resourceType": "Patient", "id": PID, "birthDate": "1970-05-01", "gender": "female"}
# ts01 (a potential candidate) prefetched but for its Conditions, which come from the FHIR server: the first
# page with them, then a next link; the card then shows whether the next page was read.
TS01 = next(p for p in load_fixture_patients() if p.patient_id == PID)
CONDITIONS = [r for r in TS01.resources if r["resourceType"] == "Condition"]


def _prefetch(app) -> dict:
    out = prefetch_for(TS01, discovery_prefetch(state(app).templates))
    out.pop("conditions")
    return out


class Escape:
    """The FHIR server: the Condition search answers with a ``next`` link (or a redirect) to ``target``."""

    def __init__(self) -> None:
        self.target = ""
        self.redirect = False
        self.server = Upstream(self.route, prefix="/m")

    def route(self, path: str, headers: dict[str, str]) -> Reply:
        if path.startswith("/m/Patient/"):
            return fhir_json(PATIENT)
        if path.startswith("/m/Condition"):
            if "page=2" in path:
                if self.redirect:  # the second page, asked for at the allowed URL, redirects to the target
                    return Reply(302, b"", {"Location": self.target, "Content-Length": "0"})
                return fhir_json(searchset([]))
            return fhir_json(searchset(CONDITIONS, next_url=self.server.base + "/Condition?page=2"
                                       if self.redirect else self.target))
        if path.startswith("/m/"):
            return fhir_json(searchset([]))
        # anything outside /m is where the token must never arrive
        return fhir_json(searchset([]))


@pytest.fixture(scope="module")
def escape():
    e = Escape()
    yield e
    e.server.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, escape):
    app = create_app({"environ": {}, "auth_required": False, "fhir_allowlist": (escape.server.base,),
                      "clock": lambda: AT, "state_dir": tmp_path_factory.mktemp("state")})
    with service_over_http(app) as base:
        yield base, _prefetch(app)


def _call(base: str, fhir: str, *, prefetch: dict, status: int = 200) -> dict:
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": PID}, "fhirServer": fhir, "prefetch": prefetch,
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "trialscreen"}}
    resp = requests.post(base + HOOK, json=body, timeout=60)
    assert resp.status_code == status, resp.text
    return resp.json()


def _not_retrieved(answer: dict) -> dict:
    if not answer["cards"]:
        return {}
    return answer["cards"][0]["extension"]["org.trialscreen.screening"].get("not_retrieved", {})


ESCAPES = ["{origin}/m/../escaped/page2", "{origin}/m/%2e%2e/escaped/page2", "{origin}/m/%2E%2E/escaped/page2",
           "{origin}/m/./../escaped/page2", "{origin}/m%2F..%2Fescaped/page2", "{origin}/m/..%2Fescaped/page2",
           "{origin}/mx/page2", "{origin}/escaped/page2", "{origin}/m/a/../../escaped/page2",
           "{origin}/m/../../../escaped/page2", "/m/../escaped/page2", "../escaped/page2",
           "http://localhost:{port}/m/../escaped/page2"]


@pytest.mark.parametrize("template", ESCAPES)
@pytest.mark.parametrize("how", ["next", "redirect"])
def test_a_link_that_normalises_outside_the_allowed_path_never_gets_the_token(service, escape, template, how):
    escape.target = template.format(origin=escape.server.origin, port=escape.server.port)
    escape.redirect = how == "redirect"
    before = len(escape.server.seen)
    answer = _call(service[0], escape.server.base, prefetch=service[1])
    sent = escape.server.seen[before:]
    assert sent, "the service asked the FHIR server nothing"
    leaked = [s.path for s in sent if not unquote(s.path).startswith("/m/") or "escaped" in s.path]
    assert leaked == [], f"requests outside /m: {leaked}"
    assert all("/escaped" not in unquote(s.path) for s in sent)
    assert "Condition" in _not_retrieved(answer)


@pytest.mark.parametrize("template", ["{origin}/m/./Condition?page=2", "{origin}/m/x/../Condition?page=2",
                                      "{origin}/m/%43ondition?page=2", "HTTP://127.0.0.1:{port}/m/Condition?page=2"])
def test_an_equivalent_spelling_of_an_allowed_url_is_followed_at_its_canonical_path(service, escape, template):
    escape.target = template.format(origin=escape.server.origin, port=escape.server.port)
    escape.redirect = False
    before = len(escape.server.seen)
    answer = _call(service[0], escape.server.base, prefetch=service[1])
    assert "Condition" not in _not_retrieved(answer)
    pages = [s for s in escape.server.seen[before:] if "page=2" in s.path]
    assert pages and all(s.path.startswith("/m/Condition?") for s in pages)
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in pages)


@pytest.mark.parametrize("fhir", ["{origin}/m/../escaped", "{origin}/mx", "{origin}/m%2F..%2Fescaped",
                                  "{origin}/escaped/../m/../escaped"])
def test_a_fhir_server_outside_the_allowed_path_is_sent_nothing(service, escape, fhir):
    before = len(escape.server.seen)
    answer = _call(service[0], fhir.format(origin=escape.server.origin), prefetch=service[1])
    assert escape.server.seen[before:] == []
    # without the Conditions the trial cannot concern the patient: no card; with one, it would say why
    assert answer["cards"] == [] or "allowlist" in str(_not_retrieved(answer))


# --- DNS pinning and private addresses ---------------------------------------------------------------------
@pytest.fixture
def named_server():
    with Upstream(lambda path, headers: fhir_json(PATIENT) if "/Patient/" in path else fhir_json(searchset([])),
                  prefix="/fhir") as server:
        yield server


def _named_service(tmp_path, server: Upstream, **settings):
    named = f"http://localhost:{server.port}/fhir"
    app = create_app({"environ": {}, "auth_required": False, "fhir_allowlist": (named,),
                      "state_dir": tmp_path / "state", **settings})
    return named, app


def test_a_name_resolving_to_loopback_is_refused_unless_listed(tmp_path, named_server):
    named, app = _named_service(tmp_path, named_server)
    with service_over_http(app) as base:
        answer = _call(base, named, prefetch={}, status=412)
    assert named_server.seen == []
    # not even the Patient could be read: the hook says so (412, issue 13) instead of an empty card list
    assert answer["resourceType"] == "OperationOutcome" and "Patient" in answer["issue"][0]["diagnostics"]


def test_a_listed_private_network_is_contacted(tmp_path, named_server):
    named, app = _named_service(tmp_path, named_server, fhir_private_networks=("127.0.0.0/8", "::1/128"))
    with service_over_http(app) as base:
        answer = _call(base, named, prefetch={})
    assert len(named_server.seen) >= 8  # the Patient and every kind were asked for
    assert all(s.headers["authorization"] == f"Bearer {TOKEN}" for s in named_server.seen)
    assert answer["cards"] == []  # this bare Patient is no one the trial concerns


def test_each_name_is_resolved_once_per_call(tmp_path, named_server, monkeypatch):
    named, app = _named_service(tmp_path, named_server, fhir_private_networks=("127.0.0.0/8", "::1/128"))
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        if host == "localhost":
            lookups.append(host)
        return real(host, *args, **kwargs)

    with service_over_http(app) as base:
        monkeypatch.setattr(socket, "getaddrinfo", counting)
        for n in range(1, 4):
            _call(base, named, prefetch={})
            assert len(lookups) == n  # one resolution per call, however many requests the call made
    assert len(named_server.seen) >= 3 * 8


def test_an_allowlisted_name_rebound_to_loopback_later_is_refused(tmp_path, named_server, monkeypatch):
    """The allowlist names ehr.test (resolving to a public address at first); when it is re-pointed at 127.0.0.1
    the service refuses it: private targets need fhir_private_networks."""
    app = create_app({"environ": {}, "auth_required": False,
                      "fhir_allowlist": (f"http://ehr.test:{named_server.port}/fhir",),
                      "state_dir": tmp_path / "state"})
    real = socket.getaddrinfo

    def rebound(host, port, *args, **kwargs):
        if host == "ehr.test":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    with service_over_http(app) as base:
        monkeypatch.setattr(socket, "getaddrinfo", rebound)
        answer = _call(base, f"http://ehr.test:{named_server.port}/fhir", prefetch={}, status=412)
    assert named_server.seen == [] and answer["resourceType"] == "OperationOutcome"
