"""How closely a population's members agree with their single trials in float32, against how
closely two single trials agree when their initial weights differ by one ulp.

Training amplifies rounding: two float32 runs that start one ulp apart end apart by an amount
that depends on the problem, the optimizer and the rate (little at a small rate on a convex
problem, a lot near the edge of stability).  A population rounds differently from a single
trial (its batched matmuls sum in another order), so a member cannot equal its single trial
bit for bit; what it can do is differ by no more than rounding itself makes two single trials
differ.  This module measures both, on the same trials:

* the **one-ulp spread**: ``train(spec)``, and ``train(spec)`` on the problem whose models start
  with every weight moved one ulp up, and one ulp down (``torch.nextafter``, `nudged`): the
  largest difference between any two of the three runs;
* the **member difference**: the member of ``train_population(specs)`` against ``train(spec)``;

each as the relative difference of the final validation loss (and the absolute difference of
the test accuracy, classification) per trial, and whether the tuned rate (`protocol.best_lr`:
the lowest final validation loss of the grid) is the same for the single trials, the nudged
ones and the population.  (Two single runs are one draw of the spread; the largest of three
pairs is a steadier yardstick than one pair.)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optimlab.lab.population import train_population
from optimlab.lab.protocol import best_lr
from optimlab.lab.store import StoredTrial
from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import Problem


def nudged(problem: Problem, direction: float = math.inf) -> Problem:
    """`problem` whose models start with every parameter one ulp away (the next representable
    value towards `direction`, +∞: up, −∞: down, in the parameter's dtype); data, loss and
    everything else unchanged."""
    copy = dataclasses.replace(problem)
    build = problem.build_model

    def build_nudged(seed: int) -> torch.nn.Module:
        model = build(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, direction)))
        return model

    copy.build_model = build_nudged
    return copy


def difference(a: TrialResult, b: TrialResult) -> dict[str, float | None]:
    """How far apart two runs of one trial ended: ``val_loss`` (relative difference of the
    final validation loss), ``test_accuracy`` (absolute difference; None for regression) and
    ``same_status``; a run that diverged in one and not the other is an infinite difference."""
    same = a.status == b.status
    out: dict[str, Any] = {"same_status": same, "val_loss": None, "test_accuracy": None}
    if not same:
        out["val_loss"] = math.inf
        return out
    if a.status != "ok":
        out["val_loss"] = 0.0
        return out
    x, y = a.metrics["final_val_loss"], b.metrics["final_val_loss"]
    out["val_loss"] = abs(x - y) / max(abs(y), 1e-30)
    if "test_accuracy" in b.metrics:
        out["test_accuracy"] = abs(a.metrics["test_accuracy"] - b.metrics["test_accuracy"])
    return out


def tuned_rate(specs: Sequence[TrialSpec], results: Sequence[TrialResult]) -> float | None:
    """The rate `compare` would choose from these runs of a grid (`protocol.best_lr`)."""
    stored = [StoredTrial(s, r, 0.0, 0, s.key) for s, r in zip(specs, results, strict=True)]
    return best_lr(stored)


@dataclass
class Agreement:
    """The runs of one grid, per spec: single, single from weights one ulp up and one ulp down,
    population member."""

    specs: list[TrialSpec]
    single: list[TrialResult]
    up: list[TrialResult]
    down: list[TrialResult]
    member: list[TrialResult]

    def _rows(self, lr: float | None) -> list[int]:
        return [i for i, s in enumerate(self.specs) if lr is None or s.lr == lr]

    def spread(self, metric: str = "val_loss", lr: float | None = None) -> float:
        """The largest difference between two of a grid point's three single runs (single, one
        ulp up, one ulp down), over the grid (or at the rate `lr`)."""
        runs = [(self.single[i], self.up[i], self.down[i]) for i in self._rows(lr)]
        return _largest(
            difference(a, b)[metric] for point in runs for a, b in itertools.combinations(point, 2)
        )

    def member_difference(self, metric: str = "val_loss", lr: float | None = None) -> float:
        """The largest member-vs-single difference over the grid (or at the rate `lr`)."""
        rows = self._rows(lr)
        return _largest(difference(self.member[i], self.single[i])[metric] for i in rows)

    def status_mismatches(self) -> tuple[int, int]:
        """Grid points whose single runs disagree on the status (one diverged), and points whose
        member and single trial do."""
        single = sum(
            len({r.status for r in point}) > 1 for point in zip(self.single, self.up, self.down)
        )
        member = sum(m.status != s.status for m, s in zip(self.member, self.single))
        return single, member

    def tuned_rates(self) -> dict[str, float | None]:
        return {
            "single": tuned_rate(self.specs, self.single),
            "up": tuned_rate(self.specs, self.up),
            "down": tuned_rate(self.specs, self.down),
            "population": tuned_rate(self.specs, self.member),
        }


def _largest(values: Any) -> float:
    finite = [v for v in values if v is not None]
    return max(finite, default=0.0)


def measure(specs: Sequence[TrialSpec], problem: Problem) -> Agreement:
    """Run `specs` (one population) four ways: singly, singly from weights one ulp up and one
    ulp down, and as a population."""
    specs = list(specs)
    up, down = nudged(problem, math.inf), nudged(problem, -math.inf)
    return Agreement(
        specs=specs,
        single=[train(s, problem) for s in specs],
        up=[train(s, up) for s in specs],
        down=[train(s, down) for s in specs],
        member=train_population(specs, problem),
    )


def to_row(agreement: Agreement) -> dict[str, Any]:
    """One table row: spreads, member differences and the tuned rates."""
    rates = agreement.tuned_rates()
    single_mismatches, member_mismatches = agreement.status_mismatches()
    return {
        "one_ulp_val_loss": agreement.spread("val_loss"),
        "member_val_loss": agreement.member_difference("val_loss"),
        "one_ulp_test_accuracy": agreement.spread("test_accuracy"),
        "member_test_accuracy": agreement.member_difference("test_accuracy"),
        "status_mismatches_one_ulp": single_mismatches,
        "status_mismatches_member": member_mismatches,
        "tuned_single": rates["single"],
        "tuned_up": rates["up"],
        "tuned_down": rates["down"],
        "tuned_population": rates["population"],
        "same_tuned_rate": rates["single"] == rates["population"],
        # at the single trials' tuned rate: the run compare reports (and reruns with seeds)
        "tuned_one_ulp_val_loss": agreement.spread("val_loss", rates["single"]),
        "tuned_member_val_loss": agreement.member_difference("val_loss", rates["single"]),
        "tuned_one_ulp_test_accuracy": agreement.spread("test_accuracy", rates["single"]),
        "tuned_member_test_accuracy": agreement.member_difference("test_accuracy", rates["single"]),
    }
