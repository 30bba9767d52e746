"""Warm the service up before it answers anyone: one patient-view screening of a shipped demo patient,
in-process, with nothing stored, logged or counted.

A new process's first hook call otherwise pays for what is built on first use: the checked readers' node
classes and their fhir.resources models, the UCUM unit registry, regular expressions, the card templates. That
made a new gunicorn worker's first call cost ~20x its tenth. With ``trialscreen serve`` the app is built once in
gunicorn's master (``preload_app``), so this runs once and every worker forks warm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from cds_service.cards.card import build_cards
from cds_service.gather import compiled
from cds_service.gather.checked import prepare_readers
from cds_service.gather.prefetch import discovery_prefetch, gather
from cds_service.gather.record import relevant_to
from cds_service.hooks.demo_data import FIXTURE_TIME, load_fixture_patients, prefetch_for
from cds_service.hooks.discovery import HOOK
from cds_service.hooks.json_body import parse_json_body
from cds_service.hooks.schemas import validate_request
from cds_service.pipeline import screen

if TYPE_CHECKING:
    from cds_service.hooks.app import ServiceState
    from cds_service.store import Store

__all__ = ["warm_up"]

# A candidate with labs, ECG, medications and history: it reaches most of the code a real call reaches.
WARM_UP_PATIENT = "ts01-patient"


def warm_up(svc: ServiceState, store: Store | None = None) -> None:
    """Screen the shipped demo patient the way a hook call with full prefetch would, and build its cards; with
    a store, purge expired reports (what every report write does first: it compiles the statements)."""
    prepare_readers()
    compiled.prepare()  # the hook's lazy Observations are read by it (the warm-up below reads plain dicts)
    if store is not None:
        store.reports.purge_expired()
    patients = [p for p in load_fixture_patients() if p.patient_id == WARM_UP_PATIENT]
    if not patients:  # the shipped fixtures always hold it; a trimmed install still starts, only colder
        return
    (patient,) = patients
    prefetch = prefetch_for(patient, discovery_prefetch(svc.templates))
    body = {"hook": HOOK, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/warm-up", "patientId": patient.patient_id}, "prefetch": prefetch}
    validate_request(parse_json_body(orjson.dumps(body)))  # the request schema and both JSON parsers
    keep = relevant_to(svc.knowledge.tables, at=FIXTURE_TIME, rules=svc.knowledge.rules)
    gathered = gather(patient.patient_id, prefetch, svc.templates, None, request_id="warm-up", keep=keep)
    if gathered.record is None:
        return
    screening = screen(gathered.record, FIXTURE_TIME, svc.knowledge)
    build_cards(screening, report_url=None, rules=svc.knowledge.rules, hook_instance="warm-up",
                tables=svc.knowledge.tables,
                explain_ineligibility=True)
