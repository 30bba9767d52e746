"""Write bundles as a FHIR Bulk Data export: one NDJSON file per resource type (Patient.ndjson, Condition.ndjson...).

For trying `trialscreen screen` on Bulk Data without a server that exports: the demo fixtures by default, or any
bundle files and folders (e.g. ../shared/synthea). References to a bundle entry's fullUrl are written as
'Type/id', as a server's export has them (Synthea's urn:uuid references name the resource's own id and stay).

    .venv/bin/python scripts/bundles_to_bulk.py OUT_DIR [BUNDLE_OR_FOLDER ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    sources = [Path(p) for p in argv[1:]] or [ROOT / "fixtures"]
    files = sorted(f for p in sources for f in ([p] if p.is_file() else p.rglob("*.json")))
    out.mkdir(parents=True, exist_ok=True)
    handles: dict[str, object] = {}
    count = patients = 0
    try:
        for path in files:
            bundle = json.loads(path.read_text(encoding="utf-8"))
            if bundle.get("resourceType") != "Bundle":
                continue
            entries = [e for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]
            urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource'].get('id')}"
                    for e in entries if "fullUrl" in e and e["resource"].get("id")}
            renamed = {u: r for u, r in urls.items() if not (u.startswith("urn:uuid:") and u[9:] == r.split("/")[1])}
            for entry in entries:
                res = entry["resource"]
                text = json.dumps(res, separators=(",", ":"))
                for url, ref in renamed.items():
                    text = text.replace(f'"reference":"{url}"', f'"reference":"{ref}"')
                kind = res["resourceType"]
                if kind not in handles:
                    handles[kind] = (out / f"{kind}.ndjson").open("w", encoding="utf-8")
                handles[kind].write(text + "\n")  # type: ignore[attr-defined]
                count += 1
                patients += kind == "Patient"
    finally:
        for h in handles.values():
            h.close()  # type: ignore[attr-defined]
    print(f"{count} resources of {patients} patients from {len(files)} files -> {out} ({len(handles)} NDJSON files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
