"""Stop a clearly diverging tuning run early.

A tuner tries learning rates (and other hyperparameters) far from the good ones on purpose;
a run whose validation loss explodes will not come back, and its remaining steps are wasted.
`train_pruned` runs the ordinary `optimlab.lab.train.train` loop and stops the run at the first
evaluation whose validation loss is above `EXPLODE_FACTOR` × its value at step 0 (the untrained
model). A non-finite loss already ends every run (`train` stops it with status ``diverged``).
Either way the trial is stored with status ``diverged`` and the reason, and the tuner tells
Optuna it was pruned.

Nothing about the loop changes: the rule only reads the curve that `train` records and answers
its ``stop_if`` question after each evaluation, so an unpruned run gives bit for bit the numbers
of `train`.
"""

from __future__ import annotations

import math
from typing import Any

from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import Problem

#: a validation loss above this multiple of the untrained model's is "clearly diverging"
EXPLODE_FACTOR = 10.0


def explosion(step: int, curve: dict[str, list[Any]]) -> str | None:
    """The reason to prune a run whose validation loss is above `EXPLODE_FACTOR` × its value at
    step 0, or None. (A non-finite loss is `train`'s own business: it ends every run.)"""
    start, now = curve["val_loss"][0], curve["val_loss"][-1]
    if step == 0 or not math.isfinite(now) or not math.isfinite(start) or start <= 0:
        return None
    if now > EXPLODE_FACTOR * start:
        return (
            f"pruned: validation loss {now:.4g} at step {step} is above "
            f"{EXPLODE_FACTOR:g} × its value at step 0 ({start:.4g})"
        )
    return None


def train_pruned(spec: TrialSpec, problem: Problem | None = None) -> TrialResult:
    """`train(spec)`, stopped early (status ``diverged``) once the validation loss explodes."""
    return train(spec, problem, stop_if=explosion)
