"""Schema checks of the data files (code tables, rules, unit table) at start-up.

jsonschema_rs (Rust) says "valid" in microseconds; only a file it does not accept is judged, and explained, by
jsonschema, which is imported then and not before: jsonschema and its referencing stack cost ~0.1 s of every
command's start-up (issue 14), and the shipped files never need it. A stricter fast validator (e.g. its regex
``$``) can therefore never refuse a file jsonschema accepts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["schema_errors"]


def _fast_valid(schema: dict[str, Any], data: Any) -> bool:
    try:
        import jsonschema_rs

        return bool(jsonschema_rs.validator_for(schema).is_valid(data))
    except Exception:  # noqa: BLE001 - not installed, or a schema it cannot compile: jsonschema decides
        return False


def schema_errors(schema: dict[str, Any], data: Any) -> list[Any]:
    """jsonschema's errors for ``data``, by path (an empty list when it is valid)."""
    if _fast_valid(schema, data):
        return []
    import jsonschema

    return sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
