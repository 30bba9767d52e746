"""Regenerate fhir_mappings/medications/{ingredients,products}.json from public, citable sources.

Sources:
- the VSAC value-set expansions published with the eCQM content in the public repository
  ``cqframework/ecqm-content-qicore-2024`` (``input/vocabulary/valueset/external/*.json``): every RxNorm member
  (SCD and GPCK; the expansions hold no branded drugs) becomes a product, its ingredients and strengths parsed
  from the RxNorm normalised name ("dexamethasone 4 MG Oral Tablet", "2 ML fludarabine phosphate 25 MG/ML
  Injection", "{27 (dexamethasone 1.5 MG Oral Tablet) } Pack");
- ``fhir_mappings/medications/reviewed-additions.json``: hand-reviewed ingredient classes, ATC codes, brands,
  synonyms, half-lives and prednisone factors (each with its source), and any hand-added product (with a note).

Usage (the repository is read with git, no work tree needed)::

    python scripts/build_medication_tables.py --ecqm-repo /path/to/ecqm-content-qicore-2024[.git]

The output is deterministic (sorted), so a rebuild from the same commit gives the same files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.facts.drug_names import base_ingredient, parse_rxnorm_name  # noqa: E402

OUT = ROOT / "fhir_mappings" / "medications"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VS_DIR = "input/vocabulary/valueset/external"
ECQM_REPO = "cqframework/ecqm-content-qicore-2024"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def read_ecqm(repo: Path) -> tuple[str, dict[str, tuple[str, list[str]]]]:
    """(commit, {rxcui: (display, [value-set name@version, ...])}) for every RxNorm member of every expansion."""
    commit = _git(repo, "rev-parse", "HEAD").strip()
    names = [n for n in _git(repo, "ls-tree", "--name-only", f"HEAD:{VS_DIR}").split() if n.endswith(".json")]
    members: dict[str, tuple[str, list[str]]] = {}
    for name in sorted(names):
        vs = json.loads(_git(repo, "show", f"HEAD:{VS_DIR}/{name}"))
        label = f"{vs.get('name') or vs.get('id')}|{vs.get('version', '')}"
        for c in vs.get("expansion", {}).get("contains", []):
            if c.get("system") != RXNORM or not c.get("display"):
                continue
            display, sets = members.setdefault(c["code"], (c["display"], []))
            if label not in sets:
                sets.append(label)
    return commit, members


def build(repo: Path) -> tuple[dict, dict]:
    additions = json.loads((OUT / "reviewed-additions.json").read_text(encoding="utf-8"))
    commit, members = read_ecqm(repo)
    curated = {i["name"].lower(): i for i in additions["ingredients"]}
    synonyms = {s.lower(): i["name"].lower() for i in additions["ingredients"] for s in i.get("synonyms", ())}
    products: dict[str, dict] = {}
    ingredient_names: set[str] = set()
    skipped = 0
    for code, (display, sets) in sorted(members.items(), key=lambda kv: int(kv[0])):
        parsed = parse_rxnorm_name(display)
        if parsed is None or not parsed.ingredients:
            skipped += 1
            continue
        ings = []
        for part in parsed.ingredients:
            name = base_ingredient(part.name, curated)
            name = synonyms.get(name, name)
            ingredient_names.add(name)
            entry = {"name": name}
            if part.name.lower() != name:
                entry["as"] = part.name
            if part.strength is not None:
                entry["strength"] = part.strength
                entry["unit"] = part.unit
            ings.append(entry)
        products[code] = {
            "code": code,
            "display": display,
            "tty": parsed.tty,
            "form": parsed.form,
            "ingredients": ings,
            # The repository and commit are in the file's meta; here the value sets (name|version) that list it.
            "source": f"VSAC {', '.join(sorted(sets))}",
        }
    for p in additions.get("products", ()):
        products[p["code"]] = {k: v for k, v in p.items()}
        for i in p["ingredients"]:
            ingredient_names.add(i["name"].lower())
    ingredients = []
    for name in sorted(ingredient_names | set(curated)):
        entry = dict(curated.get(name, {"name": name, "atc": [], "classes": []}))
        if name not in curated:
            entry["source"] = f"ingredient parsed from RxNorm product names in {ECQM_REPO}@{commit[:12]}"
        else:
            entry["source"] = "reviewed-additions.json"
        ingredients.append(entry)
    meta = {"ecqm_repository": ECQM_REPO, "ecqm_commit": commit, "generated_by": "scripts/build_medication_tables.py"}
    ing_doc = {"meta": meta, "classes": additions["classes"], "prophylaxis_markers": additions["prophylaxis_markers"],
               "ingredients": ingredients}
    prod_doc = {"meta": {**meta, "skipped_unparsed": skipped},
                "products": [products[k] for k in sorted(products, key=int)]}
    return ing_doc, prod_doc


def _one_entry_a_line(doc: dict, key: str) -> str:
    """JSON with one table entry a line, so a rebuild's diff shows each changed entry on its own."""
    head = {k: v for k, v in doc.items() if k != key}
    lines = [json.dumps(e, ensure_ascii=False) for e in doc[key]]
    body = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    return body + f',\n "{key}": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecqm-repo", type=Path, required=True, help="git directory of ecqm-content-qicore-2024")
    args = parser.parse_args(argv)
    ing_doc, prod_doc = build(args.ecqm_repo)
    for name, doc, key in (("ingredients.json", ing_doc, "ingredients"), ("products.json", prod_doc, "products")):
        (OUT / name).write_text(_one_entry_a_line(doc, key), encoding="utf-8")
    tty: dict[str, int] = {}
    for p in prod_doc["products"]:
        tty[p["tty"]] = tty.get(p["tty"], 0) + 1
    print(f"{len(ing_doc['ingredients'])} ingredients, {len(prod_doc['products'])} products {tty}, "
          f"{prod_doc['meta']['skipped_unparsed']} names not parsed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
