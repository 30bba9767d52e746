"""The screening report page as a person sees it, in headless Chromium against a real HTTP server.

The app is served on 127.0.0.1 by a threaded WSGI server; Chromium loads ``/report/<token>`` and the tests
read its rendered DOM (``--dump-dom``) and take a screenshot (``--screenshot``). Skipped when Chromium is not
installed, except under CI (``CI`` true), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from report_sample import PATIENT, sample_rules, sample_screening

from cds_service.config import Settings
from cds_service.hooks.commands import LocalServer, serve_in_thread
from cds_service.hooks.report import create_report_link, init_reports

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed (CI must run the browser tests: apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(url: str, *extra: str, timeout: float = 90) -> str:
    """Run headless Chromium on ``url`` with a throwaway profile; return its stdout."""
    browser = _chromium()
    with tempfile.TemporaryDirectory(prefix="trialscreen-chromium-") as profile:
        proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


class Page(HTMLParser):
    """What the rendered DOM shows: title, headings, sections with their items, visible text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.title = ""
        self.h1 = ""
        self.sections: dict[str, list[str]] = {}
        self.section_titles: dict[str, str] = {}
        self.text: list[str] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._section: str | None = None
        self.scripts = 0
        self.external: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self._stack.append((tag, a))
        if tag == "script":
            self.scripts += 1
        if tag in ("img", "link", "iframe") or (tag == "script" and a.get("src")):
            self.external.append(a.get("src") or a.get("href") or tag)
        if tag == "section":
            self._section = a.get("class", "")
            self.sections[self._section] = []
        if tag == "li" and "item" in a.get("class", "").split() and self._section:
            self.sections[self._section].append(a.get("id", "").removeprefix("criterion-"))

    def handle_endtag(self, tag):
        while self._stack:
            t, _ = self._stack.pop()
            if t == tag:
                break
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        tags = [t for t, _ in self._stack]
        if "style" in tags:
            return
        if "title" in tags:
            self.title += data
        if "h1" in tags:
            self.h1 += data
        if "h2" in tags and self._section:
            self.section_titles[self._section] = self.section_titles.get(self._section, "") + data
        if "body" in tags:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Flask, LocalServer]]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("state"))
    app = Flask("report-browser-test")
    store = init_reports(app, settings, sample_rules())
    server = serve_in_thread(app, "127.0.0.1", 0)
    try:
        yield app, server
    finally:
        server.stop()
        store.close()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_page_in_chromium_shows_all_criteria_grouped(served):
    app, server = served
    url = create_report_link(app, sample_screening(), server.base_url)
    assert "ts-report-0007" not in url and "Patient" not in urlsplit(url).path  # no patient id in the URL
    page = Page(run_chromium(url, "--dump-dom"))
    assert "NCT06880354" in page.title and page.title.startswith("Screening report")
    assert "Screening report: NCT06880354" in page.h1
    assert list(page.sections) == ["blocking", "confirm", "met"]
    counts = {k: len(v) for k, v in page.sections.items()}
    assert sum(counts.values()) == 46
    assert page.sections["blocking"] == ["I7d", "E5"]
    unknown = sum(1 for c in sample_screening()["criteria"] if c["result"] == "unknown")
    assert counts == {"blocking": 2, "confirm": unknown, "met": 46 - 2 - unknown}
    assert page.section_titles["blocking"].strip() == "Blocking (2)"
    assert page.section_titles["confirm"].strip() == f"To check ({unknown})"
    assert page.section_titles["met"].strip() == f"Met ({46 - 2 - unknown})"
    text = page.visible
    for seen in ("Not eligible", PATIENT, "Evaluated 2026-10-01 09:00 UTC", "Not eligible until 2027-01-01.",
                 "2026-09-24 07:30 UTC", "ALT: 32 U/L", "2026-08-12", "38 %", "Data not retrieved",
                 "To resolve: Order bone-marrow flow cytometry for CLL1"):
        assert seen in text, seen
    assert page.scripts == 0 and page.external == []


def test_unknown_token_shows_the_not_available_page(served):
    _, server = served
    page = Page(run_chromium(f"{server.base_url}/report/{'Z' * 32}", "--dump-dom"))
    assert "Screening report not available" in page.h1
    assert "expired" in page.visible and page.sections == {}


def test_screenshot_is_a_full_page_png(served, tmp_path):
    app, server = served
    url = create_report_link(app, sample_screening(), server.base_url)
    shot = Path(os.environ.get("TRIALSCREEN_SCREENSHOT_DIR") or tmp_path) / "report.png"
    run_chromium(url, f"--screenshot={shot}", "--window-size=1100,1600")
    width, height = _png_size(shot)
    assert (width, height) == (1100, 1600)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_print_to_pdf_works(served, tmp_path):
    app, server = served
    url = create_report_link(app, sample_screening(), server.base_url)
    pdf = tmp_path / "report.pdf"
    run_chromium(url, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 2  # 46 criteria with evidence: several pages


def test_report_from_a_real_hook_call_in_chromium(tmp_path):
    """The whole path: a patient-view call for a fixture patient, the card's report link, the page."""
    from cds_service.hooks.app import create_app
    from cds_service.hooks.commands import replay
    from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients

    patient = next((p for p in load_fixture_patients() if p.source.startswith("01-")), None)
    if patient is None:
        pytest.skip("fixture 01 not present")
    app = create_app({"state_dir": tmp_path, "clock": lambda: FIXTURE_TIME, "auth_required": False})
    server = serve_in_thread(app)
    try:
        (_, status, payload), = replay(server.base_url, [patient])
        assert status == 200
        links = [link["url"] for card in payload["cards"] for link in card.get("links", [])]
        url = next(u for u in links if "/report/" in u)
        assert patient.patient_id not in url and "Patient" not in url
        shot = Path(os.environ.get("TRIALSCREEN_SCREENSHOT_DIR") or tmp_path) / "report-fixture-01.png"
        run_chromium(url, f"--screenshot={shot}", "--window-size=1100,1400")
        assert _png_size(shot) == (1100, 1400)
        page = Page(run_chromium(url, "--dump-dom"))
    finally:
        server.stop()
        app.extensions["trialscreen.store"].close()
    assert "NCT06880354" in page.title
    assert list(page.sections) == ["blocking", "confirm", "met"]
    assert sum(len(v) for v in page.sections.values()) == 46
    assert page.sections["blocking"] == []  # fixture 01 is a potential candidate
    assert "Potential candidate" in page.visible and f"Patient/{patient.patient_id}" in page.visible
    assert re.search(r"\b2026-(0[89]|10)-\d\d\b", page.visible)  # evidence dates are shown
    assert page.scripts == 0 and page.external == []
