"""RAdam against torch.optim.RAdam: float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two
groups, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.radam import RAdam, rectification
from tests import modern_harness as harness

OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True},
    {"maximize": True},
    {"betas": (0.5, 0.9), "eps": 1e-6},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_torch_radam(options: dict) -> None:
    second = {"lr": 5e-3, "betas": (0.8, 0.99)}

    def ours(params):
        return RAdam(harness.groups(params, second), lr=1e-2, **options)

    def theirs(params):
        return torch.optim.RAdam(harness.groups(params, second), lr=1e-2, **options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_loads_torch_radam_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    torch_opt = torch.optim.RAdam(twin_params, lr=1e-2)
    for step in range(10):
        harness.set_grads(twin_params, step)
        torch_opt.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = RAdam(params, lr=1e-2)
    ours.load_state_dict(torch_opt.state_dict())
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        torch_opt.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


def test_rectification_switches_on_after_rho_exceeds_five() -> None:
    # closed form: rho_t = rho_inf - 2 t b^t / (1 - b^t); with b = 0.999, rho_t > 5 from t = 6
    assert [rectification(0.999, t) is None for t in range(1, 8)] == [True] * 5 + [False] * 2
    assert rectification(0.999, 10**6) == pytest.approx(1.0)


def test_bad_hyperparameter_names_argument_value_and_range() -> None:
    with pytest.raises(ValueError, match=r"RAdam: invalid lr=-1"):
        RAdam([torch.zeros(2, requires_grad=True)], lr=-1)
