"""Populations in float32 (issue 14, point 1): a member ends no further from its single trial
than rounding alone moves single trials, and the tuned rate is the same.

The yardstick is measured here, not assumed: the largest difference between two of three single
runs of each grid point — as is, and with every initial weight one ulp up or one ulp down
(`optimlab.lab.population_agreement`). benchmarks/population_float32.py measures the same on
the quick suite (docs/compare.md).
"""

from __future__ import annotations

import pytest
import torch

from optimlab.lab.population_agreement import measure, nudged
from optimlab.lab.trial import TrialSpec
from optimlab.problems import get_problem

#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_member_differs_from_its_single_trial_by_no_more_than_the_one_ulp_spread():
    problem = get_problem("digits-mlp:width=16")
    specs = [
        TrialSpec(problem.spec, "momentum", {"lr": lr}, seed=0, steps=40, evals=4)
        for lr in (1e-3, 1e-2, 1e-1, 1.0)
    ]
    agreement = measure(specs, problem)
    assert [r.status for r in agreement.member] == [r.status for r in agreement.single]
    spread = agreement.spread("val_loss")
    assert 0 < spread < 1e-3  # rounding, amplified by training: measurable, and small
    assert agreement.member_difference("val_loss") <= spread
    assert agreement.member_difference("test_accuracy") <= agreement.spread("test_accuracy")
    rates = agreement.tuned_rates()
    assert rates["population"] == rates["single"] is not None
    assert all(r.metrics["population_size"] == len(specs) for r in agreement.member)


def test_nudged_weights_are_one_ulp_away():
    problem = get_problem("digits-mlp:width=16")
    base = problem.build_model(3)
    for direction in (torch.inf, -torch.inf):
        moved = nudged(problem, direction).build_model(3)
        for p, q in zip(base.parameters(), moved.parameters(), strict=True):
            assert torch.equal(torch.nextafter(p, torch.full_like(p, direction)), q)
            assert bool(((q > p) if direction > 0 else (q < p)).all())
