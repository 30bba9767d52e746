"""Code tables: value sets kept as data in ``fhir_mappings/``, validated at start-up, and code matching.

A CodeableConcept matches a value set when any of its codings matches an entry's system and code (exactly,
or by prefix for entries that say ``"match": "prefix"``, used for ICD/ATC/PCS families). Display text is
never matched. Code-system URIs are normalised through ``fhir_mappings/systems.json`` aliases first.

A value set with a ``definition`` also has a generated expansion, ``fhir_mappings/expansions/<id>.json`` (written by
``scripts/build_value_sets.py`` from public terminology sources: VSAC expansions, the ICD hierarchies, LOINC axes);
its members are added after the table's own entries, so a table entry for the same code keeps its attributes.
Only the expansions are read here: nothing is expanded at start-up.

Site tables (``TRIALSCREEN_SITE_TABLES``) are merged over the shipped ones: a file whose id matches a shipped
value set adds its concepts; a new id adds a value set. Both are validated against the same schema, and a bad
table fails loading with an error that names the file and the entry.

This module reads files only when ``load_code_tables`` is called (at start-up); matching does no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from cds_service.errors import ConfigurationError
from cds_service.shipped import shipped_dir

try:  # Rust: says "valid" in microseconds where jsonschema takes ~2 ms a table (250 ms of every start-up)
    import jsonschema_rs
except ImportError:  # pragma: no cover - declared in pyproject; without it jsonschema alone decides
    jsonschema_rs = None

__all__ = ["Concept", "ValueSet", "CodeTables", "SafetyNet", "load_code_tables", "default_mappings_dir",
           "system_aliases", "Coding"]

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
    source: str | None = None  # an expansion member's source (the table's own entries have it in ``status``)


@dataclass(frozen=True)
class ValueSet:
    """A named set of concepts, with the quantity metadata of a lab analyte where it is one.

    ``concepts`` are the table's own entries (the anchors a reviewer wrote); the generated expansion's members are
    matched too but kept as their raw JSON until a lookup first returns one (``members()`` lists them all), so that
    tens of thousands of members cost one dict entry each at start-up.
    """

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
    _expanded: Mapping[Coding, Mapping[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    _made: dict[Coding, Concept] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, data: Mapping[str, Any], concepts: Iterable[Concept],
              expansion: Iterable[Mapping[str, Any]] = ()) -> ValueSet:
        concepts = tuple(concepts)
        exact: dict[Coding, Concept] = {}
        prefixes: dict[str, list[Concept]] = {}
        for c in concepts:
            if c.match == "prefix":
                prefixes.setdefault(c.system, []).append(c)
            else:
                exact.setdefault((c.system, c.code), c)
        expanded: dict[Coding, Mapping[str, Any]] = {}
        for m in expansion:
            if m.get("match") == "prefix":
                prefixes.setdefault(m["system"], []).append(_fast_concept(m, data["id"]))
            else:
                key = (m["system"], m["code"])
                if key not in exact:  # the table's own entry for a code wins
                    expanded.setdefault(key, m)
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
            _expanded=expanded,
        )

    def lookup(self, system: str, code: str) -> Concept | None:
        hit = self._exact.get((system, code))
        if hit is not None:
            return hit
        if (system, code) in self._expanded:
            return self._member((system, code))
        for c in self._prefixes.get(system, ()):
            if code.startswith(c.code):
                return c
        return None

    def _member(self, key: Coding) -> Concept:
        made = self._made.get(key)
        if made is None:
            made = self._made.setdefault(key, _fast_concept(self._expanded[key], self.id))
        return made

    def exact_codings(self) -> Iterator[Coding]:
        """Every (system, code) matched exactly: the table's entries and the expansion's."""
        yield from self._exact
        yield from self._expanded

    def prefix_concepts(self) -> Iterator[Concept]:
        for cs in self._prefixes.values():
            yield from cs

    def members(self) -> tuple[Concept, ...]:
        """Every concept: the table's entries, then the expansion's (exact, then prefix families)."""
        table = set(self.concepts)
        extra = [self._member(k) for k in self._expanded]
        extra += [c for c in self.prefix_concepts() if c not in table]
        return self.concepts + tuple(extra)


_CONCEPT_DEFAULTS: dict[str, Any] = {}


def _fast_concept(member: Mapping[str, Any], value_set_id: str) -> Concept:
    """A Concept from an expansion member, without the frozen dataclass's per-field ``object.__setattr__``
    (~10x faster). The result is an ordinary, equal and hashable Concept."""
    if not _CONCEPT_DEFAULTS:
        _CONCEPT_DEFAULTS.update({f.name: f.default for f in fields(Concept)})
    values = dict(_CONCEPT_DEFAULTS)
    values.update(system=member["system"], code=member["code"], display=member["display"], status="expansion",
                  value_set=value_set_id, match=member.get("match", "exact"), review=member.get("review"),
                  qualifier=member.get("qualifier"), note=member.get("note"),
                  source=f"{member['source']} {member['source_version']}")
    concept = object.__new__(Concept)
    concept.__dict__.update(values)
    return concept


@dataclass(frozen=True)
class SafetyNet:
    """Reviewed display/text patterns for one value set (``fhir_mappings/safety-net/<id>.json``).

    What the tables still miss must not read as "None recorded": a resource of one of ``kinds`` whose codes no
    table recognises, but whose display or text names the concept, leaves the criterion open. The mechanism is
    generic (any resource kind, any value set): a medication net is a file with medication kinds.
    """

    value_set: str
    concept: str
    kinds: frozenset[str]
    pattern: re.Pattern[str]
    exclude: re.Pattern[str] | None
    active_only: bool = False
    within_days: int | None = None

    def names(self, text: str | None) -> bool:
        """Whether ``text`` names the concept (a pattern matches and no exclusion does)."""
        if not text or self.pattern.search(text) is None:
            return False
        return self.exclude is None or self.exclude.search(text) is None


class CodeTables:
    """All value sets, by id, with system-alias normalisation."""

    def __init__(self, value_sets: Mapping[str, ValueSet], aliases: Mapping[str, str],
                 safety_nets: Mapping[str, SafetyNet] | None = None) -> None:
        self.value_sets = dict(value_sets)
        self.aliases = dict(aliases)
        self.safety_nets = dict(safety_nets or {})
        # Per resource kind, the nets that read it (the relevance filter asks "could any net want this text?").
        self._nets_by_kind: dict[str, list[SafetyNet]] = {}
        for net in self.safety_nets.values():
            for kind in net.kinds:
                self._nets_by_kind.setdefault(kind, []).append(net)
        # Reverse index: (system, code) -> value-set ids, and per system the prefix entries, so that
        # finding every set a coding belongs to costs one dict lookup plus a short prefix scan.
        self._exact_index: dict[Coding, set[str]] = {}
        self._prefix_index: dict[str, list[tuple[str, str]]] = {}
        for vs in self.value_sets.values():
            for key in vs.exact_codings():
                self._exact_index.setdefault(key, set()).add(vs.id)
            for c in vs.prefix_concepts():
                self._prefix_index.setdefault(c.system, []).append((c.code, vs.id))
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

    def nets_naming(self, kind: str, texts: Iterable[str | None]) -> list[SafetyNet]:
        """The safety nets for resources of ``kind`` that one of ``texts`` names."""
        nets = self._nets_by_kind.get(kind)
        if not nets:
            return []
        texts = [t for t in texts if t]
        return [n for n in nets if any(n.names(t) for t in texts)]

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


def _expansion(path: Path, schema: dict[str, Any], fast: Any, value_set_id: str) -> list[dict[str, Any]]:
    """The members of a generated expansion (validated like a table: jsonschema only explains a refusal)."""
    try:  # orjson: the expansions are most of the start-up's bytes (several MB), and it parses them ~4x faster
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"expansion {path}: cannot be read as JSON: {exc}") from exc
    if not (fast is not None and fast.is_valid(data)):
        errors = sorted(_slow_validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            raise ConfigurationError(f"expansion {path}: invalid at {where}: {errors[0].message}")
    if data["id"] != value_set_id:
        raise ConfigurationError(f"expansion {path}: id {data['id']!r} does not match the file name")
    return list(data["members"])


def _folder_schema(base: Path, name: str) -> tuple[dict[str, Any], Any]:
    """The schema ``schema/<name>.schema.json`` and its fast validator (None when jsonschema_rs cannot)."""
    schema_path = base / "schema" / f"{name}.schema.json"
    try:
        schema = _schema(schema_path)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{name} schema {schema_path} cannot be read: {exc}") from exc
    return schema, _fast_validator(schema)


def system_aliases(base: Path) -> dict[str, str]:
    """``systems.json``'s aliases (other spellings of a code-system URI -> the canonical URI); {} without one."""
    systems_path = base / "systems.json"
    if not systems_path.exists():
        return {}
    try:
        return dict(json.loads(systems_path.read_text(encoding="utf-8")).get("aliases", {}))
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigurationError(f"{systems_path}: cannot be read: {exc}") from exc


def _expansions(base: Path, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    folder = base / "expansions"
    if not folder.is_dir():
        return {}
    schema, fast = _folder_schema(base, "expansion")
    known = set(ids)
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        if path.stem not in known:
            raise ConfigurationError(f"expansion {path}: no value set {path.stem!r} to expand")
        out[path.stem] = _expansion(path, schema, fast, path.stem)
    return out


def _safety_nets(base: Path, ids: Iterable[str]) -> dict[str, SafetyNet]:
    folder = base / "safety-net"
    if not folder.is_dir():
        return {}
    schema, fast = _folder_schema(base, "safety-net")
    known = set(ids)
    out: dict[str, SafetyNet] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"safety net {path}: cannot be read as JSON: {exc}") from exc
        errors = [] if fast is not None and fast.is_valid(data) else \
            sorted(_slow_validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            raise ConfigurationError(f"safety net {path}: invalid at {where}: {errors[0].message}")
        if data["value_set"] != path.stem or path.stem not in known:
            raise ConfigurationError(f"safety net {path}: value_set {data['value_set']!r} must be the file name "
                                     "and an existing value set")
        try:
            pattern = re.compile("|".join(f"(?:{p})" for p in data["patterns"]), re.IGNORECASE)
            exclude = re.compile("|".join(f"(?:{p})" for p in data["exclude"]), re.IGNORECASE) \
                if data.get("exclude") else None
        except re.error as exc:
            raise ConfigurationError(f"safety net {path}: a pattern is not a valid regular expression: {exc}") from exc
        out[path.stem] = SafetyNet(value_set=path.stem, concept=data["concept"], kinds=frozenset(data["kinds"]),
                                   pattern=pattern, exclude=exclude, active_only=data.get("active_only", False),
                                   within_days=data.get("within_days"))
    return out


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
    expansions = _expansions(base, raw)
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
    aliases = system_aliases(base)
    return CodeTables({k: ValueSet.build(raw[k], concepts[k], expansions.get(k, ())) for k in raw}, aliases,
                      _safety_nets(base, raw))
