"""Code tables: value sets kept as data in ``fhir_mappings/``, validated at start-up, and code matching.

A CodeableConcept matches a value set when any of its codings matches an entry's system and code (exactly,
or by prefix for entries that say ``"match": "prefix"``, used for ICD/ATC/PCS families). Display text is
never matched. Code-system URIs are normalised through ``fhir_mappings/systems.json`` aliases first.

Site tables (``TRIALSCREEN_SITE_TABLES``) are merged over the shipped ones: a file whose id matches a shipped
value set adds its concepts; a new id adds a value set. Both are validated against the same schema, and a bad
table fails loading with an error that names the file and the entry.

This module reads files only when ``load_code_tables`` is called (at start-up); matching does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cds_service.errors import ConfigurationError
from cds_service.shipped import shipped_dir

try:  # Rust: says "valid" in microseconds where jsonschema takes ~2 ms a table (250 ms of every start-up)
    import jsonschema_rs
except ImportError:  # pragma: no cover - declared in pyproject; without it jsonschema alone decides
    jsonschema_rs = None

__all__ = ["Concept", "ValueSet", "CodeTables", "load_code_tables", "default_mappings_dir", "Coding"]

Coding = tuple[str, str]  # (system, code)


def default_mappings_dir() -> Path:
    """The ``fhir_mappings/`` folder shipped with the package (the source tree's, or the wheel's copy)."""
    return shipped_dir("fhir_mappings")


@dataclass(frozen=True)
class Concept:
    """One entry of a value set."""

    system: str
    code: str
    display: str
    status: str
    value_set: str
    match: str = "exact"
    review: str | None = None
    qualifier: str | None = None
    prednisone_factor: float | None = None
    half_life_hours: float | None = None
    value: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class ValueSet:
    """A named set of concepts, with the quantity metadata of a lab analyte where it is one."""

    id: str
    title: str
    description: str
    criteria: tuple[str, ...]
    concepts: tuple[Concept, ...]
    unit: str | None = None
    unit_aliases: Mapping[str, str] = field(default_factory=dict)
    molar_mass: float | None = None
    _exact: Mapping[Coding, Concept] = field(default_factory=dict, repr=False, compare=False)
    _prefixes: Mapping[str, tuple[Concept, ...]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, data: Mapping[str, Any], concepts: Iterable[Concept]) -> ValueSet:
        concepts = tuple(concepts)
        exact: dict[Coding, Concept] = {}
        prefixes: dict[str, list[Concept]] = {}
        for c in concepts:
            if c.match == "prefix":
                prefixes.setdefault(c.system, []).append(c)
            else:
                exact.setdefault((c.system, c.code), c)
        quantity = data.get("quantity") or {}
        return cls(
            id=data["id"],
            title=data["title"],
            description=data.get("description", ""),
            criteria=tuple(data.get("criteria", ())),
            concepts=concepts,
            unit=quantity.get("unit"),
            unit_aliases=dict(quantity.get("unit_aliases", {})),
            molar_mass=quantity.get("molar_mass_g_per_mol"),
            # Longest prefix first, so the most specific entry (and its qualifier) wins.
            _exact=exact,
            _prefixes={s: tuple(sorted(cs, key=lambda c: -len(c.code))) for s, cs in prefixes.items()},
        )

    def lookup(self, system: str, code: str) -> Concept | None:
        hit = self._exact.get((system, code))
        if hit is not None:
            return hit
        for c in self._prefixes.get(system, ()):
            if code.startswith(c.code):
                return c
        return None


class CodeTables:
    """All value sets, by id, with system-alias normalisation."""

    def __init__(self, value_sets: Mapping[str, ValueSet], aliases: Mapping[str, str]) -> None:
        self.value_sets = dict(value_sets)
        self.aliases = dict(aliases)
        # Reverse index: (system, code) -> value-set ids, and per system the prefix entries, so that
        # finding every set a coding belongs to costs one dict lookup plus a short prefix scan.
        self._exact_index: dict[Coding, set[str]] = {}
        self._prefix_index: dict[str, list[tuple[str, str]]] = {}
        for vs in self.value_sets.values():
            for c in vs.concepts:
                if c.match == "prefix":
                    self._prefix_index.setdefault(c.system, []).append((c.code, vs.id))
                else:
                    self._exact_index.setdefault((c.system, c.code), set()).add(vs.id)
        self.sets_for = lru_cache(maxsize=65536)(self._sets_for)

    def __getitem__(self, value_set_id: str) -> ValueSet:
        try:
            return self.value_sets[value_set_id]
        except KeyError:
            raise KeyError(f"no value set {value_set_id!r} in the code tables") from None

    def __contains__(self, value_set_id: object) -> bool:
        return value_set_id in self.value_sets

    def normalise_system(self, system: str | None) -> str:
        if not system:
            return ""
        system = system.strip()
        return self.aliases.get(system, self.aliases.get(system.rstrip("/"), system))

    def match_codings(self, codings: Iterable[Coding], value_set_id: str) -> Concept | None:
        """The first concept of the value set matched by any of the (system, code) pairs."""
        vs = self[value_set_id]
        for system, code in codings:
            # The cached reverse index answers "not in this set" (nearly every call, in the criteria's loops
            # over all Observations) with one lookup; it holds exactly the codes ``lookup`` matches.
            if not code or value_set_id not in self.sets_for(system, code):
                continue
            hit = vs.lookup(self.normalise_system(system), code.strip())
            if hit is not None:
                return hit
        return None

    def _sets_for(self, system: str | None, code: str | None) -> frozenset[str]:
        if not code:
            return frozenset()
        system, code = self.normalise_system(system), code.strip()
        out = set(self._exact_index.get((system, code), ()))
        for prefix, vs_id in self._prefix_index.get(system, ()):
            if code.startswith(prefix):
                out.add(vs_id)
        return frozenset(out)

    def match_all(self, codings: Iterable[Coding], value_set_id: str) -> list[Concept]:
        """Every concept of the value set matched by any of the codings (one per matching coding)."""
        vs = self[value_set_id]
        out = []
        for system, code in codings:
            if code:
                hit = vs.lookup(self.normalise_system(system), code.strip())
                if hit is not None and hit not in out:
                    out.append(hit)
        return out

    def best_match(self, codings: Iterable[Coding], value_set_id: str) -> Concept | None:
        """The most informative matching concept: a CodeableConcept matches if ANY coding does, so a clear
        coding beats one flagged for review, and a qualified one (``relapse``) beats an unqualified one."""
        hits = self.match_all(codings, value_set_id)
        if not hits:
            return None
        return min(hits, key=lambda c: (c.review is not None, c.qualifier is None))

    def matching_sets(self, codings: Iterable[Coding]) -> frozenset[str]:
        """Ids of every value set any of the codings belongs to (used to index and pre-select resources)."""
        out: frozenset[str] = frozenset()
        for system, code in codings:
            out = out | self.sets_for(system, code)
        return out


@lru_cache(maxsize=4)
def _schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _fast_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema_rs validator of ``schema``, or None (not installed, or a schema it cannot compile)."""
    if jsonschema_rs is None:
        return None
    try:
        return jsonschema_rs.validator_for(schema)
    except Exception:  # noqa: BLE001 - any trouble: jsonschema alone decides, as before
        return None


def _slow_validator(schema: dict[str, Any]) -> Any:
    """jsonschema's validator of ``schema``: it judges (and explains) what the fast validator does not accept.

    Imported here, not at module level: jsonschema and its referencing stack cost ~0.1 s of every command's
    start-up, and a shipped table set that the fast validator accepts never needs them (issue 14).
    """
    import jsonschema

    return jsonschema.Draft202012Validator(schema)


def _read_table(path: Path, validator: Any, fast: Any = None) -> dict[str, Any]:
    """One table, validated; ``validator`` is a zero-argument callable giving jsonschema's validator."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"code table {path}: cannot be read as JSON: {exc}") from exc
    # A table the fast validator finds valid is valid; anything else is judged (and explained) by jsonschema,
    # so a stricter fast validator (e.g. its regex ``$``) can never refuse a table jsonschema accepts.
    errors = [] if fast is not None and fast.is_valid(data) else \
        sorted(validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        entry = ""
        if len(err.absolute_path) >= 2 and err.absolute_path[0] == "concepts":
            idx = err.absolute_path[1]
            try:
                c = data["concepts"][idx]
                entry = f" (entry {idx}: {c.get('system')}|{c.get('code')})"
            except (IndexError, KeyError, TypeError, AttributeError):
                entry = f" (entry {idx})"
        raise ConfigurationError(f"code table {path}: invalid at {where}{entry}: {err.message}")
    if data["id"] != path.stem:
        raise ConfigurationError(f"code table {path}: id {data['id']!r} does not match the file name")
    seen: set[Coding] = set()
    for idx, c in enumerate(data["concepts"]):
        key = (c["system"], c["code"])
        if key in seen:
            raise ConfigurationError(f"code table {path}: entry {idx} repeats {c['system']}|{c['code']}")
        seen.add(key)
    return data


def _concepts(data: Mapping[str, Any], value_set_id: str) -> list[Concept]:
    return [
        Concept(
            system=c["system"],
            code=c["code"],
            display=c["display"],
            status=c["status"],
            value_set=value_set_id,
            match=c.get("match", "exact"),
            review=c.get("review"),
            qualifier=c.get("qualifier"),
            prednisone_factor=c.get("prednisone_factor"),
            half_life_hours=c.get("half_life_hours"),
            value=c.get("value"),
            note=c.get("note"),
        )
        for c in data["concepts"]
    ]


def load_code_tables(mappings_dir: Path | None = None, site_dir: Path | None = None) -> CodeTables:
    """Load and validate every value set (shipped, then site tables merged over them)."""
    base = Path(mappings_dir) if mappings_dir else default_mappings_dir()
    schema_path = base / "schema" / "value-set.schema.json"
    try:
        schema = _schema(schema_path)
        fast = _fast_validator(schema)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"value-set schema {schema_path} cannot be read: {exc}") from exc
    slow: list[Any] = []

    def validator() -> Any:
        if not slow:
            slow.append(_slow_validator(schema))
        return slow[0]

    raw: dict[str, dict[str, Any]] = {}
    concepts: dict[str, list[Concept]] = {}
    files = sorted((base / "value-sets").glob("*.json"))
    if not files:
        raise ConfigurationError(f"no code tables found in {base / 'value-sets'}")
    for path in files:
        data = _read_table(path, validator, fast)
        raw[data["id"]] = data
        concepts[data["id"]] = _concepts(data, data["id"])
    if site_dir is not None:
        site = Path(site_dir)
        if not site.is_dir():
            raise ConfigurationError(f"site code tables folder {site} does not exist")
        for path in sorted(site.glob("*.json")):
            data = _read_table(path, validator, fast)
            vs_id = data["id"]
            if vs_id not in raw:
                raw[vs_id] = data
                concepts[vs_id] = []
            # Site entries come first, so a site can re-qualify a shipped code.
            shipped = [c for c in concepts[vs_id] if (c.system, c.code) not in
                       {(s["system"], s["code"]) for s in data["concepts"]}]
            concepts[vs_id] = _concepts(data, vs_id) + shipped
    aliases: dict[str, str] = {}
    systems_path = base / "systems.json"
    if systems_path.exists():
        try:
            aliases = dict(json.loads(systems_path.read_text(encoding="utf-8")).get("aliases", {}))
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            raise ConfigurationError(f"{systems_path}: cannot be read: {exc}") from exc
    return CodeTables({k: ValueSet.build(raw[k], concepts[k]) for k in raw}, aliases)
