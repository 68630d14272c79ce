"""Adafactor against torch.optim.Adafactor and Keras 3 Adafactor: float64, 120 steps,
0-D/1-D/2-D/4-D parameters in two groups, a state_dict round trip mid-run
(tests/modern_harness.py)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from optimlab.optim.adafactor import Adafactor
from tests import modern_harness as harness
from tests.keras_quirks import keras_float64_kept_float64
from tests.test_keras_parity import keras_floatx

keras = pytest.importorskip("keras")

#: every hyperparameter away from its default in one run (the harness costs ~1 s a run)
OPTIONS = [
    {},
    {"weight_decay": 0.1, "beta2_decay": -0.5, "d": 2.0, "eps": (1e-3, 1e-2)},
    {"maximize": True},
]
SECOND = {"lr": 5e-3, "weight_decay": 0.05}
#: the tolerance Keras's float32 rounding of ρ_t, α_t and the RMS values forces when it is not worked around
KERAS_QUIRK_TOLERANCE = 1e-7


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_torch_adafactor(options: dict) -> None:
    def ours(params):
        return Adafactor(harness.groups(params, SECOND), lr=2e-2, **options)

    def theirs(params):
        return torch.optim.Adafactor(harness.groups(params, SECOND), lr=2e-2, **options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def _keras_run(options: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    def keras_adafactor(lr: float, weight_decay=0.0, beta2_decay=-0.8, d=1.0):
        return keras.optimizers.Adafactor(
            learning_rate=lr,
            beta_2_decay=beta2_decay,
            clip_threshold=d,
            weight_decay=weight_decay or None,
        )

    second = {**options, **SECOND}

    def ours(params):
        groups = [{"params": params[:2], **options}, {"params": params[2:], **second}]
        return Adafactor(groups, lr=2e-2, convention="keras")

    def theirs(params):
        return harness.KerasGroups(
            [
                (params[:2], keras_adafactor(2e-2, **options)),
                (params[2:], keras_adafactor(**second)),
            ]
        )

    with keras_floatx(torch.float64):
        mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-1
    return mine, reference


KERAS_OPTIONS = [{}, {"weight_decay": 0.1, "beta2_decay": -0.5, "d": 2.0}]


@pytest.mark.parametrize("options", KERAS_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_keras_adafactor_with_its_float32_rounding_worked_around(options: dict) -> None:
    with keras_float64_kept_float64():
        mine, reference = _keras_run(options)
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_keras_adafactor_as_shipped_rounds_the_step_size_to_float32() -> None:
    """The quirk in one step: U = sign(g) at t = 1, so θ₁ = θ₀ − η·RMS(θ₀)·sign(g) exactly;
    Keras computes RMS(θ₀) in float32 (relative error ~6e-8) unless worked around."""
    generator = torch.Generator().manual_seed(0)
    start, grad = torch.randn(2, 5, generator=generator, dtype=torch.float64).unbind()
    exact = start - 2**-6 * start.square().mean().sqrt() * grad.sign()

    def keras_step() -> torch.Tensor:
        variable = keras.Variable(start.clone(), dtype="float64")
        keras.optimizers.Adafactor(learning_rate=2**-6).apply_gradients([(grad.clone(), variable)])
        return variable.value.detach()

    param = start.clone().requires_grad_()
    ours = Adafactor([param], lr=2**-6, convention="keras")
    param.grad = grad.clone()
    ours.step()
    with keras_floatx(torch.float64):
        shipped = keras_step()
        with keras_float64_kept_float64():
            worked_around = keras_step()
    assert float((param.detach() - exact).abs().max()) <= 1e-15
    assert float((worked_around - exact).abs().max()) <= 1e-15
    assert 1e-10 < float((shipped - exact).abs().max()) <= KERAS_QUIRK_TOLERANCE


def test_loads_torch_adafactor_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    torch_opt = torch.optim.Adafactor(twin_params, lr=2e-2)
    for step in range(10):
        harness.set_grads(twin_params, step)
        torch_opt.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = Adafactor(params, lr=2e-2)
    ours.load_state_dict(torch_opt.state_dict())
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        torch_opt.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


@pytest.mark.parametrize("convention", ["torch", "keras"])
def test_where_each_convention_measures_rms_under_weight_decay(convention: str) -> None:
    """Keras decays first, then takes RMS(θ) (= shrink, then the undecayed rule); torch takes
    RMS(θ) first, so its step is 1/(1 − ηλ) times larger (closed form at t = 1: U = sign(g))."""
    lr, decay = 0.1, 0.5
    start = torch.tensor([3.0, -4.0], dtype=torch.float64)
    param = start.clone().requires_grad_()
    optimizer = Adafactor([param], lr=lr, weight_decay=decay, convention=convention)
    param.grad = torch.tensor([2.0, 0.5], dtype=torch.float64)
    optimizer.step()
    shrunk = start * (1 - lr * decay)
    rms = float((start if convention == "torch" else shrunk).square().mean().sqrt())
    expected = shrunk - lr * rms * torch.tensor([1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-12)


def test_factors_the_last_two_dimensions_of_a_conv_kernel() -> None:
    conv = torch.zeros(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    optimizer = Adafactor([conv])
    conv.grad = torch.ones_like(conv)
    optimizer.step()
    state = optimizer.state[conv]
    assert state["row_var"].shape == (3, 2, 4, 1)
    assert state["col_var"].shape == (3, 2, 1, 5)
    assert "variance" not in state


def test_first_step_closed_form() -> None:
    # t = 1: β̂ = 0 so V = g²; U = g/|g| = sign(g), RMS(U) = 1, no clip; α = max(ε₂, RMS θ)·min(η, 1)
    param = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)
    optimizer = Adafactor([param], lr=0.1)
    param.grad = torch.tensor([2.0, 0.5], dtype=torch.float64)
    optimizer.step()
    rms = (12.5) ** 0.5
    expected = torch.tensor([3.0 - 0.1 * rms, -4.0 - 0.1 * rms], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": 1e-3}, r"Adafactor: invalid eps=0.001; eps must be a pair"),
        (
            {"eps": (-1.0, 1e-3)},
            r"Adafactor: invalid eps\[0\]=-1.0; eps\[0\] must be in \(0, inf\)",
        ),
        ({"beta2_decay": 0.5}, r"Adafactor: invalid beta2_decay=0.5; beta2_decay must be in"),
        ({"d": 0.5}, r"Adafactor: invalid d=0.5; d must be in \[1, inf\)"),
        ({"lr": torch.full((2, 1), 0.1)}, r"(?s)Adafactor: invalid lr=.*one-element tensor"),
    ],
)
def test_bad_hyperparameter_names_argument_value_and_range(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Adafactor([torch.zeros(2, requires_grad=True)], **options)
