"""Issue 9 part 2: medications recognised by ingredient, through the whole pipeline (``screen()``).

Each test is one of the issue's known misses, or a member of a drug class from one kind of source (RxNorm clinical
drug, branded drug name, pack, brand text, ATC code, free text), screened at the fixed time AT. The products are
named by their RxNorm codes from the VSAC expansions in fhir_mappings/medications/products.json; an RxNorm code
the tables do not list is written as ``UNLISTED`` (its RxNorm name, the display, is what is read).
"""

from dataclasses import replace
from datetime import timedelta

import pytest
from builders import (
    AT,
    ATC,
    RXNORM,
    SCT,
    allergy,
    cc,
    condition,
    date_ago,
    days_ago,
    patient,
    screen,
)
from builders import record_of as _record_of

from cds_service.config import Knowledge, default_knowledge
from cds_service.criteria.result import Result

MET, NOT_MET, UNKNOWN = Result.MET, Result.NOT_MET, Result.UNKNOWN
UNLISTED = "999999001"  # an RxNorm code outside the tables: its display is an RxNorm name
UCUM = "http://unitsofmeasure.org"
GVHD_CHRONIC = "402356004"
INFECTIOUS_DISEASE = "40733004"


def result(criterion_id: str, *resources: dict, knowledge: Knowledge | None = None):
    return screen(_record_of(patient(), *resources), AT, knowledge).criterion(criterion_id)


def tablets(n: float, unit: str = "tablet", code: str = "{tbl}") -> dict:
    return {"value": n, "unit": unit, "system": UCUM, "code": code}


def order(concept: dict, *, start: str, per_day: int = 1, dose: dict | None = None, status: str = "active",
          reason: str | None = None, route: str | None = None) -> dict:
    """A MedicationRequest for ``concept`` with a dose in product units (or none) and no route unless given."""
    dosage: dict = {"timing": {"repeat": {"boundsPeriod": {"start": start}, "frequency": per_day, "period": 1,
                                          "periodUnit": "d"}}}
    if dose is not None:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    if route:
        dosage["route"] = cc(SCT, route)
    res = {"resourceType": "MedicationRequest", "id": f"mr-{abs(hash((str(concept), start, reason))) % 10**8}",
           "status": status, "intent": "order", "medicationCodeableConcept": concept,
           "subject": {"reference": "Patient/p1"}, "authoredOn": start, "dosageInstruction": [dosage]}
    if reason:
        res["reasonCode"] = [{"text": reason}]
    return res


def given(concept: dict, *, when: str, dose: dict | None = None, route: str | None = None) -> dict:
    res = {"resourceType": "MedicationAdministration", "id": f"ma-{abs(hash((str(concept), when))) % 10**8}",
           "status": "completed", "medicationCodeableConcept": concept, "subject": {"reference": "Patient/p1"},
           "effectiveDateTime": when}
    dosage = {}
    if dose is not None:
        dosage["dose"] = dose
    if route:
        dosage["route"] = cc(SCT, route)
    if dosage:
        res["dosage"] = dosage
    return res


def rx(code: str, display: str | None = None) -> dict:
    return cc(RXNORM, code, display)


def text_only(text: str) -> dict:
    return {"text": text}


def with_windows(**changes: object) -> Knowledge:
    k = default_knowledge()
    return Knowledge(k.tables, replace(k.rules, windows={**k.rules.windows, **changes}), k.drugs)


# --- the known misses ------------------------------------------------------------------------------------

def test_dexamethasone_4mg_oral_tablet_scd_counts_its_strength():
    """1 tablet twice a day of dexamethasone 4 MG Oral Tablet (SCD 197582) for 5 days: 8 mg/day x 6.67 x 5."""
    r = result("E2a", order(rx("197582", "dexamethasone 4 MG Oral Tablet"), start=date_ago(5), per_day=2,
                            dose=tablets(1)))
    assert r.result is MET
    assert "1 {tbl} x 4 mg dexamethasone" in r.evidence[0].note
    assert r.evidence[0].value == pytest.approx(8 * 6.67 * 5.375, rel=0.01)  # from midnight 5 days ago to 09:00


def test_active_prednisone_20mg_tablet_order_is_counted():
    r = result("E2a", order(rx("312615", "prednisone 20 MG Oral Tablet"), start=date_ago(6), dose=tablets(1)))
    assert r.result is MET
    assert "20 mg" not in r.reason or "prednisone" in r.reason


def test_xospata_40mg_tablet_sbd_three_days_ago_is_within_washout():
    sbd = rx(UNLISTED, "gilteritinib 40 MG Oral Tablet [Xospata]")
    r = result("E2c", given(sbd, when=days_ago(3), dose=tablets(3)))
    assert r.result is MET
    assert "gilteritinib" in r.reason.lower()


def test_xospata_written_as_text_only_is_within_washout():
    r = result("E2c", given(text_only("Xospata 40 mg tablet"), when=days_ago(3)))
    assert r.result is MET
    assert "gilteritinib" in r.reason.lower()


def test_hydroxyurea_capsules_given_this_morning_use_its_sourced_half_life():
    r = result("E2c", given(rx("197797", "hydroxyurea 500 MG Oral Capsule"), when=(AT - timedelta(hours=3))
                            .isoformat().replace("+00:00", "Z"), dose=tablets(2, "capsule", "{capsule}")))
    assert r.result is MET
    assert "t1/2 4 h" in r.reason
    # 5 x 4 h = 20 h after 06:00 is 02:00 tomorrow: passed from the day after (the first whole day clear),
    # not after the 14-day default of an unknown half-life.
    assert r.until == (AT + timedelta(days=2)).date()


def test_ruxolitinib_tablets_for_gvhd_are_the_need_for_immunosuppression():
    gvhd = condition(SCT, GVHD_CHRONIC, onset=date_ago(300), clinical="resolved")
    gvhd["abatementDateTime"] = date_ago(90)
    r = result("E6", gvhd, order(rx("1193339", "ruxolitinib 5 MG Oral Tablet"), start=date_ago(30), per_day=2,
                                 dose=tablets(1), reason="chronic GvHD"))
    assert r.result is MET
    assert "ruxolitinib" in r.reason.lower() or any("ruxolitinib" in (e.display or "") for e in r.evidence)


def test_iv_meropenem_for_pneumonia_is_treatment_of_an_active_infection():
    pneumonia = condition(SCT, INFECTIOUS_DISEASE, onset=date_ago(3))
    mero = given(rx(UNLISTED, "meropenem 1000 MG Injection"), when=days_ago(1), route="47625008")
    assert result("E7", pneumonia, mero).result is MET


def test_iv_meropenem_as_text_is_recognised_too():
    pneumonia = condition(SCT, INFECTIOUS_DISEASE, onset=date_ago(3))
    assert result("E7", pneumonia, given(text_only("Meropenem 1 g IV q8h"), when=days_ago(1))).result is MET


def test_fludarabine_allergy_coded_as_the_injection_product_is_an_ingredient_allergy():
    r = result("E1", allergy(RXNORM, "1740864"))  # fludarabine phosphate 50 MG Injection
    assert r.result is MET
    assert "fludarabine" in r.reason


def test_fludarabine_allergy_as_text_only():
    a = allergy(RXNORM, "1740864")
    a["code"] = {"text": "Fludara"}
    assert result("E1", a).result is MET


# --- the prophylaxis rule (E7) ------------------------------------------------------------------------------------

def test_posaconazole_stated_as_prophylaxis_without_infection_is_not_met():
    r = result("E7", order(rx(UNLISTED, "posaconazole 100 MG Delayed Release Oral Tablet"), start=date_ago(20),
                           reason="antifungal prophylaxis"))
    assert r.result is NOT_MET
    assert "stated as prophylaxis" in r.reason


def test_posaconazole_without_a_stated_reason_still_goes_to_review():
    r = result("E7", order(rx(UNLISTED, "posaconazole 100 MG Delayed Release Oral Tablet"), start=date_ago(20)))
    assert r.result is UNKNOWN


def test_stated_prophylaxis_with_an_active_infection_stays_unknown():
    inf = condition(SCT, INFECTIOUS_DISEASE, onset=date_ago(3))
    r = result("E7", inf, order(text_only("acyclovir 400 mg tab"), start=date_ago(20), reason="HSV prophylaxis"))
    assert r.result is UNKNOWN
    assert "prophylaxis" in r.reason


def test_prophylaxis_rule_review_counts_the_order_like_any_other():
    inf = condition(SCT, INFECTIOUS_DISEASE, onset=date_ago(3))
    k = with_windows(anti_infective_stated_prophylaxis="review")
    r = result("E7", inf, order(text_only("acyclovir 400 mg tab"), start=date_ago(20), reason="HSV prophylaxis"),
               knowledge=k)
    assert r.result is MET


# --- classes, each from several kinds of source --------------------------------------------------------------------

@pytest.mark.parametrize("concept", [
    rx("197582", "dexamethasone 4 MG Oral Tablet"),                      # SCD
    rx("1869595", "{27 (dexamethasone 1.5 MG Oral Tablet) } Pack"),      # GPCK
    rx(UNLISTED, "dexamethasone 4 MG Oral Tablet [Decadron]"),           # SBD name
    rx(UNLISTED, "{10 (dexamethasone 4 MG Oral Tablet) } Pack [Hemady]"),  # BPCK name
    cc("http://fhir.de/CodeSystem/bfarm/atc", "H02AB02"),                # German ATC URI
    text_only("Decadron 4 mg"),                                          # brand text
    text_only("dexamethasone 4mg tab"),                                  # free text
], ids=["SCD", "GPCK", "SBD", "BPCK", "ATC-GM", "brand", "text"])
def test_systemic_corticosteroid_from_every_kind_of_source(concept):
    r = result("E2a", given(concept, when=days_ago(1), dose={"value": 12, "unit": "mg", "system": UCUM,
                                                           "code": "mg"}))
    assert r.result is MET  # 12 mg dexamethasone = 80 mg prednisone-equivalent


def test_topical_hydrocortisone_cream_without_a_route_is_left_out():
    cream = text_only("hydrocortisone 1% cream")
    r = result("E2a", given(cream, when=days_ago(1), dose={"value": 400, "unit": "mg", "system": UCUM,
                                                         "code": "mg"}))
    assert r.result is NOT_MET


@pytest.mark.parametrize("concept,drug", [
    (rx("485246", "azacitidine 100 MG Injection"), "azacitidine"),            # hypomethylating, SCD
    (text_only("Dacogen 50 mg IV"), "decitabine"),                             # hypomethylating, brand
    (rx(UNLISTED, "venetoclax 100 MG Oral Tablet [Venclexta]"), "venetoclax"),  # BCL-2, SBD name
    (cc(ATC, "L01XM02"), "ivosidenib"),                                        # IDH, ATC
    (text_only("Revuforj 110 mg"), "revumenib"),                               # menin, brand
    (text_only("quizartinib 26.5 mg"), "quizartinib"),                         # FLT3, text
    (rx("1740865", "2 ML fludarabine phosphate 25 MG/ML Injection"), "fludarabine"),  # cytotoxic, SCD (salt)
])
def test_anti_tumour_classes_are_within_washout(concept, drug):
    # One hour ago: inside even the shortest washout (5 x 0.5 h for decitabine).
    r = result("E2c", given(concept, when=(AT - timedelta(hours=1)).isoformat().replace("+00:00", "Z")))
    assert r.result is MET
    assert drug in r.reason.lower()


@pytest.mark.parametrize("concept", [
    rx("1431980", "24 HR tacrolimus 1 MG Extended Release Oral Capsule"),  # calcineurin, SCD
    text_only("Rapamune 2 mg"),                                             # mTOR, brand
    text_only("Jakafi 10 mg BID"),                                          # JAK (ruxolitinib), brand
    text_only("baricitinib 4 mg"),                                          # JAK, text (ATC L04AF)
    text_only("CellCept 1 g"),                                              # MMF, brand
    text_only("Thymoglobulin 1.5 mg/kg"),                                   # ATG, brand
    cc(ATC, "L04AA24"),                                                     # abatacept, ATC
])
def test_immunosuppressant_classes_with_gvhd_are_met(concept):
    gvhd = condition(SCT, GVHD_CHRONIC, onset=date_ago(300), clinical="resolved")
    gvhd["abatementDateTime"] = date_ago(90)
    assert result("E6", gvhd, order(concept, start=date_ago(10))).result is MET


def test_topical_tacrolimus_ointment_is_not_systemic_immunosuppression():
    gvhd = condition(SCT, GVHD_CHRONIC, onset=date_ago(300), clinical="resolved")
    gvhd["abatementDateTime"] = date_ago(90)
    assert result("E6", gvhd, order(text_only("tacrolimus 0.1% ointment"), start=date_ago(10))).result is NOT_MET


@pytest.mark.parametrize("concept", [
    text_only("Zosyn 4.5 g IV q6h"),                # antibacterial, brand
    rx(UNLISTED, "cefepime 2000 MG Injection"),     # antibacterial, SCD name
    text_only("voriconazole 200 mg BID"),           # antifungal, text
    text_only("Cresemba 372 mg"),                   # antifungal, brand
    text_only("ganciclovir 5 mg/kg IV"),            # antiviral, text
])
def test_anti_infective_classes_with_an_active_infection_are_met(concept):
    inf = condition(SCT, INFECTIOUS_DISEASE, onset=date_ago(3))
    assert result("E7", inf, given(concept, when=days_ago(1))).result is MET


@pytest.mark.parametrize("concept", [
    text_only("Kymriah infusion"),                 # CAR-T, brand
    text_only("Casgevy"),                          # gene-modified HSC product: class only
    text_only("afamitresgene autoleucel"),         # TCR-T cells, text
])
def test_gene_modified_cell_products_by_brand_are_prior_therapy(concept):
    assert result("E4", given(concept, when=days_ago(400))).result is MET


def test_unrelated_text_medication_is_not_called_anti_tumour():
    r = result("E2c", given(text_only("metformin 500 mg tab"), when=days_ago(1)))
    assert r.result is NOT_MET, r.reason  # recognised as metformin: not "text only: is it anti-tumour?"


# --- routes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["419993007", "418114005"])  # intravenous peripheral / central: children of IV
def test_a_child_of_the_iv_route_is_systemic(route):
    mp = given(rx("6902"), when=days_ago(1), dose={"value": 80, "unit": "mg", "system": UCUM, "code": "mg"},
               route=route)
    r = result("E2a", mp)
    assert r.result is MET, r.reason  # 80 mg methylprednisolone x 1.25 = 100 mg prednisone-equivalent


@pytest.mark.parametrize("text,expected", [("IV", MET), ("PO", MET), ("inhaled", NOT_MET), ("topical", NOT_MET)])
def test_a_route_written_only_as_text_is_read(text, expected):
    mp = given(rx("6902"), when=days_ago(1), dose={"value": 80, "unit": "mg", "system": UCUM, "code": "mg"})
    mp["dosage"]["route"] = {"text": text}
    assert result("E2a", mp).result is expected


# --- live vaccines recorded by name (E15) --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["Zostavax", "FluMist Quadrivalent nasal spray", "YF-Vax (yellow fever)"])
def test_a_live_vaccine_recorded_only_by_name_is_live(text):
    imm = {"resourceType": "Immunization", "id": "imm-text", "status": "completed", "vaccineCode": {"text": text},
           "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": date_ago(10)}
    assert result("E15", imm).result is MET


def test_a_non_live_vaccine_name_is_not_live():
    imm = {"resourceType": "Immunization", "id": "imm-text", "status": "completed",
           "vaccineCode": {"text": "Shingrix (recombinant zoster)"}, "patient": {"reference": "Patient/p1"},
           "occurrenceDateTime": date_ago(10)}
    assert result("E15", imm).result is not MET
