r"""A running comparison's progress as a file other processes can read: ``DIR/progress.json``.

``optimlab compare`` keeps it beside its results store; ``optimlab serve`` reads it to show the
progress and the ETA of a run that is still going.  Contract (every key always present)::

    {"planned": int, "done": int, "failed": int, "started_at": ISO8601, "updated_at": ISO8601,
     "finished": bool, "command": str, "done_at_start": int}

``planned`` is the trials the comparison needs (an estimate while seed reruns are not known,
the same number compare's progress line shows), ``done`` those stored so far (reused ones
included), ``failed`` the done ones that failed in this invocation, ``done_at_start`` the trials
already stored when this invocation began (so a resumed run's rate counts only its own trials).

Written atomically (a temporary file in the same directory, then ``os.replace``): a reader sees
the old file or the new one, never half of one.  At most once per ``interval`` seconds, except
the first and the final write, which always happen.

The ETA (:func:`estimate`) is a rate extrapolation::

    rate = (done − done_at_start) / (updated_at − started_at)        [trials / s]
    eta  = (planned − done) / rate − (now − updated_at)              (≥ 0)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE_NAME = "progress.json"
#: the least time between two writes (seconds); the first and the last write are not delayed
INTERVAL = 1.0


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds, e.g. ``2026-11-30T06:03:29.123456+00:00``."""
    return datetime.now(UTC).isoformat()


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` so that a reader never sees a partial file."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(data, handle)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the store beside it is not
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ProgressFile:
    """Keeps ``directory/progress.json`` up to date with a comparison's counts.

    `clock` (monotonic seconds) decides when a write is due; tests pass their own."""

    def __init__(
        self,
        directory: str | Path,
        command: str,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(directory) / FILE_NAME
        self.command = command
        self.interval = interval
        self.clock = clock
        self.started_at = now_iso()
        self.done_at_start: int | None = None
        self._written_at: float | None = None
        self.data: dict[str, Any] | None = None

    def update(self, planned: int, done: int, failed: int, *, finished: bool = False) -> bool:
        """Record the counts; write them if the last write is `interval` old (or none was made,
        or `finished`).  Returns whether the file was written."""
        if self.done_at_start is None:
            self.done_at_start = done
        self.data = {
            "planned": int(planned),
            "done": int(done),
            "failed": int(failed),
            "started_at": self.started_at,
            "updated_at": now_iso(),
            "finished": bool(finished),
            "command": self.command,
            "done_at_start": int(self.done_at_start),
        }
        now = self.clock()
        if finished or self._written_at is None or now - self._written_at >= self.interval:
            self._written_at = now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, self.data)
            return True
        return False

    def close(self, finished: bool) -> None:
        """The final write: the last counts recorded, with `finished`."""
        if self.data is not None:
            data = self.data
            self.update(data["planned"], data["done"], data["failed"], finished=finished)


def read_progress(directory: str | Path) -> dict[str, Any] | None:
    """``directory/progress.json`` as written by :class:`ProgressFile`, or None (absent or
    unreadable: a run from before the file existed, or a file of another program)."""
    try:
        data = json.loads((Path(directory) / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    required = {"planned", "done", "failed", "started_at", "updated_at", "finished", "command"}
    if not isinstance(data, dict) or not required <= set(data):
        return None
    return data


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def estimate(progress: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The rate (trials/s) and the ETA (seconds from `now`, a Unix time) of a progress record;
    None where they cannot be known yet (no trial run in this invocation) or no longer apply
    (finished).  Also the share done (0…1) and the seconds since the last update."""
    now = time.time() if now is None else now
    planned, done = progress["planned"], progress["done"]
    started, updated = _seconds(progress["started_at"]), _seconds(progress["updated_at"])
    ran = done - progress.get("done_at_start", 0)
    elapsed = updated - started
    rate = ran / elapsed if ran > 0 and elapsed > 0 else None
    eta = None
    if rate is not None and not progress["finished"]:
        eta = max(0.0, (planned - done) / rate - max(0.0, now - updated))
    return {
        "share": done / planned if planned else None,
        "rate": rate,
        "eta_seconds": eta,
        "since_update": max(0.0, now - updated),
    }


__all__ = ["FILE_NAME", "ProgressFile", "estimate", "read_progress", "write_atomically"]
