"""Prefetch: the templates the service asks the EHR for, and turning a hook's prefetch into a patient record.

Templates are built once at start-up: the Patient, and per kind of data a search by patient. Observations, by
far the largest kind, are asked for by category (every HL7 observation category in one key, their complement
in another), newest first, and filtered locally like a bundle read by the command line: the code tables are
expansions of many codes per concept and would not fit in URLs. Medication kinds ``_include`` the Medications
they reference. The restricted prefetch syntax of CDS Hooks 2.0 has no relative dates, so no ``date=ge`` is
used: a fixed date would go stale in the EHR's cached discovery answer.

Prefetch semantics (CDS Hooks 2.0.1, "Prefetch"):

* a key holding a resource or a Bundle: used; a paged searchset's ``next`` links are followed through the
  FHIR server when we have access to it (otherwise the kind is *not retrieved*: the rest is unknown);
* a key that is ``null``: the EHR looked and found nothing (retrieved, empty), never re-queried;
* a key holding an ``OperationOutcome``: the EHR's query failed: the kind is *not retrieved* and is fetched
  from ``fhirServer`` when we have access;
* a key that is missing: fetched from ``fhirServer``; without a FHIR server that is a 412.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.errors import PreconditionFailed
from cds_service.facts.codes import CodeTables
from cds_service.gather.fhir_client import FhirClient, Query, outcome_error
from cds_service.gather.record import PatientRecord, build_record
from cds_service.gather.references import PatientContext, attribute

__all__ = ["PrefetchTemplate", "build_templates", "discovery_prefetch", "Gathered", "gather", "PATIENT_TOKEN",
           "observation_categories", "OBSERVATION_CATEGORY"]

log = logging.getLogger("trialscreen.gather")

PATIENT_TOKEN = "{{context.patientId}}"
MAX_BUNDLE_ENTRIES = 20_000  # per prefetch key
_MEDICATION_KINDS = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
# The kinds of data the criteria read, with their prefetch key and whether "newest first" helps.
_KINDS: tuple[tuple[str, str], ...] = (
    ("conditions", "Condition"),
    ("procedures", "Procedure"),
    ("medication-requests", "MedicationRequest"),
    ("medication-statements", "MedicationStatement"),
    ("medication-administrations", "MedicationAdministration"),
    ("immunizations", "Immunization"),
    ("allergies", "AllergyIntolerance"),
)
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Every code of the HL7 observation-category code system (FHIR R4 4.0.1, terminology.hl7.org): a protocol fact,
# not a site choice. Completeness does not depend on it: observations-other asks for the complement.
HL7_OBSERVATION_CATEGORIES = ("laboratory", "vital-signs", "exam", "survey", "social-history", "imaging",
                              "procedure", "therapy", "activity")


@dataclass(frozen=True)
class PrefetchTemplate:
    """One prefetch key: the kind of data it retrieves and its relative FHIR URL with ``{{context.patientId}}``."""

    key: str
    kind: str
    template: str

    def render(self, patient_id: str) -> str:
        """The query for one patient (``patient_id`` is a validated FHIR id)."""
        return self.template.replace(PATIENT_TOKEN, patient_id)


def observation_categories() -> tuple[str, ...]:
    """``system|code`` tokens of the Observation categories asked for by category (every HL7 category)."""
    return tuple(f"{OBSERVATION_CATEGORY}|{c}" for c in HL7_OBSERVATION_CATEGORIES)


def build_templates(tables: CodeTables | None = None, *, page_size: int = 200) -> tuple[PrefetchTemplate, ...]:
    """The service's prefetch templates (done once, at start-up).

    Observations are asked for by category, not by code: with value sets expanded to every code a hospital
    sends, code lists would need dozens of URLs and still miss a panel coded otherwise (a blood-pressure panel
    55284-4 whose components the engine reads). ``observations`` holds the HL7 categories,
    ``observations-other`` their complement (``category:not``: no category, or a local one), so the two keys
    together are every Observation of the patient and the engine filters locally (``record.relevant_to``)
    exactly as it does for a bundle read by the command line. Medications referenced by the medication kinds
    come with them (``_include``); a server that ignores it is read by reference afterwards (``gather``).
    ``tables`` is accepted for callers that pass it; no template depends on the code tables any more.
    """
    del tables  # the templates no longer list codes
    count = f"_count={max(1, int(page_size))}"
    pid = PATIENT_TOKEN
    out = [PrefetchTemplate("patient", "Patient", f"Patient/{pid}")]
    categories = ",".join(observation_categories())
    obs_base = f"Observation?patient={pid}"
    out.append(PrefetchTemplate("observations", "Observation",
                                f"{obs_base}&category={categories}&_sort=-date&{count}"))
    out.append(PrefetchTemplate("observations-other", "Observation",
                                f"{obs_base}&category:not={categories}&_sort=-date&{count}"))
    for key, kind in _KINDS:
        include = f"&_include={kind}:medication" if kind in _MEDICATION_KINDS else ""
        out.append(PrefetchTemplate(key, kind, f"{kind}?patient={pid}{include}&{count}"))
    return tuple(out)


def discovery_prefetch(templates: Iterable[PrefetchTemplate]) -> dict[str, str]:
    """The ``prefetch`` object of the discovery response."""
    return {t.key: t.template for t in templates}


# --- reading a hook's prefetch -----------------------------------------------------------------------------
@dataclass
class Gathered:
    """The gathered record (None when there is no Patient to screen, with ``why``) and how it was obtained."""

    record: PatientRecord | None
    why: str | None = None
    fetched_keys: tuple[str, ...] = ()
    dropped: int = 0  # resources whose patient reference is not this patient's, set aside
    not_retrieved: dict[str, str] = field(default_factory=dict)


_get = dict.get  # on the gathered resources, all dicts (see gather)


def _add_reason(reasons: dict[str, str], kind: str, why: str) -> None:
    if kind not in reasons:
        reasons[kind] = why
    elif why not in reasons[kind]:
        reasons[kind] = f"{reasons[kind]}; {why}"


def _resources_of(value: Mapping[str, Any], kind: str,
                  urls: list[str | None]) -> tuple[list[dict[str, Any]], str | None]:
    """Resources in one prefetch value (a resource or a Bundle), and a reason if the Bundle reports an error;
    each resource's entry fullUrl is appended to ``urls``."""
    if value.get("resourceType") != "Bundle":
        urls.append(None)
        return [dict(value)], None
    out: list[dict[str, Any]] = []
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        return out, "the Bundle's entry is not a list"
    if len(entries) > MAX_BUNDLE_ENTRIES:
        # Reading them all would hold the hook call for seconds: what is read is used, the kind stays incomplete.
        entries = entries[:MAX_BUNDLE_ENTRIES]
        problem: str | None = f"the Bundle holds more than {MAX_BUNDLE_ENTRIES} entries (the rest was not read)"
    else:
        problem = None
    for entry in entries:
        # dict checked first: an ABC check such as Mapping costs ~10x, and this runs on every entry
        if not (isinstance(entry, dict) or isinstance(entry, Mapping)) or not isinstance(entry.get("resource"), dict):
            continue
        res = entry["resource"]
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) or isinstance(search, Mapping) else None
        if _get(res, "resourceType") == "OperationOutcome":  # a dict (checked above): see _get
            error = outcome_error(res)
            if error:
                return out, error
            continue
        if mode in (None, "match", "include"):
            out.append(res)
            full_url = entry.get("fullUrl")
            urls.append(full_url if isinstance(full_url, str) else None)
    return out, problem


def _has_next(bundle: Mapping[str, Any]) -> bool:
    return any(isinstance(link, Mapping) and link.get("relation") == "next" for link in bundle.get("link") or [])


def _medication_references(resources: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """Medication references ("Medication/x") of medication resources, with the kinds that hold them."""
    out: dict[str, set[str]] = {}
    for res in resources:
        kind = _get(res, "resourceType")
        if kind not in _MEDICATION_KINDS:
            continue
        ref = res.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if isinstance(target, str) and "Medication/" in target and not target.startswith("#"):
            rel = "Medication/" + target.rsplit("Medication/", 1)[1].split("/_history")[0]
            out.setdefault(rel, set()).add(kind)
    return out


def gather(patient_id: str, prefetch: Mapping[str, Any] | None, templates: Iterable[PrefetchTemplate],
           client: FhirClient | None, *, request_id: str = "-",
           keep: Callable[[Mapping[str, Any]], bool] | None = None) -> Gathered:
    """The patient's record from the prefetch, completed from the FHIR server where needed and allowed.

    ``client`` is None when the request names no FHIR server; a client that is not trusted sends nothing.
    ``keep`` (``record.relevant_to(tables)``) skips resources no criterion can use before model validation.
    Raises PreconditionFailed (412) when prefetch keys are missing and there is no FHIR server at all.

    Every answer (a prefetch key's value, a FHIR search with its pages) is sorted by owner on its own
    (``references.attribute``: its urn:uuid references resolve through its own entries' fullUrls): resources whose
    patient reference does not resolve to this patient are set aside and counted, and an answer that held
    patient data none of which is this patient's makes its kind *not retrieved*: it says nothing about this
    patient, so it can never be "none recorded".
    """
    templates = tuple(templates)
    prefetch = prefetch or {}
    ctx = PatientContext(patient_id, client.base if client is not None else None)
    raw: list[dict[str, Any]] = []
    reasons: dict[str, str] = {}
    to_fetch: dict[str, Query] = {}
    set_aside = 0

    def take(kind: str, resources: list[dict[str, Any]], urls: list[str | None]) -> bool:
        """Keep the patient's resources of one answer; False when the answer was only about others."""
        nonlocal set_aside
        att = attribute(resources, ctx, urls)
        raw.extend(att.own)
        set_aside += att.set_aside
        if att.only_others:
            _add_reason(reasons, kind, f"the answer held only other patients' data ({att.set_aside} "
                                       "resource(s) set aside), nothing about this patient")
            return False
        return True

    missing = [t.key for t in templates if t.key not in prefetch]
    if missing and client is None:
        raise PreconditionFailed(f"prefetch key(s) {', '.join(missing)} missing and no fhirServer to fetch from",
                                 field=f"prefetch.{missing[0]}")
    for t in templates:
        if t.key not in prefetch:
            to_fetch[t.key] = Query(t.kind, t.render(patient_id))
            continue
        value = prefetch[t.key]
        if value is None:
            continue  # the EHR found nothing: retrieved, empty
        if value.get("resourceType") == "OperationOutcome":
            _add_reason(reasons, t.kind, "the EHR's prefetch query failed")
            if client is not None:
                to_fetch[t.key] = Query(t.kind, t.render(patient_id))
            continue
        urls: list[str | None] = []
        resources, problem = _resources_of(value, t.kind, urls)
        take(t.kind, resources, urls)
        if problem:
            _add_reason(reasons, t.kind, f"the EHR's prefetch Bundle is incomplete: {problem}")
            if client is not None:
                to_fetch[t.key] = Query(t.kind, t.render(patient_id))
        elif value.get("resourceType") == "Bundle" and _has_next(value):
            if client is None:
                _add_reason(reasons, t.kind, "the prefetched Bundle has more pages and there is no FHIR server "
                                             "to read them from")
            else:
                to_fetch[f"{t.key}#next"] = Query(t.kind, _next_url(value))
    if to_fetch and client is not None:
        results = client.fetch_all(to_fetch)
        for key, result in results.items():
            kind = to_fetch[key].kind
            about_patient = take(kind, result.resources, result.full_urls)
            if result.error:
                _add_reason(reasons, kind, result.error)
            elif about_patient and not key.endswith("#next") and _only_prefetch_failures(reasons.get(kind)):
                # a re-fetch after a failed prefetch query succeeded: the kind is retrieved after all
                del reasons[kind]
    # Medications referenced by id: read them when we can, else the referencing kinds are incomplete.
    # ``raw`` holds dicts only (references.attribute): dict's own get reads resourceType and id, which a
    # gather.lazy Observation holds in its head, without its lazy check (these passes see every resource).
    present = {f"Medication/{_get(r, 'id')}" for r in raw if _get(r, "resourceType") == "Medication"}
    wanted = {ref: kinds for ref, kinds in _medication_references(raw).items() if ref not in present}
    if wanted:
        failure: str | None = "referenced Medication resources were not provided and there is no FHIR server"
        if client is not None:
            found, failure = client.read_many(sorted(wanted))
            raw.extend(r for r in found if r.get("resourceType") == "Medication")
        if failure:
            for kinds in wanted.values():
                for kind in kinds:
                    _add_reason(reasons, kind, f"a referenced Medication could not be read ({failure})")
    kept = _deduplicated(raw)
    if set_aside:
        log.warning("an answer held resources that are not this patient's; set aside",
                    extra={"request_id": request_id, "count": set_aside})
    patient_ref = f"Patient/{patient_id}"
    if not any(_get(r, "resourceType") == "Patient" for r in kept):
        why = reasons.get("Patient") or "no Patient resource"
        return Gathered(None, why, tuple(to_fetch), set_aside, reasons)
    reasons.pop("Patient", None)
    record = build_record(patient_ref, kept, not_retrieved=reasons, keep=keep, set_aside=set_aside)
    if record.patient is None:
        return Gathered(None, "the Patient resource could not be read", tuple(to_fetch), set_aside, reasons)
    return Gathered(record, None, tuple(to_fetch), set_aside, reasons)


def _only_prefetch_failures(reason: str | None) -> bool:
    return reason is not None and all(part.startswith("the EHR's prefetch") for part in reason.split("; "))


def _next_url(bundle: Mapping[str, Any]) -> str:
    for link in bundle.get("link") or []:
        if isinstance(link, Mapping) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return ""


def _deduplicated(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The resources once each by Type/id (a resource may arrive in prefetch and again from the server)."""
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for res in raw:
        rtype, rid = _get(res, "resourceType"), _get(res, "id")
        if isinstance(rid, str) and rid:
            key = f"{rtype}/{rid}"
            if key in seen:
                continue
            seen.add(key)
        kept.append(res)
    return kept
