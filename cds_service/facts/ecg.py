"""Cardiac measurement arithmetic: QTcF from an ECG, the mean of screening blood pressures, LVEF as a percent.

* **QTcF** (E10c). A reported Fridericia QTc (``qtcf``, LOINC 76634-5) is used as is. Otherwise it is computed
  from the QT interval and the RR interval of the *same* ECG, ``QTcF = QT_ms / RR_s ** (1/3)``, or with
  ``RR_s = 60 / HR`` from the heart rate. "The same ECG" means the components of one Observation, or separate
  Observations with the same effective time. Bazett (76635-2) and the generic corrected QT (8636-3) are never
  used as QTcF; the one inference the reference allows is kept apart (``bazett_bound``): at a heart rate above
  60/min Bazett over-corrects, so QTcB < 480 ms implies QTcF < 480 ms. If the latest ECG was done in triplicate
  (several ECGs within ``windows.ecg_triplicate_minutes`` of it) the QTcF is the mean of those ECGs. Computed
  values are kept to 0.1 ms, the precision they are shown in, so the value shown is the value decided.
* **Blood pressure** (E10f). Readings are systolic / diastolic values, from the components of a panel (any
  Observation with a ``systolic-bp`` / ``diastolic-bp`` component) or standalone Observations. The mean SBP and
  the mean DBP are computed separately over the readings of the latest screening visit: the readings taken
  within ``windows.bp_visit_hours`` before the newest reading (null = every reading in the ``blood_pressure``
  recency window). The same value at the same time in two resources (a panel and a standalone copy) is one
  reading. The means are kept to 0.1 mm[Hg], the precision they are shown in.
* **LVEF** (I7d, E10e). In percent; a value <= 1 is read as a fraction and multiplied by 100 (flagged); a text
  range ("55-60%") gives its lower bound (flagged).

Units are converted with UCUM (``facts.units``): a value whose unit is missing or unknown is kept but has no
usable value, so the criterion can say which reading to check instead of silently dropping it.

This module does no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from cds_service.criteria.result import Evidence
from cds_service.facts.clinical import ComponentFact, ObservationFact
from cds_service.facts.dates import DateRange
from cds_service.facts.index import Facts
from cds_service.facts.units import Quantity, convert

__all__ = [
    "QTCF", "QT", "RR", "HEART_RATE", "QTCB", "QTC_UNSPECIFIED", "SYSTOLIC", "DIASTOLIC", "LVEF",
    "Measurement", "Gathered", "gather", "fridericia_ms", "rr_seconds_from_heart_rate", "mean", "to_tenth",
    "Ecg", "QtcF", "qtcf_of", "bazett_bound", "EcgSelection", "ecgs", "QtcfAssessment", "latest_qtcf",
    "BloodPressure", "screening_blood_pressure", "Lvef", "latest_lvef", "lvef_percent",
]

# Value-set ids (fhir_mappings/value-sets/<id>.json).
QTCF = "qtcf"
QT = "qt-interval"
RR = "rr-interval"
HEART_RATE = "heart-rate"
QTCB = "qtcb"
QTC_UNSPECIFIED = "qtc-unspecified"
SYSTOLIC = "systolic-bp"
DIASTOLIC = "diastolic-bp"
LVEF = "lvef"

# The unit each kind of value is compared in, whatever the value set's own canonical unit.
_UNITS = {QTCF: "ms", QT: "ms", QTCB: "ms", QTC_UNSPECIFIED: "ms", RR: "s", HEART_RATE: "/min",
          SYSTOLIC: "mm[Hg]", DIASTOLIC: "mm[Hg]", LVEF: "%"}
_WHAT = {QTCF: "QTcF", QT: "QT interval", RR: "RR interval", HEART_RATE: "heart rate", QTCB: "QTc (Bazett)",
         QTC_UNSPECIFIED: "QTc (formula not stated)", SYSTOLIC: "systolic BP", DIASTOLIC: "diastolic BP",
         LVEF: "LVEF"}
# Kinds that make a group of measurements an ECG (a heart rate alone is a vital sign, not an ECG).
_QT_KINDS = (QTCF, QT, QTCB, QTC_UNSPECIFIED)
_ECG_KINDS = (QTCF, QT, RR, HEART_RATE, QTCB, QTC_UNSPECIFIED)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def to_tenth(value: float) -> float:
    """Round half up to 0.1, the precision computed values are shown in: the value shown is the value decided
    (a computed QTcF of 479.97 ms is shown, and compared, as 480 ms)."""
    return math.floor(value * 10 + 0.5) / 10


# --- measurements ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """One value read from an Observation or from one of its components.

    ``value`` is in the kind's comparison unit (``unit``), or None when the recorded unit is missing or cannot be
    converted, or the value is not a number; ``recorded`` is the value as written.
    """

    kind: str
    ref: str
    code: str | None
    display: str | None
    effective: DateRange
    recorded: Quantity | None
    value: float | None
    unit: str
    comparator: str | None = None
    component: bool = False
    text: str | None = None

    @property
    def what(self) -> str:
        return _WHAT.get(self.kind, self.kind)

    @property
    def usable(self) -> bool:
        """A plain number in a known unit (a censored value such as ">500 ms" is not usable in arithmetic)."""
        return self.value is not None and self.comparator is None

    def shown(self) -> str:
        if self.value is not None:
            return f"{self.comparator or ''}{_fmt(self.value)} {self.unit}"
        if self.recorded is not None:
            return self.recorded.display()
        return self.text or "no value"

    def evidence(self, note: str | None = None) -> Evidence:
        # A component's own name, not the panel's (the reference points at the panel).
        display = f"{self.what} (component of {self.display or 'a panel'})" if self.component else \
            self.display or self.what
        return Evidence(reference=self.ref, value=self.shown(), date=self.effective.display(), code=self.code,
                        display=display, note=note)

    def problem(self) -> str:
        """Why the value cannot be used, for a reason sentence."""
        if self.recorded is None:
            return f"{self.what} in {self.ref} has no numeric value"
        if self.value is None:
            return f"{self.what} in {self.ref} has a unit that cannot be read ({self.recorded.unit or 'none'})"
        return f"{self.what} in {self.ref} is censored ({self.shown()})"


def _matched_code(facts: Facts, codings: Sequence[tuple[str, str]], value_set: str) -> str | None:
    for system, code in codings:
        if facts.codes_in([(system, code)], value_set) is not None:
            return f"{system}|{code}" if system else code
    return None


def _measurement(facts: Facts, kind: str, obs: ObservationFact, item: ObservationFact | ComponentFact,
                 code: str | None) -> Measurement | None:
    q = item.quantity
    if q is None and item.absent is not None:
        return None  # dataAbsentReason: no measurement was made
    if q is None and not item.text:
        return None
    unit = _UNITS[kind]
    value = None
    if q is not None:
        aliases = facts.tables[kind].unit_aliases if kind in facts.tables else None
        value = convert(q.value, q.unit, unit, aliases=aliases)
    return Measurement(kind=kind, ref=obs.ref, code=code, display=obs.display, effective=obs.effective,
                       recorded=q, value=value, unit=unit, comparator=q.comparator if q else None,
                       component=isinstance(item, ComponentFact), text=item.text)


def _measurements(facts: Facts, kind: str, obs: ObservationFact) -> list[Measurement]:
    """The Observation's own value and its components' values that are of this kind."""
    out: list[Measurement] = []
    for item in (obs, *obs.components):
        code = _matched_code(facts, item.codings, kind)
        m = _measurement(facts, kind, obs, item, code) if code is not None else None
        if m is not None:
            out.append(m)
    return out


@dataclass(frozen=True)
class Gathered:
    """Measurements of some kinds: the usable-date ones newest first, and what was set aside and why."""

    current: tuple[Measurement, ...]
    stale: tuple[Measurement, ...]  # older than the recency window, newest first
    preliminary: tuple[ObservationFact, ...]
    preliminary_items: tuple[Measurement, ...] = ()  # the measurements of the preliminary results, newest first


def gather(facts: Facts, kinds: Sequence[str], recency: str) -> Gathered:
    """Every measurement of the given kinds (value-set ids), top-level or in a component of any Observation.

    The same filters as ``Facts.results``: final/amended/corrected (preliminary set aside), dated, not after
    ``at``, and inside the recency window (older ones set aside as stale).
    """
    kinds = tuple(k for k in kinds if k in facts.tables)
    start = facts.recency_start(recency)
    current: list[Measurement] = []
    stale: list[Measurement] = []
    preliminary: dict[str, ObservationFact] = {}
    pending: list[Measurement] = []
    wanted = frozenset(kinds)
    sets_of = facts.tables.matching_sets  # cached per code: the sets _matched_code would find, at a glance
    for obs in facts.all_of_kind("Observation"):
        if obs.effective is None or obs.effective.start > facts.at:
            continue  # undated or in the future: not a measurement that can count
        if not any(sets_of(item.codings) & wanted for item in (obs, *obs.components)):
            continue  # neither it nor a component is of these kinds (most Observations: skip them quickly)
        found = [m for kind in kinds for m in _measurements(facts, kind, obs)]
        if not found:
            continue
        if start is not None and obs.effective.end <= start:
            if not obs.preliminary:
                stale.extend(found)
            continue
        if obs.preliminary:
            preliminary[obs.ref] = obs
            pending.extend(found)
            continue
        current.extend(found)

    def newest(m: Measurement) -> float:
        return -m.effective.start.timestamp()

    return Gathered(tuple(sorted(current, key=newest)), tuple(sorted(stale, key=newest)),
                    tuple(preliminary.values()), tuple(sorted(pending, key=newest)))


# --- QTcF -----------------------------------------------------------------------------------------------------
def fridericia_ms(qt_ms: float, rr_s: float) -> float:
    """QTcF = QT / RR^(1/3), QT in ms and RR in seconds."""
    if qt_ms <= 0 or rr_s <= 0:
        raise ValueError("QT and RR must be positive")
    return qt_ms / rr_s ** (1.0 / 3.0)


def rr_seconds_from_heart_rate(bpm: float) -> float:
    """RR interval (s) from the heart rate (/min): 60 / HR."""
    if bpm <= 0:
        raise ValueError("heart rate must be positive")
    return 60.0 / bpm


@dataclass(frozen=True)
class Ecg:
    """The measurements of one ECG: the components of one Observation, or Observations at the same time."""

    effective: DateRange
    items: tuple[Measurement, ...]

    def of(self, kind: str) -> tuple[Measurement, ...]:
        return tuple(m for m in self.items if m.kind == kind)

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.ref for m in self.items))

    def heart_rate(self) -> tuple[float, tuple[Measurement, ...]] | None:
        """The heart rate (/min) of this ECG, from the heart rate or else the RR interval, with its inputs."""
        hr = [m for m in self.of(HEART_RATE) if m.usable and m.value > 0]
        if hr:
            return mean(m.value for m in hr), tuple(hr)
        rr = [m for m in self.of(RR) if m.usable and m.value > 0]
        if rr:
            return 60.0 / mean(m.value for m in rr), tuple(rr)
        return None


@dataclass(frozen=True)
class QtcF:
    """A QTcF in ms, how it was obtained, and the evidence it rests on (inputs included when computed)."""

    value: float
    comparator: str | None
    method: str
    evidence: tuple[Evidence, ...]

    def shown(self) -> str:
        return f"{self.comparator or ''}{_fmt(self.value)} ms"


def qtcf_of(ecg: Ecg) -> tuple[QtcF | None, str | None]:
    """The QTcF of one ECG, reported or computed by Fridericia; (None, why) when neither is possible."""
    reported = ecg.of(QTCF)
    usable = [m for m in reported if m.value is not None]
    if len(usable) == 1:
        m = usable[0]
        return QtcF(m.value, m.comparator, "reported", (m.evidence("QTcF as reported"),)), None
    if len(usable) > 1 and all(m.comparator is None for m in usable):
        value = to_tenth(mean(m.value for m in usable))
        ev = tuple(m.evidence("QTcF as reported") for m in usable)
        return QtcF(value, None, f"mean of {len(usable)} reported values", ev), None
    qt = [m for m in ecg.of(QT) if m.usable and m.value > 0]
    if not qt:
        why = [m.problem() for m in reported + ecg.of(QT)]
        return None, "; ".join(why) if why else "no QTcF and no QT interval on this ECG"
    qt_ms = mean(m.value for m in qt)
    rr = [m for m in ecg.of(RR) if m.usable and m.value > 0]
    hr = [m for m in ecg.of(HEART_RATE) if m.usable and m.value > 0]
    if rr:
        rr_s = mean(m.value for m in rr)
        inputs = qt + rr
        how = f"QT {_fmt(qt_ms)} ms / (RR {rr_s:.3g} s)^(1/3)"
        method = "computed (Fridericia) from QT and RR"
    elif hr:
        bpm = mean(m.value for m in hr)
        rr_s = rr_seconds_from_heart_rate(bpm)
        inputs = qt + hr
        how = f"QT {_fmt(qt_ms)} ms / (60/HR {_fmt(bpm)}/min = {rr_s:.3g} s)^(1/3)"
        method = "computed (Fridericia) from QT and heart rate"
    else:
        why = [m.problem() for m in ecg.of(RR) + ecg.of(HEART_RATE) if not m.usable]
        return None, "; ".join(why) if why else "the ECG has a QT interval but no RR interval or heart rate"
    value = to_tenth(fridericia_ms(qt_ms, rr_s))
    note = f"QTcF = {how} = {_fmt(value)} ms"
    computed = Evidence(reference=qt[0].ref, value=f"{_fmt(value)} ms", unit=None, date=ecg.effective.display(),
                        display="QTcF (Fridericia), computed", note=note)
    return QtcF(value, None, method, (computed, *(m.evidence("input to the QTcF") for m in inputs))), None


def bazett_bound(ecg: Ecg, limit_ms: float) -> tuple[Evidence, ...] | None:
    """Evidence that QTcF < ``limit_ms`` inferred from Bazett, or None when the inference does not hold.

    At HR > 60/min (RR < 1 s), QTcB = QT/RR^(1/2) > QT/RR^(1/3) = QTcF, so QTcB < limit implies QTcF < limit.
    """
    qtcb = [m for m in ecg.of(QTCB) if m.value is not None]
    rate = ecg.heart_rate()
    if not qtcb or rate is None:
        return None
    bpm, rate_inputs = rate
    below = all(_q(m).less_than(limit_ms) is True for m in qtcb)
    if bpm <= 60 or not below:
        return None
    note = (f"QTcB below {_fmt(limit_ms)} ms at a heart rate of {_fmt(bpm)}/min (>60): Bazett over-corrects "
            f"above 60/min, so QTcF is below {_fmt(limit_ms)} ms too (no QTcF reported or computable)")
    return tuple(m.evidence(note) for m in qtcb) + tuple(m.evidence("heart rate of the same ECG")
                                                          for m in rate_inputs)


def _q(m: Measurement) -> Quantity:
    return Quantity(m.value if m.value is not None else float("nan"), m.unit, m.comparator)


@dataclass(frozen=True)
class EcgSelection:
    """ECGs in the recency window, newest first, and what was set aside."""

    current: tuple[Ecg, ...]
    stale: Ecg | None
    preliminary: tuple[ObservationFact, ...]


def _group(measurements: Iterable[Measurement]) -> list[Ecg]:
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.effective.start, m.effective.end), []).append(m)
    ecgs = [Ecg(items[0].effective, tuple(items)) for items in groups.values()
            if any(m.kind in _QT_KINDS for m in items)]
    ecgs.sort(key=lambda e: -e.effective.start.timestamp())
    return ecgs


def ecgs(facts: Facts, recency: str = "ecg") -> EcgSelection:
    """The ECGs of the record (groups with a QT-type value), newest first, within the ``ecg`` recency window."""
    found = gather(facts, _ECG_KINDS, recency)
    stale = _group(found.stale)
    # Only preliminary results that are ECG intervals (a preliminary heart rate alone is a vital sign).
    pending = {m.ref: m for m in found.preliminary_items if m.kind in _QT_KINDS}
    preliminary = tuple(o for o in found.preliminary if o.ref in pending)
    return EcgSelection(tuple(_group(found.current)), stale[0] if stale else None, preliminary)


@dataclass(frozen=True)
class QtcfAssessment:
    """The QTcF of the latest ECG (the mean over its triplicate), or why there is none."""

    ecgs: tuple[Ecg, ...]  # the ECG(s) assessed: the latest, and the rest of its triplicate
    qtcf: QtcF | None
    bazett: tuple[Evidence, ...] | None  # QTcF < limit inferred from Bazett, when no QTcF could be had
    why: str | None  # why no QTcF (None when there is one)
    selection: EcgSelection
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def latest(self) -> Ecg | None:
        return self.ecgs[0] if self.ecgs else None


def latest_qtcf(facts: Facts, limit_ms: float, triplicate_minutes: float = 0) -> QtcfAssessment:
    """The QTcF of the latest ECG in the ``ecg`` recency window.

    ECGs within ``triplicate_minutes`` before the latest one are taken as its triplicate: the QTcF is the mean
    of their QTcFs (those that have one). With no QTcF at all, ``bazett`` holds the Bazett inference if it holds.
    """
    sel = ecgs(facts)
    if not sel.current:
        return QtcfAssessment((), None, None, "no ECG", sel)
    latest = sel.current[0]
    span = timedelta(minutes=triplicate_minutes or 0)
    group = tuple(e for e in sel.current if latest.effective.start - e.effective.start <= span)
    values: list[QtcF] = []
    whys: list[str] = []
    for ecg in group:
        q, why = qtcf_of(ecg)
        if q is not None:
            values.append(q)
        else:
            whys.append(f"ECG {ecg.effective.display()}: {why}" if len(group) > 1 else str(why))
    notes = tuple(whys) if values else ()
    if len(values) == 1:
        return QtcfAssessment(group, values[0], None, None, sel, notes)
    if values:
        if any(v.comparator is not None for v in values):
            return QtcfAssessment(group, None, None, "a censored QTcF in the triplicate cannot be averaged", sel)
        value = to_tenth(mean(v.value for v in values))
        ev = tuple(e for v in values for e in v.evidence)
        method = f"mean of {len(values)} ECGs in triplicate ({', '.join(_fmt(v.value) for v in values)} ms)"
        return QtcfAssessment(group, QtcF(value, None, method, ev), None, None, sel, notes)
    return QtcfAssessment(group, None, bazett_bound(latest, limit_ms), "; ".join(whys), sel)


# --- blood pressure -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BloodPressure:
    """The readings of the latest screening visit, split by kind, and what was set aside."""

    systolic: tuple[Measurement, ...]
    diastolic: tuple[Measurement, ...]
    unusable: tuple[Measurement, ...]  # in the visit, but no usable number (unit, text, censored)
    duplicates: tuple[Measurement, ...]  # the same value at the same time in a second resource
    stale: Measurement | None
    preliminary: tuple[ObservationFact, ...]
    scope: str  # which readings were taken, for the reason sentence

    @property
    def mean_systolic(self) -> float | None:
        """The mean systolic pressure, to 0.1 mm[Hg] (``to_tenth``)."""
        return to_tenth(mean(m.value for m in self.systolic)) if self.systolic else None

    @property
    def mean_diastolic(self) -> float | None:
        return to_tenth(mean(m.value for m in self.diastolic)) if self.diastolic else None


def screening_blood_pressure(facts: Facts, visit_hours: float | None, recency: str = "blood_pressure", *,
                             min_readings: int = 1, across_visits: str = "none") -> BloodPressure:
    """Systolic and diastolic readings of the latest visit within the recency window.

    The visit is the newest reading and every reading taken less than ``visit_hours`` before it (None: every
    reading in the window). A value repeated at the same time in another resource counts once. When the visit
    holds fewer than ``min_readings`` readings of a kind and ``across_visits`` is ``"latest"``
    (``windows.bp_readings_across_visits``), both kinds are taken as the newest ``min_readings`` readings in the
    window instead, across visits (hypertension is defined on readings at two or more visits).
    """
    found = gather(facts, (SYSTOLIC, DIASTOLIC), recency)
    days = facts.rules.recency_days[recency]
    every = f"every reading in the {days} days before {facts.at.date().isoformat()}"
    if found.current and visit_hours is not None:
        newest = found.current[0].effective.start
        cutoff = newest - timedelta(hours=visit_hours)
        visit = tuple(m for m in found.current if m.effective.start > cutoff)
        picked = _distinct(visit)
        scope = (f"the readings of the latest visit (within {_fmt(visit_hours)} h before the newest reading, "
                 f"{visit[0].effective.display()})")
        short = any(len(picked[0][k]) < min_readings for k in (SYSTOLIC, DIASTOLIC))
        if short and across_visits == "latest":
            picked = _distinct(found.current, limit=min_readings)
            scope = (f"the latest {min_readings} readings in the {days} days before "
                     f"{facts.at.date().isoformat()} (fewer at the latest visit)")
    else:
        picked = _distinct(found.current)
        scope = every
    kept, unusable, duplicates = picked
    return BloodPressure(tuple(kept[SYSTOLIC]), tuple(kept[DIASTOLIC]), tuple(unusable), tuple(duplicates),
                         found.stale[0] if found.stale else None, found.preliminary, scope)


def _distinct(readings: Sequence[Measurement], limit: int | None = None
              ) -> tuple[dict[str, list[Measurement]], list[Measurement], list[Measurement]]:
    """Readings split by kind (newest first), a value repeated at the same time counted once; with ``limit``,
    at most that many readings of each kind (usable or not: an unreadable newest reading is not skipped)."""
    kept: dict[str, list[Measurement]] = {SYSTOLIC: [], DIASTOLIC: []}
    seen: set[tuple] = set()
    unusable: list[Measurement] = []
    duplicates: list[Measurement] = []
    taken = {SYSTOLIC: 0, DIASTOLIC: 0}
    for m in readings:
        if limit is not None and taken[m.kind] >= limit:
            continue
        if not m.usable:
            unusable.append(m)
            taken[m.kind] += 1
            continue
        key = (m.kind, m.effective.start, m.effective.end, round(m.value, 6))
        if key in seen:
            duplicates.append(m)
            continue
        seen.add(key)
        kept[m.kind].append(m)
        taken[m.kind] += 1
    return kept, unusable, duplicates


# --- LVEF -----------------------------------------------------------------------------------------------------
_RANGE = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*(?:-|–|—|to)\s*(\d+(?:[.,]\d+)?)\s*%?\s*$")


@dataclass(frozen=True)
class Lvef:
    """One LVEF result in percent (None when unreadable), with a note on how it was read."""

    obs: ObservationFact
    percent: float | None
    comparator: str | None
    note: str | None

    def shown(self) -> str:
        if self.percent is None:
            return self.obs.text or (self.obs.quantity.display() if self.obs.quantity else "no value")
        return f"{self.comparator or ''}{_fmt(self.percent)} %"

    def evidence(self) -> Evidence:
        return Evidence(reference=self.obs.ref, value=self.shown(),
                        date=self.obs.effective.display() if self.obs.effective else None,
                        code=_first(self.obs), display=self.obs.display, note=self.note)


def _first(obs: ObservationFact) -> str | None:
    if not obs.codings:
        return None
    system, code = obs.codings[0]
    return f"{system}|{code}" if system else code


def lvef_percent(facts: Facts, obs: ObservationFact) -> Lvef:
    """An LVEF Observation read as a percent: UCUM-converted; <= 1 is a fraction (x100); a text range's low end."""
    q = obs.quantity
    if obs.text:
        m = _RANGE.match(obs.text)
        if m:
            low = float(m.group(1).replace(",", "."))
            return Lvef(obs, low, None, f"text range {obs.text!r}: the lower bound is used")
    if q is None:
        return Lvef(obs, None, None, "no numeric value")
    aliases = facts.tables[LVEF].unit_aliases if LVEF in facts.tables else None
    value = convert(q.value, q.unit, "%", aliases=aliases)
    if value is None:
        return Lvef(obs, None, q.comparator, f"unit {q.unit or '(none)'} cannot be read as a percent")
    if 0 < value <= 1:
        return Lvef(obs, value * 100, q.comparator,
                    f"recorded as {q.display()}: read as a fraction, x100 (check the report)")
    return Lvef(obs, value, q.comparator, None)


def latest_lvef(facts: Facts, recency: str = "lvef") -> tuple[tuple[Lvef, ...], str | None]:
    """The LVEF results of the latest date in the recency window (several methods may report on one day).

    Returns (results of that day, None) or ((), why there is none).
    """
    sel = facts.results(LVEF, recency)
    if sel.latest is None:
        return (), facts.no_recent_reason(sel, "LVEF", recency)
    day = sel.latest.effective.start.date()
    same_day = tuple(lvef_percent(facts, o) for o in sel.current if o.effective.start.date() == day)
    return same_day, None
