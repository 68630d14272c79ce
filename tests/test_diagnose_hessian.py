"""Hessian diagnostics against closed forms: the noisy quadratic's known Q, a tiny network's
dense Hessian from torch.autograd.functional.hessian, the saddle of x² − y², and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from optimlab.diagnose.hessian import (
    HessianOperator,
    SecondDerivativeError,
    analyze_hessian,
    eigenvalues,
    hutchinson_trace,
    lanczos,
    spectral_density,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from intra-op threads, and under ``pytest -n 2`` on two cores
    the workers' spinning threads slow each other down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quadratic():
    from optimlab.problems import get_problem

    problem = get_problem("quadratic-deep")
    model = problem.build_model(0)
    operator = HessianOperator(model, problem.train, problem.loss_fn)
    exact = torch.linalg.eigvalsh(problem.hessian())
    return problem, model, operator, exact


def test_quadratic_lambda_max_within_1_percent_in_30_hvps(quadratic):
    _, _, operator, exact = quadratic
    assert exact[-1].item() == pytest.approx(53.13, abs=0.01)  # DeepOBS's spectrum
    calls = operator.calls
    found = eigenvalues(operator, operator.dim, k=1, smallest=False, max_iter=30)
    assert operator.calls - calls == found.hvps <= 30
    assert found.top[0] == pytest.approx(53.13, rel=0.01)
    assert found.top[0] == pytest.approx(exact[-1].item(), rel=1e-4)


def test_quadratic_lambda_min_trace_and_condition_number(quadratic):
    problem, model, _, exact = quadratic
    result = analyze_hessian(model, problem.train, problem.loss_fn, density=False)
    assert result.mode == "eval"
    assert result.lambda_max == pytest.approx(exact[-1].item(), rel=1e-4)
    assert result.top_eigenvalues == pytest.approx(exact[-5:].flip(0).tolist(), rel=1e-4)
    assert result.lambda_min == pytest.approx(exact[0].item(), rel=1e-2)
    assert abs(result.lambda_min - exact[0].item()) <= result.lambda_min_bound + 1e-5
    trace = problem.hessian().trace().item()
    assert result.trace == pytest.approx(trace, rel=5e-3)
    assert abs(result.trace - trace) <= 4 * result.trace_stderr + 1e-3
    assert result.condition_number == pytest.approx((exact[-1] / exact[0]).item(), rel=1e-2)
    assert not result.negative_curvature


def test_plain_and_deflated_hutchinson_agree_with_the_trace(quadratic):
    problem, _, operator, _ = quadratic
    trace = problem.hessian().trace().item()
    plain, plain_error = hutchinson_trace(operator, operator.dim, samples=300, seed=3)
    assert abs(plain - trace) <= 4 * plain_error
    partial = eigenvalues(operator, operator.dim, k=5, smallest=False, max_iter=20)
    deflated, deflated_error = hutchinson_trace(
        operator, operator.dim, samples=30, seed=4, deflate=partial.lanczos
    )
    assert abs(deflated - trace) <= 4 * deflated_error
    assert deflated_error < plain_error / 10  # the 10 large eigenvalues were the variance


def test_spectral_density_is_a_density_with_the_right_mean(quadratic):
    _, _, operator, exact = quadratic
    sld = spectral_density(operator, operator.dim, runs=4, iterations=30, seed=1)
    grid = torch.tensor(sld.grid)
    density = torch.tensor(sld.density)
    step = float(grid[1] - grid[0])
    assert float(density.sum()) * step == pytest.approx(1.0, abs=1e-3)
    mean = float((grid * density).sum()) * step
    assert mean == pytest.approx(float(exact.mean()), rel=0.15)  # tr(H)/n, 4 probe vectors
    assert min(min(n) for n in sld.nodes) >= float(exact[0]) - 1e-5
    assert max(max(n) for n in sld.nodes) <= float(exact[-1]) * (1 + 1e-6)  # float32 H·v


class Tiny(nn.Module):
    """2 → 6 → 6 → 2 with tanh: 68 parameters, a Hessian with both signs of curvature."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                                 nn.Linear(6, 2))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            pieces[name] = vector[offset : offset + size].view(shape)
            offset += size
        return nn.functional.mse_loss(functional_call(model, pieces, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_tiny_network_eigenvalues_match_the_dense_hessian():
    torch.manual_seed(0)
    model = Tiny().double()
    x = torch.randn(40, 2, dtype=torch.float64)
    y = torch.randn(40, 2, dtype=torch.float64)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    dim = exact.numel()
    operator = HessianOperator(model, (x, y), nn.functional.mse_loss)
    # Fewer Lanczos steps than parameters: the Krylov space is a proper subspace.
    found = eigenvalues(operator, dim, k=3, max_iter=40, tol=1e-6)
    assert found.hvps <= 40 < dim
    for value, reference in zip(found.top, exact.flip(0)[:3].tolist()):
        assert value == pytest.approx(reference, rel=1e-3)
    assert exact[0] < 0  # the tiny net has negative curvature here
    assert found.smallest == pytest.approx(exact[0].item(), rel=1e-3)
    result = analyze_hessian(model, (x, y), nn.functional.mse_loss, density=False)
    assert abs(result.trace - exact.sum().item()) <= 4 * result.trace_stderr + 1e-9
    assert result.negative_curvature and result.condition_number is None


class Saddle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.point = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point.expand(len(x), 2)


def saddle_loss(output: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
    return (output[:, 0] ** 2 - output[:, 1] ** 2).mean()


def test_negative_curvature_at_the_saddle_of_x2_minus_y2():
    data = (torch.zeros(3, 1), torch.zeros(3))
    said: list[str] = []
    result = analyze_hessian(Saddle(), data, saddle_loss, k=2, progress=said.append)
    # every stage that costs HVPs says so before it starts (the trace and the density used to
    # run silently for minutes on a deep net)
    assert [m.split(" ")[1] for m in said] == ["2", "λmax=2", "trace", "spectral"]
    assert result.lambda_max == pytest.approx(2.0, rel=1e-9)
    assert result.lambda_min == pytest.approx(-2.0, rel=1e-9)
    assert result.negative_curvature
    assert result.condition_number is None
    assert result.trace == pytest.approx(0.0, abs=1e-9)


def test_lanczos_on_a_matrix_with_known_spectrum():
    generator = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(60, 60, generator=generator, dtype=torch.float64))
    values = torch.cat([torch.linspace(-3.0, 1.0, 57, dtype=torch.float64),
                        torch.tensor([4.0, 7.0, 10.0], dtype=torch.float64)])  # fmt: skip
    matrix = q @ torch.diag(values) @ q.T
    result = lanczos(lambda v: matrix @ v, torch.ones(60, dtype=torch.float64), 25)
    ritz, bounds, weights = result.ritz()
    assert ritz[-3:].tolist() == pytest.approx([4.0, 7.0, 10.0], rel=1e-8)
    assert ritz[0].item() == pytest.approx(-3.0, abs=float(bounds[0]) + 1e-12)
    assert float(weights.sum()) == pytest.approx(1.0)
    basis = result.basis
    assert torch.allclose(basis @ basis.T, torch.eye(len(basis), dtype=torch.float64), atol=1e-12)


def test_train_mode_restores_batch_norm_statistics_and_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = (torch.randn(16, 3), torch.randn(16, 1))
    result = analyze_hessian(model, data, nn.functional.mse_loss, mode="train", density=False)
    assert result.mode == "train" and "batch statistics" in result.mode_note
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


class OnceDifferentiableSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def test_operation_without_second_derivative_is_a_clear_error():
    model = nn.Linear(2, 1)
    data = (torch.randn(5, 2), torch.randn(5, 1))

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return OnceDifferentiableSquare.apply(output - target).mean()

    with pytest.raises(SecondDerivativeError, match="cannot be differentiated twice"):
        analyze_hessian(model, data, loss_fn)


def test_model_without_parameters_and_non_scalar_loss_are_clear_errors():
    data = (torch.randn(5, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="has no trainable parameters"):
        HessianOperator(nn.Identity(), data, nn.functional.mse_loss)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        HessianOperator(frozen, data, nn.functional.mse_loss)

    def per_example(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((output - target) ** 2).sum(1)

    with pytest.raises(ValueError, match=r"non-scalar loss of shape \(5,\)"):
        HessianOperator(nn.Linear(2, 2), data, per_example)
    with pytest.raises(ValueError, match="mode='test'; allowed: eval, train"):
        HessianOperator(nn.Linear(2, 2), data, nn.functional.mse_loss, mode="test")
    with pytest.raises(ValueError, match="k=0"):
        eigenvalues(lambda v: v, 3, k=0)


def test_piecewise_linear_loss_has_a_zero_hessian():
    """A loss linear in the parameters has no second-order graph at all: H = 0, not an error."""
    model = nn.Linear(3, 1)
    data = (torch.randn(4, 3), torch.randn(4, 1))
    result = analyze_hessian(model, data, lambda out, _y: out.mean(), density=False)
    assert result.lambda_max == 0.0 and result.lambda_min == 0.0 and result.trace == 0.0
    assert not result.negative_curvature
