"""What lies under the results root: comparisons (a ``results.sqlite`` store, and ``summary.json``
once the comparison has finished) and diagnoses (``diagnosis.json`` beside ``index.html``).

Safety: a path from a URL is resolved under the root by :func:`safe_path`, which refuses ``..``
parts, absolute paths, and anything whose real path (symlinks followed) is not inside the root's
real path — the API answers 404 for every one, so it never says what exists outside.

The store is opened read-only through SQLite's URI (``file:…?mode=ro``): a running
``optimlab compare`` keeps writing (WAL lets readers and one writer work at once) and is never
locked out by the page.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from optimlab.lab.progress_file import estimate, read_progress

DB_NAME = "results.sqlite"  # = optimlab.lab.store.DB_NAME (a test checks)
SUMMARY = "summary.json"
DIAGNOSIS = "diagnosis.json"
#: how deep under the root comparisons and diagnoses are looked for
MAX_DEPTH = 3


class NotFound(LookupError):
    """No such file under the root (or a path that tried to leave it)."""


def safe_path(root: Path, relative: str) -> Path:
    """The real path of `relative` under `root`, or NotFound.

    Refused: empty parts, ``.`` and ``..``, absolute paths, backslashes, NUL, and any path whose
    resolved form (symlinks followed) is not inside the resolved root."""
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        raise NotFound(relative)
    parts = PurePosixPath(relative).parts
    if any(part in ("", ".", "..") for part in parts) or ":" in parts[0]:
        raise NotFound(relative)
    real_root = root.resolve()
    try:
        target = (real_root / Path(*parts)).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(relative) from None
    if target != real_root and real_root not in target.parents:
        raise NotFound(relative)
    return target


def _walk(root: Path, marker: str) -> list[Path]:
    """Directories under `root` (down to MAX_DEPTH) holding `marker`, not following symlinks."""
    found = []
    real_root = root.resolve()
    frontier = [real_root]
    for _ in range(MAX_DEPTH + 1):
        following = []
        for directory in frontier:
            if (directory / marker).is_file() and not (directory / marker).is_symlink():
                found.append(directory)
            try:
                children = sorted(directory.iterdir())
            except OSError:
                continue
            following += [c for c in children if c.is_dir() and not c.is_symlink()]
        frontier = following
    return found


def _relative(root: Path, directory: Path) -> str:
    rel = directory.relative_to(root.resolve()).as_posix()
    return "" if rel == "." else rel


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``): it never takes a write lock on the store."""
    uri = f"file:{quote(str(path))}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=5)
    connection.row_factory = sqlite3.Row
    return connection


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_trials(directory: Path) -> list[dict[str, Any]]:
    """Every stored trial of the comparison in `directory`, oldest first (no predictions)."""
    with closing(connect_read_only(directory / DB_NAME)) as connection:
        try:
            rows = connection.execute(
                "SELECT key, problem, problem_label, optimizer, hyperparameters, schedule, seed, "
                "steps, evals, status, reason, metrics, finished_at FROM trials "
                "ORDER BY finished_at, key"
            ).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return []  # the file exists but compare has not created its table yet
    trials = []
    for row in rows:
        metrics = json.loads(row["metrics"])
        trials.append(
            {
                "key": row["key"],
                "problem": row["problem_label"] or row["problem"],
                "optimizer": row["optimizer"],
                "hyperparameters": json.loads(row["hyperparameters"]),
                "schedule": row["schedule"],
                "seed": row["seed"],
                "steps": row["steps"],
                "evals": row["evals"],
                "status": row["status"],
                "reason": row["reason"],
                "metrics": {k: _finite(v) for k, v in metrics.items() if k != "curve"},
                "curve": metrics.get("curve"),
                "finished_at": row["finished_at"],
            }
        )
    return trials


def trial_rows(directory: Path, since: float | None = None) -> dict[str, Any]:
    """The trials finished after `since` (all when None), without curves, and the count."""
    trials = read_trials(directory)
    fresh = [t for t in trials if since is None or t["finished_at"] > since]
    for trial in fresh:
        trial.pop("curve")
    return {"count": len(trials), "trials": fresh}


def _series_key(trial: dict[str, Any]) -> tuple[str, str, str, int, int]:
    """What a series' seeds share: everything of the trial's identity but the seed. (By
    optimizer and lr alone, two comparisons stored in one directory — 150 steps and 100 steps
    of the same rate — were averaged into one curve.)"""
    hyperparameters = json.dumps(trial["hyperparameters"], sort_keys=True)
    return (trial["optimizer"], hyperparameters, trial["schedule"], trial["steps"], trial["evals"])


def _series_label(key: tuple[str, str, str, int, int], others: list[tuple]) -> str:
    """``adam (lr 0.001)``; the other hyperparameters, the schedule and the budget are added
    where another series of the problem would otherwise carry the same label."""
    optimizer, hyperparameters, schedule, steps, _ = key
    values = json.loads(hyperparameters)
    lr = values.get("lr")
    label = f"{optimizer} (lr {lr:.3g})" if isinstance(lr, (int, float)) else optimizer
    same = [
        o for o in others if o != key and o[0] == optimizer and json.loads(o[1]).get("lr") == lr
    ]
    if not same:
        return label
    extra = [f"{k}={v}" for k, v in values.items() if k != "lr"]
    if any(o[2] != schedule for o in same):
        extra.append(schedule)
    if any(o[3] != steps for o in same):
        extra.append(f"{steps} steps")
    if any(o[4] != key[4] for o in same):
        extra.append(f"{key[4]} evaluations")
    return (
        f"{label[:-1]}, {', '.join(extra)})"
        if label.endswith(")")
        else f"{label} ({', '.join(extra)})"
    )


def curves(directory: Path) -> dict[str, Any]:
    """Training-loss curves per problem and configuration (optimizer, lr): the mean over seeds
    with the band min…max, at the evaluation steps all of its seeds reached."""
    grouped: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
    for trial in read_trials(directory):
        curve = trial["curve"]
        if not curve or not curve.get("step"):
            continue
        grouped.setdefault(trial["problem"], {}).setdefault(_series_key(trial), []).append(curve)
    answer: dict[str, Any] = {}
    for problem, series in grouped.items():
        answer[problem] = []
        keys = list(series)
        labelled = sorted(
            ((_series_label(key, keys), found) for key, found in series.items()),
            key=lambda pair: pair[0],
        )
        for label, found in labelled:
            length = min(len(c["step"]) for c in found)
            columns = [[_finite(c["train_loss"][i]) for c in found] for i in range(length)]
            usable = [[v for v in column if v is not None] for column in columns]
            answer[problem].append(
                {
                    "label": label,
                    "seeds": len(found),
                    "step": found[0]["step"][:length],
                    "mean": [sum(u) / len(u) if u else None for u in usable],
                    "low": [min(u) if u else None for u in usable],
                    "high": [max(u) if u else None for u in usable],
                }
            )
    return answer


def comparisons(root: Path) -> list[dict[str, Any]]:
    """Every comparison under `root`: its path, trial count, last write and whether it finished."""
    found = []
    for directory in _walk(root, DB_NAME):
        try:
            with closing(connect_read_only(directory / DB_NAME)) as connection:
                count, last = connection.execute(
                    "SELECT COUNT(*), MAX(finished_at) FROM trials"
                ).fetchone()
        except sqlite3.DatabaseError:
            continue  # not an optimlab store (or being created): not listed
        found.append(
            {
                "path": _relative(root, directory),
                "trials": count,
                "last_trial_at": last,
                "finished": (directory / SUMMARY).is_file(),
                "report": (directory / "index.html").is_file(),
            }
        )
    return found


def comparison(root: Path, relative: str) -> Path:
    """The comparison directory `relative` under `root` (NotFound if it is none)."""
    directory = root.resolve() if relative in ("", ".") else safe_path(root, relative)
    if not (directory / DB_NAME).is_file():
        raise NotFound(relative)
    return directory


def summary(directory: Path) -> Any:
    """summary.json once the comparison has written it, else None."""
    path = directory / SUMMARY
    return _json_or_none(path) if path.is_file() else None


def progress(directory: Path) -> dict[str, Any] | None:
    """The running comparison's ``progress.json`` (written by ``optimlab compare``) with its rate
    and ETA computed now, or None when the directory has none."""
    record = read_progress(directory)
    if record is None:
        return None
    return {**record, **estimate(record)}


def _diagnosis_problem(data: Any) -> str | None:
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return None
    return meta.get("problem_label") or meta.get("problem")


def diagnoses(root: Path) -> list[dict[str, Any]]:
    """Every diagnosis under `root`: its path, problem and the page to open."""
    found = []
    for directory in _walk(root, DIAGNOSIS):
        data = _json_or_none(directory / DIAGNOSIS) or {}
        relative = _relative(root, directory)
        page = f"{relative}/index.html" if relative else "index.html"
        found.append(
            {
                "path": relative,
                # diagnosis.json keeps it under "meta" ("problem" was read: always null)
                "problem": _diagnosis_problem(data),
                "page": page if (directory / "index.html").is_file() else None,
            }
        )
    return found


__all__ = [
    "NotFound",
    "comparison",
    "comparisons",
    "connect_read_only",
    "curves",
    "diagnoses",
    "progress",
    "read_trials",
    "safe_path",
    "summary",
    "trial_rows",
]
