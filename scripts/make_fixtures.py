"""Write the synthetic patient fixtures (the product's demo data) to ``fixtures/`` and their expected screening
outcomes to ``tests/fixtures_expected.json``.

    .venv/bin/python scripts/make_fixtures.py            # writes fixtures/*.json, fixtures/*.ndjson
    .venv/bin/python scripts/make_fixtures.py --check    # exit 1 if the files on disk differ from a fresh run

Every date is computed relative to the fixed evaluation time

    AT = 2026-10-01T09:00:00Z

so the fixtures screen the same way on any day: ``trialscreen screen fixtures/ --at 2026-10-01T09:00:00Z``.
The output is deterministic (stable ids, uuid5 fullUrls, no clock, no randomness): running this twice gives
byte-identical files. Names, identifiers and histories are synthetic. Every code used here is one of the codes in
``fhir_mappings/value-sets/*.json`` (or a status/category code from the FHIR core CodeSystems); the fixture
catalogue, and what each fixture demonstrates, is in ``scripts/FIXTURES.md``.

Only the standard library and orjson are used; nothing is imported from ``tests/`` or ``cds_service``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

AT = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://trialscreen.example.org/fixtures")

# --- code systems ------------------------------------------------------------------------------------------
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "http://hospital.example.org/fhir/CodeSystem/lab"
LOCAL_LAB_CN = "http://hospital.example.cn/fhir/CodeSystem/lis"
LOCAL_PROC = "http://hospital.example.org/fhir/CodeSystem/procedure"
MRN = "http://hospital.example.org/fhir/sid/mrn"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CAT = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
ALG_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALG_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
MED_ADMIN_CAT = "http://terminology.hl7.org/CodeSystem/medication-admin-category"
BIRTHSEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"

Coding = tuple[str, str, str]  # (system, code, display)

# --- concepts (each tuple is one CodeableConcept: the codings a real EHR would send together) ----------------
AML_RELAPSE = ((SCT, "12281000132104", "Relapsing acute myeloid leukemia (disorder)"),
               (ICD10CM, "C92.02", "Acute myeloblastic leukemia, in relapse"))
AML_REFRACTORY = ((SCT, "12291000132102", "Refractory acute myeloid leukemia (disorder)"),
                  (ICD10CM, "C92.00", "Acute myeloblastic leukemia, not having achieved remission"))
AML_NOS = ((SCT, "91861009", "Acute myeloid leukemia (disorder)"),
           (ICD10CM, "C92.00", "Acute myeloblastic leukemia, not having achieved remission"))
AML_MRC_RELAPSE = ((SCT, "445448008", "Acute myeloid leukemia with myelodysplasia-related changes (disorder)"),
                   (ICD10CM, "C92.A2", "Acute myeloid leukemia with multilineage dysplasia, in relapse"))
AML_MONO_RELAPSE = ((ICD10CM, "C93.02", "Acute monoblastic/monocytic leukemia, in relapse"),)
AML_WHO = ((ICD10, "C92.0", "Acute myeloblastic leukaemia"),)
AML_MRC_WHO = ((ICD10, "C92.8", "Acute myeloid leukaemia with multilineage dysplasia"),)
APL = ((SCT, "110004001", "Acute promyelocytic leukemia, FAB M3 (disorder)"),
       (ICD10CM, "C92.42", "Acute promyelocytic leukemia, in relapse"))
CML = ((ICD10CM, "C92.10", "Chronic myeloid leukemia, BCR/ABL-positive, not having achieved remission"),)
MDS = ((ICD10CM, "D46.9", "Myelodysplastic syndrome, unspecified"),)
ALL = ((ICD10CM, "C91.00", "Acute lymphoblastic leukemia not having achieved remission"),)
GILBERT = ((ICD10CM, "E80.4", "Gilbert syndrome"),)
CART_HISTORY = ((ICD10CM, "Z92.850", "Personal history of Chimeric Antigen Receptor T-cell therapy"),)
GVHD_CHRONIC = ((SCT, "402356004", "Chronic graft-versus-host disease (disorder)"),
                (ICD10CM, "D89.811", "Chronic graft-versus-host disease"))
GVHD_ACUTE = ((SCT, "402355000", "Acute graft-versus-host disease (disorder)"),
              (ICD10CM, "D89.810", "Acute graft-versus-host disease"))
GVHD_WHO = ((ICD10, "T86.0", "Bone-marrow transplant rejection"),)
PULM_FIBROSIS = ((SCT, "51615001", "Fibrosis of lung (disorder)"),
                 (ICD10CM, "J84.10", "Pulmonary fibrosis, unspecified"))
ISCHEMIC_STROKE = ((SCT, "422504002", "Ischemic stroke (disorder)"),
                   (ICD10CM, "I63.9", "Cerebral infarction, unspecified"))
OLD_STROKE = ((SCT, "230690007", "Cerebrovascular accident (disorder)"),
              (ICD10CM, "I63.9", "Cerebral infarction, unspecified"))
SEIZURE = ((SCT, "91175000", "Seizure (finding)"), (ICD10CM, "R56.9", "Unspecified convulsions"))
ACUTE_MI = ((SCT, "57054005", "Acute myocardial infarction (disorder)"),
            (ICD10CM, "I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"))
OLD_MI = ((ICD10CM, "I25.2", "Old myocardial infarction"),)
HEART_FAILURE = ((SCT, "84114007", "Heart failure (disorder)"), (ICD10CM, "I50.22",
                                                                  "Chronic systolic (congestive) heart failure"))
NYHA_III = ((SCT, "420913000", "New York Heart Association Classification - Class III (finding)"),)
CARDIOMYOPATHY_DRUG = ((SCT, "85898001", "Cardiomyopathy (disorder)"),
                       (ICD10CM, "I42.7", "Cardiomyopathy due to drug and external agent"))
AV_BLOCK_3 = ((SCT, "27885002", "Complete atrioventricular block (disorder)"),
              (ICD10CM, "I44.2", "Atrioventricular block, complete"))
HYPERTENSION = ((SCT, "38341003", "Hypertensive disorder, systemic arterial (disorder)"),
                (ICD10CM, "I10", "Essential (primary) hypertension"))
MENINGEAL_LEUKEMIA = ((SCT, "722795004", "Meningeal leukemia (disorder)"),
                      (ICD10CM, "C79.32", "Secondary malignant neoplasm of cerebral meninges"))
SLE = ((SCT, "55464009", "Systemic lupus erythematosus (disorder)"),
       (ICD10CM, "M32.9", "Systemic lupus erythematosus, unspecified"))
MELANOMA = ((ICD10CM, "C43.9", "Malignant melanoma of skin, unspecified"),)
BREAST_CA_HISTORY = ((ICD10CM, "Z85.3", "Personal history of malignant neoplasm of breast"),)
PNEUMONIA = ((ICD10CM, "J18.9", "Pneumonia, unspecified organism"),)
INFECTION = ((SCT, "40733004", "Infectious disease (disorder)"),)
HEP_B_CHRONIC = ((SCT, "61977001", "Chronic type B viral hepatitis (disorder)"),
                 (ICD10CM, "B18.1", "Chronic viral hepatitis B without delta-agent"))
PREGNANCY = ((SCT, "77386006", "Pregnancy (finding)"),)
NOT_PREGNANT = ((SCT, "60001007", "Not pregnant (finding)"),)
BREASTFEEDING = ((SCT, "169750002", "Mother currently breast-feeding (finding)"),)
MENOPAUSE = ((ICD10CM, "Z78.0", "Asymptomatic menopausal state"),)
HSCT_STATUS = ((ICD10CM, "Z94.84", "Stem cells transplant status"),)
CELL_THERAPY_HISTORY = ((ICD10CM, "Z92.859", "Personal history of cellular therapy, unspecified"),)
EPILEPSY = ((SCT, "84757009", "Epilepsy (disorder)"),
            (ICD10CM, "G40.909", "Epilepsy, unspecified, not intractable, without status epilepticus"))
RHEUMATOID_ARTHRITIS = ((SCT, "69896004", "Rheumatoid arthritis (disorder)"),
                        (ICD10CM, "M06.9", "Rheumatoid arthritis, unspecified"))

# Observation codes
L_CD38 = ((LOINC, "5470-0", "CD38 cells/100 cells in Blood"),)
L_CLL1_LOCAL = ((LOCAL_LAB, "CLL1-BLAST-PCT", "CLL1 (CLEC12A) positive blasts, flow cytometry"),)
L_ECOG = ((LOINC, "89247-1", "ECOG Performance Status score"),)
ECOG_VALUE = {0: (LOINC, "LA9622-7", "Fully active, able to carry on all pre-disease performance without "
                                        "restriction"),
              1: (LOINC, "LA9623-5", "Restricted in physically strenuous activity but ambulatory and able to "
                                        "carry out work of a light or sedentary nature"),
              2: (LOINC, "LA9624-3", "Ambulatory and capable of all selfcare but unable to carry out any work "
                                        "activities"),
              3: (LOINC, "LA9625-0", "Capable of only limited selfcare, confined to bed or chair more than 50% "
                                        "of waking hours")}
L_ALT = ((LOINC, "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
         (LOCAL_LAB, "ALT", "ALT"))
L_AST = ((LOINC, "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
         (LOCAL_LAB, "AST", "AST"))
L_TBIL = ((LOINC, "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"), (LOCAL_LAB, "TBIL", "T. Bili"))
L_TBIL_MOL = ((LOINC, "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma"),)
L_DBIL = ((LOINC, "1968-7", "Bilirubin.direct [Mass/volume] in Serum or Plasma"), (LOCAL_LAB, "DBIL", "D. Bili"))
L_CREAT = ((LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), (LOCAL_LAB, "CREA", "Creatinine"))
L_CREAT_MOL = ((LOINC, "14682-9", "Creatinine [Moles/volume] in Serum or Plasma"),)
L_WEIGHT = ((LOINC, "29463-7", "Body weight"),)
L_LVEF = ((LOINC, "8806-2", "Left ventricular Ejection fraction by 2D echo"),)
L_LVEF_MUGA = ((LOINC, "8812-0", "Left ventricular Ejection fraction by Nuclear blood pool"),)
L_SPO2 = ((LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),)
L_O2_FLOW = ((LOINC, "3151-8", "Inhaled oxygen flow rate"),)
L_QTCF = ((LOINC, "76634-5", "QTc interval by Fridericia formula"),)
L_BP = ((LOINC, "85354-9", "Blood pressure panel with all children optional"),)
L_SBP = ((LOINC, "8480-6", "Systolic blood pressure"),)
L_DBP = ((LOINC, "8462-4", "Diastolic blood pressure"),)
L_HCG_SERUM = ((LOINC, "2118-8", "Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma"),)
L_HCG_URINE = ((LOINC, "2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine"),)
L_HCG_QUANT = ((LOINC, "21198-7", "Choriogonadotropin.beta subunit [Units/volume] in Serum or Plasma"),)
L_PREG_STATUS = ((LOINC, "82810-3", "Pregnancy status"),)
L_BREASTFEEDING = ((LOINC, "63895-7", "Breastfeeding status"),)
L_HIV = ((LOINC, "56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay"),)
L_HBSAG = ((LOINC, "5196-1", "Hepatitis B virus surface Ag [Presence] in Serum by Immunoassay"),)
L_HBCAB = ((LOINC, "13952-7", "Hepatitis B virus core Ab [Presence] in Serum or Plasma by Immunoassay"),)
L_HBV_DNA = ((LOINC, "29615-2", "Hepatitis B virus DNA [#/volume] (viral load) in Serum or Plasma by Probe and "
                                "target amplification method"),)
L_HCV_AB = ((LOINC, "13955-0", "Hepatitis C virus Ab [Presence] in Serum or Plasma"),)
L_HCV_RNA = ((LOINC, "11011-4", "Hepatitis C virus RNA [Units/volume] (viral load) in Serum or Plasma by "
                                "Probe and target amplification method"),)
L_TPPA = ((LOINC, "24312-1", "Treponema pallidum Ab [Presence] in Serum by Agglutination"),)
L_DISEASE_STATUS = ((LOINC, "97509-4", "Cancer disease progression"),)
IN_FULL_REMISSION = (SCT, "550991000124107", "Malignant neoplasm in full remission (disorder)")
L_MARROW_BLASTS = ((LOINC, "11150-0", "Blasts/100 cells"), (LOCAL_LAB_CN, "BM-BLAST", "骨髓原始细胞"))
L_PML_RARA = ((LOINC, "21551-7", "t(15;17)(q24.1;q21.1)(PML,RARA) fusion transcript"),)
POSITIVE = (LOINC, "LA6576-8", "Positive")
NEGATIVE = (LOINC, "LA6577-6", "Negative")
NOT_DETECTED = (SCT, "260415000", "Not detected (qualifier value)")

# Procedures
P_ALLO_HSCT = ((SCT, "174241000112100", "Transplantation of allogeneic hematopoietic stem cell (procedure)"),
               (PCS, "30243Y3", "Transfusion of Nonautologous Hematopoietic Stem/Progenitor Cells, Unrelated, "
                                "into Central Vein, Percutaneous Approach"),
               (CPT, "38240", "Hematopoietic progenitor cell (HPC); allogeneic transplantation per donor"))
P_AUTO_HSCT = ((SCT, "709115004", "Transplantation of autologous hematopoietic stem cell (procedure)"),)
P_CART = ((PCS, "XW033C7", "Introduction of Autologous Engineered Chimeric Antigen Receptor T-cell "
                           "Immunotherapy into Peripheral Vein, Percutaneous Approach"),
          (SCT, "1156961008", "Chimeric antigen receptor T-cell immunotherapy"))
P_RADIOTHERAPY = ((SCT, "1287742003", "Radiation therapy"),
                  (CPT, "77385", "Intensity modulated radiation treatment delivery (IMRT), simple"))
RT_CATEGORY = ((SCT, "108290001", "Radiation oncology AND/OR radiotherapy (procedure)"),)
P_DLI = ((CPT, "38242", "Allogeneic lymphocyte infusions"),)
P_BIOPSY = ((SCT, "86273004", "Biopsy (procedure)"),)
P_CABG = ((SCT, "232717009", "Coronary artery bypass grafting (procedure)"),
          (CPT, "33533", "Coronary artery bypass, using arterial graft(s); single arterial graft"))
# A minor operation the EHR files under the "surgical procedure" category with only a local code: E16 asks a person
# whether it was major (it is not in the demo hospital's major-surgery table either).
SURGICAL_CATEGORY = ((SCT, "387713003", "Surgical procedure (procedure)"),)
P_PORT = ((LOCAL_PROC, "GS-PORT-IMPL", "Implantable venous access port placement"),)
P_SURGERY = ((SCT, "387713003", "Surgical procedure (procedure)"),
             (LOCAL_PROC, "GS-LAP-EXPL", "Exploratory laparotomy"))
P_INTRATHECAL = ((PCS, "3E0R305", "Introduction of Other Antineoplastic into Spinal Canal, Percutaneous Approach"),)

# Medications (RxNorm ingredients, ATC for the "Chinese hospital" patients)
RX_CYTARABINE = ((RXNORM, "3041", "cytarabine"),)
RX_IDARUBICIN = ((RXNORM, "5650", "idarubicin"),)
RX_DAUNORUBICIN = ((RXNORM, "3109", "daunorubicin"),)
RX_VENETOCLAX = ((RXNORM, "1747556", "venetoclax"),)
RX_AZACITIDINE = ((RXNORM, "1251", "azacitidine"),)
RX_GILTERITINIB = ((RXNORM, "2105806", "gilteritinib"),)
RX_TACROLIMUS = ((RXNORM, "42316", "tacrolimus"),)
RX_DEXAMETHASONE = ((RXNORM, "3264", "dexamethasone"),)
RX_PREDNISONE = ((RXNORM, "8640", "prednisone"),)
RX_POSACONAZOLE = ((RXNORM, "282446", "posaconazole"),)
RX_FLUDARABINE = ((RXNORM, "24698", "fludarabine"),)
ATC_CYTARABINE = ((ATC, "L01BC01", "cytarabine"),)
ATC_IDARUBICIN = ((ATC, "L01DB06", "idarubicin"),)
ATC_CICLOSPORIN = ((ATC, "L04AD01", "ciclosporin"),)
ATC_DMSO = ((ATC, "G04BX13", "dimethyl sulfoxide"),)
ATC_ANTIBACTERIAL = ((ATC, "J01DH02", "meropenem"),)
ROUTE_IV = (SCT, "47625008", "Intravenous route (qualifier value)")
ROUTE_ORAL = (SCT, "26643006", "Oral route (qualifier value)")
ROUTE_SC = (SCT, "34206005", "Subcutaneous route (qualifier value)")

# Immunizations
CVX_ZOSTER_LIVE = ((CVX, "121", "zoster vaccine, live"),)
CVX_MMR = ((CVX, "03", "measles, mumps and rubella virus vaccine"),)
CVX_ZOSTER_UNSPECIFIED = ((CVX, "188", "zoster vaccine, unspecified formulation"),)

# Allergies
NKA = ((SCT, "716186003", "No known allergy (situation)"),)
NKDA = ((SCT, "409137002", "No known drug allergy (situation)"),)


# --- dates -------------------------------------------------------------------------------------------------
def instant(days: float, hh: int = 8, mm: int = 0) -> str:
    """A dateTime ``days`` days before AT at hh:mm UTC (never after AT)."""
    moment = (AT - timedelta(days=days)).replace(hour=hh, minute=mm, second=0, microsecond=0)
    if moment > AT:
        moment = AT - timedelta(hours=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def day(days: float) -> str:
    """The calendar date ``days`` days before AT."""
    return (AT - timedelta(days=days)).date().isoformat()


def months_back(months: int, plus_days: int = 0) -> date:
    """AT's date minus calendar months (then plus some days); clamps the day to the month's length."""
    y, m = AT.year, AT.month - months
    while m < 1:
        m += 12
        y -= 1
    last = [31, 29 if y % 4 == 0 and (y % 100 or y % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return date(y, m, min(AT.day, last[m - 1])) + timedelta(days=plus_days)


def birth_for_age(years: int, months: int = 0) -> str:
    """A birth date giving exactly ``years`` years and ``months`` months at AT (plus 10 days)."""
    total = years * 12 + months
    return months_back(total, plus_days=-10).isoformat()


# --- resource building -------------------------------------------------------------------------------------
def cc(concept: tuple[Coding, ...], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in concept]}
    if text:
        out["text"] = text
    return out


def one(coding: Coding) -> dict[str, Any]:
    return cc((coding,))


def qty(value: float, unit: str, comparator: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if comparator:
        out["comparator"] = comparator
    shown = {"U/L": "U/L", "[lb_av]": "lb", "umol/L": "µmol/L", "m[IU]/mL": "mIU/mL", "[IU]/mL": "IU/mL",
             "mm[Hg]": "mmHg", "L/min": "L/min"}.get(unit, unit)
    out.update({"unit": shown, "system": UCUM, "code": unit})
    return out


def interp(code: str) -> list[dict[str, Any]]:
    display = {"N": "Normal", "H": "High", "HH": "Critical high", "L": "Low", "POS": "Positive",
               "NEG": "Negative", "ND": "Not detected", "DET": "Detected", "A": "Abnormal"}[code]
    return [{"coding": [{"system": V3_INTERP, "code": code, "display": display}]}]


def obs_category(code: str) -> list[dict[str, Any]]:
    display = {"laboratory": "Laboratory", "vital-signs": "Vital Signs", "survey": "Survey", "exam": "Exam",
               "imaging": "Imaging", "procedure": "Procedure", "social-history": "Social History"}[code]
    return [{"coding": [{"system": OBS_CAT, "code": code, "display": display}]}]


@dataclass
class Person:
    """One synthetic patient's resources, with stable ids ``<prefix>-<kind>-<n>``."""

    prefix: str  # e.g. "ts01"
    resources: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    female: bool = False

    @property
    def pid(self) -> str:
        return f"{self.prefix}-patient"

    @property
    def ref(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def rid(self, kind: str) -> str:
        n = self.counters.get(kind, 0) + 1
        self.counters[kind] = n
        return f"{self.prefix}-{kind}-{n}"

    def add(self, res: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(res)
        return res

    # --- Patient ---------------------------------------------------------------------------------------
    def patient(self, family: str, given: str, gender: str, birth: str | None, mrn: str, *,
                birth_sex: str | None = None, deceased: str | None = None, chinese: bool = False) -> Person:
        self.female = gender == "female"
        res: dict[str, Any] = {"resourceType": "Patient", "id": self.pid}
        if birth_sex:
            res["extension"] = [{"url": BIRTHSEX, "valueCode": birth_sex}]
        res["identifier"] = [{"use": "usual", "type": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
             "display": "Medical record number"}]}, "system": MRN, "value": mrn}]
        res["active"] = True
        name: dict[str, Any] = {"use": "official", "family": family, "given": [given]}
        if chinese:
            name["text"] = f"{family} {given}"
        res["name"] = [name]
        res["gender"] = gender
        if birth:
            res["birthDate"] = birth
        if deceased:
            res["deceasedDateTime"] = deceased
        return self.add(res) and self

    # --- Condition -------------------------------------------------------------------------------------
    def condition(self, concept: tuple[Coding, ...], *, onset: str | None, clinical: str | None = "active",
                  verification: str | None = "confirmed", category: str = "problem-list-item",
                  abatement: str | None = None, recorded: str | None = None, kind: str = "cond",
                  note: str | None = None, text: str | None = None) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "Condition", "id": self.rid(kind)}
        if clinical:
            res["clinicalStatus"] = one((COND_CLINICAL, clinical, clinical.capitalize()))
        if verification:
            res["verificationStatus"] = one((COND_VER, verification, verification.capitalize()))
        cat_display = {"problem-list-item": "Problem List Item", "encounter-diagnosis": "Encounter Diagnosis"}
        res["category"] = [one((COND_CAT, category, cat_display[category]))]
        res["code"] = cc(concept, text)
        res["subject"] = self.ref
        if onset:
            res["onsetDateTime"] = onset
        if abatement:
            res["abatementDateTime"] = abatement
        res["recordedDate"] = recorded or onset or day(1)
        if note:
            res["note"] = [{"text": note}]
        return self.add(res)

    # --- Observation -----------------------------------------------------------------------------------
    def _obs(self, kind: str, concept: tuple[Coding, ...], when: str | None, status: str, category: str,
             ) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "Observation", "id": self.rid(kind), "status": status,
                               "category": obs_category(category), "code": cc(concept), "subject": self.ref}
        if when:
            res["effectiveDateTime"] = when
            res["issued"] = when if "T" in when else f"{when}T12:00:00Z"
        return res

    def lab(self, kind: str, concept: tuple[Coding, ...], value: float | None, unit: str, *, when: str,
            low: float | None = None, high: float | None = None, status: str = "final",
            flag: str | None = None, value_string: str | None = None, comparator: str | None = None,
            category: str = "laboratory") -> dict[str, Any]:
        res = self._obs(kind, concept, when, status, category)
        if value_string is not None:
            res["valueString"] = value_string
        elif value is not None:
            res["valueQuantity"] = qty(value, unit, comparator)
        if flag:
            res["interpretation"] = interp(flag)
        if low is not None or high is not None:
            rr: dict[str, Any] = {}
            if low is not None:
                rr["low"] = qty(low, unit)
            if high is not None:
                rr["high"] = qty(high, unit)
            res["referenceRange"] = [rr]
        return self.add(res)

    def coded(self, kind: str, concept: tuple[Coding, ...], value: Coding | tuple[Coding, ...], *, when: str,
              status: str = "final", flag: str | None = None, category: str = "laboratory",
              method: str | None = None) -> dict[str, Any]:
        res = self._obs(kind, concept, when, status, category)
        res["valueCodeableConcept"] = cc(value if isinstance(value[0], tuple) else (value,))  # type: ignore[arg-type]
        if flag:
            res["interpretation"] = interp(flag)
        if method:
            res["method"] = {"text": method}
        return self.add(res)

    def qual(self, kind: str, concept: tuple[Coding, ...], positive: bool, *, when: str,
             status: str = "final") -> dict[str, Any]:
        """A presence-type result (virology, hCG): coded Positive/Negative with its interpretation flag."""
        return self.coded(kind, concept, POSITIVE if positive else NEGATIVE, when=when, status=status,
                          flag="POS" if positive else "NEG")

    def bp(self, systolic: int, diastolic: int, *, when: str, status: str = "final") -> dict[str, Any]:
        res = self._obs("bp", L_BP, when, status, "vital-signs")
        res["component"] = [
            {"code": cc(L_SBP), "valueQuantity": qty(systolic, "mm[Hg]")},
            {"code": cc(L_DBP), "valueQuantity": qty(diastolic, "mm[Hg]")},
        ]
        return self.add(res)

    def spo2(self, value: float, *, when: str, room_air: bool | None = True) -> dict[str, Any]:
        res = self._obs("spo2", L_SPO2, when, "final", "vital-signs")
        res["valueQuantity"] = qty(value, "%")
        if room_air is not None:
            res["component"] = [{"code": cc(L_O2_FLOW), "valueQuantity": qty(0 if room_air else 2, "L/min")}]
        return self.add(res)

    def ecog(self, grade: int, *, when: str, status: str = "final") -> dict[str, Any]:
        return self.coded("ecog", L_ECOG, ECOG_VALUE[grade], when=when, status=status, category="survey")

    # --- other resources -------------------------------------------------------------------------------
    def procedure(self, kind: str, concept: tuple[Coding, ...], *, performed: str | None = None,
                  period: tuple[str, str] | None = None, status: str = "completed",
                  category: tuple[Coding, ...] | None = None, text: str | None = None,
                  status_reason: str | None = None) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "Procedure", "id": self.rid(kind), "status": status}
        if status_reason:
            res["statusReason"] = {"text": status_reason}
        if category:
            res["category"] = cc(category)
        res["code"] = cc(concept, text)
        res["subject"] = self.ref
        if performed:
            res["performedDateTime"] = performed
        if period:
            res["performedPeriod"] = {"start": period[0], "end": period[1]}
        return self.add(res)

    def immunization(self, concept: tuple[Coding, ...], *, when: str, status: str = "completed",
                     lot: str | None = None) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "Immunization", "id": self.rid("imm"), "status": status}
        if status == "not-done":
            res["statusReason"] = one(("http://terminology.hl7.org/CodeSystem/v3-ActReason", "MEDPREC",
                                       "medical precaution"))
        res.update({"vaccineCode": cc(concept), "patient": self.ref, "occurrenceDateTime": when,
                    "primarySource": True})
        if lot:
            res["lotNumber"] = lot
        return self.add(res)

    def administration(self, kind: str, concept: tuple[Coding, ...], *, when: str | None = None,
                       period: tuple[str, str] | None = None, dose: float | None = None, unit: str = "mg",
                       route: Coding | None = ROUTE_IV, status: str = "completed") -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": self.rid(kind), "status": status,
                               "category": one((MED_ADMIN_CAT, "inpatient", "Inpatient")),
                               "medicationCodeableConcept": cc(concept), "subject": self.ref}
        if when:
            res["effectiveDateTime"] = when
        if period:
            res["effectivePeriod"] = {"start": period[0], "end": period[1]}
        dosage: dict[str, Any] = {}
        if route:
            dosage["route"] = one(route)
        if dose is not None:
            dosage["dose"] = qty(dose, unit)
        if dosage:
            res["dosage"] = dosage
        return self.add(res)

    def request(self, kind: str, concept: tuple[Coding, ...], *, start: str, end: str | None = None,
                status: str = "active", intent: str = "order", dose: float | None = None, unit: str = "mg",
                per_day: int = 1, route: Coding | None = ROUTE_ORAL, reason: tuple[Coding, ...] | None = None,
                authored: str | None = None, text: str | None = None) -> dict[str, Any]:
        bounds: dict[str, Any] = {"start": start}
        if end:
            bounds["end"] = end
        dosage: dict[str, Any] = {"timing": {"repeat": {"boundsPeriod": bounds, "frequency": per_day, "period": 1,
                                                        "periodUnit": "d"}}}
        if text:
            dosage["text"] = text
        if route:
            dosage["route"] = one(route)
        if dose is not None:
            dosage["doseAndRate"] = [{"type": one(("http://terminology.hl7.org/CodeSystem/dose-rate-type",
                                                   "ordered", "Ordered")), "doseQuantity": qty(dose, unit)}]
        res: dict[str, Any] = {"resourceType": "MedicationRequest", "id": self.rid(kind), "status": status,
                               "intent": intent, "medicationCodeableConcept": cc(concept), "subject": self.ref,
                               "authoredOn": authored or start}
        if reason:
            res["reasonCode"] = [cc(reason)]
        res["dosageInstruction"] = [dosage]
        return self.add(res)

    def allergy(self, concept: tuple[Coding, ...], *, clinical: str | None = "active",
                verification: str = "confirmed", recorded: str | None = None, category: str | None = None,
                criticality: str | None = None, reaction: str | None = None) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "AllergyIntolerance", "id": self.rid("alg")}
        if clinical:
            res["clinicalStatus"] = one((ALG_CLINICAL, clinical, clinical.capitalize()))
        res["verificationStatus"] = one((ALG_VER, verification, verification.capitalize()))
        if category:
            res["category"] = [category]
        if criticality:
            res["criticality"] = criticality
        res["code"] = cc(concept)
        res["patient"] = self.ref
        res["recordedDate"] = recorded or day(200)
        if reaction:
            res["reaction"] = [{"manifestation": [{"text": reaction}], "severity": "moderate"}]
        return self.add(res)

    def report(self, concept_text: str, results: list[dict[str, Any]], *, when: str,
               status: str = "final") -> dict[str, Any]:
        res = {"resourceType": "DiagnosticReport", "id": self.rid("dr"), "status": status,
               "category": [one((V2_0074, "HM", "Hematology"))], "code": {"text": concept_text},
               "subject": self.ref, "effectiveDateTime": when, "issued": when,
               "result": [{"reference": f"Observation/{r['id']}"} for r in results]}
        return self.add(res)

    # --- copies ----------------------------------------------------------------------------------------
    def entered_in_error(self, original: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """A mistaken copy of ``original`` marked entered-in-error (engines must ignore it)."""
        res = orjson.loads(orjson.dumps(original))
        kind = res["id"].split("-", 1)[1].rsplit("-", 1)[0]
        res["id"] = self.rid(kind + "-eie")
        res.update(changes)
        if res["resourceType"] in ("Condition", "AllergyIntolerance"):
            system = COND_VER if res["resourceType"] == "Condition" else ALG_VER
            res["verificationStatus"] = one((system, "entered-in-error", "Entered in Error"))
        else:
            res["status"] = "entered-in-error"
        return self.add(res)


# --- the standard screening work-up ------------------------------------------------------------------------
_DEFAULT = object()


def workup(p: Person, *, age_days: int = 4, ecog: int | None = 1, alt: tuple[float, float] | None = (32, 40),
           ast: tuple[float, float] | None = (28, 40), tbil: tuple[float, float] | None = (0.8, 1.2),
           creat: tuple[float, float] | None = (0.9, 1.2), weight: tuple[float, str] | None = (72.0, "kg"),
           lvef: float | None = 60, spo2: float | None = 97, qtcf: float | None = 430,
           bps: tuple[tuple[int, int], ...] | None = ((128, 78), (124, 76)),
           cd38: bool | None = True, virology: bool = True, nka: bool = True, hcg: bool | None = _DEFAULT,  # type: ignore[assignment]
           lab_status: str = "final", uln: bool = True) -> dict[str, dict[str, Any]]:
    """The screening tests of a well-documented r/r AML patient, each overridable; None leaves a test out.

    Labs are ``age_days`` days before AT; LVEF and ECG 20 days; virology 30 days. Returns the resources by name.
    """
    out: dict[str, dict[str, Any]] = {}
    t = instant(age_days, 7, 30)
    status = lab_status
    if ecog is not None:
        out["ecog"] = p.ecog(ecog, when=instant(age_days, 10, 15) if age_days else instant(0, 8, 15))
    if alt is not None:
        out["alt"] = p.lab("alt", L_ALT, alt[0], "U/L", when=t, low=7 if uln else None,
                           high=alt[1] if uln else None, status=status,
                           flag="H" if alt[0] > alt[1] else "N")
    if ast is not None:
        out["ast"] = p.lab("ast", L_AST, ast[0], "U/L", when=t, low=10 if uln else None,
                           high=ast[1] if uln else None, status=status, flag="H" if ast[0] > ast[1] else "N")
    if tbil is not None:
        out["tbil"] = p.lab("tbil", L_TBIL, tbil[0], "mg/dL", when=t, low=0.2 if uln else None,
                            high=tbil[1] if uln else None, status=status,
                            flag="H" if tbil[0] > tbil[1] else "N")
    if creat is not None:
        out["creat"] = p.lab("creat", L_CREAT, creat[0], "mg/dL", when=t, low=0.6, high=creat[1], status=status,
                             flag="H" if creat[0] > creat[1] else "N")
    if weight is not None:
        out["weight"] = p.lab("weight", L_WEIGHT, weight[0], weight[1], when=instant(age_days, 7, 5),
                              category="vital-signs")
    if lvef is not None:
        out["lvef"] = p.lab("lvef", L_LVEF, lvef, "%", when=instant(max(age_days, 20), 11, 0), category="imaging")
    if spo2 is not None:
        out["spo2"] = p.spo2(spo2, when=instant(age_days, 7, 10))
    if qtcf is not None:
        out["qtcf"] = p.lab("qtcf", L_QTCF, qtcf, "ms", when=instant(max(age_days, 20), 10, 40),
                            category="procedure")
    if bps:
        for i, (s, d) in enumerate(bps):
            out[f"bp{i}"] = p.bp(s, d, when=instant(age_days, 7, 10 + 5 * i))
    if cd38 is not None:
        marker = p.lab("cd38", L_CD38, 78 if cd38 else 2, "%", when=instant(max(age_days, 12), 9, 0),
                       flag="POS" if cd38 else "NEG")
        out["cd38"] = marker
        p.report("Bone marrow flow cytometry (AML MRD/immunophenotype panel)", [marker],
                 when=instant(max(age_days, 12), 9, 0))
    if virology:
        vt = instant(30, 8, 0)
        out["hiv"] = p.qual("hiv", L_HIV, False, when=vt)
        out["hbsag"] = p.qual("hbsag", L_HBSAG, False, when=vt)
        out["hbcab"] = p.qual("hbcab", L_HBCAB, False, when=vt)
        out["hcv"] = p.qual("hcvab", L_HCV_AB, False, when=vt)
        out["tppa"] = p.qual("tppa", L_TPPA, False, when=vt)
    if nka:
        out["nka"] = p.allergy(NKA, recorded=day(60))
    if hcg is _DEFAULT:
        hcg = False if p.female else None
    if hcg is not None:
        out["hcg"] = p.qual("hcg", L_HCG_SERUM, hcg, when=instant(age_days, 7, 30))
    return out


def aml_history(p: Person, *, diagnosis: tuple[Coding, ...] = AML_RELAPSE, dx_days: int = 420,
                relapse_days: int | None = 25, induction: bool = True, salvage_days: int | None = 45,
                biopsy_days: int | None = 12) -> dict[str, Any]:
    """An AML course: diagnosis, 7+3 induction, CR, relapse (bone-marrow biopsy), HMA/venetoclax salvage."""
    cond = p.condition(diagnosis, onset=day(relapse_days if relapse_days is not None else dx_days),
                       recorded=day(relapse_days if relapse_days is not None else dx_days),
                       note=None if relapse_days is None else f"Initial diagnosis {day(dx_days)}; CR1 after "
                       "7+3; relapse on marrow.")
    if induction:
        for d in range(7):
            p.administration("cytarabine", RX_CYTARABINE, when=instant(dx_days - 3 - d, 10), dose=170)
        for d in range(3):
            p.administration("idarubicin", RX_IDARUBICIN, when=instant(dx_days - 3 - d, 11), dose=21)
    if salvage_days is not None:
        for d in range(7):
            p.administration("azacitidine", RX_AZACITIDINE, when=instant(salvage_days + 6 - d, 10), dose=130,
                             route=ROUTE_SC)
        p.request("venetoclax", RX_VENETOCLAX, start=day(salvage_days + 6), end=day(salvage_days - 8),
                  status="completed", dose=400, route=ROUTE_ORAL)
    if biopsy_days is not None:
        p.procedure("biopsy", P_BIOPSY, performed=instant(biopsy_days, 9, 0),
                    text="Bone marrow aspirate and trephine biopsy")
    return cond


# --- fixtures ----------------------------------------------------------------------------------------------
@dataclass
class Fixture:
    number: str  # "01", "35"
    slug: str
    title: str  # what it demonstrates
    people: list[Person]
    expected: dict[str, dict[str, Any]]  # pid -> {"status": ..., "criteria": {...}}
    ndjson: bool = False

    @property
    def filename(self) -> str:
        return f"{self.number}-{self.slug}.{'ndjson' if self.ndjson else 'json'}"


def exp(status: str, summary: str, **criteria: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """Expected outcome: ``exp("ineligible", "why", E5=("met", "allo-HSCT 3 months ago", "2027-01-02"))``."""
    out: dict[str, Any] = {"status": status, "summary": summary, "criteria": {}}
    for cid, spec in criteria.items():
        item = {"result": spec[0], "why": spec[1]}
        if len(spec) > 2:
            item["until"] = spec[2]
        out["criteria"][cid] = item
    return out


FIXTURES: list[Callable[[], Fixture]] = []


def fixture(fn: Callable[[], Fixture]) -> Callable[[], Fixture]:
    FIXTURES.append(fn)
    return fn


def person(n: str) -> Person:
    return Person(prefix=f"ts{n}")


@fixture
def f01() -> Fixture:
    p = person("01")
    p.patient("Lindqvist", "Maren", "female", birth_for_age(52, 4), "TS-0001", birth_sex="F")
    aml_history(p)
    w = workup(p)
    # Noise an engine must ignore: an ALT keyed against the wrong patient and withdrawn, a refuted fibrosis
    # suspicion, a live vaccine that was not given, a cancelled steroid order.
    p.entered_in_error(w["alt"], valueQuantity=qty(812, "U/L"), interpretation=interp("HH"))
    p.condition(PULM_FIBROSIS, onset=day(200), verification="refuted", clinical=None,
                note="Suspected on CT; refuted at pulmonology review.")
    p.immunization(CVX_ZOSTER_LIVE, when=instant(10, 14), status="not-done")
    p.request("dexamethasone", RX_DEXAMETHASONE, start=day(3), status="cancelled", dose=20)
    wrong = p.request("gilteritinib", RX_GILTERITINIB, start=day(6), dose=120)
    wrong["status"] = "entered-in-error"
    p.procedure("rt", P_RADIOTHERAPY, performed=instant(5, 10), status="not-done", category=RT_CATEGORY,
                status_reason="Cancelled: patient declined")
    p.coded("pregstatus", L_PREG_STATUS, NOT_PREGNANT, when=instant(4, 7, 30), category="social-history")
    return Fixture("01", "candidate-relapsed-aml", "Relapsed AML (SNOMED + ICD-10-CM C92.02), complete recent work-up, "
                   "CD38 positive, NKA; noise that must be ignored: entered-in-error ALT and gilteritinib order, "
                   "refuted fibrosis, not-done live vaccine and radiotherapy, cancelled dexamethasone order", [p], {
                       p.pid: exp("potential-candidate", "Every computable item passes; attestations remain.",
                                  I1=("met", "age 52"), I2=("met", "relapse code C92.02"),
                                  I3=("met", "CD38 positive"), I7a=("met", "ALT 32/40, AST 28/40"),
                                  E13=("not-met", "fibrosis Condition is refuted"),
                                  E15=("not-met", "the zoster live vaccine was not done"),
                                  E2c=("not-met", "gilteritinib order entered-in-error; salvage ended 45 days ago"),
                                  E2d=("not-met", "radiotherapy not done"),
                                  E2a=("not-met", "dexamethasone order cancelled"))})


@fixture
def f02() -> Fixture:
    p = person("02")
    p.patient("Okafor", "Daniel", "male", birth_for_age(44, 7), "TS-0002")
    aml_history(p, diagnosis=AML_REFRACTORY, relapse_days=30, salvage_days=40)
    w = workup(p, cd38=None, weight=(176.0, "[lb_av]"))
    cll1 = p.lab("cll1", L_CLL1_LOCAL, 64, "%", when=instant(14, 9, 0), flag="POS")
    p.report("Bone marrow flow cytometry: CLL1 (CLEC12A)", [cll1], when=instant(14, 9, 0))
    p.request("posaconazole", RX_POSACONAZOLE, start=day(40), dose=300, route=ROUTE_ORAL,
              text="Antifungal prophylaxis during neutropenia")
    del w
    p.allergy(RX_FLUDARABINE, verification="refuted", clinical="inactive", recorded=day(300),
              category="medication")
    return Fixture("02", "candidate-refractory-aml-cll1-local", "Refractory AML (SNOMED 12291000132102); CLL1 positive "
                   "on a local lab code only; weight in [lb_av]; antifungal prophylaxis is not an active infection",
                   [p], {p.pid: exp("potential-candidate", "Refractory AML with CLL1-positive blasts.",
                                    I2=("met", "refractory AML code"),
                                    E1=("not-met", "fludarabine allergy refuted; NKA recorded"),
                                    I3=("unknown", "CLL1 only on a local code, which the shipped (empty) cll1 "
                                                   "table does not map; met with a site table"),
                                    I7c=("met", "CrCl from 176 lb and SCr 0.9"))})


@fixture
def f03() -> Fixture:
    p = person("03")
    p.patient("Wang", "Lihua", "female", birth_for_age(47, 2), "CN-880031", chinese=True)
    # A "Chinese hospital" record: WHO ICD-10 diagnoses, SI units, ATC-coded drugs, local LIS codes beside LOINC.
    p.condition(AML_MRC_WHO, onset=day(150), recorded=day(150), category="encounter-diagnosis",
                text="急性髓系白血病伴多系发育异常")
    # Two courses of standard induction (IA 7+3) without remission: refractory by the guideline's definition,
    # but WHO ICD-10 has no "relapse/refractory" character, so only the drug history can show it.
    for start in (145, 110):
        for d in range(7):
            p.administration("cytarabine", ATC_CYTARABINE, when=instant(start - d, 10), dose=160)
        for d in range(3):
            p.administration("idarubicin", ATC_IDARUBICIN, when=instant(start - d, 11), dose=19)
    workup(p, tbil=None, creat=None, weight=(58.0, "kg"), nka=False)
    p.allergy(ATC_DMSO, criticality="low", reaction="Flushing and chest tightness during reinfusion of a "
              "cryopreserved product", category="medication", recorded=day(900))
    p.lab("tbil", L_TBIL_MOL + ((LOCAL_LAB_CN, "TBIL", "总胆红素"),), 12.4, "umol/L", when=instant(4, 7, 30),
          low=3.4, high=20.5, flag="N")
    p.lab("creat", L_CREAT_MOL + ((LOCAL_LAB_CN, "CREA", "肌酐"),), 68, "umol/L", when=instant(4, 7, 30), low=45,
          high=84, flag="N")
    return Fixture("03", "candidate-who-icd10-si-units", "'Chinese hospital' record: WHO ICD-10 C92.8 only (no R/R "
                   "character), two ATC-coded IA inductions, bilirubin and creatinine in umol/L, ATC-coded DMSO "
                   "allergy",
                   [p], {p.pid: exp("potential-candidate", "WHO-coded relapsed AML with SI-unit labs.",
                                    I2=("unknown", "WHO C92.8 has no relapse character; two inductions without "
                                                   "remission are not read as refractory"),
                                    I7b=("met", "bilirubin 12.4 umol/L, ULN 20.5"),
                                    I7c=("met", "creatinine 68 umol/L, 58 kg, 47 y, female"),
                                    E1=("unknown", "allergy to DMSO, the usual cryoprotectant: review"))})


@fixture
def f04() -> Fixture:
    p = person("04")
    p.patient("Brennan", "Aoife", "female", birth_for_age(38, 1), "TS-0004", birth_sex="F")
    aml_history(p, diagnosis=AML_MRC_RELAPSE)
    workup(p, virology=False, hcg=None)
    vt = instant(30, 8, 0)
    p.qual("hiv", L_HIV, False, when=vt)
    p.qual("hbsag", L_HBSAG, False, when=vt)
    p.qual("hbcab", L_HBCAB, True, when=vt)
    p.lab("hbvdna", L_HBV_DNA, None, "[IU]/mL", when=instant(28, 8), value_string="<10", flag="ND")
    p.qual("hcvab", L_HCV_AB, True, when=vt)
    p.coded("hcvrna", L_HCV_RNA, NOT_DETECTED, when=instant(28, 8), flag="ND")
    p.qual("tppa", L_TPPA, False, when=vt)
    p.lab("hcg", L_HCG_QUANT, None, "[IU]/L", when=instant(4, 7, 30), value_string="<0.5", high=5.0)
    return Fixture("04", "candidate-resolved-hepatitis-serology", "HBcAb+ with HBV DNA '<10' not detected, HCV Ab+ "
                   "with RNA not detected: neither excludes; hCG as valueString '<0.5'", [p],
                   {p.pid: exp("potential-candidate", "Past hepatitis B/C exposure without viraemia.",
                               I2=("met", "C92.A2 'in relapse' (the second coding of the AML Condition, after "
                                          "SNOMED AML-MRC)"),
                               E12b=("not-met", "HBsAg negative; HBcAb+ but HBV DNA not detected"),
                               E12c=("not-met", "HCV Ab+ but RNA not detected"))})


@fixture
def f05() -> Fixture:
    p = person("05")
    p.patient("Marchetti", "Giorgio", "male", birth_for_age(70, 11), "TS-0005")
    aml_history(p, diagnosis=AML_MONO_RELAPSE)
    p.condition(GILBERT, onset=day(9000), recorded=day(6000))
    workup(p, tbil=(2.9, 1.2))
    p.lab("dbil", L_DBIL, 0.35, "mg/dL", when=instant(4, 7, 30), low=0.0, high=0.3, flag="H")
    return Fixture("05", "candidate-age-70-gilbert", "Age 70 y 11 m (inclusive upper bound); Gilbert syndrome: total "
                   "bilirubin 2.4xULN but direct 1.17xULN", [p],
                   {p.pid: exp("potential-candidate", "Boundary age and Gilbert exception.",
                               I1=("met", "70 years 11 months is within 18-70"),
                               I7b=("met", "Gilbert: direct bilirubin 0.35/0.3 = 1.17 x ULN"))})


@fixture
def f06() -> Fixture:
    p = person("06")
    p.patient("Haugen", "Ingrid", "female", birth_for_age(58, 0), "TS-0006", birth_sex="F")
    aml_history(p, salvage_days=None)
    # Old events, all outside their windows: they are evidence for "not-met", not "none recorded".
    hsct = p.procedure("hsct", P_ALLO_HSCT, performed=months_back(8).isoformat() + "T10:00:00Z")
    p.entered_in_error(hsct, performedDateTime=instant(60, 10))  # keyed with the wrong date, then withdrawn
    p.procedure("dli", P_DLI, performed=instant(120, 10))
    p.procedure("rt", P_RADIOTHERAPY, period=(instant(150, 9), instant(140, 9)), category=RT_CATEGORY,
                text="Involved-field RT to chloroma")
    p.condition(GVHD_ACUTE, onset=day(200), clinical="resolved", abatement=day(150))
    p.condition(OLD_STROKE, onset=day(800), clinical="resolved", abatement=day(780))
    p.immunization(CVX_MMR, when=instant(2200, 10))
    p.procedure("port", P_PORT, performed=instant(12, 14), category=SURGICAL_CATEGORY,
                text="Port-a-cath placement, right subclavian")
    # Azacitidine 2 days ago: its washout (5 half-lives, hours) is shorter than 14 days and has passed.
    for d in range(3):
        p.administration("azacitidine", RX_AZACITIDINE, when=instant(2 + d, 8), dose=120, route=ROUTE_SC)
    workup(p, hcg=None)
    p.condition(MENOPAUSE, onset="2019", clinical="active", recorded=day(1500))
    p.condition(BREAST_CA_HISTORY, onset=None, clinical="active", recorded=day(2000),
                note="Left breast DCIS 2013, lumpectomy + RT; no recurrence.")
    return Fixture("06", "candidate-post-transplant-washouts-passed", "Allo-HSCT 8 months ago, DLI 4 months ago, RT 5 "
                   "months ago, resolved GvHD, stroke 2 years ago, azacitidine 2 days ago (washout passed), "
                   "MMR 6 years ago: every window has passed; a port placed 12 days ago (major surgery?)", [p],
                   {p.pid: exp("potential-candidate", "Old events outside every window.",
                               E5=("not-met", "allo-HSCT 8 months before screening (a copy dated 2 months ago is "
                                              "entered-in-error)"),
                               E2c=("not-met", "azacitidine: 5 half-lives are hours, passed"),
                               E2d=("not-met", "last RT fraction 140 days ago"),
                               E2e=("not-met", "DLI 120 days ago"),
                               E9=("not-met", "stroke 800 days ago"),
                               E15=("not-met", "MMR (live) 6 years ago"),
                               E16=("unknown", "port placement 12 days ago, filed as surgery: is it major?"),
                               E8=("unknown", "undated breast cancer history Z85.3: confirm > 5 years disease-free"))})


@fixture
def f07() -> Fixture:
    p = person("07")
    p.patient("Dubois", "Camille", "female", birth_for_age(41, 6), "TS-0007", birth_sex="F")
    p.condition(APL, onset=day(30))
    p.coded("pmlrara", L_PML_RARA, POSITIVE, when=instant(400, 9), flag="POS")
    workup(p)
    return Fixture("07", "ineligible-apl", "Acute promyelocytic leukaemia (SNOMED 110004001 + C92.42) with PML::RARA "
                   "positive", [p], {p.pid: exp("ineligible", "APL is excluded.", E3=("met", "APL diagnosis"),
                                                I2=("not-met", "APL is not eligible AML"))})


@fixture
def f08() -> Fixture:
    p = person("08")
    p.patient("Kowalczyk", "Tomasz", "male", birth_for_age(36, 3), "TS-0008")
    aml_history(p)
    p.condition(CART_HISTORY, onset=day(500), clinical="active", category="problem-list-item")
    p.procedure("cart", P_CART, performed=instant(510, 11), text="CD33 CAR-T (clinical trial)")
    workup(p)
    return Fixture("08", "ineligible-prior-cart", "Prior CAR-T (ICD-10-PCS XW033C7, Z92.850)", [p],
                   {p.pid: exp("ineligible", "Prior CAR-T therapy.", E4=("met", "CAR-T procedure 510 days ago"))})


@fixture
def f09() -> Fixture:
    p = person("09")
    p.patient("Rahman", "Nadia", "female", birth_for_age(29, 9), "TS-0009", birth_sex="F")
    aml_history(p, salvage_days=None)
    when = months_back(3).isoformat() + "T10:00:00Z"
    p.procedure("hsct", P_ALLO_HSCT, performed=when)
    workup(p)
    until = (months_back(3) + timedelta(days=1))
    until = date(until.year + (until.month + 5) // 12, (until.month + 5) % 12 + 1, until.day)
    return Fixture("09", "ineligible-allo-hsct-3-months", "Allogeneic HSCT 3 months ago (E5 met, with its until date)",
                   [p], {p.pid: exp("ineligible", "Transplant within 6 months.",
                                    E5=("met", f"allo-HSCT on {when[:10]}", until.isoformat()))})


@fixture
def f10() -> Fixture:
    p = person("10")
    p.patient("Nguyen", "Minh", "male", birth_for_age(55, 0), "TS-0010")
    aml_history(p)
    workup(p, virology=False)
    vt = instant(30, 8, 0)
    p.qual("hiv", L_HIV, False, when=vt)
    p.qual("hbsag", L_HBSAG, True, when=vt)
    p.qual("hcvab", L_HCV_AB, False, when=vt)
    p.qual("tppa", L_TPPA, False, when=vt)
    p.condition(HEP_B_CHRONIC, onset=day(3000))
    return Fixture("10", "ineligible-hbsag-positive", "HBsAg positive (E12b met)", [p],
                   {p.pid: exp("ineligible", "Hepatitis B surface antigen positive.",
                               E12b=("met", "HBsAg positive"))})


@fixture
def f11() -> Fixture:
    p = person("11")
    p.patient("Schneider", "Lukas", "male", birth_for_age(63, 2), "TS-0011")
    aml_history(p)
    workup(p, qtcf=495)
    return Fixture("11", "ineligible-qtcf-495", "QTcF 495 ms (E10c met)", [p],
                   {p.pid: exp("ineligible", "QTcF at or above 480 ms.", E10c=("met", "QTcF 495 ms"))})


@fixture
def f12() -> Fixture:
    p = person("12")
    p.patient("Oyelaran", "Funmilayo", "female", birth_for_age(60, 5), "TS-0012", birth_sex="F")
    aml_history(p)
    p.condition(HYPERTENSION, onset=day(4000))
    workup(p, bps=((162, 96), (158, 98), (155, 94)), hcg=None)
    p.condition(MENOPAUSE, onset="2015", recorded=day(3000))
    return Fixture("12", "ineligible-uncontrolled-bp", "Mean of 3 BP readings 158/96 (E10f met on systolic)", [p],
                   {p.pid: exp("ineligible", "Uncontrolled hypertension.",
                               E10f=("met", "mean SBP 158.3 >= 150"))})


@fixture
def f13() -> Fixture:
    p = person("13")
    p.patient("Castillo", "Rafael", "male", birth_for_age(57, 8), "TS-0013")
    aml_history(p)
    p.condition(CARDIOMYOPATHY_DRUG, onset=day(150))
    workup(p, lvef=38)
    return Fixture("13", "ineligible-lvef-38", "LVEF 38% after anthracyclines (I7d not-met, E10e met)", [p],
                   {p.pid: exp("ineligible", "Reduced ejection fraction.", I7d=("not-met", "LVEF 38%"),
                               E10e=("met", "LVEF 38% < 45%"))})


@fixture
def f14() -> Fixture:
    p = person("14")
    p.patient("Ferreira", "Rosa", "female", birth_for_age(68, 3), "TS-0014", birth_sex="F")
    aml_history(p)
    workup(p, creat=None, weight=(49.0, "kg"), hcg=None)
    # (140-68) x 49 x 0.85 / (72 x 1.0386 mg/dL) = 40.0 mL/min with SCr 91.8 umol/L
    p.lab("creat", L_CREAT_MOL, 91.8, "umol/L", when=instant(4, 7, 30), low=45, high=84, flag="H")
    p.condition(MENOPAUSE, onset="2010", recorded=day(4000))
    return Fixture("14", "ineligible-crcl-40", "Creatinine 91.8 umol/L, 49 kg, 68 y, female: CrCl 40 mL/min", [p],
                   {p.pid: exp("ineligible", "Renal function too low.", I7c=("not-met", "CrCl 40.0 mL/min"))})


@fixture
def f15() -> Fixture:
    p = person("15")
    p.patient("Petrov", "Andrei", "male", birth_for_age(49, 1), "TS-0015")
    aml_history(p)
    workup(p, alt=(164, 41), ast=(88, 40))
    return Fixture("15", "ineligible-alt-4x-uln", "ALT 164 U/L with ULN 41 (4.0 x ULN)", [p],
                   {p.pid: exp("ineligible", "Transaminases too high.", I7a=("not-met", "ALT 4.0 x ULN"))})


@fixture
def f16() -> Fixture:
    p = person("16")
    p.patient("Tanaka", "Hiroshi", "male", birth_for_age(66, 6), "TS-0016")
    aml_history(p)
    workup(p, ecog=3)
    return Fixture("16", "ineligible-ecog-3", "ECOG 3", [p],
                   {p.pid: exp("ineligible", "Performance status too poor.", I6=("not-met", "ECOG 3"))})


@fixture
def f17() -> Fixture:
    p = person("17")
    p.patient("Albrecht", "Helga", "female", birth_for_age(72, 2), "TS-0017", birth_sex="F")
    aml_history(p)
    workup(p, hcg=None)
    p.condition(MENOPAUSE, onset="2004", recorded=day(6000))
    return Fixture("17", "ineligible-age-72", "Age 72", [p],
                   {p.pid: exp("ineligible", "Older than 70.", I1=("not-met", "age 72"))})


@fixture
def f18() -> Fixture:
    p = person("18")
    p.patient("Moreau", "Julien", "male", birth_for_age(51, 4), "TS-0018")
    aml_history(p, salvage_days=None)
    for d in range(30):
        p.administration("gilteritinib", RX_GILTERITINIB, when=instant(5 + d, 9), dose=120, route=ROUTE_ORAL)
    workup(p)
    return Fixture("18", "ineligible-gilteritinib-washout", "Gilteritinib until 5 days ago: 14-day washout "
                   "(5 half-lives = 23.5 d, shorter is 14 d)", [p],
                   {p.pid: exp("ineligible", "Anti-tumour therapy within the washout.",
                               E2c=("met", "last gilteritinib dose 5 days ago", (AT.date() - timedelta(days=5)
                                                                                  + timedelta(days=15)).isoformat()))})


@fixture
def f19() -> Fixture:
    p = person("19")
    p.patient("Svensson", "Erik", "male", birth_for_age(64, 0), "TS-0019")
    aml_history(p)
    p.immunization(CVX_ZOSTER_LIVE, when=instant(14, 11), lot="ZOS-24-0091")
    workup(p)
    return Fixture("19", "ineligible-live-zoster-vaccine", "Live zoster vaccine (CVX 121) 14 days ago", [p],
                   {p.pid: exp("ineligible", "Live vaccine within 4 weeks.",
                               E15=("met", "CVX 121 14 days ago",
                                    (AT.date() - timedelta(days=14) + timedelta(days=29)).isoformat()))})


@fixture
def f20() -> Fixture:
    p = person("20")
    p.patient("Achterberg", "Pieter", "male", birth_for_age(59, 11), "TS-0020")
    aml_history(p)
    onset = months_back(2)
    p.condition(ISCHEMIC_STROKE, onset=onset.isoformat(), clinical="active", category="encounter-diagnosis")
    workup(p)
    until = date(onset.year + (onset.month + 5) // 12, (onset.month + 5) % 12 + 1, onset.day) + timedelta(days=1)
    return Fixture("20", "ineligible-recent-stroke", "Ischaemic stroke 2 months ago", [p],
                   {p.pid: exp("ineligible", "Stroke within 6 months of consent.",
                               E9=("met", f"stroke on {onset.isoformat()}", until.isoformat()))})


@fixture
def f21() -> Fixture:
    p = person("21")
    p.patient("Kim", "Soo-ah", "female", birth_for_age(34, 5), "TS-0021", birth_sex="F")
    aml_history(p, salvage_days=None)
    p.procedure("hsct", P_ALLO_HSCT, performed=months_back(11).isoformat() + "T10:00:00Z")
    p.condition(GVHD_CHRONIC, onset=day(120), clinical="active")
    p.request("tacrolimus", RX_TACROLIMUS, start=day(120), dose=1.5, per_day=2, reason=GVHD_CHRONIC)
    workup(p)
    return Fixture("21", "ineligible-active-gvhd-tacrolimus", "Active chronic GvHD on tacrolimus, 11 months after "
                   "allo-HSCT", [p], {p.pid: exp("ineligible", "Active GvHD needing immunosuppression.",
                                                 E6=("met", "active chronic GvHD, tacrolimus order"),
                                                 E5=("not-met", "HSCT 11 months ago"))})


@fixture
def f22() -> Fixture:
    p = person("22")
    p.patient("Ivanova", "Olga", "female", birth_for_age(61, 9), "TS-0022", birth_sex="F")
    aml_history(p)
    p.condition(PULM_FIBROSIS, onset=day(700))
    workup(p, spo2=93, hcg=None)
    p.condition(MENOPAUSE, onset="2014", recorded=day(3000))
    return Fixture("22", "ineligible-pulmonary-fibrosis", "Pulmonary fibrosis (SNOMED 51615001 + J84.10)", [p],
                   {p.pid: exp("ineligible", "Pulmonary fibrosis.", E13=("met", "fibrosis Condition"))})


@fixture
def f23() -> Fixture:
    p = person("23")
    p.patient("Moana", "Leilani", "female", birth_for_age(27, 4), "TS-0023", birth_sex="F")
    aml_history(p)
    workup(p, hcg=True)
    p.coded("pregstatus", L_PREG_STATUS, PREGNANCY, when=instant(4, 8), category="social-history")
    return Fixture("23", "ineligible-pregnant", "Positive serum hCG and pregnancy status 'pregnant'", [p],
                   {p.pid: exp("ineligible", "Pregnant.", E17=("met", "pregnancy status"),
                               I9=("not-met", "hCG positive"))})


@fixture
def f24() -> Fixture:
    p = person("24")
    p.patient("Lindgren", "Sofia", "female", birth_for_age(45, 0), "TS-0024", birth_sex="F")
    aml_history(p)
    p.procedure("rt", P_RADIOTHERAPY, period=(instant(24, 9), instant(14, 9)), category=RT_CATEGORY,
                text="Palliative RT to extramedullary disease, 5 fractions")
    workup(p)
    return Fixture("24", "ineligible-radiotherapy-2-weeks", "Last radiotherapy fraction 14 days ago", [p],
                   {p.pid: exp("ineligible", "Radiotherapy within 4 weeks.",
                               E2d=("met", "last fraction 14 days ago",
                                    (AT.date() - timedelta(days=14) + timedelta(days=29)).isoformat()))})


@fixture
def f25() -> Fixture:
    p = person("25")
    p.patient("Boateng", "Kwame", "male", birth_for_age(42, 2), "TS-0025")
    aml_history(p, salvage_days=None)
    p.procedure("hsct", P_ALLO_HSCT, performed=months_back(14).isoformat() + "T10:00:00Z")
    p.procedure("dli", P_DLI, performed=instant(21, 10))
    workup(p)
    return Fixture("25", "ineligible-dli-3-weeks", "Donor lymphocyte infusion 21 days ago", [p],
                   {p.pid: exp("ineligible", "DLI within 6 weeks.",
                               E2e=("met", "DLI 21 days ago",
                                    (AT.date() - timedelta(days=21) + timedelta(days=43)).isoformat()))})


@fixture
def f26() -> Fixture:
    p = person("26")
    p.patient("Novak", "Petra", "female", birth_for_age(53, 7), "TS-0026", birth_sex="F")
    aml_history(p)
    for d in (6, 4, 2):
        p.administration("dexamethasone", RX_DEXAMETHASONE, when=instant(d, 8), dose=4, route=ROUTE_IV)
    workup(p)
    return Fixture("26", "ineligible-dexamethasone-12mg-week", "Dexamethasone 3 x 4 mg IV in the last week = 80 mg "
                   "prednisone-equivalent", [p], {p.pid: exp("ineligible", "Steroid exposure before apheresis.",
                                                             E2a=("met", "12 mg dexamethasone = 80 mg prednisone"))})


@fixture
def f27() -> Fixture:
    p = person("27")
    p.patient("Eriksen", "Bjorn", "male", birth_for_age(56, 2), "TS-0027")
    aml_history(p)
    p.condition(MENINGEAL_LEUKEMIA, onset=day(60))
    p.condition(SLE, onset=day(2000))
    p.request("prednisone", RX_PREDNISONE, start=day(90), dose=10)
    workup(p, nka=False)
    p.allergy(RX_FLUDARABINE, criticality="high", reaction="Haemolytic anaemia", category="medication")
    return Fixture("27", "ineligible-cns-sle-fludarabine-allergy", "CNS (meningeal) leukaemia, active SLE, allergy "
                   "to fludarabine", [p],
                   {p.pid: exp("ineligible", "Several exclusions.", E11=("met", "meningeal leukemia"),
                               E1=("met", "fludarabine allergy"), E14=("met", "active SLE"),
                               E8=("not-met", "meningeal leukaemia is this patient's AML in the CNS, not another "
                                              "malignancy"))})


@fixture
def f28() -> Fixture:
    p = person("28")
    p.patient("Gallagher", "Sean", "male", birth_for_age(62, 4), "TS-0028")
    aml_history(p)
    p.condition(ACUTE_MI, onset=day(60), clinical="active", category="encounter-diagnosis")
    p.procedure("cabg", P_CABG, performed=instant(52, 8))
    p.condition(HEART_FAILURE, onset=day(55))
    p.condition(NYHA_III, onset=day(20))
    p.condition(AV_BLOCK_3, onset=day(50))
    workup(p, lvef=47)
    return Fixture("28", "ineligible-mi-cabg-heart-failure", "NSTEMI 60 days ago, CABG 52 days ago, heart failure "
                   "NYHA III, complete AV block", [p],
                   {p.pid: exp("ineligible", "Recent cardiac events.", E10b=("met", "MI and CABG within 6 months"),
                               E10a=("met", "NYHA class III"), E10c=("met", "complete AV block"))})


@fixture
def f29() -> Fixture:
    p = person("29")
    p.patient("Haddad", "Samir", "male", birth_for_age(39, 8), "TS-0029")
    aml_history(p)
    p.condition(PNEUMONIA, onset=day(5), category="encounter-diagnosis")
    p.request("meropenem", ATC_ANTIBACTERIAL, start=day(5), dose=1000, per_day=3, route=ROUTE_IV,
              reason=PNEUMONIA, unit="mg")
    p.condition(MELANOMA, onset=day(300))
    workup(p, virology=False)
    vt = instant(30, 8, 0)
    p.qual("hiv", L_HIV, True, when=vt)
    p.qual("hbsag", L_HBSAG, False, when=vt)
    p.qual("hbcab", L_HBCAB, False, when=vt)
    p.qual("hcvab", L_HCV_AB, True, when=vt)
    p.lab("hcvrna", L_HCV_RNA, 185000, "[IU]/mL", when=instant(28, 8), flag="DET")
    p.qual("tppa", L_TPPA, True, when=vt)
    return Fixture("29", "ineligible-infection-hiv-hcv-syphilis-melanoma", "Pneumonia on IV meropenem; HIV Ab+, HCV "
                   "Ab+ with RNA 185000 IU/mL, TPPA+; active melanoma", [p],
                   {p.pid: exp("ineligible", "Infection, virology and a second malignancy.",
                               E12a=("met", "HIV positive"), E12c=("met", "HCV RNA detected"),
                               E12d=("met", "TPPA positive"), E8=("met", "active melanoma"))})


@fixture
def f30() -> Fixture:
    p = person("30")
    p.patient("Almeida", "Beatriz", "female", birth_for_age(44, 10), "TS-0030", birth_sex="F")
    aml_history(p)
    workup(p, cd38=False, tbil=(3.1, 1.2), spo2=88)
    cll1 = p.lab("cll1", L_CLL1_LOCAL, 1, "%", when=instant(12, 9, 0), flag="NEG")
    p.report("Bone marrow flow cytometry: CLL1 (CLEC12A)", [cll1], when=instant(12, 9, 0))
    p.procedure("surgery", P_SURGERY, performed=instant(10, 8), text="Laparotomy for bowel perforation")
    return Fixture("30", "ineligible-marker-negative-bilirubin-hypoxia", "CD38 and CLL1 negative, bilirubin 2.6xULN, "
                   "SpO2 88% on room air, laparotomy 10 days ago", [p],
                   {p.pid: exp("ineligible", "Marker-negative, liver and lung function.",
                               I3=("unknown", "CD38 negative; CLL1 negative only on an unmapped local code "
                                              "(not-met with a site table)"),
                               I7b=("not-met", "bilirubin 2.6 x ULN"),
                               I7e=("not-met", "SpO2 88%"),
                               E16=("unknown", "surgical procedure 10 days ago: was it major? (met with a site "
                                               "major-surgery table)"))})


# --- (c) records with gaps ---------------------------------------------------------------------------------
@fixture
def f31() -> Fixture:
    p = person("31")
    p.patient("Varga", "Eszter", "female", birth_for_age(50, 3), "TS-0031", birth_sex="F")
    aml_history(p, biopsy_days=None)
    return Fixture("31", "gap-no-labs", "Relapsed AML with no tests, no allergy list, no virology: every test-decided "
                   "item is unknown", [p],
                   {p.pid: exp("potential-candidate", "Nothing to decide the tests on.",
                               I6=("unknown", "no ECOG"), I7a=("unknown", "no ALT/AST"),
                               E1=("not-met", "empty allergy list: 'None recorded' (the project's decision; the "
                                              "reference would say unknown)"),
                               E12a=("unknown", "no HIV test"))})


@fixture
def f32() -> Fixture:
    p = person("32")
    p.patient("Dimitriou", "Nikos", "male", birth_for_age(47, 5), "TS-0032")
    aml_history(p)
    workup(p, age_days=40)
    return Fixture("32", "gap-stale-labs-40-days", "Every lab 40 days old (recency 28 days)", [p],
                   {p.pid: exp("potential-candidate", "Results too old to count.",
                               I7a=("unknown", "ALT 40 days old"), I6=("unknown", "ECOG 40 days old"))})


@fixture
def f33() -> Fixture:
    p = person("33")
    p.patient("OConnell", "Brigid", "female", birth_for_age(31, 0), "TS-0033", birth_sex="F")
    aml_history(p)
    workup(p, lab_status="preliminary")
    p.condition(PULM_FIBROSIS, onset=day(8), verification="provisional", category="encounter-diagnosis",
                note="Reticulation on CT; pulmonology review pending.")
    return Fixture("33", "gap-preliminary-results",
                   "Chemistry results still preliminary; pulmonary fibrosis only provisional", [p],
                   {p.pid: exp("potential-candidate", "Final results needed.",
                               I7a=("unknown", "preliminary ALT/AST"), I7c=("unknown", "preliminary creatinine"),
                               E13=("unknown", "pulmonary fibrosis provisional"))})


@fixture
def f34() -> Fixture:
    p = person("34")
    p.patient("Yilmaz", "Emre", "male", birth_for_age(45, 2), "TS-0034")
    aml_history(p)
    workup(p, uln=False, virology=False)
    vt = instant(30, 8, 0)
    p.qual("hiv", L_HIV, False, when=vt)
    p.qual("hbsag", L_HBSAG, False, when=vt)
    p.qual("hbcab", L_HBCAB, True, when=vt)
    p.qual("hcvab", L_HCV_AB, False, when=vt)
    p.qual("tppa", L_TPPA, False, when=vt)
    p.condition(RHEUMATOID_ARTHRITIS, onset=day(5000), clinical="remission", recorded=day(4000))
    return Fixture("34", "gap-missing-uln-hbcab-without-dna", "ALT/AST/bilirubin without reference ranges; HBcAb "
                   "positive with no HBV DNA; rheumatoid arthritis in remission", [p],
                   {p.pid: exp("potential-candidate", "ULN and HBV DNA needed.",
                               I7a=("unknown", "no ULN"), I7b=("unknown", "no ULN"),
                               E12b=("unknown", "HBcAb+ without HBV DNA"),
                               E14=("unknown", "RA in remission: confirm no disease-directed treatment"))})


@fixture
def f35() -> Fixture:
    p = person("35")
    p.patient("Mbeki", "Thandiwe", "female", birth_for_age(48, 8), "TS-0035", birth_sex="F")
    p.condition(AML_NOS, onset=day(35), verification="provisional",
                note="Marrow pending; differential includes MDS-EB2.")
    p.coded("pmlrara", L_PML_RARA, POSITIVE, when=instant(3, 16), status="preliminary", flag="POS")
    workup(p)
    return Fixture("35", "gap-unconfirmed-aml",
                   "Provisional AML diagnosis only, with a preliminary PML::RARA positive", [p],
                   {p.pid: exp("potential-candidate", "Diagnosis to confirm.",
                               I2=("unknown", "AML provisional"),
                               E3=("unknown", "preliminary PML::RARA positive: await the final report"))})


@fixture
def f36() -> Fixture:
    p = person("36")
    p.patient("Fischer", "Anna", "female", birth_for_age(54, 1), "TS-0036", birth_sex="F")
    aml_history(p, diagnosis=AML_NOS, relapse_days=None, dx_days=60, salvage_days=None)
    p.procedure("intrathecal", P_INTRATHECAL, performed=instant(50, 11), text="Intrathecal cytarabine")
    workup(p)
    return Fixture("36", "gap-aml-without-rr-evidence", "AML coded C92.00 / 91861009 after one induction: no relapse "
                   "or refractory evidence; intrathecal chemotherapy without a CSF result", [p],
                   {p.pid: exp("potential-candidate", "R/R status to document.",
                               I2=("unknown", "AML without R/R evidence"),
                               E11=("unknown", "intrathecal chemotherapy without a CSF result"))})


@fixture
def f37() -> Fixture:
    p = person("37")
    p.patient("Kaur", "Harpreet", "female", "1955", "TS-0037", birth_sex="F")
    aml_history(p)
    p.condition(SEIZURE, onset="2026-04", category="encounter-diagnosis", clinical="resolved")
    p.procedure("rt", P_RADIOTHERAPY, performed="2026-09", category=RT_CATEGORY)
    p.immunization(CVX_ZOSTER_UNSPECIFIED, when=day(12))
    p.procedure("hsct", P_ALLO_HSCT, performed="2025")
    p.procedure("dli", P_DLI, performed="2026-08")
    p.condition(GVHD_ACUTE, onset="2026-07", clinical="resolved", abatement="2026-09")
    workup(p, hcg=None)
    p.condition(MENOPAUSE, onset="2008", recorded=day(5000))
    return Fixture("37", "gap-partial-dates", "Birth year only (age 70 or 71), seizure in '2026-04', radiotherapy in "
                   "'2026-09', zoster vaccine of unspecified type, allo-HSCT in '2025', DLI in '2026-08', GvHD "
                   "abated '2026-09'", [p],
                   {p.pid: exp("potential-candidate", "Dates too imprecise to decide.",
                               I1=("unknown", "born 1955: 70 or 71"), E9=("unknown", "seizure 2026-04"),
                               E2d=("unknown", "RT 2026-09"), E15=("unknown", "zoster unspecified"),
                               E5=("not-met", "allo-HSCT in 2025: before the 6-month window at either end"),
                               E2e=("unknown", "DLI in 2026-08: inside or outside the 42-day window"),
                               E6=("unknown", "GvHD abated 2026-09: inside or outside the 28-day window"))})


@fixture
def f45() -> Fixture:
    p = person("45")
    p.patient("Oduya", "Grace", "female", birth_for_age(57, 6), "TS-0045", birth_sex="F")
    aml_history(p)
    # History entries without event dates, added to the problem list at this week's screening visit: they prove
    # something happened (on or before the recorded date), never whether it was recent.
    p.condition(HSCT_STATUS, onset=None, clinical="active", recorded=day(3))
    p.condition(CELL_THERAPY_HISTORY, onset=None, clinical="active", recorded=day(3))
    p.condition(OLD_MI, onset=None, clinical="active", recorded=day(3))
    p.condition(HEART_FAILURE[:1], onset=day(700))
    p.condition(EPILEPSY, onset=day(9000))
    p.request("prednisone", RX_PREDNISONE, start=day(6), route=ROUTE_ORAL, text="prednisone as directed")
    p.administration("idarubicin", RX_IDARUBICIN, when="2026-09", dose=12)
    workup(p, hcg=None, bps=((132, 84),))
    p.condition(MENOPAUSE, onset="2020", recorded=day(2000))
    return Fixture("45", "gap-undated-history", "Transplant status Z94.84, cellular therapy Z92.859, old MI I25.2, "
                   "heart failure without NYHA class, epilepsy without a dated seizure, a prednisone order without "
                   "a dose, idarubicin dated '2026-09', a single BP reading", [p],
                   {p.pid: exp("potential-candidate", "History without the dates or details to decide.",
                               E5=("unknown", "transplant status without a date"),
                               E4=("unknown", "unspecified cellular therapy"),
                               E10b=("unknown", "old MI I25.2 without a date"),
                               E10a=("unknown", "heart failure without NYHA class"),
                               E9=("unknown", "epilepsy without a dated recent seizure"),
                               E2a=("unknown", "prednisone order without a dose"),
                               E2c=("unknown", "idarubicin in 2026-09: inside or outside the 14-day window"),
                               E10f=("unknown", "a single BP reading"))})


@fixture
def f46() -> Fixture:
    p = person("46")
    p.patient("Zhang", "Wei", "male", birth_for_age(39, 4), "CN-880046", chinese=True)
    # Second "Chinese hospital" record: WHO ICD-10 only, so relapse must be shown by the marrow: complete remission
    # documented (mCODE disease status) and bone-marrow blasts 18% now. GvHD coded the WHO way (T86.0, which
    # also covers graft rejection) on ciclosporin.
    p.condition(AML_WHO, onset=day(520), recorded=day(520), text="急性髓系白血病")
    for d in range(7):
        p.administration("cytarabine", ATC_CYTARABINE, when=instant(515 - d, 10), dose=180)
    for d in range(3):
        p.administration("idarubicin", ATC_IDARUBICIN, when=instant(515 - d, 11), dose=22)
    p.coded("diseasestatus", L_DISEASE_STATUS, IN_FULL_REMISSION, when=instant(480, 10), category="exam")
    p.procedure("hsct", P_ALLO_HSCT[1:2], performed=months_back(13).isoformat() + "T09:00:00Z")
    p.condition(GVHD_WHO, onset=day(250), clinical="active", text="慢性移植物抗宿主病")
    p.request("ciclosporin", ATC_CICLOSPORIN, start=day(250), dose=75, per_day=2, route=ROUTE_ORAL)
    p.procedure("biopsy", P_BIOPSY, performed=instant(11, 9), text="骨髓穿刺活检")
    p.lab("blasts", L_MARROW_BLASTS, 18, "%", when=instant(11, 15), flag="H")
    workup(p, ecog=0, creat=None, weight=(66.0, "kg"))
    p.lab("creat", L_CREAT_MOL + ((LOCAL_LAB_CN, "CREA", "肌酐"),), 81, "umol/L", when=instant(4, 7, 30), low=57,
          high=111, flag="N")
    return Fixture("46", "who-icd10-marrow-relapse-gvhd-on-ciclosporin", "'Chinese hospital' record: WHO ICD-10 "
                   "C92.0, relapse shown by marrow blasts 18% after a documented complete remission; GvHD coded "
                   "WHO T86.0 (also covers graft rejection) on ciclosporin", [p],
                   {p.pid: exp("ineligible", "WHO-coded relapse, but on a current immunosuppressant after "
                               "transplant ('the need for immunosuppressive drugs').",
                               I2=("met", "blasts 18% after documented CR"),
                               I6=("met", "ECOG 0"),
                               E5=("not-met", "allo-HSCT 13 months ago"),
                               E6=("met", "an active systemic immunosuppressant (ciclosporin) excludes; review "
                                          "only when the indication is known not to be GvHD (reference E6), and "
                                          "here it is post-transplant T86.0"))})


# --- (d) not applicable ------------------------------------------------------------------------------------
@fixture
def f38() -> Fixture:
    p = person("38")
    p.patient("Romano", "Luca", "male", birth_for_age(46, 3), "TS-0038")
    p.condition(CML, onset=day(900))
    workup(p, cd38=None)
    return Fixture("38", "not-applicable-cml", "Chronic myeloid leukaemia, no AML", [p],
                   {p.pid: exp("not-applicable", "No AML diagnosis.", I2=("not-met", "CML is not AML"))})


@fixture
def f39() -> Fixture:
    p = person("39")
    p.patient("Hartmann", "Ute", "female", birth_for_age(67, 0), "TS-0039", birth_sex="F")
    p.condition(MDS, onset=day(500))
    for d in range(7):
        p.administration("azacitidine", RX_AZACITIDINE, when=instant(40 + d, 10), dose=120, route=ROUTE_SC)
    workup(p, cd38=None, hcg=None)
    return Fixture("39", "not-applicable-mds", "Myelodysplastic syndrome on azacitidine, no AML", [p],
                   {p.pid: exp("not-applicable", "MDS alone is not AML.", I2=("not-met", "MDS is not AML"))})


@fixture
def f40() -> Fixture:
    p = person("40")
    p.patient("Baker", "Thomas", "male", birth_for_age(35, 6), "TS-0040")
    p.condition(HYPERTENSION, onset=day(700))
    workup(p, cd38=None, virology=False)
    return Fixture("40", "not-applicable-healthy-adult", "Adult with hypertension only", [p],
                   {p.pid: exp("not-applicable", "No leukaemia.")})


@fixture
def f41() -> Fixture:
    p = person("41")
    p.patient("Sato", "Yuki", "female", birth_for_age(23, 2), "TS-0041", birth_sex="F")
    p.condition(ALL, onset=day(60))
    workup(p, cd38=False)
    return Fixture("41", "not-applicable-all", "Acute lymphoblastic leukaemia, no AML", [p],
                   {p.pid: exp("not-applicable", "ALL is not AML.", I2=("not-met", "ALL is not AML"))})


@fixture
def f42() -> Fixture:
    p = person("42")
    p.patient("Doe", "Alex", "unknown", None, "TS-0042")
    return Fixture("42", "not-applicable-patient-only", "Only a Patient resource (no birth date, no data)", [p],
                   {p.pid: exp("not-applicable", "Nothing recorded.", I1=("unknown", "no birth date"))})


# --- (e) file formats --------------------------------------------------------------------------------------
@fixture
def f43() -> Fixture:
    a, b = person("43a"), person("43b")
    a.patient("Quinn", "Harriet", "female", birth_for_age(43, 3), "TS-0043A", birth_sex="F")
    aml_history(a)
    workup(a)
    b.patient("Quinn", "Edward", "male", birth_for_age(75, 1), "TS-0043B")
    aml_history(b)
    workup(b)
    return Fixture("43", "two-patients-one-bundle", "One Bundle holding two patients (a candidate and a 75-year-old)",
                   [a, b], {a.pid: exp("potential-candidate", "First patient of the bundle."),
                            b.pid: exp("ineligible", "Second patient: too old.", I1=("not-met", "age 75"))})


@fixture
def f44() -> Fixture:
    p = person("44")
    p.patient("Laine", "Aino", "female", birth_for_age(40, 0), "TS-0044", birth_sex="F")
    aml_history(p)
    workup(p)
    return Fixture("44", "ndjson-relapsed-aml", "The same kind of candidate as an NDJSON file (one resource per line)",
                   [p], {p.pid: exp("potential-candidate", "NDJSON input.", I2=("met", "relapse code"))},
                   ndjson=True)


# --- output ------------------------------------------------------------------------------------------------
def full_url(res: dict[str, Any]) -> str:
    return "urn:uuid:" + str(uuid.uuid5(NAMESPACE, f"{res['resourceType']}/{res['id']}"))


def bundle(fx: Fixture) -> dict[str, Any]:
    entries = [{"fullUrl": full_url(r), "resource": r} for p in fx.people for r in p.resources]
    return {"resourceType": "Bundle", "id": f"ts{fx.number}-bundle",
            "meta": {"tag": [{"system": "http://trialscreen.example.org/fhir/CodeSystem/tags", "code": "synthetic",
                              "display": "Synthetic test data"}]},
            "identifier": {"system": "http://trialscreen.example.org/fixtures", "value": fx.slug},
            "type": "collection", "timestamp": AT.strftime("%Y-%m-%dT%H:%M:%SZ"), "entry": entries}


def render(fx: Fixture) -> bytes:
    if fx.ndjson:
        return b"".join(orjson.dumps(r) + b"\n" for p in fx.people for r in p.resources)
    return orjson.dumps(bundle(fx), option=orjson.OPT_INDENT_2) + b"\n"


def build_all() -> list[Fixture]:
    return [make() for make in FIXTURES]


def expected_document(fixtures: list[Fixture]) -> dict[str, Any]:
    patients: dict[str, Any] = {}
    for fx in fixtures:
        for p in fx.people:
            patients[f"Patient/{p.pid}"] = {"fixture": fx.filename, "demonstrates": fx.title, **fx.expected[p.pid]}
    return {"evaluated_at": AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "note": "Written by scripts/make_fixtures.py from the expectations declared beside each fixture.",
            "patients": patients}


def outputs() -> dict[Path, bytes]:
    fixtures = build_all()
    files = {ROOT / "fixtures" / fx.filename: render(fx) for fx in fixtures}
    files[ROOT / "tests" / "fixtures_expected.json"] = orjson.dumps(
        expected_document(fixtures), option=orjson.OPT_INDENT_2) + b"\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = parser.parse_args(argv)
    files = outputs()
    stale = [path for path, blob in files.items() if not path.exists() or path.read_bytes() != blob]
    fixture_dir = ROOT / "fixtures"
    extra = sorted(p for p in fixture_dir.glob("*") if p.is_file() and p not in files) if fixture_dir.exists() else []
    if args.check:
        for path in stale:
            print(f"differs: {path.relative_to(ROOT)}", file=sys.stderr)
        for path in extra:
            print(f"not generated: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale or extra else 0
    fixture_dir.mkdir(exist_ok=True)
    for path in extra:
        path.unlink()
    for path in stale:
        path.write_bytes(files[path])
    print(f"{len(files) - 1} fixture files ({len(stale)} written) in {fixture_dir.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
