"""FHIR Bulk Data input: NDJSON files in any grouping, indexed by patient on disk, read back patient by patient.

A Bulk Data export is one NDJSON file per resource type (Patient.ndjson, Condition.ndjson, ...), sometimes split
into several files per type, sometimes mixed. Read file by file, no file holds a whole patient; read whole, memory
grows with the population. So the lines are streamed once into an SQLite index (stdlib ``sqlite3``, a file in a
temporary folder) keyed by a *candidate* patient id, and each patient's resources are read back from it in one
indexed query:

* a Patient is keyed by its own id;
* another resource by the id its ``subject`` / ``patient`` / ``beneficiary`` reference names: relative
  (``Patient/p1``), absolute (``https://ehr/fhir/Patient/p1/_history/2``) or ``urn:uuid:p1`` (a Bulk export of
  bundles converted by a script keeps those);
* a resource that names no patient (Medication, Organization, ...) is *shared*: a patient's record gets the
  shared resources its own resources reference (``medicationReference`` and any other reference to a type the
  criteria read), whichever file they came from.

The key is only a candidate: ``build_record`` (and the facts it feeds) decide, by FHIR's rules, whether a resource
is evidence for the patient. Resources whose candidate patient has no Patient resource anywhere in the input are
not screened (a record without its Patient is not a patient the trial can concern); they are counted for the
caller's summary (``BulkIndex.orphans``).

Within a patient the resources are ordered by (type, id), so the order of the input lines never changes a
screening. A resource (type and id) seen twice is kept once (the first line read).

This module does file I/O (it is in ``gather/``); it never logs a resource.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cds_service.errors import InputError
from cds_service.gather.record import RESOURCE_TYPES

__all__ = ["BulkIndex", "RowSpool", "referenced_shared", "shared_key", "Orphans", "is_bulk_input", "ndjson_files",
           "patient_key", "reference_key"]

_PATIENT_LINKS = ("subject", "patient", "beneficiary")
_BATCH = 2_000  # rows per executemany: large enough to amortise the call, small enough to stay a few MB
# References inside a line's raw JSON: read with a regex on the bytes (no walk of the parsed JSON): only lines that
# name a shared resource type (cheap ``in`` test first) are searched.
_REFERENCE = re.compile(rb'"reference"\s*:\s*"([^"\\]+)"')
_READ_TYPES = frozenset(RESOURCE_TYPES)


def reference_key(ref: str) -> tuple[str | None, str] | None:
    """(type, id) a reference string names, type None for ``urn:uuid:``; None when it is not a plain reference.

    ``Patient/p1``, ``https://x/fhir/Patient/p1``, ``.../Patient/p1/_history/3`` -> ("Patient", "p1");
    ``urn:uuid:abc`` -> (None, "abc"); ``#contained`` -> None.
    """
    if ref.startswith("urn:uuid:"):
        rid = ref[len("urn:uuid:"):]
        return (None, rid) if rid else None
    if ref.startswith("#") or "?" in ref:
        return None
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1] or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


def patient_key(resource: dict[str, Any]) -> str | None:
    """The candidate patient id of a resource (its own id for a Patient), or None when it names no patient."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for link in _PATIENT_LINKS:
        value = resource.get(link)
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str):
                key = reference_key(ref)
                if key is not None and key[0] in (None, "Patient"):
                    return key[1]
    return None


def ndjson_files(paths: Iterable[Path]) -> list[Path]:
    """The NDJSON files among ``paths`` (a folder: its .ndjson files, sorted, recursively)."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() == ".ndjson" and p.is_file()))
        elif path.suffix.lower() == ".ndjson":
            out.append(path)
    return out


def is_bulk_input(path: Path) -> bool:
    """An NDJSON file, or a folder holding one."""
    return bool(ndjson_files([path]))


@dataclass(frozen=True)
class Orphans:
    """Resources whose candidate patient has no Patient resource in the input (not screened)."""

    resources: int
    patients: int
    files: int

    def summary(self) -> str:
        return (f"{self.resources:,} resource(s) in {self.files:,} file(s) name {self.patients:,} patient(s) "
                "absent from the input (no Patient resource): not screened")


_SCHEMA = """
CREATE TABLE res (seq INTEGER PRIMARY KEY, patient TEXT NOT NULL, type TEXT NOT NULL, id TEXT, file INTEGER,
                  body BLOB NOT NULL, UNIQUE (type, id));
CREATE TABLE shared (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL,
                     UNIQUE (type, id));
CREATE TABLE patients (id TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class BulkIndex:
    """NDJSON resources indexed by candidate patient in an SQLite file; read-only once built.

    ``BulkIndex.build(paths)`` streams the files into a new index (in ``workdir``, default a new temporary
    folder removed by ``close()``); ``BulkIndex(path)`` opens an existing one read-only (the worker processes of
    ``--jobs`` do, each with its own connection).
    """

    def __init__(self, db_path: Path, *, _cleanup: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.db_path = Path(db_path)
        self._cleanup = _cleanup
        self._db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)
        self._shared_types = frozenset(t for (t,) in self._db.execute("SELECT DISTINCT type FROM shared"))

    # --- building --------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, paths: Iterable[Path], workdir: Path | None = None) -> BulkIndex:
        """Index every line of the NDJSON files (``paths`` may hold folders). Raises InputError on a bad line."""
        cleanup = None
        if workdir is None:
            cleanup = tempfile.TemporaryDirectory(prefix="trialscreen-bulk-")
            workdir = Path(cleanup.name)
        db_path = Path(workdir) / "bulk-index.sqlite"
        db = sqlite3.connect(db_path)
        try:
            # A throw-away file: no journal, no fsync; a small page cache keeps memory flat however big the input.
            db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;"
                             "PRAGMA temp_store=FILE;" + _SCHEMA)
            for n, path in enumerate(ndjson_files(paths)):
                _index_file(db, path, n)
            db.execute("CREATE INDEX res_patient ON res (patient, type, id)")
            db.execute("INSERT OR IGNORE INTO patients SELECT patient FROM res WHERE type = 'Patient'")
            db.execute("CREATE INDEX shared_id ON shared (id)")
            db.commit()
        except BaseException:
            db.close()
            if cleanup is not None:
                cleanup.cleanup()
            raise
        db.close()
        return cls(db_path, _cleanup=cleanup)

    # --- reading ---------------------------------------------------------------------------------------------
    def patient_ids(self, *, batch: int = 500) -> Iterator[list[str]]:
        """Every indexed patient id, sorted, in lists of at most ``batch`` (never the whole population at once)."""
        last = ""
        while True:
            rows = self._db.execute("SELECT id FROM patients WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
            ids = [r[0] for r in rows]
            if not ids:
                return
            yield ids
            last = ids[-1]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM patients").fetchone()[0])

    def resources_of(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's resources (the Patient first, then by type and id) and the shared resources they
        reference (Medications...), parsed."""
        rows = self._db.execute(
            "SELECT type, body FROM res WHERE patient = ? ORDER BY type != 'Patient', type, id, seq",
            (patient_id,)).fetchall()
        bodies = [body for _t, body in rows]
        out = [orjson.loads(b) for b in bodies]
        if self._shared_types:
            out.extend(self._referenced(bodies))
        return out

    def _referenced(self, bodies: list[bytes]) -> list[dict[str, Any]]:
        return referenced_shared(bodies, self._shared_types, self._lookup_shared)

    def _lookup_shared(self, rtype: str | None, rid: str) -> tuple[str, bytes] | None:
        if rtype is None:
            row = self._db.execute("SELECT type, body FROM shared WHERE id = ? ORDER BY type LIMIT 1",
                                   (rid,)).fetchone()
        else:
            row = self._db.execute("SELECT type, body FROM shared WHERE type = ? AND id = ?", (rtype, rid)).fetchone()
        return (row[0], row[1]) if row is not None else None

    def orphans(self) -> Orphans:
        row = self._db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT patient), COUNT(DISTINCT file) FROM res "
            "WHERE patient NOT IN (SELECT id FROM patients)").fetchone()
        return Orphans(int(row[0]), int(row[1]), int(row[2]))

    def close(self) -> None:
        self._db.close()
        if self._cleanup is not None:
            self._cleanup.cleanup()
            self._cleanup = None

    def __enter__(self) -> BulkIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shared_key(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(type, id) under which a resource that names no patient is shared (None: it names one, or has no id)."""
    if patient_key(resource) is not None:
        return None
    rtype, rid = resource.get("resourceType"), resource.get("id")
    return (rtype, rid) if isinstance(rtype, str) and isinstance(rid, str) and rid else None


def referenced_shared(bodies: Iterable[bytes], shared_types: Iterable[str],
                      lookup: Callable[[str | None, str], tuple[str, bytes] | None]) -> list[dict[str, Any]]:
    """The shared resources (Medications...) that references in ``bodies`` (raw JSON lines) name, and those they
    name in turn (two levels), sorted by (type, id). ``lookup(type or None for urn:uuid, id)`` -> (type, line).

    Only references to types the criteria read and the input holds as shared are looked up.
    """
    wanted = frozenset(shared_types) & _READ_TYPES
    found: dict[tuple[str, str], dict[str, Any]] = {}
    if not wanted:
        return []
    level = list(bodies)
    for _depth in range(2):
        keys: set[tuple[str | None, str]] = set()
        for body in level:
            if b'"reference"' not in body:
                continue
            for m in _REFERENCE.finditer(body):
                key = reference_key(m.group(1).decode("utf-8", "replace"))
                if key is not None and (key[0] is None or key[0] in wanted):
                    keys.add(key)
        level = []
        for rtype, rid in sorted(keys, key=lambda k: (k[0] or "", k[1])):
            row = lookup(rtype, rid)
            if row is None or row[0] not in wanted or (row[0], rid) in found:
                continue
            found[(row[0], rid)] = orjson.loads(row[1])
            level.append(row[1])
        if not level:
            break
    return [found[k] for k in sorted(found)]


def _index_file(db: sqlite3.Connection, path: Path, file_no: int) -> None:
    """Stream one NDJSON file into the index, line by line (never the whole file in memory)."""
    source = str(path)
    rows: list[tuple[str, str, str | None, int, bytes]] = []
    shared: list[tuple[str, str, bytes]] = []
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror or exc})") from exc
    with handle:
        for n, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{source}:{n}: not JSON ({exc})") from exc
            rtype = res.get("resourceType") if isinstance(res, dict) else None
            if not isinstance(rtype, str):
                raise InputError(f"{source}:{n}: not a FHIR resource")
            rid = res.get("id") if isinstance(res.get("id"), str) and res.get("id") else None
            key = patient_key(res)
            if key is not None:
                rows.append((key, rtype, rid, file_no, line))
            elif rid is not None:
                shared.append((rtype, rid, line))
            # A resource with neither a patient nor an id cannot be reached by anyone: not kept.
            if len(rows) + len(shared) >= _BATCH:
                _flush(db, rows, shared)
        _flush(db, rows, shared)


def _flush(db: sqlite3.Connection, rows: list[Any], shared: list[Any]) -> None:
    if rows:
        db.executemany("INSERT OR IGNORE INTO res (patient, type, id, file, body) VALUES (?, ?, ?, ?, ?)", rows)
        rows.clear()
    if shared:
        db.executemany("INSERT OR IGNORE INTO shared (type, id, body) VALUES (?, ?, ?)", shared)
        shared.clear()


class RowSpool:
    """Worklist rows kept on disk (an SQLite file in a temporary folder) and read back sorted: a population's
    worklist is sorted without holding its rows in memory."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="trialscreen-worklist-")
        self._db = sqlite3.connect(Path(self._dir.name) / "rows.sqlite")
        self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000;"
                               "CREATE TABLE rows (k0, k1, k2, k3, k4, body BLOB)")

    def add(self, row: Any) -> None:
        """Add a ``cards.worklist.WorklistRow``."""
        from cds_service.cards.worklist import sort_key

        body = orjson.dumps([row.patient, row.name, row.status, list(row.blocking), row.to_check,
                             row.eligible_from.isoformat() if row.eligible_from else None])
        self._db.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?)", (*sort_key(row), body))

    def sorted_rows(self) -> Iterator[Any]:
        from datetime import date

        from cds_service.cards.worklist import WorklistRow

        for (body,) in self._db.execute("SELECT body FROM rows ORDER BY k0, k1, k2, k3, k4"):
            patient, name, status, blocking, to_check, until = orjson.loads(body)
            yield WorklistRow(patient, name, status, tuple(blocking), to_check,
                              date.fromisoformat(until) if until else None)

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()
