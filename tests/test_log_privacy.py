"""No patient data in the logs (issue 4 item 6): a full demo-like pass over every fixture, with its stderr grepped.

A separate Python process builds the service (authentication off, log level DEBUG, its own SQLite store),
serves it over real HTTP on 127.0.0.1, and for every fixture patient: posts a ``patient-view`` call with full
prefetch, opens the report page a card links to, sends feedback whose override comment names the patient, and
posts three broken requests that quote the patient's id and name. Everything the process writes to stderr (the
JSON log lines) is then searched for every patient's id, name, identifiers and birth date: none may appear.
The responses, on the other hand, must carry some of them (a check that the pass really handled the patients).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cds_service.hooks.demo_data import load_fixture_patients

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, sys, uuid
from pathlib import Path
import requests
from cds_service.hooks.app import create_app
from cds_service.hooks.commands import replay, serve_in_thread
from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients

state_dir = Path(sys.argv[1])
app = create_app({"environ": {}, "clock": lambda: FIXTURE_TIME, "auth_required": False, "log_level": "DEBUG",
                  "state_dir": state_dir})
server = serve_in_thread(app)
url = f"{server.base_url}/cds-services/trialscreen-nct06880354"
s = requests.Session()
patients = load_fixture_patients()
out = {"statuses": [], "cards": 0, "reports": 0, "echo": ""}
try:
    for patient, status, payload in replay(server.base_url, patients, session=s):
        out["statuses"].append(status)
        pt = patient.patient or {}
        name = " ".join(n.get("family", "") for n in pt.get("name", []))
        for card in payload.get("cards", []):
            out["cards"] += 1
            out["echo"] += json.dumps(card)
            for link in card.get("links", []):
                if "/report/" in link["url"]:
                    page = s.get(link["url"], timeout=30)
                    out["reports"] += page.status_code == 200
            fb = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                "overrideReason": {"reason": {"code": "patient-declined"},
                                                   "userComment": f"{name} ({patient.patient_id}) declined"},
                                "outcomeTimestamp": "2026-10-01T10:00:00Z"}]}
            s.post(url + "/feedback", json=fb, timeout=30)
        # broken requests quoting the patient
        s.post(url, json={"hook": "patient-view", "hookInstance": patient.patient_id,
                          "context": {"patientId": patient.patient_id}}, timeout=30)
        s.post(url, json={"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                          "context": {"patientId": f"{name} {pt.get('birthDate')}"}}, timeout=30)
        s.post(url, data=f"{{\"context\": {{\"patientId\": \"{patient.patient_id}\"", timeout=30,
               headers={"Content-Type": "application/json"})
finally:
    server.stop()
print(json.dumps(out))
"""


def _sensitive(patients) -> dict[str, re.Pattern[str]]:
    """Every identifying string of every fixture patient, each as a whole-word pattern."""
    values: set[str] = set()
    for p in patients:
        values.add(p.patient_id)
        pt = p.patient or {}
        if pt.get("birthDate"):
            values.add(pt["birthDate"])
        for name in pt.get("name", []):
            values.update(name.get("given", []))
            if name.get("family"):
                values.add(name["family"])
            if name.get("text"):
                values.add(name["text"])
        values.update(i["value"] for i in pt.get("identifier", []) if i.get("value"))
    return {v: re.compile(rf"(?<![\w.]){re.escape(v)}(?![\w.])") for v in values if v}


def test_a_full_pass_over_every_fixture_logs_no_patient_data(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRIALSCREEN_")}, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    patients = load_fixture_patients()
    assert result["statuses"] == [200] * len(patients)
    assert result["cards"] >= 10 and result["reports"] == result["cards"]

    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every stderr line is one JSON object
    assert len(records) >= 5 * len(patients)  # request lines for hooks, reports, feedback and refusals
    assert all(r.get("request_id") for r in records if r["msg"] == "request")

    patterns = _sensitive(patients)
    assert len(patterns) > 4 * len(patients)
    assert any(p.search(result["echo"]) for p in patterns.values())  # the responses did name patients
    leaked = {value for value, pattern in patterns.items() if pattern.search(proc.stderr)}
    assert not leaked, f"patient data in the logs: {sorted(leaked)[:10]}"
