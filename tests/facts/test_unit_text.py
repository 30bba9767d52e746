"""Issue 9 part 3: units without a UCUM code, reference ranges given as text, and a newer non-final result.

* ``ucum_of_text`` reads common non-UCUM unit strings ("IU/L", "U/l", "mmol/l", "mmHg") onto UCUM from the
  reviewed table ``fhir_mappings/units.json``; ``convert`` falls back to it only when the string as sent fails;
* ``parse_range_text`` reads "9-50 U/L", "< 40", "0,3 - 1,2 mg/dl"; the ULN of a lab comes from it when the
  referenceRange has only text;
* a newer preliminary or registered result that disagrees with an older final one makes the test UNKNOWN.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from builders import AT, LOINC, days_ago, observation, patient, record_of

import cds_service.criteria.inclusion  # noqa: F401 - registers the criteria
import cds_service.criteria.virology  # noqa: F401
from cds_service.config import default_knowledge
from cds_service.criteria.registry import REGISTRY
from cds_service.criteria.result import Result
from cds_service.errors import ConfigurationError
from cds_service.facts.index import Facts
from cds_service.facts.units import convert, load_unit_table, parse_range_text, ucum_of_text
from cds_service.shipped import shipped_dir

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN
MALE_60 = patient(birth="1966-05-01", gender="male")
ALT, AST, CREATININE = "1742-6", "1920-8", "2160-0"


def verdict(criterion_id: str, *resources: dict):
    return REGISTRY[criterion_id](Facts(record_of(*resources), AT, default_knowledge()))


def text_unit_lab(code: str, value: float, unit: str, *, range_text: str | None = None, high: float | None = None,
                  ago: float = 2, **kw: Any) -> dict:
    """A lab result whose unit is only text (no UCUM code), as many feeds send it."""
    obs = observation(LOINC, code, date=days_ago(ago), **kw)
    obs["valueQuantity"] = {"value": value, "unit": unit}
    if range_text is not None:
        obs["referenceRange"] = [{"text": range_text}]
    elif high is not None:
        obs["referenceRange"] = [{"high": {"value": high, "unit": unit}}]
    return obs


# --- ucum_of_text --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "ucum"), [
    ("IU/L", "[IU]/L"), ("iu/l", "[IU]/L"), ("U/l", "U/L"), ("u/L", "U/L"), ("mmol/l", "mmol/L"),
    ("MMOL/L", "mmol/L"), ("µmol/L", "umol/L"), ("umol/l", "umol/L"), ("mg/dl", "mg/dL"), ("MG/DL", "mg/dL"),
    ("mcg/L", "ug/L"), ("mmHg", "mm[Hg]"), ("mm Hg", "mm[Hg]"), ("x10^9/L", "10*9/L"), ("10E9/L", "10*9/L"),
    ("bpm", "/min"), ("msec", "ms"), ("pct", "%"), ("%", "%"), ("mL/min", "mL/min"), ("kg", "kg"),
    ("lbs", "[lb_av]"), ("mL/min/{1.73_m2}", "mL/min/{1.73_m2}"),
])
def test_common_unit_spellings_are_read_onto_ucum(text, ucum):
    assert ucum_of_text(text) == ucum


@pytest.mark.parametrize("text", ["", "  ", "foo", "units", "U per litre", "mg/ml/xyz", None])
def test_unknown_spellings_stay_unknown(text):
    assert ucum_of_text(text) is None


def test_convert_reads_a_text_unit_only_when_the_string_itself_fails():
    assert convert(45, "IU/L", "U/L", aliases={"[IU]/L": "U/L"}) == 45  # [IU] = U only by the value set's alias
    assert convert(45, "IU/L", "U/L") is None  # without it, [IU] and U stay different quantities
    assert convert(5.2, "mmol/l", "mmol/L") == pytest.approx(5.2)
    assert convert(88.4, "µmol/L", "mg/dL", molar_mass=113.12) == pytest.approx(1.0, rel=1e-3)
    assert convert(120, "mmHg", "mm[Hg]") == 120
    assert convert(1, "furlongs", "m") is None


def test_the_shipped_unit_table_is_valid_and_a_bad_one_fails_loading(tmp_path):
    table = load_unit_table()
    assert table.whole["iu/l"] == "[IU]/L" and table.atoms["l"] == "L"
    for ucum in (*table.whole.values(), *table.atoms.values()):
        assert ucum_of_text(ucum) is not None, ucum  # every target is valid UCUM
    bad = json.loads((shipped_dir("fhir_mappings") / "units.json").read_text(encoding="utf-8"))
    bad["whole"]["IU/L"] = "[IU]/L"  # keys are lower case: an upper-case key could never match
    (tmp_path / "units.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="invalid"):
        load_unit_table(tmp_path / "units.json")


# --- parse_range_text ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "low", "high", "unit"), [
    ("9-50 U/L", 9, 50, "U/L"), ("9 - 50", 9, 50, None), ("0,3 - 1,2 mg/dl", 0.3, 1.2, "mg/dl"),
    ("3.5–5.0 mmol/l", 3.5, 5.0, "mmol/l"), ("0.2 to 1.2 mg/dL", 0.2, 1.2, "mg/dL"), ("< 40 U/L", None, 40, "U/L"),
    ("<=1.2", None, 1.2, None), ("up to 45 IU/L", None, 45, "IU/L"), (">= 60", 60, None, None),
])
def test_text_ranges_are_read(text, low, high, unit):
    r = parse_range_text(text)
    assert r is not None
    assert (r.low.value if r.low else None) == (pytest.approx(low) if low is not None else None)
    assert (r.high.value if r.high else None) == (pytest.approx(high) if high is not None else None)
    assert (r.high or r.low).unit == unit


@pytest.mark.parametrize("text", ["normal", "50-9 U/L", "9-50 bananas", "M: 10-50, F: 10-35", "", None, "negative"])
def test_other_text_is_not_a_range(text):
    assert parse_range_text(text) is None


def test_alt_with_a_text_unit_and_a_text_range_is_read_for_i7a():
    # ALT 60 IU/L (no UCUM code) against "9-50 U/L": 1.2 x ULN, within 2.5 x ULN
    v = verdict("I7a", MALE_60, text_unit_lab(ALT, 60, "IU/L", range_text="9-50 U/L"),
                text_unit_lab(AST, 30, "U/l", range_text="10-40 U/l"))
    assert v.result is MET
    v = verdict("I7a", MALE_60, text_unit_lab(ALT, 130, "IU/L", range_text="9-50 U/L"),
                text_unit_lab(AST, 30, "U/l", range_text="10-40 U/l"))
    assert v.result is NOT_MET  # 2.6 x ULN


def test_a_text_range_that_cannot_be_read_leaves_the_uln_missing():
    v = verdict("I7a", MALE_60, text_unit_lab(ALT, 60, "IU/L", range_text="see report"),
                text_unit_lab(AST, 30, "U/L", high=40))
    assert v.result is UNKNOWN and "ULN" in v.reason


# --- a newer non-final result -------------------------------------------------------------------------------
def alt(value: float, *, ago: float, status: str = "final") -> dict:
    return observation(LOINC, ALT, value=value, unit="U/L", high=40, date=days_ago(ago), status=status)


def ast(value: float = 30) -> dict:
    return observation(LOINC, AST, value=value, unit="U/L", high=40, date=days_ago(3))


@pytest.mark.parametrize("status", ["preliminary", "registered"])
def test_a_newer_non_final_result_that_disagrees_makes_the_test_unknown(status):
    final, newer = alt(35, ago=5), alt(180, ago=1, status=status)
    v = verdict("I7a", MALE_60, final, newer, ast())
    assert v.result is UNKNOWN
    assert f"newer {status}" in v.reason and "disagrees" in v.reason
    refs = {e.reference for e in v.evidence}
    assert {f"Observation/{final['id']}", f"Observation/{newer['id']}"} <= refs


def test_a_newer_preliminary_result_that_agrees_leaves_the_final_one_deciding():
    assert verdict("I7a", MALE_60, alt(35, ago=5), alt(35, ago=1, status="preliminary"), ast()).result is MET


def test_a_registered_result_without_a_value_leaves_the_final_one_deciding():
    pending = observation(LOINC, ALT, date=days_ago(1), status="registered")
    assert verdict("I7a", MALE_60, alt(35, ago=5), pending, ast()).result is MET


def test_an_older_preliminary_result_does_not_reopen_a_newer_final_one():
    assert verdict("I7a", MALE_60, alt(180, ago=5, status="preliminary"), alt(35, ago=1), ast()).result is MET


def test_a_newer_preliminary_negative_reopens_a_final_positive_hbsag():
    pos = observation(LOINC, "5196-1", date=days_ago(20))
    pos["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": "LA6576-8"}]}  # Positive
    neg = observation(LOINC, "5196-1", date=days_ago(2), status="preliminary")
    neg["valueCodeableConcept"] = {"coding": [{"system": LOINC, "code": "LA6577-6"}]}  # Negative
    assert verdict("E12b", patient(), pos).result is MET
    v = verdict("E12b", patient(), pos, neg)
    assert v.result is UNKNOWN  # not met on the older positive while a newer result says otherwise



def test_an_invalid_unit_table_fails_start_up(tmp_path):
    import shutil
    from dataclasses import replace

    from cds_service.config import Settings, load_knowledge

    mappings = tmp_path / "fhir_mappings"
    shutil.copytree(shipped_dir("fhir_mappings"), mappings)
    data = json.loads((mappings / "units.json").read_text(encoding="utf-8"))
    del data["atoms"]
    (mappings / "units.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="units.json"):
        load_knowledge(replace(Settings.from_env({}), mappings_dir=mappings))
    assert ucum_of_text("IU/L") == "[IU]/L"  # the table in use is untouched
