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

import re
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from cds_service.cards.detail import blocking, md
from cds_service.cards.steps import key_values, next_steps, open_items, signoffs
from cds_service.cards.text import plain
from cds_service.criteria.result import CriterionResult
from cds_service.criteria.status import INELIGIBLE, NOT_APPLICABLE, POTENTIAL
from cds_service.facts.codes import CodeTables
from cds_service.pipeline import Screening
from cds_service.rules import TrialRules

__all__ = ["build_cards", "with_report", "card_uuid", "TIME_PASSING", "SCREENING_EXTENSION", "OVERRIDE_REASONS",
           "KIND_NAMES",
           "kinds_text", "without_report", "REPORT_UNAVAILABLE"]

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


# The kinds of data as a clinician names them (the FHIR resource types are the keys of ``not_retrieved``).
KIND_NAMES = {
    "Patient": "demographics", "Condition": "diagnoses", "Observation": "results (labs, vitals, ECG, echo)",
    "MedicationRequest": "medication orders", "MedicationStatement": "medication lists",
    "MedicationAdministration": "medications given", "Procedure": "procedures", "Immunization": "immunizations",
    "AllergyIntolerance": "allergies", "DiagnosticReport": "reports", "Medication": "medications",
}
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)%])\.\s+(?=[A-Z])")


def kinds_text(not_retrieved: Mapping[str, str]) -> str:
    """"diagnoses, results (labs, vitals, ECG, echo)": the kinds that could not be retrieved, as a clinician
    names them."""
    return ", ".join(KIND_NAMES.get(k, k) for k in sorted(not_retrieved))


# Resource references and SNOMED semantic tags are for the report; on the card they only lengthen a sentence.
_REF_ALONE = re.compile(r"\s*\((?:[A-Z][A-Za-z]+/[A-Za-z0-9.\-]+)\)")
_REF_LISTED = re.compile(r",\s*[A-Z][A-Za-z]+/[A-Za-z0-9.\-]+(?=[),;])")
_SEMANTIC_TAG = re.compile(r"\s\((?:disorder|finding|procedure|situation)\)")


def _first_sentence(text: str, limit: int = 170) -> str:
    text = _SEMANTIC_TAG.sub("", _REF_LISTED.sub("", _REF_ALONE.sub("", text)))
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0].rstrip(".")
    if len(first) > limit:  # whole clauses ("...; as of 2026-10-01; provisional ..." dropped), not a cut word
        clauses = first.split("; ")
        kept = clauses[0]
        for clause in clauses[1:]:
            if len(kept) + 2 + len(clause) > limit:
                break
            kept += "; " + clause
        while kept.count("(") > kept.count(")"):  # a parenthesis the cut left open: drop it
            kept = kept[:kept.rfind("(")].rstrip(" ,;")
        first = kept
    return _fit(first, limit)


def _incomplete(screening: Screening) -> str | None:
    if not screening.not_retrieved:
        return None
    return (f"**Screening incomplete:** {md(kinds_text(screening.not_retrieved))} could not be retrieved, so the "
            "criteria that rest on them are undecided (the report says why).")


def _blocking_lines(items: list[CriterionResult], rules: TrialRules, tables: CodeTables | None) -> str:
    lines = [f"**Blocking ({len(items)}):**"]
    for c in items:
        until = f" (until **{c.until.isoformat()}**)" if c.until is not None else ""
        # Up to two blockers with their reason; more are named only (the report has every reason).
        why = f": {md(_first_sentence(plain(c.reason, tables)))}" if len(items) <= 2 else ""
        lines.append(f"- **{c.id}** {md(_label(rules, c.id))}{until}{why}")
    return "\n".join(lines)


def _steps_lines(items: list[CriterionResult], rules: TrialRules, title: str) -> str | None:
    if not items:
        return None
    n = len(items)
    lines = [f"**{title} ({n} item{'s' if n != 1 else ''}):**"]
    lines += [f"- {md(step.text)}" for step in next_steps(items, rules)]
    return "\n".join(lines)


def _key_values_line(screening: Screening, tables: CodeTables | None) -> str | None:
    values = key_values(screening.criteria, screening.evaluated_at, tables)
    return "**Key values:** " + " · ".join(md(v) for v in values) if values else None


def _footer(screening: Screening) -> str:
    # The same with or without the report link (the link's label says what the report holds).
    return f"*Screened on {screening.evaluated_at.date().isoformat()} against {len(screening.criteria)} criteria.*"


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


def _referral(screening: Screening, rules: TrialRules, hook_instance: str, counts: str) -> dict[str, Any]:
    """The "Refer to the study team" suggestion: a proposed FHIR R4 ServiceRequest naming the trial."""
    trial = f"{rules.trial_id} ({rules.short_title})"
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"text": f"Referral to the study team of clinical trial {rules.trial_id}"},
        "subject": {"reference": screening.patient},
        "reasonCode": [{"text": f"Possible candidate for clinical trial {trial}"}],
        "note": [{"text": f"Screened by TrialScreen on {screening.evaluated_at.date().isoformat()}: {counts}. "
                          f"Registry: {rules.registry_url}"}],
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


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def build_cards(screening: Screening, *, rules: TrialRules, report_url: str | None, hook_instance: str,
                explain_ineligibility: bool, tables: CodeTables | None = None) -> list[dict[str, Any]]:
    """The cards for one screening (an empty list when there is nothing the clinician needs to see).

    ``tables`` (the code tables) name coded values by their display; without them a coded value is left out.
    """
    criteria = list(screening.criteria)
    blocked = blocking(criteria)
    data_items, attestations = open_items(criteria, rules)
    common = dict(hook_instance=hook_instance, report_url=report_url)
    title = f"{rules.trial_id} ({rules.short_title})"
    footer = _footer(screening)
    incomplete = _incomplete(screening)

    if screening.status == POTENTIAL:
        n = len(data_items)
        items = _count(n, "item") + " to check" if n else "record checks pass"
        if attestations:
            items += ", then investigator sign-off"
        if screening.not_retrieved:
            # Not an unqualified "possible candidate": part of the record could not be read at all.
            summary = (f"Screening for {rules.trial_id} incomplete: {kinds_text(screening.not_retrieved)} not "
                       f"retrieved; no blocker in the rest, {items}")
        else:
            summary = f"Possible candidate for {title}: {items}"
        sign = signoffs(attestations)
        detail = _detail(incomplete, "**Blocking:** nothing recorded rules the patient out.",
                         _steps_lines(data_items, rules, "To check"), f"**Sign-off:** {md(sign)}." if sign else None,
                         _key_values_line(screening, tables), footer)
        counts = _count(n, "item") + " to check"
        if attestations:
            counts += f", {_count(len(attestations), 'investigator sign-off')}"
        card = _card("potential-candidate", summary, detail, screening, rules, **common)
        card["suggestions"] = [_referral(screening, rules, hook_instance, counts)]
        card["selectionBehavior"] = "at-most-one"
        return [card]

    if screening.status == INELIGIBLE and _time_passing_only(blocked):
        last = max(blocked, key=lambda c: c.until or date.min)
        until = (last.until or date.min).isoformat()
        more = f" (+{len(blocked) - 1} more)" if len(blocked) > 1 else ""
        head = f"Not eligible for {rules.trial_id} until {until}: "
        reason = _fit(_label(rules, last.id) + more, SUMMARY_MAX - len(head))
        after = (f"**After {until}:** {_count(len(data_items), 'item')} to check again then (the record's results "
                 "will need to be recent at that date)." if data_items else None)
        detail = _detail(incomplete, _blocking_lines(blocked, rules, tables), after,
                         _key_values_line(screening, tables), footer)
        return [_card("ineligible-until", head + reason, detail, screening, rules, **common)]

    if screening.status == NOT_APPLICABLE and "Condition" in screening.not_retrieved:
        # The diagnoses could not be read, so "no AML recorded" says nothing: whether the trial concerns this
        # patient is unknown. Silence here would look like a negative screen (issue 17), so one card says so;
        # it appears only when the retrieval failed, never for a patient whose diagnoses were read.
        summary = (f"Screening for {rules.trial_id} incomplete: {kinds_text(screening.not_retrieved)} not retrieved, "
                   "so whether the trial applies is unknown")
        detail = _detail(incomplete, "Without the diagnoses the service cannot tell whether the patient has acute "
                         "myeloid leukemia; open the chart again later, or screen from the report.", footer)
        return [_card("incomplete", summary, detail, screening, rules, **common)]
    if not explain_ineligibility:
        return []
    if screening.status == INELIGIBLE:
        first = blocked[0] if blocked else None
        why = _label(rules, first.id) if first else "a criterion is not met"
        more = f" (+{len(blocked) - 1} more)" if len(blocked) > 1 else ""
        # Names what blocks and nothing to order: tests for a patient the trial excludes would be wasted.
        detail = _detail(incomplete, _blocking_lines(blocked, rules, tables) if blocked else None,
                         _key_values_line(screening, tables), footer)
        return [_card("ineligible", f"Not eligible for {rules.trial_id}: {why}{more}", detail, screening, rules,
                      **common)]
    if screening.status == NOT_APPLICABLE:
        detail = _detail(incomplete, "No acute myeloid leukemia diagnosis is recorded, so the trial does not apply.",
                         footer)
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
