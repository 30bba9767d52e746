"""One patient's record: the FHIR resources we read, parsed into typed models, and what could not be read.

Parsing uses ``fhir.resources.R4B`` models (the package has no separate R4 models; R4B reads R4 JSON for these
resource types), but for the resources that ``gather.checked`` can vouch for (all but Patients, Medications and
DiagnosticReports: ``checked.RESOURCES``): those it reads itself, with the same content, at a tenth of the cost (a
long record is mostly Observations). A resource that fails validation is skipped and kept as a ``DataProblem``
with whatever codes could still be read from its raw JSON, so that a criterion that might have needed it becomes
UNKNOWN instead of "none recorded". ``not_retrieved`` names the kinds of data that could not be fetched at all
(failed or refused queries); criteria that depend on them are UNKNOWN, never "none recorded".

Building a record does no I/O.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from cds_service.gather.checked import read_checked

__all__ = ["PatientRecord", "DataProblem", "build_record", "RESOURCE_TYPES", "raw_codings", "KINDS", "relevant_to",
           "Relevance", "raw_effective", "observation_codings"]

# The resource types the criteria read, with their fhir.resources module names.
RESOURCE_TYPES: dict[str, str] = {
    "Patient": "patient",
    "Condition": "condition",
    "Observation": "observation",
    "MedicationStatement": "medicationstatement",
    "MedicationRequest": "medicationrequest",
    "MedicationAdministration": "medicationadministration",
    "Procedure": "procedure",
    "Immunization": "immunization",
    "AllergyIntolerance": "allergyintolerance",
    "DiagnosticReport": "diagnosticreport",
    "Medication": "medication",
}
# Kinds of data whose absence can be "none recorded" (everything but Patient and Medication, which are
# read through references).
KINDS = tuple(t for t in RESOURCE_TYPES if t not in {"Patient", "Medication"})

_models: dict[str, Any] = {}
_dict_get = dict.get


def _model(resource_type: str) -> Any:
    model = _models.get(resource_type)
    if model is None:
        module = importlib.import_module(f"fhir.resources.R4B.{RESOURCE_TYPES[resource_type]}")
        model = _models[resource_type] = getattr(module, resource_type)
    return model


@dataclass(frozen=True)
class DataProblem:
    """A resource that could not be used, and why. ``codings`` are read from the raw JSON where possible."""

    reference: str
    resource_type: str
    message: str
    codings: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "resource_type": self.resource_type, "message": self.message}


@dataclass
class PatientRecord:
    """A patient's resources by type, the kinds that could not be retrieved, and the data problems."""

    patient_ref: str
    patient: Any | None = None
    resources: dict[str, list[Any]] = field(default_factory=dict)
    not_retrieved: dict[str, str] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)
    # Resources in the answers whose patient reference does not resolve to this patient (gather/references.py):
    # never evidence, never listed; only counted, as a data problem of the record.
    set_aside: int = 0

    def of_type(self, resource_type: str) -> list[Any]:
        return self.resources.get(resource_type, [])


# JSON scalars: never walked into. Checked first because an ABC check (``Mapping``) costs ~10x a type check,
# and this walk runs on every resource of a record that does not match on its own code.
_SCALARS = (str, int, float, bool, type(None))
_NOT_WALKED = frozenset({"coding", "text", "extension", "meta"})


def _codings_of(node: Any, out: list[tuple[str, str]], depth: int = 0) -> None:
    """Collect (system, code) pairs from any ``coding`` arrays in raw JSON (bounded depth)."""
    if depth > 6:
        return
    if isinstance(node, dict) or isinstance(node, Mapping):
        codings = node.get("coding")
        if isinstance(codings, list):
            for c in codings:
                if (isinstance(c, dict) or isinstance(c, Mapping)) and isinstance(c.get("code"), str):
                    out.append((str(c.get("system") or ""), c["code"]))
        for key, value in node.items():
            if key in _NOT_WALKED or isinstance(value, _SCALARS):
                continue
            if isinstance(value, (dict, list)) or isinstance(value, Mapping):
                _codings_of(value, out, depth + 1)
    elif isinstance(node, list):
        for item in node[:50]:
            _codings_of(item, out, depth + 1)


def raw_codings(resource: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Every (system, code) pair found in a raw resource's JSON."""
    out: list[tuple[str, str]] = []
    _codings_of(resource, out)
    return tuple(out)


def _is_map(node: Any) -> bool:
    """A JSON object: a dict (checked first: an ABC check such as ``Mapping`` costs ~10x, and this runs on every
    element of a record) or another Mapping."""
    return isinstance(node, dict) or isinstance(node, Mapping)


def _concept_codings(concept: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            for c in codings:
                if isinstance(c, dict) and isinstance(c.get("code"), str):
                    out.append((str(c.get("system") or ""), c["code"]))


def _concepts_codings(concepts: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(concepts, list):
        for concept in concepts:
            _concept_codings(concept, out)


def _observation_part_codings(node: Mapping[str, Any], out: list[tuple[str, str]]) -> None:
    _concept_codings(node.get("code"), out)
    _concept_codings(node.get("valueCodeableConcept"), out)
    _concept_codings(node.get("dataAbsentReason"), out)
    _concepts_codings(node.get("interpretation"), out)
    ranges = node.get("referenceRange")
    if isinstance(ranges, list):
        for r in ranges:
            if isinstance(r, dict):
                _concepts_codings(r.get("appliesTo"), out)


def observation_codings(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (system, code) pairs of a raw Observation in the places ``facts.clinical.observation_fact`` reads
    codes from (code, value, data-absent reason, interpretation, method, reference-range appliesTo, and the same
    in each component). No criterion can see a code anywhere else in an Observation, so these decide which value
    sets could read it; reading them by position is ~5x cheaper than walking the whole resource
    (``raw_codings``), and the date horizon does it for every Observation of a record."""
    out: list[tuple[str, str]] = []
    _observation_part_codings(raw, out)
    _concept_codings(raw.get("method"), out)
    components = raw.get("component")
    if isinstance(components, list):
        for component in components:
            if isinstance(component, dict):
                _observation_part_codings(component, out)
    return tuple(out)


# Kinds kept whatever their codes: the Patient; Medications (read through references); allergies (the list as a
# whole says "reviewed"); and medication resources that name their drug by reference (codes live elsewhere).
_ALWAYS_KEEP = {"Patient", "Medication", "AllergyIntolerance"}

# Value sets read only as measurements in an Observation or in any of its components (facts.ecg.gather: blood
# pressure, ECG intervals), never through facts.results / facts.observations (top-level code only): a panel's
# component can be "the newest stale result" of these, not of the others.
_READ_IN_COMPONENTS = frozenset({"systolic-bp", "diastolic-bp", "qtcf", "qt-interval", "qtcb", "qtc-unspecified"})
# A FHIR date, dateTime or instant as the date horizon accepts it: a time needs seconds and a zone (anything else
# is never skipped: fhir.resources may refuse it, and a resource it refuses must stay a data problem).
_FHIR_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2}))?)?)?$")


def _raw_date(value: Any) -> tuple[datetime, datetime] | None:
    """(start, end) of a raw FHIR date, dateTime or instant as ``facts.dates.parse_fhir_date`` reads it; None
    when it is not one the date horizon accepts (``_FHIR_DATE``) or cannot be read."""
    if not isinstance(value, str) or not _FHIR_DATE.match(value):
        return None
    if len(value) > 10:
        # A dateTime with seconds and a zone: the instant parse_fhir_date reads, without its slower general path
        # (4x faster; this runs on every Observation of a record).
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment, moment
    from cds_service.facts.dates import parse_fhir_date  # facts import this module: import on use
    parsed = parse_fhir_date(value)
    return (parsed.start, parsed.end) if parsed is not None else None


def _texts(concept: Any) -> list[str]:
    """The text and every coding display of a raw CodeableConcept (what the safety net reads)."""
    if not _is_map(concept):
        return []
    out = [concept["text"]] if isinstance(concept.get("text"), str) else []
    for c in concept.get("coding") or ():
        if _is_map(c) and isinstance(c.get("display"), str):
            out.append(c["display"])
    return out


def raw_effective(raw: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """(start, end) of an Observation's effective[x] read from its raw JSON, as the facts will read it; None when
    missing, unparseable or an open period."""
    if "effectiveDateTime" in raw:
        return _raw_date(raw["effectiveDateTime"])
    if "effectiveInstant" in raw:
        return _raw_date(raw["effectiveInstant"])
    period = raw.get("effectivePeriod")
    if not _is_map(period) or "end" not in period:
        return None
    end = _raw_date(period["end"])
    if end is None:
        return None
    if "start" not in period:
        return end
    begin = _raw_date(period["start"])
    return (begin[0], end[1]) if begin is not None else None


class Relevance:
    """The fast path's choice of resources to parse: a ``keep`` predicate for ``build_record``.

    Called with one raw resource, it says whether any criterion could use it by its codes (``relevant_to``).
    With a date horizon (``at`` and the trial rules' ``date_horizon``), ``build_record`` also asks
    ``beyond_horizon`` which of the kept Observations are too old for every criterion that reads them.
    """

    def __init__(self, tables: Any, cutoffs: Mapping[str, datetime] | None = None,
                 qualifiers: Iterable[str] = (), same_time_as: Mapping[str, str] | None = None,
                 closest_to: Mapping[str, str] | None = None) -> None:
        self.tables = tables
        self.cutoffs = dict(cutoffs or {})
        self.qualifiers = frozenset(qualifiers)
        self.same_time_as = {vs: anchor for vs, anchor in (same_time_as or {}).items() if anchor in self.cutoffs}
        self.closest_to = {vs: other for vs, other in (closest_to or {}).items()
                           if vs in self.cutoffs and other in self.cutoffs}
        self._memo: dict[tuple[tuple[str, str], ...], frozenset[str]] = {}
        self._horizon_memo: dict[tuple[tuple[str, str], ...], frozenset[str]] = {}
        self._named: dict[tuple[str, ...], bool] = {}

    def _sets(self, codings: tuple[tuple[str, str], ...]) -> frozenset[str]:
        """``tables.matching_sets``, remembered per codings (a long record repeats the same few dozen; codes
        are terminology, never patient data)."""
        found = self._memo.get(codings)
        if found is None:
            if len(self._memo) >= 4096:
                self._memo.clear()
            found = self._memo[codings] = self.tables.matching_sets(codings)
        return found

    def _horizon_sets(self, codings: tuple[tuple[str, str], ...]) -> frozenset[str]:
        """``_sets`` less the qualifiers (which neither keep nor drop an Observation), remembered the same way."""
        found = self._horizon_memo.get(codings)
        if found is None:
            if len(self._horizon_memo) >= 4096:
                self._horizon_memo.clear()
            found = self._horizon_memo[codings] = self._sets(codings) - self.qualifiers
        return found

    def __call__(self, raw: Mapping[str, Any]) -> bool:
        # gather.lazy: an Observation's codings, known before decoding it (a plain dict has none: not asked, as
        # getattr's failed lookup costs a population screening's tens of thousands of resources ~0.5 us each)
        known = None if type(raw) is dict else getattr(raw, "codings", None)
        if known is not None:
            # The same answer as below: observation_codings holds the resource's own code's codings.
            return not known or bool(self._sets(known))
        tables = self.tables
        rtype = raw.get("resourceType")
        if rtype in _ALWAYS_KEEP:
            return True
        if rtype and (rtype.startswith("Medication") or rtype in ("AllergyIntolerance", "Immunization")):
            # Medications, allergies and vaccines are recognised by ingredient, brand or name (facts/drugs.py),
            # which their raw codes alone cannot show: every one is parsed.
            return True
        # Most kept resources match on their own code: try it before walking the whole resource (the walk
        # finds these same codings too, so the answer is the same).
        code = raw.get("code")
        own = code.get("coding") if _is_map(code) else None
        if isinstance(own, list) and tables.matching_sets(
                (str(c.get("system") or ""), c["code"]) for c in own
                if _is_map(c) and isinstance(c.get("code"), str)):
            return True
        codings = observation_codings(raw) if rtype == "Observation" else raw_codings(raw)
        # A resource with no code at all (a text-only regimen or diagnosis) is kept: criteria route such
        # entries to review, so dropping it would turn UNKNOWN into "none recorded".
        if not codings or tables.matching_sets(codings):
            return True
        # No table knows its codes, but the safety net must see it if its display or text names a concept an
        # exclusion reads (fhir_mappings/safety-net/): dropping it would turn that review item into "none".
        named = raw.get("medicationCodeableConcept") if code is None else code
        if not rtype:
            return False
        # Remembered per (type, texts) for this Relevance only (one hook call, one screening run): a long record
        # repeats the same few displays thousands of times, and each answer costs a regular expression per net.
        texts = (rtype, *_texts(named))
        named_by_net = self._named.get(texts)
        if named_by_net is None:
            if len(self._named) >= 4096:
                self._named.clear()
            named_by_net = self._named[texts] = bool(tables.nets_naming(rtype, texts[1:]))
        return named_by_net

    def beyond_horizon(self, resources: Sequence[Mapping[str, Any]],
                       parse: Callable[[Mapping[str, Any]], Any]) -> set[int]:
        """``id()`` of the Observations among ``resources`` that need not be parsed.

        A candidate is an Observation every value set of whose raw codes has a horizon, dated (raw effective
        end) before the horizon of each. Per value set, the candidates are walked newest first and kept down to
        the first one that is certainly a usable result of that set (``parse`` validates it, cached by the
        caller): the newest result "too old to count", which criteria show, is among the kept ones. Everything
        not older than that one, in start or in end, is kept too. ``parse`` returns the model or None.
        """
        if not self.cutoffs:
            return set()
        # The Observations grouped by their value sets (less the qualifiers): a long record repeats a few dozen,
        # so whatever depends on the sets alone is worked out once per group, not once per Observation.
        groups: dict[frozenset[str], list[tuple[Mapping[str, Any], tuple[datetime, datetime] | None]]] = {}
        for raw in resources:
            # gather.lazy: an Observation, codes and dates known already (never a plain dict: see __call__)
            known = None if type(raw) is dict else getattr(raw, "codings", None)
            if known is not None:
                sets, when = self._horizon_sets(known), raw.when
            elif raw.get("resourceType") == "Observation":
                sets, when = self._horizon_sets(observation_codings(raw)), raw_effective(raw)
            else:
                continue
            group = groups.get(sets)
            if group is None:
                group = groups[sets] = []
            group.append((raw, when))
        # Starts of the results that may be current for a same-time anchor set (None: one cannot be dated, so
        # every same-time Observation is kept).
        protected: dict[str, set[datetime] | None] = {}
        for anchor in set(self.same_time_as.values()):
            starts: set[datetime] | None = set()
            cutoff = self.cutoffs[anchor]
            for sets, members in groups.items():
                if anchor not in sets:
                    continue
                for _raw, when in members:
                    if when is None:
                        starts = None
                        break
                    if when[1] >= cutoff:
                        starts.add(when[0])
                if starts is None:
                    break
            protected[anchor] = starts
        chains: dict[str, list[tuple[datetime, datetime, Mapping[str, Any]]]] = {}
        candidates: set[int] = set()
        for sets, members in groups.items():
            if not sets:
                continue
            # The sets with a horizon of their own, and the earliest of those horizons (an Observation must end
            # before it; None: only same-time sets); a set without a horizon keeps the whole group.
            limited = tuple(vs for vs in sets if vs not in self.same_time_as)
            if not all(vs in self.cutoffs for vs in limited):
                continue
            bound = min((self.cutoffs[vs] for vs in limited), default=None)
            anchors = tuple(self.same_time_as[vs] for vs in sets if vs in self.same_time_as)
            for raw, when in members:
                if when is None or (bound is not None and when[1] >= bound):
                    continue
                if anchors and not all(_apart(when, self.cutoffs[a], protected[a]) for a in anchors):
                    continue
                candidates.add(id(raw))
                for vs in limited:
                    chain = chains.get(vs)
                    if chain is None:
                        chain = chains[vs] = []
                    chain.append((when[0], when[1], raw))
        kept: set[int] = set()
        for vs, chain in chains.items():
            other = self.closest_to.get(vs)
            if other is not None and not all(
                    when is not None and (when[1] < self.cutoffs[other] or when[0] >= self.cutoffs[vs])
                    for sets, members in groups.items() if other in sets for _raw, when in members):
                # A result of ``other`` that may be current starts before this set's horizon (or cannot be
                # dated): the closest result of this set to it may be any old one, so all are read.
                kept.update(id(raw) for _s, _e, raw in chain)
                continue
            # Newest first; equal dates in the order the resources came (a stable sort of a chain built in
            # group order: which of two results at one date is tried first changes nothing, as both are kept).
            chain.sort(key=lambda c: (c[0], c[1]), reverse=True)
            anchor = None
            for start, end, raw in chain:
                kept.add(id(raw))
                if _usable_result(parse(raw), vs, self.tables, (start, end), positive=vs in self.closest_to):
                    anchor = (start, end)
                    break
            if anchor is None:
                continue
            for start, end, raw in chain:
                if start >= anchor[0] or end >= anchor[1]:
                    kept.add(id(raw))
        return candidates - kept


def _apart(when: tuple[datetime, datetime], cutoff: datetime, starts: set[datetime] | None) -> bool:
    """Beyond the anchor set's horizon and at no start of a result of it that may be current."""
    return starts is not None and when[1] < cutoff and when[0] not in starts


def _usable_result(model: Any, value_set: str, tables: Any, when: tuple[datetime, datetime], *,
                   positive: bool = False) -> bool:
    """Is this parsed Observation certainly a result the criteria would take as the newest stale one of the set?

    As Facts.results and facts.ecg.gather read it: a final / amended / corrected result, dated as its raw JSON
    says, with a value: for sets read in components, a quantity in a matching component or in itself; for the
    others, its own code in the set and a value (not a dataAbsentReason alone). ``positive``: a quantity that
    converts to the set's canonical unit and is above 0 (I7c's usable weight).
    """
    if model is None:
        return False
    from cds_service.facts.clinical import observation_fact  # facts import this module: import on use
    fact = observation_fact(model)
    if fact is None or fact.preliminary or fact.effective is None:
        return False
    if (fact.effective.start, fact.effective.end) != when:
        return False  # read differently from the raw JSON: do not rely on the raw dates
    if value_set in _READ_IN_COMPONENTS:
        return any(item.quantity is not None and tables.match_codings(item.codings, value_set) is not None
                   for item in (fact, *fact.components))
    if tables.match_codings(fact.codings, value_set) is None:
        return False
    if positive:
        from cds_service.facts.units import convert  # facts import this module: import on use
        vs, q = tables[value_set], fact.quantity
        value = convert(q.value, q.unit, vs.unit, molar_mass=vs.molar_mass, aliases=vs.unit_aliases) \
            if q is not None and vs.unit is not None else None
        return value is not None and value > 0
    return fact.absent is None or fact.quantity is not None or bool(fact.value_codings) or bool(fact.components)


def relevant_to(tables: Any, *, at: datetime | None = None, rules: Any = None) -> Relevance:
    """A ``keep`` predicate: a resource is parsed only if one of its raw codes is in some value set.

    Full model validation costs ~150-250 us a resource and much of a real record (vital signs, social history,
    claims) can be of no use to any criterion; reading its codes from the raw JSON first is ~10x cheaper. With
    the evaluation time ``at`` and the trial ``rules`` (their ``date_horizon``), Observations older than every
    recency window that could read them are skipped too, but for the newest of each value set
    (``Relevance.beyond_horizon``). The screening is identical with or without this filter
    (tests/gather/test_relevance.py and tests/hooks/test_hook_relevance.py prove it on every fixture, Synthea
    record and the benchmarks' long records). Pure: no I/O.
    """
    horizon = getattr(rules, "date_horizon", None) if rules is not None else None
    if at is None or horizon is None:
        return Relevance(tables)
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    cutoffs = {vs: moment - timedelta(days=days) for vs, days in horizon.days.items() if vs in tables}
    return Relevance(tables, cutoffs, horizon.qualifiers, horizon.same_time_as, horizon.closest_to)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid resource"
    e = errors[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "__root__")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {e.get('msg', 'invalid')}{more}" if loc else f"{e.get('msg', 'invalid')}{more}"


def build_record(
    patient_ref: str,
    raw_resources: Iterable[Mapping[str, Any]],
    *,
    not_retrieved: Mapping[str, str] | None = None,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    checked: bool = True,
    set_aside: int = 0,
) -> PatientRecord:
    """Parse raw resources into a PatientRecord.

    ``keep`` (optional) pre-selects resources from their raw JSON before the costly model validation; a
    resource it rejects is one no criterion could use. A ``Relevance`` with a date horizon also skips the
    Observations too old for every criterion that reads them (``Relevance.beyond_horizon``). Types the criteria
    do not read are ignored. ``checked``: the resource types ``gather.checked`` knows (``read_checked``) are
    read by it when it can vouch for them (the same content as the model, without the cost of validating it);
    False validates every resource with fhir.resources (the plain path the tests compare with). ``set_aside``:
    how many resources of the answers were not this patient's (counted, never read).
    """
    record = PatientRecord(patient_ref=patient_ref, not_retrieved=dict(not_retrieved or {}), set_aside=set_aside)
    selected: list[Mapping[str, Any]] = []
    for raw in raw_resources:
        # dict's own get first: a gather.lazy Observation's get is a Python method (its head holds resourceType)
        rtype = _dict_get(raw, "resourceType") if isinstance(raw, dict) else \
            raw.get("resourceType") if _is_map(raw) else None
        if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:  # a list or object there: not a resource
            continue
        if keep is not None and rtype != "Patient" and not keep(raw):
            continue
        selected.append(raw)
    parsed: dict[int, Any] = {}

    def parse(raw: Mapping[str, Any]) -> Any:
        """The model, or a DataProblem (cached: the date horizon may have parsed it already)."""
        key = id(raw)
        if key not in parsed:
            view = None
            if type(raw) is not dict and hasattr(raw, "plain"):
                # gather.lazy: read from its raw bytes in compiled code where that reader vouches for it, else
                # the whole resource decoded now that it is needed
                view = raw.compiled() if checked else None
                if view is None:
                    raw = raw.plain()
            if view is None and checked:
                view = read_checked(raw)
            parsed[key] = view if view is not None else _parse(raw)
        return parsed[key]

    def model_of(raw: Mapping[str, Any]) -> Any:
        result = parse(raw)
        return None if isinstance(result, DataProblem) else result

    skip = keep.beyond_horizon(selected, model_of) if isinstance(keep, Relevance) else set()
    for raw in selected:
        if id(raw) in skip:
            continue
        result = parse(raw)
        if isinstance(result, DataProblem):
            record.problems.append(result)
            continue
        rtype = _dict_get(raw, "resourceType") if isinstance(raw, dict) else raw["resourceType"]
        if rtype == "Patient":
            if record.patient is None:
                record.patient = result
            continue
        record.resources.setdefault(rtype, []).append(result)
    return record


def _parse(raw: Mapping[str, Any]) -> Any:
    """The resource's fhir.resources model, or a DataProblem saying why it cannot be read."""
    rtype = raw["resourceType"]
    rid = raw.get("id")
    ref = f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype}/(no id)"
    try:
        return _model(rtype).model_validate(raw)
    except ValidationError as exc:
        return DataProblem(ref, rtype, _first_error(exc), raw_codings(raw))
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some malformed primitives
        return DataProblem(ref, rtype, str(exc)[:200], raw_codings(raw))
