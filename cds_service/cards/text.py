"""Text as a person reads it, shared by the card, the report page and the text checklist.

The engine's reasons and evidence carry machine forms: ISO date-times (``2026-09-27T07:30:00+00:00``) and coded
values (``http://loinc.org|LA6577-6``). Wherever a person reads them they are shown as a day (``2026-09-27``) and as
the code's display from the code tables ("Negative"). No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from cds_service.facts.codes import CodeTables

__all__ = ["ISO_DATETIME", "RAW_CODE", "plain", "day", "code_display", "value_text", "age_in_years"]

# A date-time with a time part: "2026-09-27T07:30:00+00:00", "2026-09-27T07:30Z", "2026-09-27T07:30:00.5".
ISO_DATETIME = re.compile(r"\b(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
# A period as the engine writes it: "2026-09-07..2026-09-17".
_PERIOD = re.compile(r"(\d{4}-\d{2}(?:-\d{2})?)\.\.(\d{4}-\d{2}(?:-\d{2})?)")
# A coded value as the engine writes it: "<system URI>|<code>".
RAW_CODE = re.compile(r"(?:https?://|urn:)[^\s|()]+\|([A-Za-z0-9][A-Za-z0-9.\-_]*)")


def code_display(system_code: str, tables: CodeTables | None) -> str | None:
    """The display the code tables give a ``system|code`` value; None when no table knows it."""
    system, _, code = system_code.partition("|")
    if tables is None or not code:
        return None
    for vs_id in sorted(tables.sets_for(system, code)):
        concept = tables[vs_id].lookup(tables.normalise_system(system), code.strip())
        if concept is not None and concept.display:
            return concept.display
    return None


def plain(text: Any, tables: CodeTables | None = None) -> str:
    """``text`` with date-times shown as their day and coded values as their display (or "a coded value")."""
    out = _PERIOD.sub(r"\1 to \2", ISO_DATETIME.sub(r"\1", str(text)))
    return RAW_CODE.sub(lambda m: code_display(m.group(0), tables) or "a coded value", out)


def day(value: date | datetime | str | None) -> str:
    """A date or date-time as its day; partial dates ("2025-03") as given; "" for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return plain(value)


def value_text(value: Any, unit: Any = None, note: Any = None, tables: CodeTables | None = None) -> str:
    """A value with its unit; a coded value as its display, else the evidence's note, else "" (never the raw
    code); booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, str) and RAW_CODE.fullmatch(value.strip()):
        return code_display(value.strip(), tables) or (plain(note) if note else "")
    else:
        text = plain(value, tables)
    return f"{text} {unit}" if unit not in (None, "") else text


def age_in_years(birth: Any, at: date | datetime) -> int | None:
    """Whole years from a full birth date (``YYYY-MM-DD``) to ``at``; None for a partial or unreadable date."""
    text = str(birth or "")[:10]
    try:
        born = date.fromisoformat(text)
    except ValueError:
        return None
    on = at.date() if isinstance(at, datetime) else at
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def evidence_get(e: Any, key: str) -> Any:
    """A field of an Evidence object or of its JSON (the report works from stored JSON)."""
    if isinstance(e, Mapping):
        return e.get(key)
    return getattr(e, key, None)
