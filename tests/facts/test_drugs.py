"""facts/drugs.py and facts/drug_names.py: resolving medication codes and text to ingredients, and the shipped
medication tables in fhir_mappings/medications/ (schema, consistency with the value sets, coverage of every
class a criterion reads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cds_service.errors import ConfigurationError
from cds_service.facts.codes import default_mappings_dir, load_code_tables
from cds_service.facts.drug_names import TextMatcher, base_ingredient, form_route, parse_rxnorm_name, parse_strength
from cds_service.facts.drugs import ATC, RXNORM, load_drug_tables

DRUGS = load_drug_tables()
TABLES = load_code_tables()
MED = default_mappings_dir() / "medications"


def resolve(codings=(), texts=(), displays=()):
    return DRUGS.resolve(codings, texts, displays)


# --- RxNorm names ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,tty,parts,form,brand", [
    ("dexamethasone 4 MG Oral Tablet", "SCD", [("dexamethasone", 4.0, "mg")], "Oral Tablet", None),
    ("2 ML fludarabine phosphate 25 MG/ML Injection", "SCD", [("fludarabine phosphate", 25.0, "mg/mL")],
     "Injection", None),
    ("24 HR tacrolimus 4 MG Extended Release Oral Tablet", "SCD", [("tacrolimus", 4.0, "mg")],
     "Extended Release Oral Tablet", None),
    ("amoxicillin 875 MG / clavulanate potassium 125 MG Oral Tablet", "SCD",
     [("amoxicillin", 875.0, "mg"), ("clavulanate potassium", 125.0, "mg")], "Oral Tablet", None),
    ("gilteritinib 40 MG Oral Tablet [Xospata]", "SBD", [("gilteritinib", 40.0, "mg")], "Oral Tablet", "Xospata"),
    ("{27 (dexamethasone 1.5 MG Oral Tablet) } Pack", "GPCK", [("dexamethasone", 1.5, "mg")], "Pack", None),
    ("{10 (dexamethasone 20 MG Oral Tablet) } Pack [Hemady]", "BPCK", [("dexamethasone", 20.0, "mg")], "Pack",
     "Hemady"),
    ("{42 (rivaroxaban 15 MG Oral Tablet) / 9 (rivaroxaban 20 MG Oral Tablet) } Pack", "GPCK",
     [("rivaroxaban", None, None)], "Pack", None),
    ("bisoprolol", "IN", [("bisoprolol", None, None)], None, None),
    ("alogliptin / pioglitazone Oral Tablet", "SCDF", [("alogliptin", None, None), ("pioglitazone", None, None)],
     "Oral Tablet", None),
    ("dapagliflozin Oral Tablet [Farxiga]", "SBDF", [("dapagliflozin", None, None)], "Oral Tablet", "Farxiga"),
    ("vildagliptin Oral Product", "SCDG", [("vildagliptin", None, None)], "Oral Product", None),
    ("semaglutide Pill", "SCDG", [("semaglutide", None, None)], "Pill", None),
])
def test_rxnorm_names_are_read_back(name, tty, parts, form, brand):
    parsed = parse_rxnorm_name(name)
    assert parsed is not None
    assert parsed.tty == tty and parsed.form == form and parsed.brand == brand
    assert [(p.name, p.strength, p.unit) for p in parsed.ingredients] == parts


@pytest.mark.parametrize("name", ["Xospata 40 mg tablet", "", "dexamethasone 4mg tab", "{broken pack",
                                  "dexamethasone 4 MG Oral Tablet [Decadron"])
def test_text_that_is_not_an_rxnorm_name_is_not_parsed(name):
    assert parse_rxnorm_name(name) is None


def test_every_shipped_product_is_its_parsed_name():
    """The product table is what parse_rxnorm_name reads from each display (the builder's rule, re-checked)."""
    doc = json.loads((MED / "products.json").read_text(encoding="utf-8"))
    for p in doc["products"]:
        if "note" in p:
            continue  # a reviewed addition, written by hand
        parsed = parse_rxnorm_name(p["display"])
        assert parsed is not None and parsed.tty == p["tty"], p
        assert [i.get("strength") for i in p["ingredients"]] == [x.strength for x in parsed.ingredients], p


def test_salts_are_removed_to_name_the_ingredient():
    known = {n: 1 for n in ("fludarabine", "mycophenolate mofetil", "dexamethasone")}
    assert base_ingredient("fludarabine phosphate", known) == "fludarabine"
    assert base_ingredient("dexamethasone sodium phosphate", known) == "dexamethasone"
    assert base_ingredient("mycophenolate mofetil", known) == "mycophenolate mofetil"


# --- resolving ---------------------------------------------------------------------------------------------------

def test_scd_code_gives_ingredient_strength_form_and_codes():
    m = resolve([(RXNORM, "197582")])
    assert (m.via, m.names, m.tty, m.route) == ("rxnorm-product", ("dexamethasone",), "SCD", "systemic")
    assert (RXNORM, "3264") in m.codings and (ATC, "H02AB02") in m.codings
    assert m.dose_mg(1, "{tbl}") == 4.0 and m.dose_mg(2, "tablet") == 8.0
    assert m.dose_mg(1, None) == 4.0  # no unit: a count of the product's tablets
    assert m.dose_mg(1, "mL") is None


def test_gpck_code_resolves():
    assert resolve([(RXNORM, "1869595")]).names == ("dexamethasone",)


def test_ingredient_code_resolves():
    m = resolve([(RXNORM, "2105806")])
    assert (m.via, m.names) == ("rxnorm-ingredient", ("gilteritinib",))


@pytest.mark.parametrize("system", [ATC, "http://fhir.de/CodeSystem/bfarm/atc", "urn:oid:2.16.840.1.113883.6.73"])
def test_atc_code_in_any_spelling_of_the_system_resolves(system):
    assert resolve([(system, "L01XX05")]).names == ("hydroxyurea",)


def test_an_atc_group_code_names_no_single_ingredient():
    assert resolve([(ATC, "L01XX")]) is None


def test_unlisted_sbd_is_read_from_its_rxnorm_name():
    m = resolve([(RXNORM, "1")], displays=[(RXNORM, "1", "gilteritinib 40 MG Oral Tablet [Xospata]")])
    assert (m.via, m.names, m.tty) == ("rxnorm-display", ("gilteritinib",), "SBD")
    assert m.ingredients[0].strength == 40.0


def test_rxnorm_name_with_an_unknown_ingredient_is_not_guessed_from_the_rest():
    name = "zzzumab 10 MG / dexamethasone 4 MG Oral Tablet"
    assert resolve([(RXNORM, "1")], displays=[(RXNORM, "1", name)]).via == "text"  # the text still names dex


@pytest.mark.parametrize("text,names", [
    ("Xospata 40 mg tablet", ("gilteritinib",)),
    ("dexamethasone 4mg tab", ("dexamethasone",)),
    ("Hydroxycarbamide 500mg", ("hydroxyurea",)),
    ("ciclosporin 100 mg", ("cyclosporine",)),
    ("Pip/tazo 4.5g IV", ("piperacillin / tazobactam",)),  # a reviewed synonym
    ("MTX 15 mg weekly", ()),  # an abbreviation nobody reviewed: not guessed
    ("capecitabine 500 mg", ("capecitabine",)),
])
def test_free_text_names_ingredients_brands_and_synonyms(text, names):
    m = resolve(texts=[text])
    assert (m.names if m else ()) == names


def test_text_matcher_matches_whole_words_longest_first():
    matcher = TextMatcher([("arsenic trioxide", "arsenic trioxide"), ("arsenic", "arsenic"), ("ATG", "atg")])
    assert matcher.find("Arsenic trioxide 10 mg IV") == ["arsenic trioxide"]
    assert matcher.find("ATG-Fresenius; arsenic") == ["atg", "arsenic"]
    assert matcher.find("catgut") == []


def test_text_strength_is_the_one_after_the_drug_s_name():
    m = resolve(texts=["ondansetron 8 mg, dexamethasone 4 mg premedication"])
    assert m.names == ("dexamethasone",) and m.ingredients[0].strength == 4.0


def test_text_strength_and_volume():
    assert parse_strength("Xospata 40 mg tablet") == (40.0, "mg")
    assert parse_strength("dexamethasone 4mg tab") == (4.0, "mg")
    assert parse_strength("fludarabine 25 mg/ml inj") == (25.0, "mg/mL")
    assert parse_strength("no numbers") is None


def test_solution_dose_in_ml_uses_its_concentration():
    m = resolve([(RXNORM, "309684")])  # dexamethasone 1 MG/ML Oral Solution
    assert m.dose_mg(5, "mL") == 5.0
    assert m.dose_mg(1, "tablet") is None and m.dose_mg(1, None) is None


def test_a_combination_product_has_no_single_ingredient_dose():
    m = resolve(texts=["sulfamethoxazole / trimethoprim 800/160 mg"])
    assert m.names == ("sulfamethoxazole / trimethoprim",)
    amox = next(p for p in DRUGS.products.values() if len(p.ingredients) == 2)
    assert resolve([(RXNORM, amox.code)]).dose_mg(1, "tablet") is None


@pytest.mark.parametrize("form,route", [
    ("Oral Tablet", "systemic"), ("Injection", "systemic"), ("dexamethasone 4mg tab", "systemic"),
    ("Topical Cream", "non-systemic"), ("hydrocortisone 1% cream", "non-systemic"),
    ("Inhalation Powder", "non-systemic"), ("Ophthalmic Solution", "non-systemic"), ("capecitabine", None),
    (None, None),
])
def test_dose_form_says_the_route(form, route):
    assert form_route(form) == route


def test_prophylaxis_is_read_from_the_record_s_own_words_and_codes():
    assert DRUGS.states_prophylaxis(["Antifungal prophylaxis"], []) == "Antifungal prophylaxis"
    assert DRUGS.states_prophylaxis([None, "PPx during neutropenia"], []) is not None
    assert DRUGS.states_prophylaxis([], [("http://snomed.info/sct", "360271000")]) is not None
    assert DRUGS.states_prophylaxis(["pneumonia"], [("http://snomed.info/sct", "233604007")]) is None


# --- the tables: coverage and consistency ------------------------------------------------------------------------

CLASSES_CRITERIA_READ = ["systemic-corticosteroid", "antineoplastic", "cytotoxic", "hypomethylating-agent",
                         "flt3-inhibitor", "idh-inhibitor", "bcl2-inhibitor", "menin-inhibitor", "immunosuppressant",
                         "calcineurin-inhibitor", "mtor-inhibitor", "jak-inhibitor",
                         "antimetabolite-immunosuppressant", "anti-thymocyte-globulin", "costimulation-blocker",
                         "antibacterial", "antifungal", "antiviral", "car-t", "gene-modified-cell-therapy"]
CLASS_VALUE_SET = {"systemic-corticosteroid": "systemic-corticosteroids", "antineoplastic": "anti-tumor-drugs",
                   "immunosuppressant": "immunosuppressants", "anti-infective": "anti-infectives",
                   "car-t": "car-t-history"}


@pytest.mark.parametrize("cls", CLASSES_CRITERIA_READ)
def test_every_class_a_criterion_reads_has_members(cls):
    members = [i for i in DRUGS.ingredients.values() if cls in i.classes]
    assert len(members) >= (1 if cls in {"bcl2-inhibitor", "anti-thymocyte-globulin"} else 2), cls


@pytest.mark.parametrize("cls,value_set", sorted(CLASS_VALUE_SET.items()))
def test_every_member_of_a_class_is_recognised_by_the_class_value_set(cls, value_set):
    """Through its RxNorm ingredient or ATC code, every member's codes reach the criterion's value set."""
    for ing in DRUGS.ingredients.values():
        if cls not in ing.classes:
            continue
        codes = ([(RXNORM, ing.rxnorm)] if ing.rxnorm else []) + [(ATC, a) for a in ing.atc]
        assert TABLES.match_codings(codes, value_set) is not None, (ing.name, value_set)


def test_value_set_rxnorm_ingredients_and_factors_agree_with_the_ingredient_table():
    for vs_id in ("systemic-corticosteroids", "anti-tumor-drugs", "immunosuppressants", "study-drug-ingredients"):
        for c in TABLES[vs_id].concepts:
            if c.system != RXNORM:
                continue
            hit = resolve([(RXNORM, c.code)])
            assert hit is not None, (vs_id, c.code, c.display)
            ing = hit.ingredients[0].ingredient
            if c.prednisone_factor is not None:
                assert ing.prednisone_factor == c.prednisone_factor, c.display
            if c.half_life_hours is not None:
                assert ing.half_life_hours == c.half_life_hours, c.display


def test_class_atc_groups_contain_their_members_atc_codes():
    for ing in DRUGS.ingredients.values():
        for cls in ing.classes:
            groups = DRUGS.classes[cls].get("atc")
            if groups and ing.atc and cls not in {"immunosuppressant", "jak-inhibitor", "antineoplastic"}:
                assert any(a.startswith(tuple(groups)) for a in ing.atc), (ing.name, cls)


def test_half_lives_and_factors_name_their_source():
    for ing in DRUGS.ingredients.values():
        assert (ing.half_life_hours is None) == (ing.half_life_source is None), ing.name
        assert (ing.prednisone_factor is None) == (ing.prednisone_factor_source is None), ing.name
    hu = DRUGS.ingredient("hydroxyurea")
    assert hu.half_life_hours == 4 and "Blood 1998" in hu.half_life_source


def test_sizes_and_term_types():
    ttys = {p.tty for p in DRUGS.products.values()}
    assert len(DRUGS.ingredients) >= 600 and len(DRUGS.products) >= 3000
    assert {"SCD", "GPCK"} <= ttys
    assert {s["repository"] for s in DRUGS.meta["sources"]} >= {"cqframework/ecqm-content-qicore-2024"}
    assert all(len(s["commit"]) == 40 for s in DRUGS.meta["sources"])


def test_a_broken_table_fails_loading_naming_the_file(tmp_path: Path):
    base = tmp_path / "fhir_mappings"
    shutil.copytree(default_mappings_dir(), base)
    path = base / "medications" / "products.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["products"][0]["ingredients"] = [{"name": "no-such-ingredient"}]
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="products.json.*no-such-ingredient"):
        load_drug_tables(base)
    doc["products"][0]["tty"] = "XYZ"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="products.json: invalid at products/0/tty"):
        load_drug_tables(base)


def test_a_class_that_does_not_exist_fails_loading(tmp_path: Path):
    base = tmp_path / "fhir_mappings"
    shutil.copytree(default_mappings_dir(), base)
    path = base / "medications" / "ingredients.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["ingredients"][0]["classes"] = ["no-such-class"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="unknown drug class 'no-such-class'"):
        load_drug_tables(base)


def test_every_live_vaccine_name_maps_to_a_live_vaccine_code():
    assert len(DRUGS.vaccine_names) >= 20
    for name, coding in DRUGS.vaccine_names.items():
        assert TABLES.match_codings([coding], "live-vaccines") is not None, name
