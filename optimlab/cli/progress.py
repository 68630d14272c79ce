"""Progress of a comparison for a person at a terminal and for a log file.

On a terminal: a rich bar with done/total, rate-based ETA and the last result. Otherwise (CI, nohup,
``> log``): one plain line at the start, then at most one every `interval` seconds, and one at
the end — ``compare: 12/≈60 trials (20%), 0.8 trials/s, ETA 1 min 0 s, last: digits-mlp adam
lr=0.01 ok``. A total marked ``≈`` still holds an estimate of the seed reruns (known once each
tuning is complete); it goes down when reruns turn out unnecessary (every rate diverged, or they
coincide with trials already planned), so the last line's count is the trials that ran or were
reused, never more.

With a `record` (:class:`optimlab.lab.progress_file.ProgressFile`) the same counts go to
``DIR/progress.json`` (at most once a second, and at the end), which ``optimlab serve`` reads.

No heavy imports (rich is imported when a bar is made): cli modules stay fast to load.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from optimlab.lab.progress_file import ProgressFile


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(event: dict[str, Any]) -> str:
    """The last result: ``digits-mlp adam lr=0.01: ok`` (and the reason of a failure)."""
    spec = event["spec"]
    text = f"{spec.problem_label} {spec.optimizer} lr={spec.lr:g}: {event['status']}"
    if event["status"] == "failed" and event.get("reason"):
        text += f" ({event['reason']})"
    return text


#: the bar's columns without the last result: "compare", bar, counts, %, elapsed, ETA
FIXED_WIDTH = 66


class Progress:
    """Receives `optimlab.lab.protocol.run_comparison`'s events and shows them.

    `stream`: where plain lines go (stderr); `terminal`: draw a rich bar instead; `record`: also
    keep the counts in a progress file."""

    def __init__(
        self,
        stream: TextIO,
        terminal: bool,
        interval: float = 5.0,
        record: ProgressFile | None = None,
    ) -> None:
        self.stream = stream
        self.record = record
        self.failed = 0
        self.terminal = terminal
        self.interval = interval
        self.started = time.monotonic()
        self.first_done: int | None = None  # trials already stored when this run began
        self.done = 0
        self.total = 0
        self.approximate = False
        self.last = ""
        self._printed_at: float | None = None
        self._printed = ""
        self._bar: Any = None
        self._task: Any = None

    # -- the events ---------------------------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        # Seed reruns that turned out unnecessary are `skipped`: the protocol keeps them in its
        # total and its done count (its total never goes down), but nothing ran for them.
        skipped = event.get("skipped", 0)
        done = event["done"] - skipped
        if self.first_done is None:
            self.first_done = done
        self.done, self.approximate = done, event["approximate"]
        self.total = event["total"] - skipped
        if event["event"] == "finished":
            self.last = describe(event)
            self.failed += event["status"] == "failed"
        if self.record is not None:
            self.record.update(self.total, self.done, self.failed)
        if self.terminal:
            self._draw()
        else:
            now = time.monotonic()
            if self._printed_at is None or now - self._printed_at >= self.interval:
                self._printed_at = now
                self._print()

    def close(self) -> None:
        """The last line (plain) or the final state of the bar; the progress file's last write
        (finished when every planned trial is done)."""
        if self.record is not None:
            self.record.close(finished=self.done >= self.total and not self.approximate)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif not self.terminal and self._printed_at is not None:
            self._print()

    def _print(self) -> None:
        line = self.line()
        if line != self._printed:  # a resumed run with nothing to do: one line, not two
            self._printed = line
            print(line, file=self.stream, flush=True)

    # -- plain lines ----------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Trials run per second in this invocation (stored ones do not count)."""
        elapsed = time.monotonic() - self.started
        ran = self.done - (self.first_done or 0)
        return ran / elapsed if ran > 0 and elapsed > 0 else None

    def total_text(self) -> str:
        return f"{'≈' if self.approximate else ''}{self.total}"

    def line(self) -> str:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"compare: {self.done}/{self.total_text()} trials{share}"]
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:.2g} trials/s")
            eta = (self.total - self.done) / rate
            parts.append(f"ETA {'≈' if self.approximate else ''}{duration(eta)}")
        else:
            parts.append("ETA —")
        if self.last:
            parts.append(f"last: {self.last}")
        return ", ".join(parts)

    # -- the bar --------------------------------------------------------------------------------
    def _draw(self) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]compare[/]"),
                BarColumn(bar_width=10),
                TextColumn("{task.completed}/{task.fields[total_text]} trials"),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=None, total_text="?")
        # only the last result is shortened to fit the line, never the counts and times
        room = max(0, self._bar.console.width - FIXED_WIDTH)
        last = self.last if len(self.last) <= room else self.last[: max(0, room - 1)] + "…"
        self._bar.update(
            self._task,
            completed=self.done,
            total=self.total or None,
            total_text=self.total_text(),
            description=last,
        )
