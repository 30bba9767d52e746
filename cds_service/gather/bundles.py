"""Reading records from files: Bundle JSON (collection, searchset, transaction, batch), NDJSON, or folders.

A bundle may hold several patients; each resource is given to the patient its ``subject`` / ``patient``
reference points at (``Patient/<id>`` or a ``urn:uuid:`` fullUrl, by ``references``' rules); one whose reference
points at no patient is given to nobody. Resources that belong to no patient
(Medication, Organization...) are shared with every patient of that file, so references to them resolve.
A file given on the command line counts as the patient's whole record: every kind of data is "retrieved".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from cds_service.errors import InputError
from cds_service.gather.record import PatientRecord, build_record, relevant_to
from cds_service.gather.references import _RELATIVE, PATIENT_LINK, patient_link

__all__ = ["RawPatient", "expand_paths", "read_path", "group_by_patient", "records_from_paths", "patient_reference_of"]



def patient_link_type(resource: Mapping[str, Any]) -> bool:
    """True for a resource type that belongs to a patient (it has a subject/patient link the criteria read)."""
    rtype = resource.get("resourceType")
    return isinstance(rtype, str) and rtype in PATIENT_LINK


@dataclass
class RawPatient:
    """One patient's raw resources (the Patient first) and where they came from."""

    patient_ref: str
    resources: list[dict[str, Any]]
    source: str
    set_aside: int = 0  # resources of the file that name no patient they can be given to


def _bundle_resources(data: Mapping[str, Any], source: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Entries of a Bundle (nested bundles flattened) and a map fullUrl -> 'Type/id'."""
    resources: list[dict[str, Any]] = []
    full_urls: dict[str, str] = {}
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise InputError(f"{source}: Bundle.entry is not a list")
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        res = entry.get("resource")
        if not isinstance(res, dict):
            continue
        if res.get("resourceType") == "Bundle":
            inner, inner_urls = _bundle_resources(res, source)
            resources.extend(inner)
            full_urls.update(inner_urls)
            continue
        rtype, rid = res.get("resourceType"), res.get("id")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and isinstance(rtype, str):
            if not rid and full_url.startswith("urn:uuid:"):
                rid = full_url[len("urn:uuid:"):]
                res = {**res, "id": rid}
            if rid:
                full_urls[full_url] = f"{rtype}/{rid}"
        resources.append(res)
    return resources, full_urls


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files to read: each file as given, each folder's .json/.ndjson files (sorted, recursively)."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in {".json", ".ndjson"}
                              and p.is_file()))
        else:
            out.append(path)
    return out


def read_path(path: Path) -> Iterator[tuple[str, list[dict[str, Any]], dict[str, str]]]:
    """Yield (source, resources, fullUrl map) for one file."""
    source = str(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    if path.suffix.lower() == ".ndjson":
        resources = []
        for n, line in enumerate(blob.splitlines(), 1):
            if not line.strip():
                continue
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{source}:{n}: not JSON ({exc})") from exc
            if not isinstance(res, dict) or "resourceType" not in res:
                raise InputError(f"{source}:{n}: not a FHIR resource")
            resources.append(res)
        yield source, resources, {}
        return
    try:
        data = orjson.loads(blob)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        kind = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{source}: not a FHIR Bundle (found {kind})")
    resources, urls = _bundle_resources(data, source)
    yield source, resources, urls


def patient_reference_of(resource: Mapping[str, Any], full_urls: Mapping[str, str]) -> str | None:
    """The 'Patient/<id>' a resource belongs to, or None when it names no patient it can be given to.

    The reference must be one whole FHIR reference (``references``' rules): ``Patient/<id>`` (optionally
    versioned), or a fullUrl of the same file that maps to a Patient. ``patient/x``, ``Group/...``, identifier-only
    references, unknown ``urn:uuid``s and ``Patient/a#Patient/b`` name no patient: such a resource is given to
    nobody (``group_by_patient`` sets it aside), never shared with everyone.
    """
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else None
    link = patient_link(resource)
    if not isinstance(link, Mapping):
        return None
    ref = link.get("reference")
    if not isinstance(ref, str):
        return None
    ref = full_urls.get(ref, ref)
    m = _RELATIVE.fullmatch(ref)
    if m is None or m.group("type") != "Patient":
        return None
    return f"Patient/{m.group('id')}"


def group_by_patient(
    resources: list[dict[str, Any]], full_urls: Mapping[str, str], source: str
) -> list[RawPatient]:
    """Split one file's resources by patient, in the order the patients appear.

    Resources of a patient-linked type whose reference names no patient (``patient_reference_of``), and Patients
    without an id, are set aside: they are nobody's evidence. Only resources that belong to no patient
    (Medication...) are shared with every patient of the file.
    """
    patients: dict[str, RawPatient] = {}
    shared: list[dict[str, Any]] = []
    orphans: dict[str, list[dict[str, Any]]] = {}
    set_aside: list[int] = []
    for res in resources:
        ref = patient_reference_of(res, full_urls)
        if ref is None:
            if res.get("resourceType") == "Patient" or patient_link_type(res):
                set_aside.append(1)
                continue
            shared.append(res)
            continue
        if res.get("resourceType") == "Patient":
            patients.setdefault(ref, RawPatient(ref, [], source)).resources.insert(0, res)
        elif ref in patients:
            patients[ref].resources.append(res)
        else:
            orphans.setdefault(ref, []).append(res)
    for ref, extra in orphans.items():
        # A resource may come before its Patient in the file; one without a Patient anywhere is still screened
        # (the Patient's absence makes age-based criteria UNKNOWN).
        patients.setdefault(ref, RawPatient(ref, [], source)).resources.extend(extra)
    for p in patients.values():
        p.resources.extend(shared)
        p.set_aside = len(set_aside)
    return list(patients.values())


def records_from_paths(paths: list[Path], tables: Any = None, *, at: datetime | None = None,
                       rules: Any = None, checked: bool = True) -> Iterator[PatientRecord | InputError]:
    """Records for every patient in every path, in input order; an unreadable path yields its InputError.

    With ``tables`` (the code tables), resources no criterion can use are skipped before model validation; with
    the evaluation time ``at`` and the trial ``rules`` too, so are Observations beyond their date horizon.
    ``checked`` as for ``build_record`` (False: every resource validated by fhir.resources).
    """
    keep = relevant_to(tables, at=at, rules=rules) if tables is not None else None
    for path in expand_paths(paths):
        try:
            for source, resources, urls in read_path(path):
                for raw in group_by_patient(resources, urls, source):
                    yield build_record(raw.patient_ref, raw.resources, keep=keep, checked=checked,
                                       set_aside=raw.set_aside)
        except InputError as exc:
            yield exc
