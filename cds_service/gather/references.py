"""Whose resource is this? A resource is evidence for the patient in context only when its patient reference
resolves, by the rules of FHIR references (R4 "Resource References", "Resolving references in Bundles"), to
that patient.

What resolves (``Patient/<id>`` below means the patient in context's id, exactly):

* a relative reference ``Patient/<id>``, optionally versioned ``Patient/<id>/_history/<v>``;
* an absolute URL ``<base>/Patient/<id>[/_history/<v>]`` whose base is the FHIR server the data came from
  (the hook's ``fhirServer``; without one, the base of the resource's own Bundle ``fullUrl``), compared after
  RFC 3986 normalisation (``urls.normalise``); another server's URL with the same id is another server's
  patient, even when an entry of the Bundle carries that URL as its fullUrl;
* a ``urn:uuid:`` / ``urn:oid:`` reference that is the ``fullUrl`` of an entry of the same Bundle answer whose
  resource is the Patient in context (it has that id);
* a contained reference ``#<id>`` is resolved inside the resource: a contained Patient is a copy without an
  identity of its own (FHIR: contained resources cannot be referenced from outside their container), so it is
  never the patient in context.

Everything else is set aside: no subject, ``patient/x`` (resource types are case-sensitive), ``Group/...`` or
any other type, an identifier-only or display-only reference, a ``urn:uuid`` no entry answers, another
server's URL, ``Patient/a#Patient/b`` and any reference that is not one whole reference. A set-aside resource is
never evidence and never shown on the report: it is counted (``Attribution.set_aside``) as a data problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.gather.urls import normalise

__all__ = ["PatientContext", "Attribution", "attribute", "resolves_to_patient", "patient_link", "base_of_full_url",
           "OWNERLESS", "verdict"]

_ID = r"[A-Za-z0-9\-\.]{1,64}"
_RELATIVE = re.compile(rf"(?P<type>[A-Z][A-Za-z]{{1,63}})/(?P<id>{_ID})(?:/_history/{_ID})?")
_ABSOLUTE = re.compile(rf"(?P<base>(?i:https?)://.+?)/(?P<type>[A-Z][A-Za-z]{{1,63}})/(?P<id>{_ID})(?:/_history/{_ID})?")
_FULL_URL = re.compile(rf"(?P<base>(?i:https?)://.+?)/[A-Z][A-Za-z]{{1,63}}/{_ID}(?:/_history/{_ID})?")
# The element holding the patient, per resource type the criteria read (R4).
PATIENT_LINK: dict[str, str] = {
    "Condition": "subject",
    "Observation": "subject",
    "Procedure": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MedicationAdministration": "subject",
    "DiagnosticReport": "subject",
    "Immunization": "patient",
    "AllergyIntolerance": "patient",
}
# Types that belong to no patient (read through references from the patient's own resources).
OWNERLESS = frozenset({"Medication", "Organization", "Practitioner", "PractitionerRole", "Location", "Substance",
                       "OperationOutcome", "Bundle"})


@dataclass(frozen=True)
class PatientContext:
    """The patient in context and where the data came from: ``base`` is the FHIR server's base URL (None when
    the data came from prefetch without a FHIR server)."""

    patient_id: str
    base: str | None = None


def base_of_full_url(full_url: str | None) -> str | None:
    """The FHIR base of an entry's absolute ``fullUrl`` (``https://x/fhir/Condition/1`` -> ``https://x/fhir``)."""
    if not isinstance(full_url, str):
        return None
    m = _FULL_URL.fullmatch(full_url)
    return m.group("base") if m else None


def _same_base(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    na, nb = normalise(a), normalise(b)
    return na is not None and nb is not None and na == nb


def patient_link(resource: Mapping[str, Any]) -> Any:
    """The raw patient link of a resource (the ``subject``/``patient`` element), or None."""
    rtype = resource.get("resourceType")
    key = PATIENT_LINK.get(rtype) if isinstance(rtype, str) else None
    return resource.get(key) if key else None


def verdict(resource: Mapping[str, Any], ctx: PatientContext, *, full_url: str | None = None,
            bundle_urls: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """"own" (evidence for the patient in context), "other" (set aside) or "none" (belongs to no patient)."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return "none"  # not a resource: build_record ignores it
    if rtype == "Patient":
        return "own" if resource.get("id") == ctx.patient_id and isinstance(resource.get("id"), str) else "other"
    if rtype not in PATIENT_LINK:
        return "none"  # belongs to no patient (Medication...) or is a type no criterion reads
    return "own" if resolves_to_patient(resource, ctx, full_url=full_url, bundle_urls=bundle_urls) else "other"


def resolves_to_patient(resource: Mapping[str, Any], ctx: PatientContext, *, full_url: str | None = None,
                        bundle_urls: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
    """True when the resource's patient reference resolves to the patient in context (rules: module doc).

    ``full_url`` is the resource's own entry fullUrl; ``bundle_urls`` maps every fullUrl of the same Bundle
    answer to its entry's resource.
    """
    link = patient_link(resource)
    if not (isinstance(link, dict) or isinstance(link, Mapping)):  # dict first: an ABC check costs ~10x
        return False
    ref = link.get("reference")
    if not isinstance(ref, str) or not ref:
        return False  # identifier-only or display-only: not resolvable by reference rules
    return _target_is_patient(ref, resource, ctx, full_url, bundle_urls or {})


def _target_is_patient(ref: str, resource: Mapping[str, Any], ctx: PatientContext, full_url: str | None,
                       bundle_urls: Mapping[str, Mapping[str, Any]]) -> bool:
    if ref.startswith("#"):
        return False  # a contained Patient (or nothing): never the patient in context (module doc)
    if ref.startswith(("urn:uuid:", "urn:oid:")):
        target = bundle_urls.get(ref)  # a urn resolves only to an entry of the same Bundle answer
        return (target is not None and target.get("resourceType") == "Patient"
                and target.get("id") == ctx.patient_id)
    m = _ABSOLUTE.fullmatch(ref)
    if m is not None:
        if m.group("type") != "Patient" or m.group("id") != ctx.patient_id:
            return False
        # Only the FHIR server's own base (the hook's fhirServer; without one, the base the resource itself lives
        # at, its entry's fullUrl). An entry of the Bundle whose fullUrl is another server's URL does not make
        # that server's patient this one, even with the same id.
        return _same_base(m.group("base"), ctx.base or base_of_full_url(full_url))
    m = _RELATIVE.fullmatch(ref)
    # A relative reference resolves on the server the resource came from (R4: against its entry's fullUrl base,
    # else the server it was read from); the EHR's patient id names the patient on that same server.
    return m is not None and m.group("type") == "Patient" and m.group("id") == ctx.patient_id


_dict_get = dict.get


def _is_map(node: Any) -> bool:
    """A JSON object: a dict (checked first: an ABC check such as ``Mapping`` costs ~10x, and this runs on every
    resource of every answer) or another Mapping."""
    return isinstance(node, dict) or isinstance(node, Mapping)


@dataclass
class Attribution:
    """One answer's resources sorted by owner: ``own`` (the patient's, plus resources of no patient),
    ``set_aside`` (how many were not), and whether the answer held anything of the patient's at all."""

    own: list[dict[str, Any]] = field(default_factory=list)
    set_aside: int = 0
    owned: int = 0  # resources that are the patient's (Patient or patient-linked), not counting ownerless ones

    @property
    def only_others(self) -> bool:
        """True when the answer held patient data, none of it the patient in context's."""
        return self.set_aside > 0 and self.owned == 0


def attribute(resources: Iterable[Mapping[str, Any]], ctx: PatientContext,
              full_urls: Iterable[str | None] | None = None) -> Attribution:
    """Sort one answer's resources (``full_urls``: each resource's entry fullUrl, in the same order)."""
    items = list(resources)
    urls = list(full_urls) if full_urls is not None else [None] * len(items)
    urls += [None] * (len(items) - len(urls))
    bundle_urls = {u: r for r, u in zip(items, urls, strict=True) if isinstance(u, str) and _is_map(r)}
    out = Attribution()
    # A relative reference ("Patient/1") resolves the same way whatever the resource and its fullUrl: its
    # verdict is remembered per reference (a long answer repeats one reference thousands of times).
    relative: dict[tuple[str, str], str] = {}
    for res, url in zip(items, urls, strict=True):
        if not _is_map(res):
            continue
        # dict's own get on a dict: a gather.lazy Observation holds resourceType and its patient link in its head,
        # and its own get (a Python method) would cost more than the rest of this loop.
        get = _dict_get if isinstance(res, dict) else res.get
        rtype = get(res, "resourceType") if get is _dict_get else get("resourceType")
        link_name = PATIENT_LINK[rtype] if isinstance(rtype, str) and rtype in PATIENT_LINK else None
        link = None if link_name is None else get(res, link_name) if get is _dict_get else get(link_name)
        ref = link.get("reference") if type(link) is dict else None
        if type(ref) is str and ref and "://" not in ref and not ref.startswith(("#", "urn:")):
            v = relative.get((rtype, ref))
            if v is None:
                v = relative[(rtype, ref)] = verdict(res, ctx, full_url=url, bundle_urls=bundle_urls)
        else:
            v = verdict(res, ctx, full_url=url, bundle_urls=bundle_urls)
        if v == "other":
            out.set_aside += 1
            continue
        if v == "own":
            out.owned += 1
        # Kept as given (no copy): a gather.lazy Observation stays undecoded until a filter needs more than its
        # head, and nothing downstream mutates a raw resource.
        out.own.append(res if isinstance(res, dict) else dict(res))
    return out
