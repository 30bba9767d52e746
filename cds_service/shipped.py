"""Where the data the service ships with lives: code tables, demo fixtures, example site tables.

In the source tree they are top-level folders (``fhir_mappings/``, ``fixtures/``, ``examples/site-tables/``),
where reviewers find them. A wheel carries the same folders inside the package, as ``cds_service/data/…``
(pyproject.toml maps them there), so an installed service works from any folder with no ``TRIALSCREEN_*``
variable. The packaged copy wins when present: it exists only in an installed package, never in a checkout.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

__all__ = ["shipped_dir", "FIXTURE_TIME"]

# The demo fixtures' evaluation time: every fixture was written to be screened at this instant.
FIXTURE_TIME = datetime.fromisoformat("2026-10-01T09:00:00+00:00")

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_TREE = _PACKAGE.parent
# name inside the wheel -> path in the source tree
_FOLDERS = {"fhir_mappings": "fhir_mappings", "fixtures": "fixtures", "site_tables": "examples/site-tables"}


def shipped_dir(name: str) -> Path:
    """The folder of shipped data ``name`` (one of ``fhir_mappings``, ``fixtures``, ``site_tables``)."""
    packaged = _PACKAGE / "data" / name
    return packaged if packaged.is_dir() else _SOURCE_TREE / _FOLDERS[name]
