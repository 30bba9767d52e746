"""Unit tests of the reference rule (gather/references.py), URL normalisation (gather/urls.py) and the file
grouping that uses the same rule (gather/bundles.py). End to end through the hook:
tests/security/test_cross_patient.py."""

from __future__ import annotations

import pytest

from cds_service.gather.bundles import group_by_patient, patient_reference_of
from cds_service.gather.references import PatientContext, attribute, base_of_full_url, resolves_to_patient
from cds_service.gather.urls import normalise

BASE = "https://ehr.example.org/fhir"
CTX = PatientContext("p1", BASE)
NO_BASE = PatientContext("p1")


def obs(subject=None, **extra) -> dict:
    out = {"resourceType": "Observation", "id": "o1", **extra}
    if subject is not None:
        out["subject"] = subject
    return out


@pytest.mark.parametrize("ref,ok", [
    ("Patient/p1", True),
    ("Patient/p1/_history/7", True),
    (f"{BASE}/Patient/p1", True),
    ("HTTPS://EHR.example.org:443/fhir/./Patient/p1", True),
    ("https://ehr.example.org/fhir/x/../Patient/p1", True),
    ("https://ehr.example.org/fhir/%50atient/p1", False),  # the type is matched as written: no decoding tricks
    ("Patient/p2", False),
    ("patient/p1", False),
    ("Group/p1", False),
    ("Patient/p1#Patient/p2", False),
    ("Patient/p2#Patient/p1", False),
    ("https://other.example.org/fhir/Patient/p1", False),
    ("https://ehr.example.org/other/Patient/p1", False),
    ("https://ehr.example.org:8443/fhir/Patient/p1", False),
    ("http://ehr.example.org/fhir/Patient/p1", False),
    ("urn:uuid:5a3f0e0c-0000-4000-8000-000000000001", False),
    ("#p1", False),
    ("Patient/p1/", False),
    ("Patient/p1 ", False),
    ("Patient/p1\n", False),
    ("Patient/", False),
    ("Patient?identifier=p1", False),
    ("", False),
])
def test_reference_forms(ref, ok):
    assert resolves_to_patient(obs({"reference": ref}), CTX) is ok


@pytest.mark.parametrize("subject", [None, {}, {"display": "x"}, {"identifier": {"value": "p1"}}, {"reference": 1},
                                     "Patient/p1", ["Patient/p1"]])
def test_no_resolvable_reference(subject):
    assert resolves_to_patient(obs(subject), CTX) is False


def test_urn_uuid_resolves_only_through_the_same_answers_fullurls():
    me = {"resourceType": "Patient", "id": "p1"}
    other = {"resourceType": "Patient", "id": "p2"}
    noid = {"resourceType": "Patient"}
    urns = {"urn:uuid:a": me, "urn:uuid:b": other, "urn:uuid:c": noid}
    assert resolves_to_patient(obs({"reference": "urn:uuid:a"}), CTX, bundle_urls=urns)
    assert not resolves_to_patient(obs({"reference": "urn:uuid:b"}), CTX, bundle_urls=urns)
    assert not resolves_to_patient(obs({"reference": "urn:uuid:c"}), CTX, bundle_urls=urns)
    assert not resolves_to_patient(obs({"reference": "urn:uuid:a"}), CTX)  # another answer's urn


def test_an_absolute_fullurl_of_another_server_does_not_make_its_patient_ours():
    theirs = {"resourceType": "Patient", "id": "p1"}
    resources = [obs({"reference": "https://other.example.org/fhir/Patient/p1"}), theirs]
    att = attribute(resources, CTX, [None, "https://other.example.org/fhir/Patient/p1"])
    assert [r["resourceType"] for r in att.own] == ["Patient"] and att.set_aside == 1


def test_without_a_fhir_server_an_absolute_reference_resolves_on_the_resources_own_base():
    res = obs({"reference": f"{BASE}/Patient/p1"})
    assert resolves_to_patient(res, NO_BASE, full_url=f"{BASE}/Observation/o1")
    assert not resolves_to_patient(res, NO_BASE, full_url="https://other.example.org/fhir/Observation/o1")
    assert not resolves_to_patient(res, NO_BASE)


def test_immunization_and_allergy_use_patient():
    assert resolves_to_patient({"resourceType": "Immunization", "patient": {"reference": "Patient/p1"}}, CTX)
    assert not resolves_to_patient({"resourceType": "Immunization", "subject": {"reference": "Patient/p1"}}, CTX)
    assert resolves_to_patient({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}, CTX)


def test_attribution_counts_and_only_others():
    mine = obs({"reference": "Patient/p1"})
    theirs = {**obs({"reference": "Patient/p2"}), "id": "o2"}
    med = {"resourceType": "Medication", "id": "m1"}
    att = attribute([mine, theirs, med], CTX)
    assert (att.owned, att.set_aside, att.only_others) == (1, 1, False)
    assert [r["id"] for r in att.own] == ["o1", "m1"]
    att = attribute([theirs, med], CTX)
    assert att.only_others and att.set_aside == 1
    assert not attribute([med], CTX).only_others  # nothing about any patient: not "only others"
    assert not attribute([], CTX).only_others


def test_patient_resource_needs_the_id_in_context():
    att = attribute([{"resourceType": "Patient"}, {"resourceType": "Patient", "id": "p2"},
                     {"resourceType": "Patient", "id": "p1"}], CTX)
    assert [r.get("id") for r in att.own] == ["p1"] and att.set_aside == 2


def test_base_of_full_url():
    assert base_of_full_url(f"{BASE}/Condition/c1") == BASE
    assert base_of_full_url(f"{BASE}/Condition/c1/_history/2") == BASE
    assert base_of_full_url("urn:uuid:x") is None
    assert base_of_full_url(None) is None


# --- files: the same rule decides who a resource is given to -----------------------------------------------
def test_a_file_whose_first_patient_has_no_id_screens_nobody_as_it():
    noid = {"resourceType": "Patient", "birthDate": "2015-01-01"}
    me = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    groups = group_by_patient([noid, me, cond], {}, "f.json")
    assert [g.patient_ref for g in groups] == ["Patient/p1"]
    assert groups[0].resources[0] is me and noid not in groups[0].resources
    assert groups[0].set_aside == 1


@pytest.mark.parametrize("subject", [{"reference": "patient/p1"}, {"reference": "Group/g"},
                                     {"identifier": {"value": "p1"}}, {"reference": "urn:uuid:nobody"},
                                     {"reference": "Patient/p1#Patient/p2"}, None])
def test_a_file_resource_naming_no_patient_is_given_to_nobody(subject):
    me = {"resourceType": "Patient", "id": "p1"}
    stray = obs(subject)
    groups = group_by_patient([me, stray], {}, "f.json")
    assert all(stray not in g.resources for g in groups)
    assert patient_reference_of(stray, {}) is None


def test_a_file_resource_by_urn_uuid_goes_to_its_patient():
    me = {"resourceType": "Patient", "id": "p1"}
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "urn:uuid:a"}}
    [group] = group_by_patient([me, cond], {"urn:uuid:a": "Patient/p1"}, "f.json")
    assert cond in group.resources


# --- URL normalisation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,text", [
    ("HTTPS://EHR.Example.org:443/fhir/", "https://ehr.example.org/fhir"),
    ("http://h:80/a/./b/../c", "http://h/a/c"),
    ("http://h/%7Euser/%2d", "http://h/~user/-"),
    ("http://h/a%2fb", None),  # an encoded slash: a server might decode it after our check
    ("http://h/a/%2e%2e/b", "http://h/b"),
    ("http://h/../a", None),
    ("http://h/a//b", None),
    ("http://u:p@h/a", None),
    ("http://h/a b", None),
    ("http://h/a\\b", None),
    ("ftp://h/a", None),
    ("http://h/a%zz", None),
    ("http://h:8080/a?x=%2F", "http://h:8080/a?x=%2F"),
])
def test_normalise(url, text):
    n = normalise(url)
    assert (n.text() if n else None) == text
