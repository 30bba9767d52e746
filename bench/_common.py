"""Shared helpers of the benchmarks: the generated AML record, hook bodies, the app, timing and tables.

Every benchmark reports medians of repeated runs and states its target as a ratio to a baseline measured
in the same process and run (these machines are noisy: absolute times say little, ratios travel).

The record: fixture 01 (a relapsed-AML candidate) plus months of daily labs and vitals cloned from its own
Observations (ALT, AST, total and direct bilirubin, creatinine and weight daily; SpO2 and the blood-pressure
panel three times a day; of these the fixture has all but direct bilirubin: 11 a day), dated back from the
fixture's own results so that the newest value of each test, and so the screening, stays the fixture's.
The cloned codes are those the criteria read (the prefetch templates ask for Observations by category, so an
EHR would send any code; cloning others would only add work no criterion reads).
"""

from __future__ import annotations

import copy
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SYNTHEA = Path(os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ROOT.parent / "shared" / "synthea"))
SOURCE_FIXTURE = FIXTURES / "01-candidate-relapsed-aml.json"
AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
AT_ISO = "2026-10-01T09:00:00Z"
SIZES = (100, 1_000, 10_000)

# (LOINC code, times a day) of the Observations cloned into the daily history.
_DAILY = {"1742-6": 1, "1920-8": 1, "1975-2": 1, "1968-7": 1, "2160-0": 1, "29463-7": 1, "59408-5": 3,
          "85354-9": 3}

if str(ROOT) not in sys.path:  # `python bench/x.py` from a clean clone: the package is installed editable anyway
    sys.path.insert(0, str(ROOT))


# --- the record ---------------------------------------------------------------------------------------------
def fixture_resources(path: Path = SOURCE_FIXTURE) -> list[dict[str, Any]]:
    bundle = orjson.loads(path.read_bytes())
    return [e["resource"] for e in bundle["entry"]]


def _loinc(obs: dict[str, Any]) -> str | None:
    for c in obs.get("code", {}).get("coding", []):
        if c.get("system") == "http://loinc.org":
            return c.get("code")
    return None


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def aml_record(size: int, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """About ``size`` resources: fixture 01 plus a daily lab and vital-sign history going back in time.

    ``as_of``: every date moved by the whole days from AT to it, so that a service whose clock reads ``as_of``
    sees the record exactly as one reading AT sees the original (throughput.py: the real server's clock).
    """
    if as_of is not None:
        return shift_dates(aml_record(size), (as_of.date() - AT.date()).days)
    base = fixture_resources()
    templates: dict[str, dict[str, Any]] = {}
    for r in base:
        if r["resourceType"] == "Observation" and r.get("status") == "final":
            code = _loinc(r)
            if code in _DAILY and code not in templates and "effectiveDateTime" in r:
                templates[code] = r
    out = list(base)
    n = 0
    day = 1
    while len(out) < size:
        for code, per_day in _DAILY.items():
            tpl = templates.get(code)
            if tpl is None:
                continue
            for k in range(per_day):
                if len(out) >= size:
                    break
                when = _parse(tpl["effectiveDateTime"]) - timedelta(days=day, hours=8 * k)
                stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                obs = copy.deepcopy(tpl)
                n += 1
                obs["id"] = f"{tpl['id']}-h{n}"
                obs["effectiveDateTime"] = stamp
                if "issued" in obs:
                    obs["issued"] = stamp
                out.append(obs)
        day += 1
    return out


_DATE_PREFIX = re.compile(r"^(\d{4}-\d{2}-\d{2})(T.*)?$")


def shift_dates(value: Any, days: int) -> Any:
    """A copy of ``value`` (JSON) with every date and dateTime string moved by ``days`` whole days."""
    if isinstance(value, dict):
        return {k: shift_dates(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_dates(v, days) for v in value]
    if isinstance(value, str):
        m = _DATE_PREFIX.match(value)
        if m:
            moved = datetime.fromisoformat(m.group(1)) + timedelta(days=days)
            return moved.strftime("%Y-%m-%d") + (m.group(2) or "")
    return value


def patient_id_of(resources: Iterable[dict[str, Any]]) -> str:
    return next(r["id"] for r in resources if r["resourceType"] == "Patient")


# --- hook requests -------------------------------------------------------------------------------------------
def searchset(resources: list[dict[str, Any]], base: str = "https://ehr.example.org/fhir") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def full_prefetch(templates: Sequence[Any], resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The prefetch an EHR would send for these templates: each resource under the first key whose query it
    matches (Observations by category), a referenced Medication as an ``include`` entry of the key whose
    resources reference it, every other key null (searched, nothing found)."""
    from urllib.parse import parse_qsl

    from cds_service.hooks.demo_data import search_matches

    by_key: dict[str, list[dict[str, Any]]] = {}
    patient = None
    medications = {f"Medication/{r['id']}": r for r in resources if r["resourceType"] == "Medication"}
    included: dict[str, dict[str, dict[str, Any]]] = {}
    queries = {t.key: [(k, v) for k, v in parse_qsl(t.template.partition("?")[2]) if k not in ("patient",)]
               for t in templates}
    for r in resources:
        kind = r["resourceType"]
        if kind == "Patient":
            patient = r
            continue
        key = next((t.key for t in templates if t.kind == kind and search_matches(r, queries[t.key], "")), None)
        if key is None:
            continue  # a kind the service does not ask for (DiagnosticReport, a Medication on its own...)
        by_key.setdefault(key, []).append(r)
        ref = (r.get("medicationReference") or {}).get("reference")
        if ref in medications and ("_include", f"{kind}:medication") in queries[key]:
            included.setdefault(key, {})[ref] = medications[ref]
    out: dict[str, Any] = {}
    for t in templates:
        if t.kind == "Patient":
            out[t.key] = patient
        else:
            found = by_key.get(t.key)
            bundle = searchset(found) if found else None
            if bundle is not None and t.key in included:
                bundle["entry"] += [{"fullUrl": f"https://ehr.example.org/fhir/Medication/{m['id']}", "resource": m,
                                     "search": {"mode": "include"}} for m in included[t.key].values()]
            out[t.key] = bundle
    return out


def hook_body(patient_id: str, prefetch: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                            "context": {"patientId": patient_id, "userId": "Practitioner/bench"}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


# --- the app -------------------------------------------------------------------------------------------------
def bench_app(**overrides: Any) -> Any:
    """The service app with the benchmarks' baseline endpoint, no auth, a fixed clock and a throw-away store."""
    from cds_service.hooks.app import create_app

    state_dir = tempfile.mkdtemp(prefix="trialscreen-bench-")
    base = {"environ": {}, "auth_required": False, "bench_endpoints": True, "clock": lambda: AT,
            "state_dir": Path(state_dir), "log_level": "WARNING"}
    base.update(overrides)
    return create_app(base)


def service_url() -> str:
    from cds_service.hooks.discovery import SERVICE_ID

    return f"/cds-services/{SERVICE_ID}"


BASELINE_URL = "/bench/json-only"
JSON_HEADERS = {"Content-Type": "application/json"}


# --- timing and printing -------------------------------------------------------------------------------------
def median_time(fn: Callable[[], Any], *, repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], Any]], *, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Medians of several functions timed in alternation (so drift in machine load hits them all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table (so the output can be pasted into bench/README.md as is)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def ratios_line(name: str, ratios: dict[Any, float], target: float | dict[Any, float], *, scope: str = "",
                judged: Iterable[Any] | None = None) -> str:
    """The final ``RATIOS`` line of a benchmark whose target is "at most ``target`` x" (one figure, or one per
    item: ``{1_000: 2.5, 10_000: 1.5}``): every ratio, and which of the ``judged`` items (default: all, or those
    with a target) meet it: "met", "NOT met", or "met at ...; NOT met at ..."."""
    def label(key: Any) -> str:
        return f"{key:,}" if isinstance(key, int) else str(key)

    limits = target if isinstance(target, dict) else dict.fromkeys(ratios, target)
    keys = [k for k in ratios if k in limits] if judged is None else list(judged)
    met = [label(k) for k in keys if ratios[k] <= limits[k]]
    missed = [label(k) for k in keys if ratios[k] > limits[k]]
    if not keys:
        outcome = "not measured"
    elif not missed or not met:
        outcome = verdict(not missed)
    else:
        outcome = f"met at {', '.join(met)}; NOT met at {', '.join(missed)}"
    values = ", ".join(f"{label(k)}={r:.2f}x" for k, r in ratios.items())
    if isinstance(target, dict):
        wanted = " and ".join(f"{v:g}x at {label(k)}" for k, v in target.items())
        return f"RATIOS {name}: {values} (target <= {wanted}{scope}: {outcome}); {load_average()}"
    return f"RATIOS {name}: {values} (target <= {target:g}x{scope}: {outcome}); {load_average()}"


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, printed beside every RATIOS line: a ratio measured on a
    busy machine is read differently."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"
