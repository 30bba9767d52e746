"""Write cds_service/gather/checked_fields.json: the element names of every fhir.resources R4B model the checked
reader stands for, so that building its readers imports no model (start-up, issue 14).

Run after upgrading fhir.resources; tests/gather/test_checked.py fails while the file and the installed models
disagree.

    python scripts/build_checked_fields.py
"""

from __future__ import annotations

import json

from cds_service.gather.checked import _FIELDS_FILE, checked_fields_table


def main() -> int:
    _FIELDS_FILE.write_text(json.dumps(checked_fields_table(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {_FIELDS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
