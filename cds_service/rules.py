"""The trial's rules (thresholds, windows, criterion list) loaded from ``fhir_mappings/trial/*.yaml``.

Validated against ``fhir_mappings/schema/trial-rules.schema.json`` at start-up; a site's override file is
deep-merged over the shipped rules and validated the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from cds_service.errors import ConfigurationError
from cds_service.validation import schema_errors

__all__ = ["TrialRules", "CriterionInfo", "DateHorizon", "load_trial_rules"]


@dataclass(frozen=True)
class CriterionInfo:
    id: str
    kind: str
    label: str
    resolve: str
    attestation: bool = False  # no record can decide it: investigator / patient confirmation
    step: str = ""  # a few words naming what to order, record or check ("ALT/AST"), for the card's next steps
    confirm: str = ""  # what to confirm with the patient when the record has done its part ("contraception ...")


@dataclass(frozen=True)
class DateHorizon:
    """The fast path's date horizon (``date_horizon`` in the rules; used by gather/record.py ``relevant_to``).

    ``days``: value-set id -> days before ``at`` past which its Observations need not be parsed (recency +
    slack). ``qualifiers``: value sets read only on the Observation holding them. ``same_time_as``: value sets
    read on any Observation at the same start as a result of another set (I7e's oxygen context of the SpO2).
    ``closest_to``: value sets whose result closest in time to a result of another set is read (I7c's weight).
    """

    days: Mapping[str, int]
    qualifiers: frozenset[str] = frozenset()
    same_time_as: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    closest_to: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class TrialRules:
    """Read-only view of the trial rule file."""

    trial_id: str
    title: str
    short_title: str
    registry_url: str
    recency_days: Mapping[str, int | None]
    thresholds: Mapping[str, Any]
    windows: Mapping[str, Any]
    qualitative_text: Mapping[str, tuple[str, ...]]
    criteria: tuple[CriterionInfo, ...]
    date_horizon: DateHorizon | None = None  # None: the fast path has no date horizon

    def criterion(self, criterion_id: str) -> CriterionInfo:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


# libyaml's parser with PyYAML's safe constructor and resolver: the same data, ~10x faster (50 ms of every
# start-up with the pure-Python parser).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"trial rules {path}: cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"trial rules {path}: expected a mapping at the top level")
    return data


def load_trial_rules(mappings_dir: Path, override: Path | None = None) -> TrialRules:
    """Load, merge and validate the trial rules."""
    path = mappings_dir / "trial" / "nct06880354.yaml"
    data = _read_yaml(path)
    if override is not None:
        data = _merge(data, _read_yaml(Path(override)))
        path = Path(override)
    schema = json.loads((mappings_dir / "schema" / "trial-rules.schema.json").read_text(encoding="utf-8"))
    errors = schema_errors(schema, data)
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigurationError(f"trial rules {path}: invalid at {where}: {err.message}")
    ids = [c["id"] for c in data["criteria"]]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"trial rules {path}: a criterion id is listed twice")
    t = data["trial"]
    horizon = _date_horizon(data, path)
    return TrialRules(
        trial_id=t["id"],
        title=t["title"],
        short_title=t["short_title"],
        registry_url=t["registry_url"],
        recency_days=MappingProxyType(dict(data["recency_days"])),
        thresholds=MappingProxyType(dict(data["thresholds"])),
        windows=MappingProxyType(dict(data["windows"])),
        qualitative_text=MappingProxyType({k: tuple(w.lower() for w in v)
                                           for k, v in data["qualitative_text"].items()}),
        criteria=tuple(CriterionInfo(**c) for c in data["criteria"]),
        date_horizon=horizon,
    )


def _date_horizon(data: Mapping[str, Any], path: Path) -> DateHorizon | None:
    """The date horizon: each listed recency key must exist and not be null."""
    spec = data.get("date_horizon")
    if not spec:
        return None
    recency = data["recency_days"]
    out: dict[str, int] = {}
    for vs, key in spec["value_sets"].items():
        if key not in recency:
            raise ConfigurationError(f"trial rules {path}: date_horizon.value_sets.{vs}: no recency_days.{key}")
        days = recency[key]
        if not isinstance(days, int) or isinstance(days, bool):
            raise ConfigurationError(f"trial rules {path}: date_horizon.value_sets.{vs}: recency_days.{key} is "
                                     f"{days!r}; a value set read at any date has no date horizon")
        out[vs] = days + spec["slack_days"]
    for kind in ("same_time_as", "closest_to"):
        for vs, anchor in (spec.get(kind) or {}).items():
            if anchor not in out or (kind == "closest_to" and vs not in out):
                missing = vs if anchor in out else anchor
                raise ConfigurationError(f"trial rules {path}: date_horizon.{kind}.{vs}: {missing} has no date horizon")
    return DateHorizon(MappingProxyType(out), frozenset(spec.get("qualifiers") or ()),
                       MappingProxyType(dict(spec.get("same_time_as") or {})),
                       MappingProxyType(dict(spec.get("closest_to") or {})))
