"""The results store: one SQLite database (WAL) per output directory, one row per finished trial.

Every trial is written by the process that ran it, in one transaction, the moment it finishes;
the primary key is the hash of the trial spec and inserts ignore a key that is already there,
so a crash loses at most the trials that were still running and a rerun never duplicates one.
A run stopped early at a rung (``pruned``, successive halving) is not the full run of its spec:
it is stored under the spec's key + `PRUNED_SUFFIX`, so the spec's own key always means a run
to its full budget, and the two can both be kept (`answers` says which one a tuner reuses).
The database records the optimlab version and schema that wrote it: opening one from another
version, or a file that is not an optimlab database, raises `StoreError` — never a silent
overwrite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab import __version__
from optimlab.lab.trial import TrialResult, TrialSpec, jsonable

DB_NAME = "results.sqlite"
#: appended to the spec's key of a run stopped early at a rung (status ``pruned``)
PRUNED_SUFFIX = "~pruned"
SCHEMA_VERSION = 1
APPLICATION = "optimlab-compare"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    key TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    problem_label TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    schedule TEXT NOT NULL,
    seed INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    evals INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    predictions BLOB,
    finished_at REAL NOT NULL,
    pid INTEGER NOT NULL
);
"""


class StoreError(Exception):
    """The results database cannot be used (another version, corrupted, not writable)."""


@dataclass
class StoredTrial:
    """One row of the store."""

    spec: TrialSpec
    result: TrialResult
    finished_at: float
    pid: int
    #: the key it is stored under (a custom optimizer's file digest is part of it, and the spec
    #: read back carries no file): use this, not ``spec.key``
    key: str = ""

    def as_record(self) -> dict[str, Any]:
        """The exported form: problem, optimizer, hyperparameters, seed, status, metrics, …"""
        return {
            "key": self.key or self.spec.key,
            "problem": self.spec.problem_label or self.spec.problem,
            "problem_spec": self.spec.problem,
            "optimizer": self.spec.optimizer,
            "hyperparameters": jsonable(self.spec.hyperparameters),
            "schedule": self.spec.schedule,
            "seed": self.spec.seed,
            "steps": self.spec.steps,
            "status": self.result.status,
            "reason": self.result.reason,
            "metrics": self.result.metrics,
            "finished_at": self.finished_at,
        }


def stored_key(spec: TrialSpec, result: TrialResult) -> str:
    """The key a result is stored under: the spec's key, + `PRUNED_SUFFIX` for a run stopped
    early at a rung (it did not run the spec's budget)."""
    return spec.key + PRUNED_SUFFIX if result.status == "pruned" else spec.key


def check_writable(directory: str | os.PathLike[str]) -> Path:
    """Create `directory` if needed and prove a file can be written in it; StoreError if not.
    A path that is (or lies under) a file says so: the argument, the value, what is allowed."""
    path = Path(directory)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "" if existing == path else f" cannot be made: {str(existing)!r}"
        raise StoreError(
            f"{str(path)!r}{where} is a file, not a directory; allowed: a directory (one that "
            f"exists, or a new one compare creates)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise StoreError(
            f"output directory {str(path)!r} cannot be written: {error.strerror or error}"
        ) from None
    return path


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 60000")
    return connection


class ResultStore:
    """The trials of one output directory. Cheap to open in each worker process."""

    def __init__(
        self, directory: str | os.PathLike[str], *, fresh: bool = False, create: bool = True
    ) -> None:
        """Open (``create=True``: create if missing) the store of `directory`. ``fresh``
        deletes an existing database first. ``create=False`` opens an existing one only, for
        reading (e.g. export), and needs no write permission."""
        if not create:
            self.directory = Path(directory)
            self.path = self.directory / DB_NAME
            if self.directory.is_file():  # the database file itself, or another file
                parent = str(self.directory.parent)
                what = "the results database" if self.directory.name == DB_NAME else "a file"
                raise StoreError(
                    f"{str(self.directory)!r} is {what}, not a directory; allowed: the "
                    f"directory compare wrote (--out {parent!r}?)"
                )
            if not self.path.is_file():
                raise StoreError(
                    f"no results database in {str(self.directory)!r} (expected {self.path}); "
                    f"run `optimlab compare --out {directory}` first"
                )
        else:
            self.directory = check_writable(directory)
            self.path = self.directory / DB_NAME
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            with closing(_connect(self.path)) as connection:
                if existed:
                    self._check(connection, writing=create)
                    if create:
                        self._rekey_pruned(connection)
                else:
                    self._create(connection)
        except sqlite3.DatabaseError as error:
            advice = (
                "Move it away, use another --out, or pass --fresh to delete it"
                if create
                else "Nothing was changed"
            )
            raise StoreError(
                f"{self.path} is not a readable optimlab results database ({error}); it may be "
                f"corrupted. {advice}"
            ) from None

    def _create(self, connection: sqlite3.Connection) -> None:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(_SCHEMA)
        connection.execute("BEGIN IMMEDIATE")
        for key, value in (
            ("application", APPLICATION),
            ("schema_version", str(SCHEMA_VERSION)),
            ("optimlab_version", __version__),
            ("created_at", str(time.time())),
        ):
            connection.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        connection.execute("COMMIT")

    def _check(self, connection: sqlite3.Connection, writing: bool = True) -> None:
        """Refuse a database that is not ours. Writing into one from another optimlab version
        would mix trials that may not be comparable; reading one (export) needs only the same
        schema: the rows mean the same, and exporting is what one does before starting over."""
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables:
            raise StoreError(
                f"{self.path} is an SQLite file but not an optimlab results database; refusing "
                + (
                    "to overwrite it. Use another --out, or --fresh to delete it"
                    if writing
                    else "to read it"
                )
            )
        meta = dict(connection.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION:
            raise StoreError(f"{self.path} was not written by optimlab compare; refusing to use it")
        written = (meta.get("optimlab_version"), meta.get("schema_version"))
        if not writing:
            if written[1] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"{self.path} was written by optimlab {written[0]} in results schema "
                    f"{written[1]}; this is optimlab {__version__}, which reads schema "
                    f"{SCHEMA_VERSION}: read it with optimlab {written[0]}"
                )
            return
        if written != (__version__, str(SCHEMA_VERSION)):
            raise StoreError(
                f"{self.path} was written by optimlab {written[0]} (schema {written[1]}); this "
                f"is optimlab {__version__} (schema {SCHEMA_VERSION}). Its trials may not be "
                f"comparable: pass --fresh to start over or choose another --out"
            )

    def _rekey_pruned(self, connection: sqlite3.Connection) -> None:
        """Pruned rows written before `PRUNED_SUFFIX` existed sat under the spec's own key,
        where a later full run of that spec could not be stored: move them to the suffixed
        key (nothing is deleted; a no-op once done)."""
        connection.execute(
            "UPDATE OR IGNORE trials SET key = key || ? WHERE status = 'pruned' AND key NOT LIKE ?",
            (PRUNED_SUFFIX, f"%{PRUNED_SUFFIX}"),
        )

    # --------------------------------------------------------------------------------------
    def put(self, spec: TrialSpec, result: TrialResult) -> bool:
        """Write one finished trial at once (its own transaction) under `stored_key`; False if
        that key was already stored (the first result wins, so a rerun never duplicates a
        trial)."""
        row = (
            stored_key(spec, result),
            spec.problem,
            spec.problem_label or spec.problem,
            spec.optimizer,
            json.dumps(jsonable(spec.hyperparameters), sort_keys=True),
            spec.schedule,
            spec.seed,
            spec.steps,
            spec.evals,
            result.status,
            result.reason,
            json.dumps(jsonable(result.metrics), allow_nan=False),
            result.predictions,
            time.time(),
            os.getpid(),
        )
        with closing(_connect(self.path)) as connection:
            cursor = connection.execute(
                f"INSERT OR IGNORE INTO trials VALUES ({', '.join('?' * len(row))})", row
            )
            return cursor.rowcount == 1

    def keys(self) -> set[str]:
        with closing(_connect(self.path)) as connection:
            return {row[0] for row in connection.execute("SELECT key FROM trials")}

    def get(self, keys: list[str] | None = None) -> dict[str, StoredTrial]:
        """Stored trials by key (all of them, or those among `keys`)."""
        return {trial.key: trial for trial in self.iter(keys)}

    def iter(self, keys: list[str] | None = None) -> Iterator[StoredTrial]:
        query = "SELECT * FROM trials ORDER BY finished_at"
        with closing(_connect(self.path)) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query).fetchall()
        wanted = None if keys is None else set(keys)
        for row in rows:
            if wanted is not None and row["key"] not in wanted:
                continue
            spec = TrialSpec(
                problem=row["problem"],
                optimizer=row["optimizer"],
                hyperparameters=json.loads(row["hyperparameters"]),
                schedule=row["schedule"],
                seed=row["seed"],
                steps=row["steps"],
                evals=row["evals"],
                problem_label=row["problem_label"],
            )
            result = TrialResult(
                row["status"], json.loads(row["metrics"]), row["reason"], row["predictions"]
            )
            yield StoredTrial(spec, result, row["finished_at"], row["pid"], row["key"])

    def answers(self, pruned: bool = False) -> dict[str, StoredTrial]:
        """The stored trial that answers each spec key (``spec.key``), for a tuner to reuse.

        A run to the full budget answers any tuner. A run stopped early at a rung (``pruned``)
        answers only a tuner that prunes (``pruned=True``, ``--tuner halving``), and for it wins
        over a full run of the same spec: a halving run resumed reports its own decisions even
        after an exhaustive grid ran those points to the end in the same directory. Without
        ``pruned`` such a point is absent, so an exhaustive grid trains it to the end rather
        than take a truncated curve for a finished one."""
        full: dict[str, StoredTrial] = {}
        stopped: dict[str, StoredTrial] = {}
        for trial in self.iter():
            if trial.result.status == "pruned":
                stopped[trial.key.removesuffix(PRUNED_SUFFIX)] = trial
            else:
                full[trial.key] = trial
        return {**full, **stopped} if pruned else full

    def count(self) -> int:
        with closing(_connect(self.path)) as connection:
            return connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
