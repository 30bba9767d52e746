"""Exclusion criteria about prior and recent treatments: E1, E2a-E2e, E4, E5, E15, E16.

Each function's docstring quotes the protocol sentence it implements. This module does no I/O.
"""

from __future__ import annotations

from cds_service.criteria.common import IMMUNIZATION, event_in_window
from cds_service.criteria.registry import Verdict, criterion, unknown
from cds_service.criteria.result import Result
from cds_service.facts.index import Facts

__all__: list[str] = []


@criterion("E15")
def live_vaccine_within_4_weeks(facts: Facts) -> Verdict:
    """"Received live attenuated vaccine within 4 weeks prior to screening."

    Completed Immunizations whose vaccine code is a live attenuated vaccine (CVX / ATC table ``live-vaccines``)
    dated in ``(screening - 28 days, screening]``. A vaccine of ambiguous type ("zoster, unspecified": live or
    recombinant) in the window makes the result UNKNOWN rather than "none".
    """
    days = facts.rules.windows["live_vaccine_days"]
    window_text = f"the {days} days before screening"
    verdict = event_in_window(
        facts, facts.immunizations("live-vaccines"), what="live attenuated vaccine",
        kinds=IMMUNIZATION, value_sets=("live-vaccines",), days=days, window_text=window_text,
    )
    if verdict.result is not Result.NOT_MET:
        return verdict
    ambiguous = event_in_window(
        facts, facts.immunizations("vaccines-ambiguous"), what="vaccine of unspecified type",
        kinds=IMMUNIZATION, value_sets=("vaccines-ambiguous",), days=days, window_text=window_text,
    )
    if ambiguous.result is Result.MET:
        return unknown(ambiguous.reason + " Confirm whether it was a live vaccine.", *ambiguous.evidence)
    return verdict
