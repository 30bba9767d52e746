"""UCUM conversions (through ucumvert) and censored-value comparisons."""

import pytest

from cds_service.facts.clinical import parse_value_string
from cds_service.facts.units import Quantity, conversion_factor, convert

CREATININE_MM = 113.12
BILIRUBIN_MM = 584.66


@pytest.mark.parametrize(("value", "src", "dst", "mm", "expected"), [
    (88.4, "umol/L", "mg/dL", CREATININE_MM, 1.0),       # creatinine: / 88.4
    (1.0, "mg/dL", "umol/L", CREATININE_MM, 88.4),
    (17.1, "umol/L", "mg/dL", BILIRUBIN_MM, 1.0),        # bilirubin: / 17.1
    (1.0, "ukat/L", "U/L", None, 60.0),                   # enzymes
    (150, "[lb_av]", "kg", None, 68.0388555),
    (70000, "g", "kg", None, 70.0),
    (0.452, "s", "ms", None, 452.0),
    (0.55, "1", "%", None, 55.0),
    (5, "m[IU]/mL", "[IU]/L", None, 5.0),
    (1.2, "mg/dL", "mg/dL", None, 1.2),
])
def test_conversions(value, src, dst, mm, expected):
    assert convert(value, src, dst, molar_mass=mm) == pytest.approx(expected, rel=2e-3)


def test_alias_makes_iu_and_enzyme_units_the_same():
    assert convert(40, "[IU]/L", "U/L") is None  # different dimensions to UCUM ...
    assert convert(40, "[IU]/L", "U/L", aliases={"[IU]/L": "U/L"}) == 40  # ... the same to the lab


@pytest.mark.parametrize(("src", "dst"), [("kg", "mg/dL"), ("mL/min/{1.73_m2}", "mL/min"), ("bogus", "kg"),
                                          ("mmol/L", "mg/dL")])
def test_unconvertible_units_give_none(src, dst):
    assert convert(1.0, src, dst) is None


def test_missing_unit_is_none():
    assert convert(1.0, None, "kg") is None


def test_factor_is_cached():
    conversion_factor.cache_clear()
    conversion_factor("umol/L", "mg/dL", CREATININE_MM)
    conversion_factor("umol/L", "mg/dL", CREATININE_MM)
    assert conversion_factor.cache_info().hits == 1


@pytest.mark.parametrize(("q", "limit", "at_most"), [
    (Quantity(2.5, "x"), 2.5, True),
    (Quantity(2.6, "x"), 2.5, False),
    (Quantity(0.5, "x", "<"), 0.5, True),
    (Quantity(0.5, "x", "<"), 0.4, None),
    (Quantity(3.0, "x", ">"), 2.5, False),
    (Quantity(2.0, "x", ">"), 2.5, None),
    (Quantity(2.5, "x", ">="), 2.5, None),
    (Quantity(2.5, "x", "<="), 2.5, True),
])
def test_censored_comparisons(q, limit, at_most):
    assert q.at_most(limit) is at_most


def test_strict_comparisons():
    assert Quantity(45, "mL/min").greater_than(45) is False
    assert Quantity(45.1, "mL/min").greater_than(45) is True
    assert Quantity(480, "ms").at_least(480) is True
    assert Quantity(479, "ms").at_least(480) is False


@pytest.mark.parametrize(("text", "value", "comparator", "unit"), [
    ("<0.5", 0.5, "<", None),
    ("> 1000 IU/mL", 1000.0, ">", "IU/mL"),
    ("12,5", 12.5, None, None),
    ("<=20", 20.0, "<=", None),
])
def test_value_strings(text, value, comparator, unit):
    q = parse_value_string(text)
    assert (q.value, q.comparator, q.unit) == (value, comparator, unit)


@pytest.mark.parametrize("text", ["", "positive", "see note", None])
def test_value_strings_without_numbers(text):
    assert parse_value_string(text) is None


def test_annotations_must_agree():
    """eGFR per 1.73 m2 is not a clearance: UCUM would say the units are equal, we refuse."""
    assert convert(50, "mL/min/{1.73_m2}", "mL/min") is None
    assert convert(72, "{beats}/min", "/min") is None
    assert convert(72, "{beats}/min", "/min", aliases={"{beats}/min": "/min"}) == 72
