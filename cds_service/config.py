"""Settings, read once from ``TRIALSCREEN_*`` environment variables into a frozen dataclass.

Every setting has a documented default (README, "Configuration"). Tests pass a dict of overrides instead of
touching the environment. ``Knowledge`` bundles what the engine loads at start-up (code tables and trial
rules), validated then, so a bad table stops the service before it answers anyone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from cds_service.errors import ConfigurationError
from cds_service.facts.codes import CodeTables, default_mappings_dir, load_code_tables
from cds_service.facts.drugs import DrugTables, load_drug_tables
from cds_service.facts.units import load_unit_table, set_unit_table
from cds_service.rules import TrialRules, load_trial_rules

__all__ = ["Settings", "Knowledge", "load_knowledge", "default_knowledge"]

PREFIX = "TRIALSCREEN_"


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    """All of TrialScreen's settings. Environment variable = ``TRIALSCREEN_`` + the field name upper-cased."""

    # Engine
    mappings_dir: Path = field(default_factory=default_mappings_dir)
    site_tables: Path | None = None
    rules_override: Path | None = None
    # Service
    public_url: str = ""  # this service's external base URL (links, JWT audience); empty = from the request
    fhir_allowlist: tuple[str, ...] = ()
    fhir_deadline_seconds: float = 3.0
    fhir_max_pages: int = 20
    fhir_page_size: int = 200
    # Bytes read from the FHIR server per response and per hook call, counted both as received (compressed) and
    # decoded, before parsing; an answer over either is "not retrieved" (gather/transport.py).
    fhir_max_response_bytes: int = 16 * 1024 * 1024
    fhir_max_call_bytes: int = 24 * 1024 * 1024
    # Private, loopback and link-local addresses (CIDR blocks) an allowlisted host NAME may resolve to; any other
    # such address is refused (DNS rebinding). An allowlist entry written as an IP address is explicit already.
    fhir_private_networks: tuple[str, ...] = ()
    explain_ineligibility: bool = False
    report_ttl_hours: float = 24.0
    max_body_bytes: int = 20 * 1024 * 1024
    # Reading a request under `trialscreen serve` (cds_service/hooks/gunicorn_worker.py): the headers must be in
    # within the first, the body within the second, and no wait between two reads of a body may exceed the third
    # (so a body shorter than its Content-Length is answered 400 after it).
    request_header_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 30.0
    request_idle_timeout_seconds: float = 5.0
    # Report page lookups: at most this many unknown or expired tokens per client address per window (0 = no
    # limit), then 429 with Retry-After until the window lets one more through (cds_service/hooks/rate_limit.py).
    report_rate_limit_misses: int = 20
    report_rate_limit_window_seconds: float = 60.0
    # Reverse proxies in front that append the caller's address to X-Forwarded-For; 0 = trust none and use the
    # connection's own address.
    trusted_proxy_count: int = 0
    database_url: str = ""  # empty = SQLite file under state_dir
    # Longest wait for one database operation (connect, statement, pool, SQLite lock), inside the hook deadline.
    store_timeout_seconds: float = 1.0
    state_dir: Path = field(default_factory=lambda: Path("var"))
    auth_required: bool = True
    trusted_clients: Path | None = None
    cors_origins: tuple[str, ...] = ()
    # A proxy for fetching issuers' JWKS, set on purpose; empty = direct (proxy variables and .netrc are ignored).
    jwks_proxy: str = ""
    log_level: str = "INFO"
    # Benchmarks only (bench/): serve POST /bench/json-only, the parse-the-body-and-answer-nothing baseline.
    bench_endpoints: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from the environment (or ``environ``), then apply keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            if f.name == "auth_required" and not raw.strip():
                # an empty value (e.g. an unset variable in a compose file) must not switch authentication off
                raise ConfigurationError(f"{PREFIX}AUTH_REQUIRED is empty: say true or false")
            try:
                values[f.name] = _coerce(f.type, raw)
            except ValueError as exc:
                raise ConfigurationError(f"{PREFIX}{f.name.upper()}: {exc}") from exc
        settings = cls(**values)
        return replace(settings, **overrides) if overrides else settings


def _coerce(kind: Any, raw: str) -> Any:
    kind = str(kind)
    if "tuple" in kind:
        return _list(raw)
    if "bool" in kind:
        return _bool(raw)
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if "Path" in kind:
        return Path(raw) if raw.strip() else None
    return raw


@dataclass(frozen=True)
class Knowledge:
    """What the engine knows about the trial: its code tables, its rules and its medication tables."""

    tables: CodeTables
    rules: TrialRules
    # Medications by ingredient (fhir_mappings/medications/); a Knowledge built without them gets the shipped ones.
    drugs: DrugTables = field(default_factory=lambda: shipped_drug_tables())


def load_knowledge(settings: Settings) -> Knowledge:
    """Load and validate code tables and trial rules (raises ConfigurationError naming the bad file)."""
    tables = load_code_tables(settings.mappings_dir, settings.site_tables)
    rules = load_trial_rules(settings.mappings_dir, settings.rules_override)
    units = Path(settings.mappings_dir) / "units.json"
    if units.exists():  # the non-UCUM unit spellings: validated at start-up like every table
        set_unit_table(load_unit_table(units))
    horizon = rules.date_horizon
    named = set(horizon.days) | horizon.qualifiers | set(horizon.same_time_as) | set(horizon.closest_to) \
        if horizon is not None else set()
    unknown = sorted(vs for vs in named if vs not in tables)
    if unknown:
        raise ConfigurationError(f"trial rules: date_horizon names unknown value set(s): {', '.join(unknown)}")
    drugs = load_drug_tables(settings.mappings_dir)
    return Knowledge(tables, rules, drugs)


@lru_cache(maxsize=1)
def shipped_drug_tables() -> DrugTables:
    """The medication tables shipped with the package, loaded once per process."""
    return load_drug_tables(default_mappings_dir())


@lru_cache(maxsize=1)
def default_knowledge() -> Knowledge:
    """Knowledge from the environment's settings, loaded once per process."""
    return load_knowledge(Settings.from_env())
