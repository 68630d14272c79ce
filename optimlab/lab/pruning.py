"""Stop a clearly diverging tuning run early.

A tuner tries learning rates (and other hyperparameters) far from the good ones on purpose;
a run whose validation loss explodes will not come back, and its remaining steps are wasted.
`train_pruned` runs the ordinary `optimlab.lab.train.train` loop and stops the run at the first
evaluation whose validation loss is above `EXPLODE_FACTOR` × its value at step 0 (the untrained
model). A non-finite loss already ends every run (`train` stops it with status ``diverged``).
Either way the trial is stored with status ``diverged`` and the reason, and the tuner tells
Optuna it was pruned.

Nothing about the loop changes: the watch only reads the losses that the evaluations compute
(through the problem's loss function) and stops the run through `train`'s ``on_eval`` hook, so
an unpruned run gives bit for bit the numbers of `train`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch

from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec, jsonable
from optimlab.problems import Problem, get_problem

#: a validation loss above this multiple of the untrained model's is "clearly diverging"
EXPLODE_FACTOR = 10.0


class _Exploded(Exception):
    """Raised from the evaluation hook to end the run (`train` turns it into a result)."""


class _Watch:
    """Wraps a problem's loss function to see the full-split losses of each evaluation."""

    def __init__(self, problem: Problem) -> None:
        self.original = problem
        self.train_targets, self.val_targets = problem.train[1], problem.val[1]
        self.problem = dataclasses.replace(problem, loss_fn=self._loss)
        self.curve: dict[str, list[Any]] = {"step": [], "train_loss": [], "val_loss": []}
        self.last = {"train": math.nan, "val": math.nan}
        self.stopped: str | None = None

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.original.loss_fn(output, target)
        # evaluations pass the split's own target tensor; training minibatches are new tensors
        if target is self.val_targets:
            self.last["val"] = float(loss)
        elif target is self.train_targets:
            self.last["train"] = float(loss)
        return loss

    def on_eval(self, step: int) -> None:
        self.curve["step"].append(step)
        self.curve["train_loss"].append(self.last["train"])
        self.curve["val_loss"].append(self.last["val"])
        start, now = self.curve["val_loss"][0], self.last["val"]
        if step == 0 or not math.isfinite(now) or not math.isfinite(start) or start <= 0:
            return  # a non-finite loss: train() itself stops the run as diverged
        if now > EXPLODE_FACTOR * start:
            self.stopped = (
                f"pruned: validation loss {now:.4g} at step {step} is above "
                f"{EXPLODE_FACTOR:g} × its value at step 0 ({start:.4g})"
            )
            raise _Exploded(self.stopped)


def train_pruned(spec: TrialSpec, problem: Problem | None = None) -> TrialResult:
    """`train(spec)`, stopped early (status ``diverged``) once the validation loss explodes."""
    started, cpu_started = time.perf_counter(), time.process_time()
    if problem is None:
        try:
            problem = get_problem(spec.problem)
        except Exception:  # train() reports the bad problem as a failed trial
            return train(spec)
    watch = _Watch(problem)
    result = train(spec, watch.problem, on_eval=watch.on_eval)
    if watch.stopped is None:
        return result
    curve = {**watch.curve, "val_accuracy": [None] * len(watch.curve["step"])}
    metrics = {
        "steps_run": curve["step"][-1],
        "diverged_at": curve["step"][-1],
        "pruned": True,
        "stopped_early": False,
        "best_val_loss": min(curve["val_loss"]),
        "curve": curve,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    return TrialResult("diverged", jsonable(metrics), reason=watch.stopped)
