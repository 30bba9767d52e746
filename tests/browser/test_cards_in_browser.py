"""Cards and report pages as people see them: every fixture patient through the real HTTP endpoint, three of
them rendered in headless Chromium.

The service (``create_app``, the real report store) is served on 127.0.0.1 by a threaded WSGI server; each
fixture patient's record is sent as a patient-view call with prefetch over HTTP. For every card: the detail is
short (at most ~900 characters of Markdown) and no text a person reads (summary, detail, suggestion, report page)
holds a raw code (``http://loinc.org|LA6577-6``), an ISO timestamp or the same sentence twice. The card detail
of a candidate, a washout and an APL patient is rendered from Markdown (markdown-it-py, CommonMark as the CDS Hooks
sandbox renders it) and shown in Chromium with their report pages; the screenshots are saved in
``tests/artifacts/`` (git-ignored) for a person to look at. The 412 answer is checked over the same HTTP server.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from markdown_it import MarkdownIt
from test_report_page import Page, _png_size, run_chromium

from cds_service.hooks.app import create_app
from cds_service.hooks.commands import serve_in_thread
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID
from cds_service.hooks.report import STORE_KEY

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FIXTURE_TIME = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)  # the fixtures' evaluation time
LATER = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # two months on: the labs of 2026-09-27 are too old to count
DETAIL_MAX = 900
ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
RAW_CODE = re.compile(r"(?:https?://|urn:)[^\s|]+\|[A-Za-z0-9]")
# (name, evaluation date) of the three patients shown: the candidate two months on, when its labs are too old
SHOWN = {"ts01-patient": ("candidate", "2026-12-03"), "ts18-patient": ("washout", "2026-10-01"),
         "ts07-patient": ("apl", "2026-10-01")}


def _sentences(text: str) -> list[str]:
    """Sentences of a text (Markdown markers and list bullets removed), normalised for comparison."""
    flat = re.sub(r"[*_`\\]", "", text)
    parts = re.split(r"(?<=[.!?])\s+|\n+", flat)
    return [" ".join(p.split()).lower().rstrip(".") for p in parts if len(p.split()) >= 4]


def repeated_sentences(text: str) -> list[str]:
    return [s for s, n in Counter(_sentences(text)).items() if n > 1]


def readable_problems(text: str) -> list[str]:
    """What a person must never read: raw codes, ISO timestamps, a sentence said twice."""
    out = [f"raw code {m.group(0)!r}" for m in RAW_CODE.finditer(text)]
    out += [f"ISO timestamp {m.group(0)!r}" for m in ISO_TIMESTAMP.finditer(text)]
    out += [f"repeated sentence {s!r}" for s in repeated_sentences(text)]
    return out


def test_the_checks_themselves_catch_what_they_look_for():
    assert readable_problems("ALT on 2026-09-27T07:30:00+00:00.")
    assert readable_problems("HBsAg http://loinc.org|LA6577-6 on 2026-09-01.")
    assert readable_problems("Order ALT and AST now. Order ALT and AST now.")
    assert readable_problems("HBsAg negative on 2026-09-01. Order HIV antibody test.") == []


@pytest.fixture(scope="module")
def service(tmp_path_factory, knowledge_once) -> Iterator[tuple[str, list]]:
    """The whole service on a real port, its clock settable; yields (base URL, clock holder)."""
    now = [FIXTURE_TIME]
    app = create_app({"environ": {}, "knowledge": knowledge_once, "clock": lambda: now[0], "auth_required": False,
                      "explain_ineligibility": True, "fhir_allowlist": ("https://ehr.example.org/fhir",),
                      "state_dir": tmp_path_factory.mktemp("state")})
    server = serve_in_thread(app, "127.0.0.1", 0)
    try:
        yield server.base_url, now
    finally:
        server.stop()
        app.extensions[STORE_KEY].close()


@pytest.fixture(scope="module")
def knowledge_once():
    from cds_service.config import Settings, load_knowledge

    return load_knowledge(Settings.from_env({}))


def _hook(base: str, body_extra: dict) -> requests.Response:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), **body_extra}
    return requests.post(f"{base}/cds-services/{SERVICE_ID}", json=body, timeout=60)


@pytest.fixture(scope="module")
def cards(service) -> dict[tuple[str, str], dict]:
    """Every fixture patient's card (when there is one) at both evaluation times, fetched over HTTP."""
    base, now = service
    templates = requests.get(f"{base}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    out = {}
    for when in (FIXTURE_TIME, LATER):
        now[0] = when
        for p in load_fixture_patients():
            resp = _hook(base, {"context": {"patientId": p.patient_id}, "prefetch": prefetch_for(p, templates)})
            assert resp.status_code == 200, resp.text[:300]
            for card in resp.json()["cards"]:
                out[(p.patient_id, when.date().isoformat())] = card
    now[0] = FIXTURE_TIME
    return out


def _report_url(card: dict) -> str:
    return next(link["url"] for link in card["links"] if "/report/" in link["url"])


def _person_text(card: dict) -> str:
    notes = [n["text"] for s in card.get("suggestions", []) for a in s["actions"] for n in a["resource"]["note"]]
    return "\n".join([card["summary"], card["detail"], *notes])


def test_every_fixture_card_is_short_and_readable(cards):
    assert len(cards) >= 60  # 46 fixture patients, explained ineligibility on, at two evaluation times
    lengths = {key: len(card["detail"]) for key, card in cards.items()}
    assert max(lengths.values()) <= DETAIL_MAX, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
    problems = {key: readable_problems(_person_text(card)) for key, card in cards.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_fixture_report_page_is_readable_and_names_the_patient(cards):
    for key, card in cards.items():
        resp = requests.get(_report_url(card), timeout=30)
        assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
        page = Page(resp.text)
        assert readable_problems(page.visible) == [], key
        if key[0] == "ts01-patient":
            assert "Maren Lindqvist" in page.visible and "TS-0001" in page.visible
            assert "1974-05-22" in page.visible and "female" in page.visible
            assert "52 years" in page.visible


def test_the_report_header_comes_from_the_patient_resource_and_the_url_holds_no_patient_data(cards):
    card = cards[("ts01-patient", "2026-10-01")]
    url = _report_url(card)
    assert "ts01" not in url and "Lindqvist" not in url and "TS-0001" not in url
    html = requests.get(url, timeout=30).text
    header = re.search(r'<dl class="patient".*?</dl>', html, re.S)
    assert header is not None
    text = " ".join(re.sub(r"<[^>]+>", " ", header.group(0)).split())
    assert text == "Patient Maren Lindqvist MRN TS-0001 Born 1974-05-22 Age 52 years Sex female"
    assert "@media print" in html


def test_no_usable_data_is_a_412_naming_the_cause_over_http(service):
    base, _ = service
    resp = _hook(base, {"context": {"patientId": "p1"}, "fhirServer": "https://not-allowed.example.com/fhir",
                        "fhirAuthorization": {"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                              "scope": "user/*.read", "subject": "x"}})
    assert resp.status_code == 412
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome" and "cards" not in body
    assert "fhirServer is not on this service's allowlist" in body["issue"][0]["diagnostics"]
    templates = requests.get(f"{base}/cds-services", timeout=10).json()["services"][0]["prefetch"]
    # every key answered, none with a Patient: the EHR knows no such patient
    unknown = _hook(base, {"context": {"patientId": "p1"}, "prefetch": dict.fromkeys(templates)})
    assert unknown.status_code == 412 and "no Patient" in unknown.json()["issue"][0]["diagnostics"]


_CARD_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: "DejaVu Sans", sans-serif; font-size: 14px; margin: 0; background: #eef1f4; }}
.card {{ width: 640px; margin: 16px; padding: 12px 16px; background: #fff; border-left: 6px solid #1f6feb;
         border-radius: 4px; }}
.summary {{ font-weight: 700; font-size: 15px; margin-bottom: 8px; }} ul {{ padding-left: 20px; margin: 4px 0; }}
p {{ margin: 6px 0; }}</style></head>
<body><div class="card"><div class="summary">{summary}</div><div class="detail">{detail}</div></div></body></html>
"""


@pytest.mark.parametrize("pid", list(SHOWN))
def test_card_and_report_render_in_chromium(cards, pid, tmp_path):
    name, when = SHOWN[pid]
    card = cards[(pid, when)]
    ARTIFACTS.mkdir(exist_ok=True)
    html = MarkdownIt("commonmark").render(card["detail"])
    assert "**" not in html and "\\" not in html  # every Markdown marker and escape was rendered
    page_file = tmp_path / "card.html"
    page_file.write_text(_CARD_PAGE.format(title=pid, summary=card["summary"], detail=html), encoding="utf-8")
    dom = Page(run_chromium(page_file.as_uri(), "--dump-dom"))
    assert readable_problems(dom.visible) == []
    assert len(card["detail"]) <= DETAIL_MAX
    shot = ARTIFACTS / f"card-{name}.png"
    run_chromium(page_file.as_uri(), f"--screenshot={shot}", "--window-size=700,620")
    assert _png_size(shot) == (700, 620)
    report = ARTIFACTS / f"report-{name}.png"
    run_chromium(_report_url(card), f"--screenshot={report}", "--window-size=1000,1400")
    assert _png_size(report) == (1000, 1400)
    rendered = Page(run_chromium(_report_url(card), "--dump-dom"))
    assert rendered.h1.startswith("Screening report: NCT06880354")
    assert readable_problems(rendered.visible) == []
    if name == "apl":
        assert "Acute promyelocytic leukemia" in dom.visible and "Order" not in dom.visible
    if name == "candidate":
        assert "Repeat 7 tests older than 28 days (last 2026-09-27)" in dom.visible
    if name == "washout":
        assert "until" in card["summary"] and "until" in dom.visible
