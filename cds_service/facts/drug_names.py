"""Reading drug names: RxNorm normalised names and free medication text.

RxNorm names its clinical and branded drugs and packs by a fixed pattern ("dexamethasone 4 MG Oral Tablet",
"2 ML fludarabine phosphate 25 MG/ML Injection", "gilteritinib 40 MG Oral Tablet [Xospata]",
"{27 (dexamethasone 1.5 MG Oral Tablet) } Pack"), so ingredient, strength and dose form can be read back from
the name; ``parse_rxnorm_name`` does that (for the table builder, and for an RxNorm code the tables do not list
but whose display is such a name). ``TextMatcher`` finds ingredient, synonym and brand names in free text
("Xospata 40 mg tablet", "dexamethasone 4mg tab"), whole words only, longest name first.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ParsedPart", "ParsedName", "parse_rxnorm_name", "base_ingredient", "TextMatcher", "form_route",
           "parse_strength", "normalise_text"]

_UNITS = {"MG": "mg", "MCG": "ug", "G": "g", "UNT": "[U]", "MEQ": "meq", "MMOL": "mmol", "ML": "mL", "%": "%",
          "MG/ML": "mg/mL", "MCG/ML": "ug/mL", "UNT/ML": "[U]/mL", "MG/HR": "mg/h", "MCG/HR": "ug/h",
          "MG/ACTUAT": "mg/{actuat}", "MCG/ACTUAT": "ug/{actuat}", "MEQ/ML": "meq/mL", "UNT/MG": "[U]/mg",
          "MG/MG": "mg/mg"}
_STRENGTH = re.compile(r"^(?P<name>.+?) (?P<num>\d+(?:\.\d+)?) (?P<unit>MG|MCG|UNT|MEQ|MMOL|G|%)"
                       r"(?:/(?P<per>[A-Z]+|\d+(?:\.\d+)? ?[A-Z]+))?(?P<rest>(?: .*)?)$")
_QUANTITY_PREFIX = re.compile(r"^\d+(?:\.\d+)? (?:ML|HR|ACTUAT|MG|G|L|CM2|DAY|SQCM) ")
# "osmotic 24 HR nifedipine", "3 ML insulin lispro": a release or volume qualifier before the ingredient.
_INNER_QUANTITY = re.compile(r"(?:^|.* )\d+(?:\.\d+)? (?:HR|ML|UNT|MG|ACTUAT) ")
_DESCRIPTOR = re.compile(r"^(?:once-daily|micronized) ", re.IGNORECASE)
_BRAND = re.compile(r"^(?P<body>.*\S) \[(?P<brand>[^\]]+)\]$")
# Salt and ester words RxNorm keeps in precise-ingredient names; the ingredient is the name without them.
_SALTS = {"phosphate", "sodium", "succinate", "acetate", "hydrochloride", "dihydrochloride", "hcl", "mesylate",
          "dimesylate", "citrate", "sulfate", "maleate", "tartrate", "bitartrate", "fumarate", "besylate",
          "potassium", "calcium", "magnesium", "hyclate", "monohydrate", "dihydrate", "trihydrate", "anhydrous",
          "hydrobromide", "disodium", "dipropionate", "valerate", "propionate", "acetonide", "hemisuccinate",
          "tebutate", "liposomal", "liposome", "lactate", "gluconate", "tosylate", "malate", "hemifumarate",
          "benzoate", "pivalate", "ethylsuccinate", "lactobionate", "stearate", "tannate", "estolate",
          "sesquihydrate", "hexahydrate", "lysine"}


@dataclass(frozen=True)
class ParsedPart:
    name: str  # as written (the precise ingredient, salt included)
    strength: float | None
    unit: str | None  # UCUM-like: mg, ug, mg/mL, [U]


@dataclass(frozen=True)
class ParsedName:
    tty: str  # SCD, SBD, GPCK, BPCK; without strengths SCDF, SBDF, SCDG, SBDG; ingredients only IN, MIN
    ingredients: tuple[ParsedPart, ...]
    form: str | None
    brand: str | None


def _unit(unit: str, per: str | None) -> str:
    key = f"{unit}/{per}" if per else unit
    if key in _UNITS:
        return _UNITS[key]
    return f"{_UNITS.get(unit, unit.lower())}/{per.lower()}" if per else _UNITS.get(unit, unit.lower())


def _parse_clinical(text: str) -> tuple[list[ParsedPart], str | None] | None:
    text = _QUANTITY_PREFIX.sub("", text.strip())
    parts: list[ParsedPart] = []
    form = None
    chunks = text.split(" / ")
    for i, chunk in enumerate(chunks):
        m = _STRENGTH.match(chunk.strip())
        if m is None:
            return None
        per = m.group("per")
        if per and re.match(r"^\d", per):
            per = per.replace(" ", "")  # "MG/5ML" kept as a ratio; not converted to per-mL here
        name = _INNER_QUANTITY.split(m.group("name").strip())[-1]
        name = _DESCRIPTOR.sub("", name).strip()
        if not name or name[0].isdigit() and not re.match(r"^\d+-[a-z]", name) or name.count("(") != name.count(")"):
            return None  # a kit or device name, not an ingredient
        parts.append(ParsedPart(name, float(m.group("num")), _unit(m.group("unit"), per)))
        rest = m.group("rest").strip()
        if any(ch in rest for ch in "[]{}()"):
            return None  # a dose form never holds brackets: a malformed or partial name
        if rest:
            if i != len(chunks) - 1:
                return None
            form = rest
    return parts, form


# First words of RxNorm dose forms and dose-form groups ("Oral Tablet", "Extended Release Oral Capsule",
# "Injectable Product", "Pill"): where a name without a strength (SCDF, SCDG, SBDF, SBDG) stops naming ingredients.
_FORM_START = {"Oral", "Extended", "Delayed", "Injectable", "Injection", "Pill", "Topical", "Chewable",
               "Disintegrating", "Sublingual", "Buccal", "Rectal", "Vaginal", "Nasal", "Ophthalmic", "Otic",
               "Transdermal", "Inhalant", "Inhalation", "Metered", "Prefilled", "Auto-Injector", "Pen", "Cartridge",
               "Mucosal", "Dental", "Effervescent", "Tablet", "Capsule", "Powder", "Granules", "Drug",
               "Intrauterine", "Cutaneous", "Dry", "Enteric", "Jet", "Medicated", "Irrigation", "Urethral",
               "Intravenous", "Intramuscular", "Subcutaneous", "Sustained", "Biphasic", "Abuse-Deterrent", "Osmotic",
               "Inhaler", "Intraperitoneal", "Intratracheal", "Intravesical", "Intrathecal", "Implant"}


def _parse_unstrengthened(text: str, brand: str | None) -> ParsedName | None:
    """A name without strengths: an ingredient (IN / MIN), or ingredients and a dose form (SCDF) or dose-form
    group (SCDG), branded (SBDF / SBDG) when a [Brand] followed."""
    words = text.split(" ")
    cut = next((i for i, w in enumerate(words) if i > 0 and w in _FORM_START), None)
    names, form = (words, None) if cut is None else (words[:cut], " ".join(words[cut:]))
    if not names or any(re.match(r"^\d", w) for w in names):
        return None
    parts = tuple(ParsedPart(n.strip(), None, None) for n in " ".join(names).split(" / ") if n.strip())
    if not parts:
        return None
    if form is None:
        if brand is not None:
            return None
        return ParsedName("MIN" if len(parts) > 1 else "IN", parts, None, None)
    group = form.endswith("Product") or form == "Pill"
    tty = ("SBD" if brand else "SCD") + ("G" if group else "F")
    return ParsedName(tty, parts, form, brand)


def parse_rxnorm_name(display: str) -> ParsedName | None:
    """Ingredients, strengths, dose form and brand of an RxNorm SCD / SBD / GPCK / BPCK name (None if the name
    does not follow RxNorm's pattern)."""
    text = " ".join((display or "").split())
    if not text:
        return None
    brand = None
    m = _BRAND.match(text)
    if m is not None:
        text, brand = m.group("body"), m.group("brand")
    if text.startswith("{"):
        close = text.rfind("}")
        if close < 0 or not text[close + 1:].strip().lower().startswith("pack"):
            return None
        inner = text[1:close].strip()
        components = re.findall(r"\d+ \((.+?)\)(?= /|$)", inner)
        if not components:
            return None
        by_name: dict[str, ParsedPart] = {}
        for comp in components:
            comp_brand = _BRAND.match(comp)
            parsed = _parse_clinical(comp_brand.group("body") if comp_brand else comp)
            if parsed is None:
                return None
            for p in parsed[0]:
                prev = by_name.get(p.name)
                if prev is not None and (prev.strength, prev.unit) != (p.strength, p.unit):
                    by_name[p.name] = ParsedPart(p.name, None, None)  # strengths differ across the pack
                elif prev is None:
                    by_name[p.name] = p
        return ParsedName("BPCK" if brand else "GPCK", tuple(by_name.values()), "Pack", brand)
    parsed = _parse_clinical(text)
    if parsed is None:
        if re.search(r"\d+(?:\.\d+)? (?:MG|MCG|UNT|MEQ|MMOL|G|%)\b", text):
            return None  # a strength it could not read: not a name without strength
        return _parse_unstrengthened(text, brand)
    return ParsedName("SBD" if brand else "SCD", tuple(parsed[0]), parsed[1], brand)


def base_ingredient(name: str, known: Mapping[str, object] | Callable[[str], bool]) -> str:
    """The ingredient of a precise-ingredient name: the name itself if ``known``, else the name without its
    trailing salt / ester words ("fludarabine phosphate" -> "fludarabine")."""
    is_known = known if callable(known) else (lambda n: n in known)
    words = name.lower().split()
    if is_known(" ".join(words)):
        return " ".join(words)
    while len(words) > 1 and words[-1].strip(",") in _SALTS:
        words = words[:-1]
        if is_known(" ".join(words)):
            break
    return " ".join(words)


# Word stems of dose forms and route words (RxNorm form names, and how orders are typed: "tab", "caps", "IV").
_NON_SYSTEMIC = ("topical", "cream", "ointment", "lotion", "ophthalmic", "eye", "otic", "nasal", "inhal",
                 "vaginal", "rectal", "shampoo", "mouthwash", "dental", "paste", "foam", "enema", "irrigation",
                 "intravesical", "intraarticular", "intra articular", "cutaneous", "dermal")
_SYSTEMIC = ("oral", "injection", "injectable", "syringe", "auto injector", "pen injector", "cartridge", "sublingual",
             "buccal", "chewable", "tablet", "tab", "tabs", "capsule", "cap", "caps", "intravenous", "iv", "infusion",
             "po", "im", "sc", "subcutaneous", "intramuscular", "inj", "vial")


def form_route(form: str | None) -> str | None:
    """"systemic", "non-systemic" or None (the dose form does not say) for a dose form name or order text.

    Whole words only ("cap" is a capsule, "capecitabine" is not a form); a non-systemic word wins, so
    "hydrocortisone 1% cream" is topical whatever else it says.
    """
    if not form:
        return None
    text = " " + normalise_text(form.replace("-", " ")) + " "
    if any(f" {w}" in text for w in _NON_SYSTEMIC):
        return "non-systemic"
    if any(f" {w} " in text for w in _SYSTEMIC):
        return "systemic"
    return None


_TEXT_STRENGTH = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)\s*(mg|mcg|µg|ug|g|units?|iu)(?:\s*/\s*(\d+(?:[.,]\d+)?)?"
                            r"\s*(ml))?(?![a-z])", re.IGNORECASE)
_TEXT_UNITS = {"mg": "mg", "mcg": "ug", "µg": "ug", "ug": "ug", "g": "g", "unit": "[U]", "units": "[U]",
               "iu": "[iU]"}


def parse_strength(text: str) -> tuple[float, str] | None:
    """The first strength written in free text ("40 mg", "4mg", "25 mg/mL"), as (value, unit)."""
    m = _TEXT_STRENGTH.search(text or "")
    if m is None:
        return None
    value = float(m.group(1).replace(",", "."))
    unit = _TEXT_UNITS[m.group(2).lower()]
    if m.group(4):
        per = float(m.group(3).replace(",", ".")) if m.group(3) else 1.0
        return value / per, f"{unit}/mL"
    return value, unit


def normalise_text(text: str) -> str:
    """Lower case, words separated by single spaces; "/", "-", "+" and "and" between names become spaces."""
    text = (text or "").lower().replace("µ", "u")
    text = re.sub(r"[^a-z0-9.]+", " ", text)
    return " ".join(w for w in text.split() if w != "and")


class TextMatcher:
    """Finds known drug names (ingredients, synonyms, brands) in free text, whole words, longest first."""

    def __init__(self, names: Iterable[tuple[str, str]], min_length: int = 3) -> None:
        self._phrases: dict[tuple[str, ...], str] = {}
        self._longest = 1
        for phrase, target in names:
            words = tuple(normalise_text(phrase).split())
            if not words or len(" ".join(words)) < min_length:
                continue
            self._phrases.setdefault(words, target)
            self._longest = max(self._longest, len(words))

    def find(self, text: str) -> list[str]:
        """Targets named in the text, in order of appearance, each once."""
        words = normalise_text(text).split()
        found: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                target = self._phrases.get(tuple(words[i:i + n]))
                if target is not None:
                    if target not in found:
                        found.append(target)
                    i += n
                    break
            else:
                i += 1
        return found
