"""Gradient flow: the textbook cases (deep sigmoid with Xavier vanishes; ReLU + He + batch norm
does not), exploding and dead-ReLU flags on constructed nets, advice, restore, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optimlab.diagnose.gradflow import gradient_flow, weighted_layers
from optimlab.optim import create
from optimlab.problems import get_problem


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from intra-op threads, and under ``pytest -n 2`` on two cores
    the workers' spinning threads slow each other down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flow(spec: str, seed: int = 0):
    problem = get_problem(spec)
    model = problem.build_model(seed)
    optimizer = create("adam", model.parameters())
    return gradient_flow(model, problem.train, problem.loss_fn, optimizer,
                         batch_size=problem.batch_size, seed=seed)  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_deep_sigmoid_with_xavier_init_is_flagged_as_vanishing(seed):
    result = flow("deep-mlp:depth=10:activation=sigmoid:init=xavier", seed)
    assert len(result.layers) == 11
    assert result.vanishing and not result.exploding
    # σ' ≤ 1/4 per layer: over ten layers the gradient shrinks by far more than the threshold.
    assert result.shrink_factor > 1e4
    norms = [layer.grad_norm for layer in result.layers]
    assert norms == sorted(norms)  # monotone from input to output
    advice = " ".join(result.advice)
    for fix in ("ReLU", "He", "batch normalization", "residual"):
        assert fix in advice


@pytest.mark.parametrize("seed", [0, 1])
def test_relu_he_batchnorm_is_not_vanishing(seed):
    result = flow("deep-mlp:depth=10:activation=relu:init=he:batchnorm=true", seed)
    assert not result.vanishing and not result.exploding and not result.dead_relu
    assert result.shrink_factor < 10
    assert "healthy" in result.advice[0]
    assert all(layer.dead_fraction is not None for layer in result.layers[:-1])


def test_exploding_when_the_input_layer_gets_the_largest_gradient():
    """For a linear chain, ‖∂L/∂W_l‖ ∝ ‖δ_l‖·‖h_{l−1}‖, so the output/input ratio is the gain of
    the first layer over the gain of the last: a tiny first and a huge last layer explode."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(8, n, bias=False) for n in (8, 8, 8, 2)))
    with torch.no_grad():
        model[0].weight.mul_(1e-2)
        model[3].weight.mul_(1e2)
    data = (torch.randn(32, 8), torch.randn(32, 2))
    result = gradient_flow(model, data, nn.functional.mse_loss,
                           torch.optim.SGD(model.parameters(), lr=1e-6))  # fmt: skip
    assert result.exploding and not result.vanishing
    assert result.shrink_factor < 1e-2
    assert any("clip" in line for line in result.advice)


def test_nonfinite_gradients_are_exploding():
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1))
    data = (torch.full((4, 2), 1e30), torch.zeros(4, 1))  # (1e30)² overflows float32
    result = gradient_flow(model, data, nn.functional.mse_loss,
                           torch.optim.SGD(model.parameters(), lr=0.1), steps=1)  # fmt: skip
    assert result.nonfinite and result.exploding
    assert result.to_json()["layers"][-1]["grad_norm"] is None  # JSON has no infinity


def test_dead_relus_are_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].bias[:12] = -100.0  # 12 of 16 units never fire
    data = (torch.randn(64, 4), torch.randint(0, 3, (64,)))
    result = gradient_flow(model, data, nn.functional.cross_entropy,
                           torch.optim.SGD(model.parameters(), lr=0.01), batch_size=32)  # fmt: skip
    assert result.dead_relu
    assert result.layers[0].dead_fraction == pytest.approx(12 / 16)
    assert any("Leaky ReLU" in line for line in result.advice)


def test_update_ratio_is_the_relative_step_of_plain_gradient_descent():
    """With SGD, ΔW = −η·g exactly, so ‖ΔW‖/‖W‖ = η‖g‖/‖W‖ at every step (one step here)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    data = (torch.randn(10, 3), torch.randn(10, 2))
    result = gradient_flow(model, data, nn.functional.mse_loss,
                           torch.optim.SGD(model.parameters(), lr=0.05), steps=1,
                           batch_size=None)  # fmt: skip
    for layer in result.layers:
        assert layer.update_ratio == pytest.approx(0.05 * layer.grad_norm / layer.weight_norm,
                                                   rel=1e-4)  # fmt: skip


def test_model_and_optimizer_are_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    optimizer = create("rmsprop", model.parameters(), lr=0.01)
    before = copy.deepcopy(model.state_dict())
    data = (torch.randn(20, 3), torch.randn(20, 2))
    gradient_flow(model, data, nn.functional.mse_loss, optimizer, steps=3, batch_size=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {}


def test_bad_input():
    model = nn.Sequential(nn.Linear(2, 2))
    data = (torch.randn(4, 2), torch.randn(4, 2))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps=0"):
        gradient_flow(model, data, nn.functional.mse_loss, sgd, steps=0)
    with pytest.raises(ValueError, match="vanishing_factor=1"):
        gradient_flow(model, data, nn.functional.mse_loss, sgd, vanishing_factor=1)
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        theta = nn.ParameterList([nn.Parameter(torch.zeros(2))])
        gradient_flow(theta, data, nn.functional.mse_loss, sgd)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        gradient_flow(nn.ReLU(), data, nn.functional.mse_loss, sgd)
    assert [name for name, _ in weighted_layers(model)] == ["0"]
