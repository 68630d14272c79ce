"""Learning-rate schedules by name, built from torch's own schedulers.

``constant``, ``step[:every=F][:gamma=G]``, ``exponential[:final=F]``, ``cosine``,
``warmup-cosine[:warmup=F]``, ``plateau[:factor=F][:patience=N]``. Fractions (``every``,
``warmup``) are shares of the step budget, so one schedule spec fits every budget. The
trainer calls ``scheduler.step()`` after each optimizer step, except for ``plateau``, which
steps with the validation loss at each evaluation (`Schedule.on_eval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import lr_scheduler

from optimlab.spec import parse_item

SCHEDULES: dict[str, dict[str, Any]] = {
    "constant": {},
    "step": {"every": 1 / 3, "gamma": 0.1},
    "exponential": {"final": 0.01},
    "cosine": {},
    "warmup-cosine": {"warmup": 0.05},
    "plateau": {"factor": 0.1, "patience": 2},
}


def parse_schedule(spec: str) -> tuple[str, dict[str, Any]]:
    """Check a schedule spec; ValueError naming the schedule/option/value and what is allowed."""
    name, given = parse_item(spec)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    options = dict(SCHEDULES[name])
    for key, value in given.items():
        if key not in options:
            valid = ", ".join(options) or "none"
            raise ValueError(
                f"unknown option {key!r} for schedule {name!r}; valid options: {valid}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"schedule {name!r}: {key}={value!r} must be a number")
        options[key] = value
    positive_below_one = {"every", "gamma", "final", "warmup", "factor"}
    for key, value in options.items():
        if key in positive_below_one and not 0 < value <= 1:
            raise ValueError(f"schedule {name!r}: {key}={value!r} must be in (0, 1]")
        if key == "patience" and (value < 0 or value != int(value)):
            raise ValueError(f"schedule {name!r}: patience={value!r} must be an integer >= 0")
    return name, options


@dataclass
class Schedule:
    """A torch scheduler (or None for constant) and how the trainer drives it."""

    scheduler: Any
    per_step: bool

    def after_step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def on_eval(self, val_loss: float) -> None:
        if self.scheduler is not None and not self.per_step and math.isfinite(val_loss):
            self.scheduler.step(val_loss)


def make_schedule(spec: str, optimizer: torch.optim.Optimizer, steps: int) -> Schedule:
    """The scheduler for `spec` over a budget of `steps` optimizer steps."""
    name, o = parse_schedule(spec)
    steps = max(int(steps), 1)
    if name == "constant":
        return Schedule(None, per_step=False)
    if name == "step":
        every = max(1, round(o["every"] * steps))
        return Schedule(lr_scheduler.StepLR(optimizer, every, gamma=o["gamma"]), per_step=True)
    if name == "exponential":
        # 1. gamma^steps = final, so the rate ends at final × the initial rate
        gamma = o["final"] ** (1 / steps)
        return Schedule(lr_scheduler.ExponentialLR(optimizer, gamma), per_step=True)
    if name == "cosine":
        return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps), per_step=True)
    if name == "warmup-cosine":
        # 1. linear warmup from 1% of the rate over `warmup` of the budget,
        # 2. then cosine decay to 0 over the rest.
        warmup = max(1, round(o["warmup"] * steps))
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
        decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup))
        sequence = lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
        return Schedule(sequence, per_step=True)
    plateau = lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=o["factor"], patience=int(o["patience"])
    )
    return Schedule(plateau, per_step=False)
