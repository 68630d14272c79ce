"""Prodigy against the prodigyopt package: float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two
groups sharing one d estimate, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.prodigy import Prodigy, next_d
from optimlab.optim.registry import get_info
from tests import modern_harness as harness

prodigyopt = pytest.importorskip("prodigyopt")

#: (options of both groups, the second group's own per-group options)
CASES = [
    ({}, {"weight_decay": 0.05, "eps": 1e-6}),
    ({"weight_decay": 0.1, "decouple": False}, {"safeguard_warmup": True}),
    (
        {"use_bias_correction": True, "growth_rate": 1.05, "d_coef": 0.5, "betas": (0.0, 0.99)},
        {"slice_p": 3, "weight_decay": 0.01},
    ),
]


def _parity(options: dict, second: dict, reference_class: type | None = None) -> float:
    reference_options = {k: v for k, v in options.items() if k != "maximize"}

    def ours(params):
        return Prodigy(harness.groups(params, second), **options)

    def theirs(params):
        cls = reference_class or prodigyopt.Prodigy
        return cls(harness.groups(params, second), **reference_options)

    mine, reference, ours_optimizer, _ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    groups = ours_optimizer.param_groups
    assert groups[0]["d"] == groups[1]["d"] > 1e-6  # one d for all groups, and it grew
    return harness.max_difference(mine, reference)


@pytest.mark.parametrize(("options", "second"), CASES, ids=["defaults", "l2", "beta1-0,slice"])
def test_matches_prodigyopt(options: dict, second: dict) -> None:
    assert _parity(options, second) <= harness.TOLERANCE


def test_maximize_is_prodigyopt_on_the_negated_gradient() -> None:
    class Negated(prodigyopt.Prodigy):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.neg_()
            return super().step(closure)

    assert _parity({"maximize": True}, {}, Negated) <= harness.TOLERANCE


def test_a_group_with_lr_zero_is_frozen_unlike_prodigyopt() -> None:
    # the reproduction of docs/conventions.md: β₁ = 0, a second group with lr 0
    def run(cls):
        moving = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        frozen = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
        optimizer = cls([{"params": [moving]}, {"params": [frozen], "lr": 0.0}], betas=(0.0, 0.9))
        for _ in range(3):
            moving.grad = moving.detach().clone()
            frozen.grad = torch.ones_like(frozen)
            optimizer.step()
        return frozen.item()

    assert run(prodigyopt.Prodigy) != 3.0  # moved by −η̂·d·g/(√v + dε) with v = 0
    assert run(Prodigy) == 3.0


def test_loads_prodigyopt_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    theirs = prodigyopt.Prodigy(twin_params, weight_decay=0.1)
    for step in range(10):
        harness.set_grads(twin_params, step)
        theirs.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = Prodigy(params)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["d"] == theirs.param_groups[0]["d"] > 1e-6
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        theirs.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


def test_d_jumps_once_from_d0_then_grows_at_most_by_growth_rate() -> None:
    assert next_d(1e-6, 1e-6, 0.5, 1e-6, 2.0) == (0.5, 0.5)  # leaves d0 at once
    assert next_d(0.5, 0.5, 4.0, 1e-6, 2.0) == (1.0, 4.0)  # then ×2 at most
    assert next_d(1.0, 4.0, 0.1, 1e-6, 2.0) == (2.0, 4.0)  # never down


def test_declared_learning_rate_free() -> None:
    assert get_info("prodigy").learning_rate_free is True
    assert get_info("adan").learning_rate_free is False


def test_shared_hyperparameters_and_lrs_are_checked() -> None:
    a, b = (torch.zeros(2, requires_grad=True) for _ in range(2))
    with pytest.raises(ValueError, match=r"Prodigy: invalid d_coef=2\.0; d_coef must be 1\.0"):
        Prodigy([{"params": [a]}, {"params": [b], "d_coef": 2.0}])
    with pytest.raises(ValueError, match=r"invalid decoupled_weight_decay=True; .*decouple=True"):
        Prodigy([a], decoupled_weight_decay=True)
    with pytest.raises(ValueError, match=r"invalid growth_rate=0\.5; .*\[1, inf\]"):
        Prodigy([a], growth_rate=0.5)


def test_a_group_lr_scales_that_group_s_step() -> None:
    # one step from d₀: the moments hold d₀(1 − β)g, so each group moves by η̂·m/(√v + dε) with
    # η̂ = d₀·lr (d moved from d₀ only after the moments were formed)
    a, b = (torch.ones(3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    optimizer = Prodigy([{"params": [a]}, {"params": [b], "lr": 0.25}])
    a.grad, b.grad = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    optimizer.step()
    assert (1 - b.detach()) / (1 - a.detach()) == pytest.approx(torch.full((3,), 0.25))
