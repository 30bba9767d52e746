"""Regenerate fhir_mappings/medications/{ingredients,products}.json from public, citable sources.

Sources:
- the VSAC value sets published with the eCQM content in the public repositories
  ``cqframework/ecqm-content-qicore-2025``, ``-qicore-2024`` and ``-r4-2021``
  (``input/vocabulary/valueset/external/*.json``): every RxNorm member of any term type (SCD, SBD, GPCK, BPCK,
  SCDF, SBDF, SCDG, IN, MIN) becomes a product, its ingredients and strengths parsed from the RxNorm name
  ("dexamethasone 4 MG Oral Tablet", "2 ML fludarabine phosphate 25 MG/ML Injection",
  "{27 (dexamethasone 1.5 MG Oral Tablet) } Pack");
- ``fhir_mappings/medications/reviewed-additions.json``: hand-reviewed ingredient classes, ATC codes, brands,
  synonyms, half-lives and prednisone factors (each with its source), and any hand-added product (with a note).

Usage (the repositories are read with git, no work tree needed; newest first)::

    python scripts/build_medication_tables.py \
        --ecqm-repo cqframework/ecqm-content-qicore-2025=/path/to/ecqm-content-qicore-2025 \
        --ecqm-repo cqframework/ecqm-content-qicore-2024=/path/to/ecqm-content-qicore-2024 \
        --ecqm-repo cqframework/ecqm-content-r4-2021=/path/to/ecqm-content-r4-2021

The output is deterministic (sorted), so a rebuild from the same commit gives the same files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cds_service.facts.drug_names import base_ingredient, parse_rxnorm_name  # noqa: E402

OUT = ROOT / "fhir_mappings" / "medications"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VS_DIR = "input/vocabulary/valueset/external"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def read_ecqm(repo: Path) -> tuple[str, dict[str, tuple[str, list[str]]]]:
    """(commit, {rxcui: (display, [value-set name|version, ...])}) for every RxNorm member of every value set
    (its expansion, or its compose when it was published without one)."""
    commit = _git(repo, "rev-parse", "HEAD").strip()
    names = [n for n in _git(repo, "ls-tree", "--name-only", f"HEAD:{VS_DIR}").split() if n.endswith(".json")]
    members: dict[str, tuple[str, list[str]]] = {}
    for name in sorted(names):
        try:
            vs = json.loads(_git(repo, "show", f"HEAD:{VS_DIR}/{name}"))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue  # an object the snapshot does not hold
        label = f"{vs.get('name') or vs.get('id')}|{vs.get('version', '')}"
        listed = list(vs.get("expansion", {}).get("contains", []))
        for inc in vs.get("compose", {}).get("include", []):
            listed.extend({**c, "system": inc.get("system")} for c in inc.get("concept", []))
        for c in listed:
            if c.get("system") != RXNORM or not c.get("display"):
                continue
            display, sets = members.setdefault(c["code"], (c["display"], []))
            if label not in sets:
                sets.append(label)
    return commit, members


def build(repos: list[tuple[str, Path]]) -> tuple[dict, dict]:
    """The two tables from the value sets of ``repos`` ((owner/name, git dir), newest first: a code listed by
    several keeps the first one's display) and the reviewed additions."""
    additions = json.loads((OUT / "reviewed-additions.json").read_text(encoding="utf-8"))
    members: dict[str, tuple[str, list[str]]] = {}
    sources = []
    for name, path in repos:
        commit, found = read_ecqm(path)
        sources.append({"repository": name, "commit": commit, "path": VS_DIR})
        for code, (display, sets) in found.items():
            entry = members.setdefault(code, (display, []))
            entry[1].extend(f"{s} ({name.split('/')[-1]})" for s in sets)
    curated = {i["name"].lower(): i for i in additions["ingredients"]}
    synonyms = {s.lower(): i["name"].lower() for i in additions["ingredients"] for s in i.get("synonyms", ())}
    brands = {b.lower(): i["name"].lower() for i in additions["ingredients"] for b in i.get("brands", ())}
    products: dict[str, dict] = {}
    ingredient_names: set[str] = set()
    skipped = 0
    for code, (display, sets) in sorted(members.items(), key=lambda kv: int(kv[0])):
        parsed = parse_rxnorm_name(display)
        if parsed is None or not parsed.ingredients:
            skipped += 1
            continue
        if any(part.name[:1].isupper() for part in parsed.ingredients):
            # "Lantus Injectable Product", "Glumetza": a brand name alone; kept only when a reviewed brand.
            named = [brands.get(part.name.lower()) for part in parsed.ingredients]
            if None in named:
                skipped += 1
                continue
            renamed = tuple(replace(p, name=n) for p, n in zip(parsed.ingredients, named, strict=True))
            parsed = replace(parsed, brand=parsed.brand or parsed.ingredients[0].name, ingredients=renamed)
        ings = []
        for part in parsed.ingredients:
            name = base_ingredient(part.name, lambda n: n in curated or n in synonyms)
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
            # The repositories and commits are in the file's meta; here the value sets (name|version) listing it.
            "source": f"VSAC {', '.join(sorted(dict.fromkeys(sets)))}",
        }
    for p in additions.get("products", ()):
        products[p["code"]] = {k: v for k, v in p.items()}
        for i in p["ingredients"]:
            ingredient_names.add(i["name"].lower())
    ingredients = []
    for name in sorted(ingredient_names | set(curated)):
        entry = dict(curated.get(name, {"name": name, "atc": [], "classes": []}))
        entry["source"] = "reviewed-additions.json" if name in curated else "ingredient named in RxNorm product names"
        ingredients.append(entry)
    meta = {"sources": sources, "generated_by": "scripts/build_medication_tables.py"}
    ing_doc = {"meta": meta, "classes": additions["classes"], "prophylaxis_markers": additions["prophylaxis_markers"],
               "vaccines": additions["vaccines"], "ingredients": ingredients}
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
    parser.add_argument("--ecqm-repo", action="append", required=True, metavar="OWNER/NAME=GIT_DIR",
                        help="an eCQM content repository and its git directory; repeat, newest first")
    args = parser.parse_args(argv)
    repos = []
    for item in args.ecqm_repo:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--ecqm-repo {item!r}: give OWNER/NAME=GIT_DIR")
        repos.append((name, Path(path)))
    ing_doc, prod_doc = build(repos)
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
