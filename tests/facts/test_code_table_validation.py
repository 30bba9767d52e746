"""Code tables are validated by jsonschema_rs when it says "valid" and by jsonschema otherwise: the verdict and
the error message are the same as with jsonschema alone, for the shipped tables and for broken ones."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from cds_service.errors import ConfigurationError
from cds_service.facts import codes
from cds_service.facts.codes import _fast_validator, _read_table, _schema, default_mappings_dir

SCHEMA_PATH = default_mappings_dir() / "schema" / "value-set.schema.json"
TABLES = sorted((default_mappings_dir() / "value-sets").glob("*.json"))


def _outcome(path, fast):
    validator = jsonschema.Draft202012Validator(_schema(SCHEMA_PATH))
    try:
        return "ok", _read_table(path, lambda: validator, fast)
    except ConfigurationError as exc:
        return "error", str(exc)


def test_the_fast_validator_is_used():
    assert codes.jsonschema_rs is not None
    assert _fast_validator(_schema(SCHEMA_PATH)) is not None


def test_shipped_tables_same_verdict_with_and_without_the_fast_validator():
    fast = _fast_validator(_schema(SCHEMA_PATH))
    assert len(TABLES) > 50
    for path in TABLES:
        assert _outcome(path, fast) == _outcome(path, None), path.name
        assert _outcome(path, fast)[0] == "ok"


def _mutations(table: dict) -> list[tuple[str, dict]]:
    out = []
    for name, change in [
        ("no id", lambda t: t.pop("id")),
        ("bad id", lambda t: t.update(id="Bad Id")),
        ("concepts not a list", lambda t: t.update(concepts={})),
        ("concept without system", lambda t: t["concepts"][0].pop("system")),
        ("code with a space", lambda t: t["concepts"][0].update(code="12 3")),
        ("code with a trailing newline", lambda t: t["concepts"][0].update(code=t["concepts"][0]["code"] + "\n")),
        ("unknown key", lambda t: t.update(unexpected=1)),
        ("status of the wrong type", lambda t: t["concepts"][0].update(status=5)),
    ]:
        t = copy.deepcopy(table)
        change(t)
        out.append((name, t))
    return out


@pytest.mark.parametrize("source", [TABLES[0], TABLES[len(TABLES) // 2]], ids=lambda p: p.stem)
def test_broken_tables_same_verdict_and_message_with_and_without_the_fast_validator(tmp_path, source):
    fast = _fast_validator(_schema(SCHEMA_PATH))
    table = json.loads(source.read_text(encoding="utf-8"))
    refused = 0
    for name, broken in _mutations(table):
        path = tmp_path / source.name
        path.write_text(json.dumps(broken), encoding="utf-8")
        with_fast, plain = _outcome(path, fast), _outcome(path, None)
        assert with_fast == plain, name
        refused += with_fast[0] == "error"
    assert refused >= 5


def test_screening_start_up_does_not_import_jsonschema():
    """The shipped tables and rules are accepted by the fast validator, so a command that only loads them never
    pays for importing jsonschema (issue 14: start-up)."""
    import subprocess
    import sys

    code = ("import sys; from cds_service.config import default_knowledge; default_knowledge(); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
