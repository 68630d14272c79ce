"""LAMB against pytorch-optimizer's Lamb (convention="torch") and Keras 3 Lamb (convention=
"keras"): float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two groups, a state_dict round trip
mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from optimlab.optim.lamb import Lamb
from tests import modern_harness as harness
from tests.test_keras_parity import keras_floatx

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
keras = pytest.importorskip("keras")

#: every hyperparameter away from its default in one run (the harness costs ~1 s a run)
OPTIONS = [{}, {"weight_decay": 0.1, "betas": (0.5, 0.9), "eps": 1e-4}]
SECOND = {"lr": 5e-3, "betas": (0.8, 0.99), "weight_decay": 0.05}


@pytest.mark.parametrize(
    "options", [*OPTIONS, {"maximize": True}], ids=lambda o: ",".join(o) or "defaults"
)
def test_matches_pytorch_optimizer_lamb(options: dict) -> None:
    def ours(params):
        return Lamb(harness.groups(params, SECOND), lr=2e-2, **options)

    def theirs(params):
        return pytorch_optimizer.Lamb(harness.groups(params, SECOND), lr=2e-2, **options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_keras_lamb(options: dict) -> None:
    def keras_lamb(lr: float, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-7):
        return keras.optimizers.Lamb(
            learning_rate=lr,
            beta_1=betas[0],
            beta_2=betas[1],
            epsilon=eps,
            weight_decay=weight_decay or None,
        )

    def ours(params):
        return Lamb(harness.groups(params, SECOND), lr=2e-2, convention="keras", **options)

    def theirs(params):
        return harness.KerasGroups(
            [
                (params[:2], keras_lamb(2e-2, **options)),
                (params[2:], keras_lamb(**{**options, **SECOND})),
            ]
        )

    with keras_floatx(torch.float64):
        mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


@pytest.mark.parametrize(
    ("convention", "distance"),
    # θ₀ = (30, 40): ‖θ₀‖ = 50.  t = 1: m = (1−β₁)g, v = (1−β₂)g², so r ≈ sign(g) (Keras, both
    # moments corrected) or ≈ 0.1/√0.001·sign(g) (torch, v uncorrected), ‖r‖ = √2·|r₁|.
    # Keras: θ₁ = θ₀ − η·50/√2·sign(g).  pytorch-optimizer: ‖θ₀‖ capped at 10 and the step
    # divided by 1 − β₁ = 0.1: θ₁ = θ₀ − η·(10/0.1)/√2·sign(g).
    [("keras", 50 / math.sqrt(2)), ("torch", 100 / math.sqrt(2))],
)
def test_first_step_closed_form_shows_where_the_conventions_differ(
    convention: str, distance: float
) -> None:
    param = torch.tensor([30.0, 40.0], dtype=torch.float64, requires_grad=True)
    optimizer = Lamb([param], lr=0.01, convention=convention)
    param.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    optimizer.step()
    expected = torch.tensor([30.0 - 0.01 * distance, 40.0 + 0.01 * distance], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-5, atol=0)


def test_trust_ratio_is_one_for_a_zero_parameter() -> None:
    # ‖θ‖ = 0: the ratio would be 0 and the tensor would never move; both references use 1
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = Lamb([param], lr=0.1, convention="keras")
    param.grad = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    optimizer.step()
    assert param.detach()[0] < 0 < param.detach()[1]


def test_bad_hyperparameter_names_argument_value_and_range() -> None:
    with pytest.raises(ValueError, match=r"Lamb: invalid eps=0; eps must be in \(0, inf\)"):
        Lamb([torch.zeros(2, requires_grad=True)], eps=0)
