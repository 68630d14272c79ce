"""Loss-landscape slices: filter normalization, slices of a quadratic against its closed form,
PCA of a path lying in a known plane, restore of weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.diagnose.slices import (
    filter_normalized_direction,
    path_slice,
    pca_directions,
    slice_1d,
    slice_2d,
    training_path,
    zeroed_parameters,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from intra-op threads, and under ``pytest -n 2`` on two cores
    the workers' spinning threads slow each other down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_filter_normalization_matches_each_filter_and_zeroes_bias_and_norm_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(8, 3))
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    names = [n for n, _ in model.named_parameters()]
    assert zeroed_parameters(model) == {"0.bias", "1.weight", "1.bias", "3.bias"}
    for name, param, d in zip(names, model.parameters(), direction):
        if name in {"0.bias", "1.weight", "1.bias", "3.bias"}:
            assert torch.count_nonzero(d) == 0
        else:
            w_rows = param.detach().reshape(param.shape[0], -1).norm(dim=1)
            d_rows = d.reshape(param.shape[0], -1).norm(dim=1)
            assert torch.allclose(w_rows, d_rows, rtol=1e-5)
            assert not torch.allclose(d, param.detach())  # random, not a copy of the weights


class Quadratic(nn.Module):
    """L(θ) = ½ (θ − c)ᵀ A (θ − c) through the model/loss interface (the output is θ − c)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta - x.mean(0)


A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)


def quadratic_loss(output: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
    return 0.5 * output @ A @ output


def closed_form(theta: torch.Tensor, c: torch.Tensor) -> float:
    r = theta - c
    return float(0.5 * r @ A @ r)


def test_slices_of_a_quadratic_equal_the_closed_form():
    model = Quadratic()
    c = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    data = (c.expand(4, 3).clone(), torch.zeros(4))
    theta = model.theta.detach().clone()
    d1 = [torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)]
    d2 = [torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)]
    line = slice_1d(model, data, quadratic_loss, d1, span=2.0, points=9)
    for alpha, loss in zip(line.alphas, line.losses):
        assert loss == pytest.approx(closed_form(theta + alpha * d1[0], c), rel=1e-12)
    plane = slice_2d(model, data, quadratic_loss, (d1, d2), span=1.0, points=5)
    for i, beta in enumerate(plane.betas):
        for j, alpha in enumerate(plane.alphas):
            expected = closed_form(theta + alpha * d1[0] + beta * d2[0], c)
            assert plane.losses[i][j] == pytest.approx(expected, rel=1e-12)
    assert plane.center_loss == pytest.approx(closed_form(theta, c))
    assert torch.equal(model.theta.detach(), theta)  # restored
    # a 1-D parameter that is not a bias counts as one filter: same norm as θ
    random = filter_normalized_direction(model, torch.Generator().manual_seed(0))[0]
    assert float(random.norm()) == pytest.approx(float(theta.norm()))


def test_pca_of_a_path_in_a_known_plane():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.linalg.qr(torch.randn(50, 2, generator=generator, dtype=torch.float64))[0].T
    end = torch.randn(50, generator=generator, dtype=torch.float64)
    t = torch.linspace(0, 1, 15, dtype=torch.float64)
    path = [end + 3 * (1 - s) * u + 0.8 * torch.sin(3 * s) * (1 - s) * v for s in t]
    directions, coordinates, explained = pca_directions(path)
    assert sum(explained) == pytest.approx(1.0)  # the plane holds the whole path
    assert explained[0] > explained[1]
    # distances between checkpoints are preserved by the projection
    for i in range(len(path)):
        for j in range(i):
            assert float((coordinates[i] - coordinates[j]).norm()) == pytest.approx(
                float((path[i] - path[j]).norm()), rel=1e-9
            )
    assert coordinates[-1].abs().max() < 1e-12  # the end is the origin
    assert torch.allclose(directions @ directions.T, torch.eye(2, dtype=torch.float64))


def test_training_path_and_its_slice_restore_model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = (torch.randn(40, 4), torch.randn(40, 2))
    before = [p.detach().clone() for p in model.parameters()]
    path = training_path(model, data, nn.functional.mse_loss, optimizer, steps=30,
                         checkpoints=7, batch_size=10)  # fmt: skip
    assert len(path) == 7
    assert torch.equal(path[0], torch.cat([p.reshape(-1) for p in before]).double())
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert optimizer.state_dict()["state"] == {}
    result = path_slice(model, data, nn.functional.mse_loss, path, points=5)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert result.path[-1] == pytest.approx((0.0, 0.0), abs=1e-9)
    assert result.slice.center_loss == pytest.approx(result.path_losses[-1], rel=1e-6)
    assert result.path_losses[-1] < result.path_losses[0]  # training lowered the loss
    # the grid covers every projected checkpoint
    alphas, betas = result.slice.alphas, result.slice.betas
    for a, b in result.path:
        assert alphas[0] <= a <= alphas[-1] and betas[0] <= b <= betas[-1]


def test_bad_input():
    model = nn.Linear(2, 1)
    data = (torch.randn(4, 2), torch.randn(4, 1))
    with pytest.raises(ValueError, match="points=2"):
        slice_1d(model, data, nn.functional.mse_loss, points=2)
    with pytest.raises(ValueError, match="span=-1"):
        slice_1d(model, data, nn.functional.mse_loss, span=-1.0)
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        pca_directions([torch.zeros(3), torch.ones(3)])
    with pytest.raises(ValueError, match="does not move"):
        pca_directions([torch.ones(3)] * 4)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        slice_1d(nn.ReLU(), data, nn.functional.mse_loss)
