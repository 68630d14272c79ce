"""Divergence beyond a non-finite loss: stop a clearly diverging tuning run early, and call a
finished run that ended exploded what it is.

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

Every other run — the grid, the seed reruns at the tuned rate, the default-rate seeds — is not
stopped at the first evaluation above the factor, because many come back: in a full-suite
run (docs/compare.md, "Seeds that diverge: measured"), 561 finished runs passed 10 × their
step-0 validation loss at some evaluation and 429 of them ended below it, among them the tuned
rate of two pairs and 14 of their seed reruns (mnist1d-cnn RMSprop and AdaMax: a spike at step 1, final validation losses
0.55–0.98). Stopping those would store good runs as diverged. What `ended_exploded` does instead
is judge the finished run: one whose final validation loss is still above `EXPLODE_FACTOR` × its
step-0 value did not come back (a finite loss that grew a thousandfold is no result), and is
stored ``diverged``, ``diverged_at`` the first evaluation of the stretch above the factor that
it ended in. `optimlab.lab.executor.run_unit` applies it to every run, so a seed rerun and a grid
point that ended exploded are both ``diverged``, as a non-finite one is.
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


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def ended_exploded(result: TrialResult) -> TrialResult:
    """`result`, or — when it finished ``ok`` with a final validation loss above
    `EXPLODE_FACTOR` × its value at step 0 — the same run as ``diverged``: its metrics kept,
    ``diverged_at`` the first evaluation step of the stretch above the factor it ended in (the
    last evaluation when the final model is not the last evaluated one), ``exploded`` true."""
    curve = result.metrics.get("curve") or {}
    losses, steps = curve.get("val_loss") or [], curve.get("step") or []
    final = result.metrics.get("final_val_loss")
    if result.status != "ok" or not losses or not steps or not _finite(final):
        return result
    start = losses[0]
    if not _finite(start) or start <= 0 or final <= EXPLODE_FACTOR * start:
        return result
    at = steps[-1]
    for step, value in zip(reversed(steps), reversed(losses)):
        if not (_finite(value) and value > EXPLODE_FACTOR * start):
            break
        at = step
    metrics = {**result.metrics, "diverged_at": int(at), "exploded": True}
    reason = (
        f"validation loss {final:.4g} at the end is above {EXPLODE_FACTOR:g} × its value at "
        f"step 0 ({start:.4g}), since step {at}"
    )
    return TrialResult("diverged", metrics, reason=reason)
