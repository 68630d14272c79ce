"""AdEMAMix against pytorch-optimizer's AdEMAMix: float64, 120 steps, 0-D/1-D/2-D/4-D parameters
in two groups, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import math

import pytest
import torch

from optimlab.optim.ademamix import AdEMAMix, schedule_alpha, schedule_beta3
from tests import modern_harness as harness

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

#: the second group: its own lr and betas, L2 weight decay, a warm-up shorter than the run
SECOND = {"lr": 5e-3, "betas": (0.8, 0.99, 0.999), "weight_decay": 0.05, "t_alpha_beta3": 40.0}
OPTIONS = [
    {},
    {"weight_decay": 0.1, "weight_decouple": True, "alpha": 2.0, "t_alpha_beta3": 200.0},
    {"weight_decay": 0.01, "weight_decouple": True, "fixed_decay": True, "eps": 1e-6},
    {"maximize": True},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_pytorch_optimizer_ademamix(options: dict) -> None:
    def ours(params):
        return AdEMAMix(harness.groups(params, SECOND), lr=1e-2, **options)

    def theirs(params):
        return pytorch_optimizer.AdEMAMix(harness.groups(params, SECOND), lr=1e-2, **options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_warm_up_schedules_closed_form() -> None:
    # α rises linearly to α at T; β₃'s half-life 1/ln β rises linearly from β₁'s to β₃'s
    assert [schedule_alpha(5.0, 10.0, t) for t in (1, 5, 10, 20)] == [0.5, 2.5, 5.0, 5.0]
    assert schedule_beta3(0.9, 0.9999, 10.0, 0) == pytest.approx(0.9)
    assert schedule_beta3(0.9, 0.9999, 10.0, 10) == pytest.approx(0.9999)
    halfway = schedule_beta3(0.9, 0.9999, 10.0, 5)
    expected = 1 / (0.5 / math.log(0.9) + 0.5 / math.log(0.9999))
    assert math.log(halfway) == pytest.approx(expected)
    assert schedule_beta3(0.9, 0.9999, None, 3) == 0.9999


def test_loads_pytorch_optimizer_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    theirs = pytorch_optimizer.AdEMAMix(
        twin_params, lr=1e-2, weight_decay=0.1, weight_decouple=True, t_alpha_beta3=30.0
    )
    for step in range(10):
        harness.set_grads(twin_params, step)
        theirs.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = AdEMAMix(params, lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["decoupled_weight_decay"] is True
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        theirs.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


def test_bad_hyperparameters_name_argument_value_and_range() -> None:
    param = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"AdEMAMix: invalid alpha=-1; alpha must be in \[0"):
        AdEMAMix(param, alpha=-1)
    with pytest.raises(ValueError, match=r"AdEMAMix: invalid t_alpha_beta3=0; .*\(0, inf\)"):
        AdEMAMix(param, t_alpha_beta3=0)
    with pytest.raises(ValueError, match=r"invalid betas\[0\]=0\.0; .*with t_alpha_beta3"):
        AdEMAMix(param, betas=(0.0, 0.999, 0.9999), t_alpha_beta3=10)
