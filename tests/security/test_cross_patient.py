"""One patient's data never reaches another's screening (issue 10, first finding; issue 17, first finding).

Through the real hook endpoint on a real socket (the app under werkzeug's threaded server, evaluation time fixed
at the fixtures' AT), with a real loopback FHIR server (``upstreams.Upstream``) for the FHIR-answer cases:

* the candidate ts01 gets ts10's HBsAg-positive Observation with its subject written in every form FHIR allows
  and many it does not. Forms that resolve to ts01 make ts01 ineligible (the resource is ts01's: the test can
  fail both ways); every other form leaves ts01 a potential candidate, the resource appears nowhere in the
  answer or on the report page, and the screening counts it as set aside. Each case runs in prefetch and in a
  FHIR search answer.
* a Bundle whose first Patient has no id never makes that Patient the one screened;
* an answer (prefetch key or FHIR search) holding only another patient's resources makes its kind not
  retrieved: ts09 (allogeneic transplant 3 months ago) and ts46 (GvHD on ciclosporin) are never turned into
  candidates, their exclusions are unknown (never "None recorded") and the card lists the kind as not retrieved;
  for every kind of data the service asks for.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from upstreams import Upstream, fhir_json, searchset, service_over_http

from cds_service.cards.card import KIND_NAMES
from cds_service.config import Settings, load_knowledge
from cds_service.gather.prefetch import discovery_prefetch
from cds_service.hooks.app import create_app, state
from cds_service.hooks.demo_data import load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import SERVICE_ID

AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
HOOK = f"/cds-services/{SERVICE_ID}"
ME = "ts01-patient"
OTHER = "ts10-patient"
LEAK = "ts10-hbsag-1"
OTHER_SERVER = "https://other.example.org/fhir"


@pytest.fixture(scope="module")
def patients() -> dict[str, Any]:
    return {p.patient_id: p for p in load_fixture_patients()}


@pytest.fixture(scope="module")
def upstream():
    """The FHIR server of the FHIR-answer cases: answers come from ``upstream.answers`` (set per test)."""
    answers: dict[str, Any] = {}

    def route(path: str, headers: dict[str, str]):
        rel = unquote(path.split("/fhir/", 1)[1]) if "/fhir/" in path else ""
        if rel in answers:
            value = answers[rel]
            if value is None:
                return fhir_json(searchset([]) if "?" in rel else {"resourceType": "OperationOutcome",
                                                                    "issue": [{"severity": "error",
                                                                               "code": "not-found"}]},
                                 status=200 if "?" in rel else 404)
            return fhir_json(value)
        return fhir_json({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]},
                         status=404)

    with Upstream(route) as server:
        server.answers = answers  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory, upstream):
    knowledge = load_knowledge(Settings.from_env({}))
    app = create_app({"environ": {}, "knowledge": knowledge, "clock": lambda: AT, "auth_required": False,
                      "explain_ineligibility": True, "fhir_allowlist": (upstream.base,),
                      "state_dir": tmp_path_factory.mktemp("state")})
    templates = discovery_prefetch(state(app).templates)
    with service_over_http(app) as base:
        yield base, templates


def _post(base: str, body: dict) -> dict:
    resp = requests.post(base + HOOK, json={"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                                            "hook": "patient-view", **body}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _screening(answer: dict) -> dict:
    assert len(answer["cards"]) == 1, answer
    return answer["cards"][0]["extension"]["org.trialscreen.screening"]


def _report(answer: dict) -> str:
    links = [link["url"] for link in answer["cards"][0].get("links", []) if "/report/" in link["url"]]
    assert links, answer["cards"][0].get("links")
    resp = requests.get(links[0], timeout=30)
    assert resp.status_code == 200
    return resp.text


def _obs_key(templates: dict[str, str]) -> str:
    return next(k for k, t in templates.items() if t.startswith("Observation?"))


def _fhir_answers(prefetch: dict[str, Any], templates: dict[str, str], pid: str) -> dict[str, Any]:
    """What the upstream answers for each query of the service: the prefetch values keyed by rendered query."""
    return {templates[k].replace("{{context.patientId}}", pid): v for k, v in prefetch.items()}


# --- the reference forms -----------------------------------------------------------------------------------
ME_PATIENT = "urn:uuid:6f1c1d3e-0000-4000-8000-0000000000a1"
OTHER_PATIENT = "urn:uuid:6f1c1d3e-0000-4000-8000-0000000000b2"
NOID_PATIENT = "urn:uuid:6f1c1d3e-0000-4000-8000-0000000000c3"

# (case id, subject (None: no subject), resolves to ts01?, extra entries of the same answer as (fullUrl, resource),
#  the injected entry's own fullUrl). "{base}" is the FHIR server's base in the FHIR cases, the EHR's in prefetch.
CASES: list[tuple[str, Any, bool, str | None]] = [
    ("relative", {"reference": f"Patient/{ME}"}, True, None),
    ("versioned", {"reference": f"Patient/{ME}/_history/3"}, True, None),
    ("absolute-same-base", {"reference": f"{{base}}/Patient/{ME}"}, True, None),
    ("absolute-same-base-versioned", {"reference": f"{{base}}/Patient/{ME}/_history/1"}, True, None),
    ("urn-uuid-of-me", {"reference": ME_PATIENT}, True, None),
    ("absolute-normalised", {"reference": f"{{variant}}/Patient/{ME}"}, True, None),
    ("relative-with-display", {"reference": f"Patient/{ME}", "display": "someone"}, True, None),
    ("no-subject", None, False, None),
    ("empty-subject", {}, False, None),
    ("display-only", {"display": "Patient ts01"}, False, None),
    ("identifier-only", {"identifier": {"system": "urn:mrn", "value": "MRN-10"}}, False, None),
    ("identifier-of-me-only", {"identifier": {"system": "urn:mrn", "value": ME}}, False, None),
    ("lower-case-type-other", {"reference": f"patient/{OTHER}"}, False, None),
    ("lower-case-type-me", {"reference": f"patient/{ME}"}, False, None),
    ("group", {"reference": "Group/cohort-1"}, False, None),
    ("group-with-my-id", {"reference": f"Group/{ME}"}, False, None),
    ("other-patient", {"reference": f"Patient/{OTHER}"}, False, None),
    ("other-patient-versioned", {"reference": f"Patient/{OTHER}/_history/2"}, False, None),
    ("urn-uuid-unresolvable", {"reference": "urn:uuid:0b8c6f7e-1111-4111-8111-111111111111"}, False, None),
    ("urn-uuid-of-other", {"reference": OTHER_PATIENT}, False, None),
    ("urn-uuid-of-patient-without-id", {"reference": NOID_PATIENT}, False, None),
    ("other-server-same-id", {"reference": f"{OTHER_SERVER}/Patient/{ME}"}, False, None),
    ("other-server-same-id-versioned", {"reference": f"{OTHER_SERVER}/Patient/{ME}/_history/1"}, False, None),
    ("fragment-trick", {"reference": f"Patient/{ME}#Patient/{OTHER}"}, False, None),
    ("fragment-trick-reversed", {"reference": f"Patient/{OTHER}#Patient/{ME}"}, False, None),
    ("contained", {"reference": "#p1"}, False, None),
    ("trailing-segment", {"reference": f"Patient/{ME}/extra"}, False, None),
    ("query", {"reference": f"Patient/{ME}?x=1"}, False, None),
    ("leading-space", {"reference": f" Patient/{ME}"}, False, None),
    ("trailing-newline", {"reference": f"Patient/{ME}\n"}, False, None),
    ("id-case", {"reference": f"Patient/{ME.upper()}"}, False, None),
    ("empty-history", {"reference": f"Patient/{ME}/_history/"}, False, None),
    ("empty-id", {"reference": "Patient/"}, False, None),
    ("not-a-string", {"reference": 42}, False, None),
    ("search-url", {"reference": f"Patient?identifier={ME}"}, False, None),
    ("other-port-same-id", {"reference": f"http://127.0.0.1:1/fhir/Patient/{ME}"}, False, None),
]


def _injected(patients, subject: Any, case: str) -> dict:
    res = copy.deepcopy(next(r for r in patients[OTHER].resources if r.get("id") == LEAK))
    # newer than ts01's own negative HBsAg, so that the test sees it whenever it counts as ts01's
    res["effectiveDateTime"] = res["issued"] = "2026-09-20T08:00:00Z"
    res.pop("subject", None)
    if subject is not None:
        res["subject"] = subject
    if case == "contained":
        res["contained"] = [{"resourceType": "Patient", "id": "p1"}]
    return res


def _with_base(value: Any, base: str) -> Any:
    """``{base}``: the FHIR server's base; ``{variant}``: the same base written differently (scheme case, a '.'
    segment), equal after RFC 3986 normalisation."""
    if isinstance(value, dict):
        return {k: _with_base(v, base) for k, v in value.items()}
    if isinstance(value, str):
        scheme, rest = base.split("://", 1)
        return value.replace("{base}", base).replace("{variant}", f"{scheme.upper()}://{rest}/.")
    return value


def _observation_answer(patients, prefetch: dict, key: str, injected: dict, own_url: str | None) -> dict:
    """The Observation answer: ts01's own Observations, the injected one, and Patient entries for the urn:uuids."""
    own = [e["resource"] for e in (prefetch[key] or {}).get("entry", [])]
    me = copy.deepcopy(patients[ME].patient)
    other = copy.deepcopy(patients[OTHER].patient)
    noid = {k: v for k, v in copy.deepcopy(patients[OTHER].patient).items() if k != "id"}
    resources = [*own, injected, me, other, noid]
    urls: list[str | None] = [None] * len(own) + [own_url, ME_PATIENT, OTHER_PATIENT, NOID_PATIENT]
    bundle = searchset(resources, full_urls=urls)
    for entry in bundle["entry"][len(own) + 1:]:
        entry["search"] = {"mode": "include"}
    return bundle


def _check(answer: dict, resolves: bool) -> None:
    screening = _screening(answer)
    # The answer also carries ts10's Patient and an id-less Patient (for the urn:uuid cases): always set aside.
    if resolves:
        assert screening["status"] == "ineligible", screening["status"]
        assert any(LEAK in str(c.get("evidence")) for c in screening["criteria"])
        assert screening["set_aside"] == 2
    else:
        assert screening["status"] == "potential-candidate", screening["status"]
        assert LEAK not in str(answer), "another patient's resource is on this patient's card"
        assert OTHER not in str(answer)
        assert screening["set_aside"] == 3
        report = _report(answer)
        assert LEAK not in report and OTHER not in report


@pytest.mark.parametrize("case,subject,resolves,own_url", CASES, ids=[c[0] for c in CASES])
def test_reference_forms_in_prefetch(service, patients, case, subject, resolves, own_url):
    base, templates = service
    ehr = "https://ehr.example.org/fhir"
    prefetch = prefetch_for(patients[ME], templates)
    key = _obs_key(templates)
    injected = _injected(patients, _with_base(subject, ehr), case)
    prefetch[key] = _observation_answer(patients, prefetch, key, injected, _with_base(own_url, ehr))
    # fhirServer names the EHR's base (not on the allowlist: nothing is fetched, everything is prefetched)
    _check(_post(base, {"context": {"patientId": ME}, "prefetch": prefetch, "fhirServer": ehr}), resolves)


@pytest.mark.parametrize("case,subject,resolves,own_url", CASES, ids=[c[0] for c in CASES])
def test_reference_forms_in_fhir_answers(service, upstream, patients, case, subject, resolves, own_url):
    base, templates = service
    prefetch = prefetch_for(patients[ME], templates)
    key = _obs_key(templates)
    injected = _injected(patients, _with_base(subject, upstream.base), case)
    prefetch[key] = _observation_answer(patients, prefetch, key, injected, _with_base(own_url, upstream.base))
    upstream.answers.clear()
    upstream.answers.update(_fhir_answers(prefetch, templates, ME))
    answer = _post(base, {"context": {"patientId": ME}, "prefetch": {"patient": prefetch["patient"]},
                          "fhirServer": upstream.base,
                          "fhirAuthorization": {"access_token": "t", "token_type": "Bearer", "expires_in": 60,
                                                "scope": "patient/*.read", "subject": "x"}})
    _check(answer, resolves)


# --- which Patient is screened -----------------------------------------------------------------------------
def test_a_bundle_whose_first_patient_has_no_id_screens_the_patient_in_context(service, patients):
    base, templates = service
    prefetch = prefetch_for(patients[ME], templates)
    impostor = {k: v for k, v in copy.deepcopy(patients[OTHER].patient).items() if k != "id"}
    impostor["birthDate"] = "2015-01-01"  # an 11-year-old: screened, this Patient would be ineligible by age
    prefetch["patient"] = searchset([impostor, prefetch["patient"]])
    screening = _screening(_post(base, {"context": {"patientId": ME}, "prefetch": prefetch}))
    assert screening["patient"] == f"Patient/{ME}"
    assert screening["status"] == "potential-candidate"
    assert screening["set_aside"] >= 1


@pytest.mark.parametrize("who", ["no-id", "other-id"])
def test_a_patient_answer_without_the_patient_in_context_is_412_never_a_screening(service, patients, who):
    """Another Patient (or one without an id) in the patient key is not this patient: nothing is screened, and
    the hook says so with 412 (issue 13), naming no patient data."""
    base, templates = service
    prefetch = prefetch_for(patients[ME], templates)
    other = copy.deepcopy(patients[OTHER].patient)
    if who == "no-id":
        other.pop("id")
    prefetch["patient"] = other
    resp = requests.post(base + HOOK, json={"hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                                            "hook": "patient-view", "context": {"patientId": ME},
                                            "prefetch": prefetch}, timeout=60)
    assert resp.status_code == 412, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert OTHER not in resp.text and "cards" not in resp.json()


# --- an answer about another patient only is "not retrieved" (issue 17) ------------------------------------
def _others_resources(patients, kind: str, not_of: str) -> list[dict]:
    """Another fixture patient's resources of one kind (their own references unchanged)."""
    for pid, p in patients.items():
        if pid == not_of:
            continue
        found = [copy.deepcopy(r) for r in p.resources if r.get("resourceType") == kind]
        if found:
            return found[:3]
    # No fixture has one (MedicationStatement): another patient's, written here.
    return [{"resourceType": kind, "id": f"{OTHER}-{kind.lower()}-1", "status": "active",
             "subject": {"reference": f"Patient/{OTHER}"},
             "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                       "code": "3008", "display": "cyclosporine"}]},
             "effectiveDateTime": "2026-09-01"}]


def _replace(prefetch: dict, templates: dict[str, str], kind: str, resources: list[dict]) -> list[str]:
    keys = [k for k, t in templates.items() if t.startswith(f"{kind}?")]
    for k in keys:
        prefetch[k] = searchset(resources)
    return keys


@pytest.mark.parametrize("pid,kinds,exclusion", [
    ("ts09-patient", ("Procedure",), "E5"),
    ("ts46-patient", ("Condition",), None),
    ("ts46-patient", ("MedicationRequest",), None),
    ("ts46-patient", ("Condition", "MedicationRequest", "MedicationStatement", "MedicationAdministration"), None),
])
@pytest.mark.parametrize("where", ["prefetch", "fhir"])
def test_wrong_patient_only_answer_is_not_retrieved(service, upstream, patients, pid, kinds, exclusion, where):
    base, templates = service
    baseline = _screening(_post(base, {"context": {"patientId": pid},
                                       "prefetch": prefetch_for(patients[pid], templates)}))
    assert baseline["status"] == "ineligible"
    decisive = [c["id"] for c in baseline["criteria"] if c["kind"] == "exclusion" and c["result"] == "met"]
    assert decisive and (exclusion is None or exclusion in decisive)
    prefetch = prefetch_for(patients[pid], templates)
    for kind in kinds:
        _replace(prefetch, templates, kind, _others_resources(patients, kind, pid))
    if where == "prefetch":
        body = {"context": {"patientId": pid}, "prefetch": prefetch}
    else:
        upstream.answers.clear()
        upstream.answers.update(_fhir_answers(prefetch, templates, pid))
        body = {"context": {"patientId": pid}, "prefetch": {"patient": prefetch["patient"]},
                "fhirServer": upstream.base}
    answer = _post(base, body)
    screening = _screening(answer)
    # The kind is carried as not retrieved and nothing it decided reads "not met"; the card's summary says the
    # screening is incomplete instead of "Possible candidate" (issue 17: no silent false candidate card).
    for kind in kinds:
        assert kind in screening["not_retrieved"], screening.get("not_retrieved")
        assert "other patients" in screening["not_retrieved"][kind]
    by_id = {c["id"]: c for c in screening["criteria"]}
    for cid in decisive:
        # an exclusion the missing data decided is unknown now, never "not met" / "None recorded"
        assert by_id[cid]["result"] in ("met", "unknown"), by_id[cid]
        if by_id[cid]["result"] == "unknown":
            assert "None recorded" not in str(by_id[cid].get("reason"))
    if exclusion:
        assert by_id[exclusion]["result"] == "unknown", by_id[exclusion]
    assert any(by_id[cid]["result"] == "unknown" for cid in decisive)
    summary, detail = answer["cards"][0]["summary"], answer["cards"][0]["detail"]
    assert "incomplete" in summary and "Possible candidate" not in summary, summary
    assert "does not apply" not in summary, summary
    assert "Screening incomplete" in detail
    assert all(KIND_NAMES[kind] in detail for kind in kinds), detail
    for kind in kinds:
        for r in _others_resources(patients, kind, pid):
            assert f"{kind}/{r['id']}" not in str(answer)


KINDS = ["Condition", "Procedure", "Observation", "MedicationRequest", "MedicationStatement",
         "MedicationAdministration", "Immunization", "AllergyIntolerance"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["prefetch", "fhir"])
def test_every_kind_answered_with_another_patients_data_only_is_not_retrieved(service, upstream, patients, kind,
                                                                             where):
    base, templates = service
    prefetch = prefetch_for(patients[ME], templates)
    theirs = _others_resources(patients, kind, ME)
    _replace(prefetch, templates, kind, theirs)
    if where == "prefetch":
        body = {"context": {"patientId": ME}, "prefetch": prefetch}
    else:
        upstream.answers.clear()
        upstream.answers.update(_fhir_answers(prefetch, templates, ME))
        body = {"context": {"patientId": ME}, "prefetch": {"patient": prefetch["patient"]},
                "fhirServer": upstream.base}
    answer = _post(base, body)
    screening = _screening(answer)
    assert kind in screening["not_retrieved"]
    assert screening["set_aside"] >= len(theirs)
    assert KIND_NAMES[kind] in answer["cards"][0]["detail"]
    for r in theirs:
        assert f"{kind}/{r['id']}" not in str(answer)


@pytest.mark.parametrize("where", ["prefetch", "fhir"])
def test_a_mixed_answer_keeps_the_patients_own_and_stays_retrieved(service, upstream, patients, where):
    base, templates = service
    prefetch = prefetch_for(patients["ts09-patient"], templates)
    keys = [k for k, t in templates.items() if t.startswith("Procedure?")]
    own = [e["resource"] for k in keys for e in (prefetch[k] or {}).get("entry", [])]
    _replace(prefetch, templates, "Procedure", own + _others_resources(patients, "Procedure", "ts09-patient"))
    if where == "prefetch":
        body = {"context": {"patientId": "ts09-patient"}, "prefetch": prefetch}
    else:
        upstream.answers.clear()
        upstream.answers.update(_fhir_answers(prefetch, templates, "ts09-patient"))
        body = {"context": {"patientId": "ts09-patient"}, "prefetch": {"patient": prefetch["patient"]},
                "fhirServer": upstream.base}
    screening = _screening(_post(base, body))
    assert "Procedure" not in screening.get("not_retrieved", {})
    assert {c["id"]: c["result"] for c in screening["criteria"]}["E5"] == "met"
    assert screening["set_aside"] >= 1
