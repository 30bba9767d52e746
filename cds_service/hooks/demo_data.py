"""The fixture patients as an EHR would hand them over: prefetch for a hook call, or a transaction to upload.

* :func:`load_fixture_patients` reads ``fixtures/`` (Bundles and NDJSON, several patients per file allowed)
  into one :class:`FixturePatient` each, with ``urn:uuid:`` references resolved to ``Type/id``.
* :func:`prefetch_for` answers the service's discovery prefetch templates from a patient's resources, the way
  an EHR's FHIR search would: ``Type/{{context.patientId}}`` reads, and ``Type?patient=...`` searches filtered
  by ``code`` and ``category`` tokens (``system|code``, OR-lists; ``category:not``, ``category:missing``) and
  ``date`` prefixes (``ge``/``le``/``gt``/``lt``/``eq``), sorted by ``_sort=-date``; with
  ``_include=<Type>:medication`` the referenced Medications are added as ``include`` entries. Other parameters
  (``_count`` included: nothing is paged) do not narrow the result (:func:`search_matches`).
* :func:`transaction_for` builds a FHIR ``transaction`` Bundle of ``PUT Type/<prefix><id>`` entries with every
  reference to a resource of the same patient rewritten to the prefixed id.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cds_service.config import Knowledge
from cds_service.errors import InputError
from cds_service.gather.bundles import expand_paths, group_by_patient, patient_reference_of, read_path
from cds_service.gather.record import build_record
from cds_service.pipeline import Screening, screen
from cds_service.shipped import FIXTURE_TIME, shipped_dir

__all__ = ["FIXTURE_TIME", "FixturePatient", "default_fixtures_dir", "load_fixture_patients", "prefetch_for",
           "transaction_for", "search_matches", "expected_status", "screen_fixture", "valid_prefix", "patient_ids"]

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trialscreen:fixtures")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9\-.]{0,40}$")
_DATE_FIELDS = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued", "onsetDateTime",
                "recordedDate", "performedDateTime", "performedPeriod", "occurrenceDateTime", "authoredOn",
                "dateAsserted", "birthDate")


@dataclass
class FixturePatient:
    """One fixture patient: its id, the file it came from, and its resources (the Patient first)."""

    patient_id: str
    source: str
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patient(self) -> dict[str, Any] | None:
        """The Patient resource, if the fixture has one."""
        return next((r for r in self.resources if r.get("resourceType") == "Patient"), None)


def default_fixtures_dir() -> Path:
    """The demo fixtures shipped with the package (the source tree's ``fixtures/``, or the wheel's copy)."""
    return shipped_dir("fixtures")


def _rewrite_references(node: Any, mapping: Mapping[str, str]) -> Any:
    """A copy of ``node`` with every ``reference`` string found in ``mapping`` replaced by its value."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in mapping:
                out[key] = mapping[value]
            else:
                out[key] = _rewrite_references(value, mapping)
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, mapping) for v in node]
    return node


def load_fixture_patients(folder: Path | None = None) -> list[FixturePatient]:
    """Every patient in the fixture files, in file order (raises InputError for an unreadable file)."""
    out: list[FixturePatient] = []
    for path in expand_paths([folder or default_fixtures_dir()]):
        for source, resources, full_urls in read_path(path):
            resolved = [_rewrite_references(r, full_urls) for r in resources]
            for raw in group_by_patient(resolved, {}, source):
                pid = raw.patient_ref.split("/", 1)[1]
                out.append(FixturePatient(pid, Path(source).name, raw.resources))
    return out


def screen_fixture(patient: FixturePatient, knowledge: Knowledge, at: datetime = FIXTURE_TIME) -> Screening:
    """The engine's screening of the fixture patient at ``at`` (by default the fixtures' time)."""
    record = build_record(f"Patient/{patient.patient_id}", copy.deepcopy(patient.resources))
    return screen(record, at, knowledge)


def expected_status(patient: FixturePatient, knowledge: Knowledge, at: datetime = FIXTURE_TIME) -> str:
    """The engine's own verdict on the fixture patient at ``at`` (by default the fixtures' time)."""
    return screen_fixture(patient, knowledge, at).status


# --- prefetch -----------------------------------------------------------------------------------------------
def _codings(resource: Mapping[str, Any], keys: tuple[str, ...] = ("code", "medicationCodeableConcept",
                                                                     "vaccineCode")) -> list[tuple[str, str]]:
    out = []
    for key in keys:
        concepts = resource.get(key)
        for concept in concepts if isinstance(concepts, list) else [concepts]:
            if isinstance(concept, Mapping):
                for c in concept.get("coding") or []:
                    if isinstance(c, Mapping) and isinstance(c.get("code"), str):
                        out.append((str(c.get("system") or ""), c["code"]))
    return out


def _token_match(codings: list[tuple[str, str]], tokens: str) -> bool:
    for token in tokens.split(","):
        system, sep, code = token.rpartition("|")
        if any(c == code and (not sep or s == system) for s, c in codings):
            return True
    return False


def _date_of(resource: Mapping[str, Any]) -> str:
    for key in _DATE_FIELDS:
        value = resource.get(key)
        if isinstance(value, Mapping):
            value = value.get("start") or value.get("end")
        if isinstance(value, str) and value:
            return value
    return ""


def _date_match(resource: Mapping[str, Any], expr: str) -> bool:
    when = _date_of(resource)
    if not when:
        return False
    prefix, bound = (expr[:2], expr[2:]) if expr[:2] in ("ge", "le", "gt", "lt", "eq") else ("eq", expr)
    a, b = when[: len(bound)], bound  # compare at the precision of the bound (ISO strings sort by time)
    return {"ge": a >= b, "le": a <= b, "gt": a > b, "lt": a < b, "eq": a == b}[prefix]


def search_matches(resource: Mapping[str, Any], params: Iterable[tuple[str, str]], patient_ref: str) -> bool:
    """Whether ``resource`` matches the search parameters the way a FHIR server reads them.

    ``patient``/``subject``; ``code`` and ``category`` token OR-lists (``system|code``), ``category:not`` (none
    of the tokens: also a resource without a category, as FHIR's ``:not`` reads), ``category:missing``;
    ``date`` prefixes. Other parameters (``_count``, ``_sort``, ``_include``) do not narrow the result.
    """
    for name, value in params:
        if name in ("patient", "subject"):
            ok = patient_reference_of(resource, {}) == patient_ref
        elif name == "code":
            ok = _token_match(_codings(resource), value)
        elif name == "category":
            ok = _token_match(_codings(resource, ("category",)), value)
        elif name == "category:not":
            ok = not _token_match(_codings(resource, ("category",)), value)
        elif name == "category:missing":
            ok = (not resource.get("category")) == (value.lower() == "true")
        elif name == "date":
            ok = _date_match(resource, value)
        else:
            continue
        if not ok:
            return False
    return True


def _search(patient: FixturePatient, rtype: str, query: str) -> dict[str, Any]:
    params = parse_qsl(query, keep_blank_values=True)
    ref = f"Patient/{patient.patient_id}"
    hits = [res for res in patient.resources
            if res.get("resourceType") == rtype and search_matches(res, params, ref)]
    if ("_sort", "-date") in params:
        hits.sort(key=_date_of, reverse=True)
    entries = [{"fullUrl": f"{rtype}/{r.get('id')}", "resource": r, "search": {"mode": "match"}} for r in hits]
    # _include=<Type>:medication: the Medications the hits reference (as a FHIR server adds them)
    if ("_include", f"{rtype}:medication") in params:
        wanted = {r["medicationReference"]["reference"] for r in hits
                  if isinstance(r.get("medicationReference"), Mapping)
                  and isinstance(r["medicationReference"].get("reference"), str)}
        for res in patient.resources:
            if res.get("resourceType") == "Medication" and f"Medication/{res.get('id')}" in wanted:
                entries.append({"fullUrl": f"Medication/{res.get('id')}", "resource": res,
                                "search": {"mode": "include"}})
    return {"resourceType": "Bundle", "type": "searchset", "total": len(hits), "entry": entries}


def prefetch_for(patient: FixturePatient, templates: Mapping[str, str]) -> dict[str, Any]:
    """The prefetch object an EHR would send for ``templates`` (discovery's ``prefetch``) and this patient.

    A read of a resource the patient does not have is ``null`` (no data), as the spec allows.
    """
    out: dict[str, Any] = {}
    for key, template in templates.items():
        url = template.replace("{{context.patientId}}", patient.patient_id)
        path, _, query = url.partition("?")
        path = path.strip("/")
        if not query and "/" in path:
            rtype, rid = path.split("/", 1)
            out[key] = next((copy.deepcopy(r) for r in patient.resources
                             if r.get("resourceType") == rtype and r.get("id") == rid), None)
        else:
            out[key] = copy.deepcopy(_search(patient, path, query))
    return out


# --- upload -------------------------------------------------------------------------------------------------
def valid_prefix(prefix: str) -> str:
    """``prefix`` if it can start a FHIR id (letters, digits, '-' and '.', at most 40), else InputError."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise InputError(f"id prefix {prefix!r}: use at most 40 letters, digits, '-' or '.'")
    return prefix


def transaction_for(patient: FixturePatient, prefix: str = "") -> dict[str, Any]:
    """A transaction Bundle that PUTs every resource of the patient with ids ``<prefix><id>``."""
    valid_prefix(prefix)
    mapping: dict[str, str] = {}
    for res in patient.resources:
        rtype, rid = res.get("resourceType"), res.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str):
            raise InputError(f"{patient.source}: a {rtype or 'resource'} has no id")
        new_id = prefix + rid
        if not _ID_RE.fullmatch(new_id):
            raise InputError(f"{patient.source}: {rtype}/{rid} with prefix {prefix!r} is not a valid FHIR id")
        mapping[f"{rtype}/{rid}"] = f"{rtype}/{new_id}"
    entries = []
    for res in patient.resources:
        new = _rewrite_references(res, mapping)
        new["id"] = mapping[f"{res['resourceType']}/{res['id']}"].split("/", 1)[1]
        meta = new.get("meta")
        if isinstance(meta, dict):  # the server sets these itself
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
        url = f"{new['resourceType']}/{new['id']}"
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, url)}", "resource": new,
                        "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def patient_ids(patients: Iterable[FixturePatient], prefix: str = "") -> list[str]:
    """The server-side ids the patients get with ``prefix``."""
    return [prefix + p.patient_id for p in patients]
