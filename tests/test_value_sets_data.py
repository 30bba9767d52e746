"""Data checks for the shipped code tables in fhir_mappings/value-sets/.

These tests read only the JSON files; they do not import the service. They check that every table
validates against fhir_mappings/schema/value-set.schema.json, follows the conventions the schema cannot
express, and still holds (or still leaves out) the clinically important codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[1] / "fhir_mappings"
SCHEMA_PATH = ROOT / "schema" / "value-set.schema.json"
VALUE_SET_DIR = ROOT / "value-sets"
FILES = sorted(VALUE_SET_DIR.glob("*.json"))

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10WHO = "http://hl7.org/fhir/sid/icd-10"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"  # ICD-10-GM (BfArM; the DIMDI URI is an alias)
CANONICAL_SYSTEMS = {LOINC, SNOMED, ICD10CM, ICD10WHO, ICD10GM, PCS, CPT, RXNORM, CVX, ICDO3, ATC, UCUM, NCIT,
                     V3_INTERP}
NO_PREFIX_SYSTEMS = {SNOMED, LOINC, RXNORM, CVX}
SOURCE_KEYS = {"VSAC", "CM26", "WHO19", "PCSidx", "LNCx", "ATC26", "CIBMTR", "RXTBL", "mCODE", "VADSS",
               "MIRACUM", "FHIR-IG", "PAGES"}
# Value sets meant to be filled with local site codes only.
MAY_BE_EMPTY = {"cll1"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


TABLES = {p.stem: _load(p) for p in FILES}


def _concept(vs_id: str, system: str, code: str) -> dict | None:
    for c in TABLES[vs_id]["concepts"]:
        if c["system"] == system and c["code"] == code:
            return c
    return None


def _matches(vs_id: str, system: str, code: str) -> dict | None:
    """The entry a coding would match (exact first, then the longest prefix), as the loader does."""
    hit = _concept(vs_id, system, code)
    if hit is not None and hit.get("match", "exact") == "exact":
        return hit
    prefixes = [c for c in TABLES[vs_id]["concepts"]
                if c["system"] == system and c.get("match") == "prefix" and code.startswith(c["code"])]
    return max(prefixes, key=lambda c: len(c["code"]), default=None)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = _load(SCHEMA_PATH)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_tables_are_present() -> None:
    assert len(FILES) >= 100
    for vs_id in ("aml", "apl", "live-vaccines", "qtcf", "hiv-antibody", "systemic-corticosteroids", "cll1"):
        assert vs_id in TABLES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_table_validates_and_follows_conventions(path: Path, validator: Draft202012Validator) -> None:
    data = _load(path)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, errors
    assert data["id"] == path.stem
    assert data["criteria"], "every shipped value set names the criteria that use it"
    if data["id"] not in MAY_BE_EMPTY:
        assert data["concepts"], "only a value set meant for local site codes may be empty"
    seen: set[tuple[str, str]] = set()
    for c in data["concepts"]:
        key = (c["system"], c["code"])
        assert key not in seen, f"repeated {key}"
        seen.add(key)
        assert c["system"] in CANONICAL_SYSTEMS, c
        assert c["status"] in {"verified", "partly-verified"}, c  # shipped tables hold no local codes
        assert c["source"] in SOURCE_KEYS, c
        if c.get("match") == "prefix":
            assert c["system"] not in NO_PREFIX_SYSTEMS, c
        if "prednisone_factor" in c:
            assert data["id"] == "systemic-corticosteroids", c
        if "half_life_hours" in c:
            assert data["id"] == "anti-tumor-drugs", c


def test_schema_rejects_bad_entries(validator: Draft202012Validator) -> None:
    good = {"id": "x", "title": "t", "description": "d", "criteria": ["I2"],
            "concepts": [{"system": LOINC, "code": "1742-6", "display": "ALT", "status": "verified",
                          "source": "FHIR-IG"}]}
    assert not list(validator.iter_errors(good))

    def bad(**changes: object) -> dict:
        concept = {**good["concepts"][0], **changes}
        return {**good, "concepts": [concept]}

    assert list(validator.iter_errors(bad(status="unverified")))
    assert list(validator.iter_errors(bad(match="prefix")))  # no prefix on LOINC
    assert list(validator.iter_errors(bad(extra="x")))
    assert list(validator.iter_errors({**good, "extra": 1}))
    assert list(validator.iter_errors({**good, "id": "Not_Kebab"}))
    assert list(validator.iter_errors({**good, "criteria": ["X1"]}))
    assert list(validator.iter_errors({**good, "quantity": {"unit_aliases": {}}}))  # unit is required


def test_aml_codes() -> None:
    assert _concept("aml", SNOMED, "91861009") is not None
    assert _concept("aml", ICD10CM, "C92.02")["qualifier"] == "relapse"
    assert _concept("aml", ICD10CM, "C92.01")["qualifier"] == "remission"
    assert _concept("aml", SNOMED, "12291000132102")["qualifier"] == "refractory"
    assert _matches("aml", ICD10WHO, "C92.8") is not None  # WHO: AML with multilineage dysplasia
    ambiguous = _concept("aml", ICD10CM, "C92.92")
    assert ambiguous["qualifier"] == "ambiguous" and ambiguous.get("review")
    assert _concept("aml", SNOMED, "188738007").get("review")
    # APL and CMML are not AML.
    for code in ("C92.40", "C92.41", "C92.42", "C93.10"):
        assert _matches("aml", ICD10CM, code) is None
    assert _matches("aml", ICD10WHO, "C92.4") is None


def test_apl_codes() -> None:
    assert _concept("apl", ICD10CM, "C92.40") is not None
    assert _matches("apl", ICD10WHO, "C92.4") is not None
    assert _concept("apl", SNOMED, "110004001") is not None
    assert _concept("apl", ICDO3, "9866/3") is not None
    assert _concept("pml-rara", LOINC, "21551-7")["status"] == "verified"


def test_vaccines() -> None:
    assert _concept("live-vaccines", CVX, "121") is not None  # zoster live (Zostavax)
    assert _concept("live-vaccines", CVX, "187") is None  # zoster recombinant (Shingrix) is not live
    assert _concept("live-vaccines", ATC, "J07BA03") is not None  # live JE SA14-14-2
    assert _concept("live-vaccines", ATC, "J07BC02") is None  # hepatitis A inactivated
    assert _concept("vaccines-ambiguous", CVX, "188").get("review")
    for c in TABLES["live-vaccines"]["concepts"]:
        assert c["qualifier"] == "live" and "review" not in c


def test_qtc_and_virology_exclusions() -> None:
    qtcf_codes = {c["code"] for c in TABLES["qtcf"]["concepts"]}
    assert qtcf_codes == {"76634-5"}
    assert "76635-2" not in qtcf_codes and "8636-3" not in qtcf_codes
    assert _concept("hiv-antibody", LOINC, "75622-1") is None  # a panel, not a result
    assert _concept("hiv-antibody", LOINC, "7917-8") is not None
    assert _concept("treponemal-antibody", LOINC, "20507-0") is None  # RPR is not TPPA
    assert _concept("nontreponemal-test", LOINC, "20507-0").get("review")


def test_corticosteroid_factors() -> None:
    factors = {c["display"]: c["prednisone_factor"] for c in TABLES["systemic-corticosteroids"]["concepts"]
               if c["system"] == RXNORM}
    assert factors["dexamethasone"] == pytest.approx(6.67)
    assert factors["prednisone"] == 1
    assert factors["methylprednisolone"] == pytest.approx(1.25)
    assert factors["hydrocortisone"] == pytest.approx(0.25)
    assert _concept("systemic-corticosteroids", ATC, "H02AB02")["prednisone_factor"] == pytest.approx(6.67)
    assert _concept("systemic-corticosteroids", RXNORM, "3264")["prednisone_factor"] == pytest.approx(6.67)


def test_anti_tumour_half_lives() -> None:
    assert _concept("anti-tumor-drugs", RXNORM, "1251")["half_life_hours"] == pytest.approx(0.69)
    assert _concept("anti-tumor-drugs", ATC, "L01XX52")["half_life_hours"] == 26
    assert "half_life_hours" not in _concept("anti-tumor-drugs", RXNORM, "5650")  # idarubicin: unsourced
    catch_all = _matches("anti-tumor-drugs", ATC, "L01XX99")
    assert catch_all["code"] == "L01" and "half_life_hours" not in catch_all


def test_labs_and_units() -> None:
    assert TABLES["alt"]["quantity"] == {"unit": "U/L", "unit_aliases": {"[IU]/L": "U/L"}}
    assert TABLES["bilirubin-total"]["quantity"]["molar_mass_g_per_mol"] == pytest.approx(584.66)
    assert TABLES["creatinine"]["quantity"]["molar_mass_g_per_mol"] == pytest.approx(113.12)
    assert TABLES["lvef"]["quantity"]["unit"] == "%"
    assert _concept("egfr-not-crcl", LOINC, "33914-3") is not None
    assert _concept("creatinine", LOINC, "33914-3") is None
    assert _concept("spo2", LOINC, "2708-6").get("review")
    assert _concept("bilirubin-direct", LOINC, "15152-2").get("review")
    ecog = {c["code"]: c["value"] for c in TABLES["ecog-answers"]["concepts"]}
    assert ecog["LA9622-7"] == 0 and ecog["LA9624-3"] == 2 and ecog["LA9627-6"] == 5
    assert TABLES["cll1"]["concepts"] == []


def test_undated_and_review_qualifiers() -> None:
    assert _concept("mi-cabg-undated", ICD10CM, "I25.2")["qualifier"] == "undated"
    assert _matches("hsct-status-undated", ICD10CM, "T86.09")["qualifier"] == "undated"
    assert _matches("malignancy", ICD10CM, "Z85.3")["qualifier"] == "history"
    assert _concept("allo-hsct", SNOMED, "234336002").get("review")
    assert _concept("av-block-high-grade", SNOMED, "54016002").get("review")
    assert _concept("nyha-class", SNOMED, "420913000")["qualifier"] == "class-3"
    for c in TABLES["anti-infectives"]["concepts"]:
        assert c.get("review"), "anti-infective orders alone never exclude"


def test_malignancy_exceptions_do_not_cover_melanoma() -> None:
    assert _matches("malignancy-exception-nmsc", ICD10CM, "C44.91") is not None
    assert _matches("malignancy-exception-nmsc", ICD10CM, "C43.9") is None
    assert _matches("malignancy-exception-nmsc", ICD10CM, "C4A.9") is None
    assert _matches("malignancy", ICD10CM, "C43.9") is not None


def test_cabg_prefixes_skip_percutaneous_coronary_vein_codes() -> None:
    assert _matches("cabg", PCS, "021009W") is not None  # open approach
    assert _matches("cabg", PCS, "0210344") is None  # percutaneous, from coronary vein: not CABG


def test_systems_aliases_point_to_canonical_uris() -> None:
    aliases = _load(ROOT / "systems.json")["aliases"]
    assert set(_load(ROOT / "systems.json")) == {"aliases"}
    assert aliases["urn:oid:2.16.840.1.113883.6.1"] == LOINC
    assert aliases["urn:oid:2.16.840.1.113883.6.90"] == ICD10CM
    assert aliases["urn:oid:2.16.840.1.113883.6.3"] == ICD10WHO
    assert aliases["http://hl7.org/fhir/sid/icd-10-pcs"] == PCS
    for alias, target in aliases.items():
        assert target in CANONICAL_SYSTEMS, alias
        assert alias not in CANONICAL_SYSTEMS, alias
