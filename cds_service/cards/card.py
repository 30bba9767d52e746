"""CDS Hooks 2.0.1 cards from a screening: what the clinician sees when the chart opens.

* ``potential-candidate``: one ``info`` card, "Possible candidate ...: N items to confirm", with the
  Markdown checklist, a "Refer to the study team" suggestion (a FHIR R4 ``ServiceRequest``, intent
  ``proposal``) and links to the registry page and the screening report.
* ``ineligible`` only through windows that pass with time (a washout, "within N weeks"): one ``info`` card
  "Not eligible for NCT06880354 until <date>: <reason>".
* any other ``ineligible``, and ``not-applicable``: no card, unless ``explain_ineligibility`` is on.

Every card carries the screening JSON under ``extension["org.trialscreen.screening"]``. Optional fields
are left out rather than sent null or empty (the spec's rule, checked by tests/hooks/test_conformance.py).
No I/O: this module must not import flask or requests.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from cds_service.cards.detail import (
    blocking,
    blocking_section,
    confirm_section,
    key_values_section,
    met,
    met_section,
    not_retrieved_section,
    split_open,
    unknowns,
)
from cds_service.criteria.result import CriterionResult
from cds_service.criteria.status import INELIGIBLE, NOT_APPLICABLE, POTENTIAL
from cds_service.pipeline import Screening
from cds_service.rules import TrialRules

__all__ = ["build_cards", "with_report", "card_uuid", "TIME_PASSING", "SCREENING_EXTENSION", "OVERRIDE_REASONS"]

SCREENING_EXTENSION = "org.trialscreen.screening"
# Exclusions whose window passes with time (their MET result carries ``until``).
TIME_PASSING = frozenset({"E2a", "E2c", "E2d", "E2e", "E5", "E9", "E10b", "E15", "E16"})
SUMMARY_MAX = 139  # the spec: "<140 characters"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trialscreen:cards")
_OVERRIDE_SYSTEM = "urn:trialscreen:override-reason"
OVERRIDE_REASONS: tuple[dict[str, str], ...] = (
    {"code": "patient-declined", "system": _OVERRIDE_SYSTEM, "display": "Patient declined"},
    {"code": "already-referred", "system": _OVERRIDE_SYSTEM, "display": "Already referred"},
    {"code": "not-a-candidate", "system": _OVERRIDE_SYSTEM, "display": "Not a candidate in my judgement"},
)
_TOPIC = {"system": "urn:trialscreen:card-topic", "code": "trial-screening", "display": "Clinical trial screening"}


def card_uuid(hook_instance: str, kind: str) -> str:
    """A card id that is the same for the same hook call and card kind (so retries do not duplicate cards)."""
    return str(uuid.uuid5(_NAMESPACE, f"{hook_instance}|{kind}"))


def _fit(text: str, limit: int = SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _source(rules: TrialRules) -> dict[str, Any]:
    return {"label": f"TrialScreen: {rules.trial_id} eligibility screening", "url": rules.registry_url,
            "topic": dict(_TOPIC)}


def _links(rules: TrialRules, report_url: str | None) -> list[dict[str, Any]]:
    links = [{"label": f"{rules.trial_id} on ClinicalTrials.gov", "url": rules.registry_url, "type": "absolute"}]
    if report_url:
        links.append(_links_report(report_url))
    return links


def _detail(*sections: str | None) -> str:
    return "\n\n".join(s for s in sections if s)


def _card(kind: str, summary: str, detail: str, screening: Screening, rules: TrialRules, *,
          hook_instance: str, report_url: str | None) -> dict[str, Any]:
    return {
        "uuid": card_uuid(hook_instance, kind),
        "summary": _fit(summary),
        "detail": detail,
        "indicator": "info",
        "source": _source(rules),
        "overrideReasons": [dict(r) for r in OVERRIDE_REASONS],
        "links": _links(rules, report_url),
        "extension": {SCREENING_EXTENSION: screening.to_json()},
    }


def _referral(screening: Screening, rules: TrialRules, hook_instance: str, to_confirm: int) -> dict[str, Any]:
    """The "Refer to the study team" suggestion: a proposed FHIR R4 ServiceRequest naming the trial."""
    trial = f"{rules.trial_id} ({rules.short_title})"
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"text": f"Referral to the study team of clinical trial {rules.trial_id}"},
        "subject": {"reference": screening.patient},
        "reasonCode": [{"text": f"Possible candidate for clinical trial {trial}"}],
        "note": [{"text": f"Screened by TrialScreen on {screening.evaluated_at.date().isoformat()}: "
                          f"{to_confirm} item(s) still to confirm. Registry: {rules.registry_url}"}],
    }
    return {
        "label": "Refer to the study team",
        "uuid": card_uuid(hook_instance, "suggestion-refer"),
        "actions": [{"type": "create", "description": f"Propose a referral to the {rules.trial_id} study team",
                     "resource": resource}],
    }


def _time_passing_only(items: list[CriterionResult]) -> bool:
    return bool(items) and all(c.kind == "exclusion" and c.id in TIME_PASSING and c.until is not None
                               for c in items)


def _label(rules: TrialRules, criterion_id: str) -> str:
    try:
        return rules.criterion(criterion_id).label
    except KeyError:
        return criterion_id


def build_cards(screening: Screening, *, rules: TrialRules, report_url: str | None, hook_instance: str,
                explain_ineligibility: bool) -> list[dict[str, Any]]:
    """The cards for one screening (an empty list when there is nothing the clinician needs to see)."""
    criteria = list(screening.criteria)
    blocked, open_items, fine = blocking(criteria), unknowns(criteria), met(criteria)
    missing = not_retrieved_section(dict(screening.not_retrieved))
    common = dict(hook_instance=hook_instance, report_url=report_url)
    title = f"{rules.trial_id} ({rules.short_title})"
    screened = (f"Screened for **{rules.trial_id}**, {rules.title}, on {screening.evaluated_at.date().isoformat()} "
                f"against {len(criteria)} criteria.")

    if screening.status == POTENTIAL:
        data_items, attestations = split_open(open_items, rules)
        n = len(data_items)
        items = f"{n} item{'s' if n != 1 else ''} to check" if n else "record checks pass"
        if attestations:
            items += ", then investigator sign-off"
        detail = _detail(screened, blocking_section([], rules), confirm_section(open_items, rules),
                         key_values_section(criteria), missing, met_section(fine))
        card = _card("potential-candidate", f"Possible candidate for {title}: {items}", detail, screening, rules,
                     **common)
        card["suggestions"] = [_referral(screening, rules, hook_instance, len(open_items))]
        card["selectionBehavior"] = "at-most-one"
        return [card]

    if screening.status == INELIGIBLE and _time_passing_only(blocked):
        last = max(blocked, key=lambda c: c.until or date.min)
        until = (last.until or date.min).isoformat()
        more = f" (+{len(blocked) - 1} more)" if len(blocked) > 1 else ""
        head = f"Not eligible for {rules.trial_id} until {until}: "
        reason = _fit(_label(rules, last.id) + more, SUMMARY_MAX - len(head))
        detail = _detail(screened, blocking_section(blocked, rules, title="Blocking until the window passes"),
                         confirm_section(open_items, rules, title="Still to confirm after that date"),
                         key_values_section(criteria), missing, met_section(fine))
        return [_card("ineligible-until", head + reason, detail, screening, rules, **common)]

    if not explain_ineligibility:
        return []
    if screening.status == INELIGIBLE:
        first = blocked[0] if blocked else None
        why = _label(rules, first.id) if first else "a criterion is not met"
        more = f" (+{len(blocked) - 1} more)" if len(blocked) > 1 else ""
        detail = _detail(screened, blocking_section(blocked, rules), confirm_section(open_items, rules),
                         key_values_section(criteria), missing)
        return [_card("ineligible", f"Not eligible for {rules.trial_id}: {why}{more}", detail, screening, rules,
                      **common)]
    if screening.status == NOT_APPLICABLE:
        detail = _detail(screened, "No acute myeloid leukemia diagnosis is recorded, so the trial does not apply.",
                         missing)
        return [_card("not-applicable", f"{title} does not apply: no AML diagnosis recorded", detail, screening,
                      rules, **common)]
    return []


def with_report(cards: list[dict[str, Any]], report_url: str) -> list[dict[str, Any]]:
    """``cards`` (built with ``report_url=None``) as ``build_cards`` would build them with ``report_url``: the
    report link after the registry's. Lets the hook build its cards once, before it knows whether a report can
    be stored, instead of building them again with the link (issue 15)."""
    link = _links_report(report_url)
    return [{**card, "links": [*card["links"], dict(link)]} for card in cards]


def _links_report(report_url: str) -> dict[str, Any]:
    return {"label": "Full screening report (all criteria, evidence and dates)", "url": report_url,
            "type": "absolute"}


REPORT_UNAVAILABLE = ("The full screening report (every criterion with its evidence) is unavailable right now, so "
                      "this card has no link to it; the screening above is unaffected.")


def without_report(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``cards`` with a closing sentence saying the report could not be stored (they carry no report link)."""
    return [{**card, "detail": f"{card['detail']}\n\n*{REPORT_UNAVAILABLE}*"} for card in cards]
