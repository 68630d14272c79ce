"""The batched runner steps each optimizer exactly as a plain training loop would.

The runner calls each class's own ``step`` without torch's per-call wrapper (profiler record and
hooks) and takes one gradient for all rows; neither may change a number.  Reference: the loop
every PyTorch user writes — ``loss.backward(); optimizer.step()`` — on the same class, compared
bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optimlab.landscapes.experiment import build_configs
from optimlab.landscapes.functions import get_function
from optimlab.landscapes.runner import run_batch
from optimlab.optim.registry import create, get_info, list_optimizers

STEPS = 40


def plain_loop(function: str, name: str, lr: float, start: tuple[float, float]) -> np.ndarray:
    landscape = get_function(function)
    param = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    if get_info(name).elementwise:  # the runner's way: a tensor lr, one per row
        optimizer = create(
            name, [param], impl="reference", lr=torch.tensor([[lr]], dtype=torch.float64)
        )
    else:  # one optimizer per row, with a number
        optimizer = create(name, [param], lr=lr)
    path = [param.detach().clone()]
    for _ in range(STEPS):
        optimizer.zero_grad()
        landscape.fn(param).sum().backward()
        optimizer.step()
        path.append(param.detach().clone())
    return torch.cat(path).numpy()


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_moves_as_in_a_plain_training_loop(name: str) -> None:
    landscape = get_function("rosenbrock")
    start = (-1.2, 1.0)
    lr = 1e-3
    # two configurations in one batch (rows of other optimizers ride along), two starts
    configs = build_configs(f"{name}:lr={lr},sgd:lr=2e-4")
    batch = run_batch(landscape, configs, [start, (0.5, -0.5)], STEPS)
    row = int(np.flatnonzero((batch.row_config == 0) & (batch.row_start == 0))[0])
    assert batch.diverged_at[row] == -1 and batch.stopped_at[row] == -1
    expected = plain_loop("rosenbrock", name, lr, start)
    np.testing.assert_array_equal(batch.positions[row], expected)


def noisy_plain_loop(function: str, name: str, lr: float, sigma: float, seed: int) -> np.ndarray:
    """The plain loop with the runner's gradient noise: loss = Σf + σ·ξ_t·θ, ξ_t ~ N(0, I) from
    a generator seeded with the row's seed (the runner's definition, docs/landscapes.md)."""
    landscape = get_function(function)
    param = torch.tensor([landscape.default_start], dtype=torch.float64, requires_grad=True)
    optimizer = create(
        name, [param], impl="reference", lr=torch.tensor([[lr]], dtype=torch.float64)
    )
    xi = torch.randn(STEPS, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    path = [param.detach().clone()]
    for t in range(STEPS):
        optimizer.zero_grad()
        loss = landscape.fn(param).sum() + ((sigma * xi)[t][None] * param).sum()
        loss.backward()
        optimizer.step()
        path.append(param.detach().clone())
    return torch.cat(path).numpy()


@pytest.mark.parametrize("function", ["rosenbrock", "rastrigin"])
def test_gradient_noise_moves_as_in_a_plain_training_loop(function: str) -> None:
    # Rastrigin's f takes the whole point, so the noise term meets f's gradient in another
    # order than on the surfaces written per coordinate: both checked bit for bit.
    configs = build_configs("adam:lr=0.01,momentum:lr=0.001")
    landscape = get_function(function)
    batch = run_batch(landscape, configs, [landscape.default_start], STEPS, noise=0.5, seeds=[3])
    for row, (name, lr) in enumerate((("adam", 0.01), ("momentum", 0.001))):
        expected = noisy_plain_loop(function, name, lr, 0.5, 3)
        np.testing.assert_array_equal(batch.positions[row], expected)


def fused_plain_loop(name: str, lr: float, start: tuple[float, float]) -> np.ndarray:
    """The plain loop with the optimizer as a user creates it: a number lr, impl="auto"."""
    landscape = get_function("rosenbrock")
    param = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    optimizer = create(name, [param], lr=lr)
    path = [param.detach().clone()]
    for _ in range(STEPS):
        optimizer.zero_grad()
        landscape.fn(param).sum().backward()
        optimizer.step()
        path.append(param.detach().clone())
    return torch.cat(path).numpy()


@pytest.mark.parametrize("name", list_optimizers())
def test_impl_auto_moves_as_a_plain_loop_with_the_fused_kernels(name: str) -> None:
    # impl="auto" (optimlab serve's choice): a one-lr configuration gets its lr as a number, so
    # its optimizer takes the fused kernel where it has one.  Bit for bit the plain loop of an
    # optimizer created the same way; within rounding of the reference rules (the kernels'
    # parity guarantee), stated here as the tolerance of the torch.optim comparison
    # (rtol 1e-10, atol 1e-12) over these 40 well-conditioned steps.
    landscape = get_function("rosenbrock")
    start, lr = (-1.2, 1.0), 1e-3
    configs = build_configs(f"{name}:lr={lr},sgd:lr=2e-4")
    fused = run_batch(landscape, configs, [start, (0.5, -0.5)], STEPS, impl="auto")
    reference = run_batch(landscape, configs, [start, (0.5, -0.5)], STEPS)
    row = int(np.flatnonzero((fused.row_config == 0) & (fused.row_start == 0))[0])
    np.testing.assert_array_equal(fused.positions[row], fused_plain_loop(name, lr, start))
    np.testing.assert_allclose(fused.positions, reference.positions, rtol=1e-10, atol=1e-12)


def test_impl_auto_takes_the_kernels_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.optim.kernels import dispatch

    calls: list[str] = []
    original = dispatch.FastStep.__call__

    def counted(self: dispatch.FastStep, optimizer: object, group: dict) -> bool:
        done = original(self, optimizer, group)
        if done:
            calls.append(type(optimizer).__name__)
        return done

    monkeypatch.setattr(dispatch.FastStep, "__call__", counted)
    landscape = get_function("ravine")
    configs = build_configs("sgd:lr=0.1,adam:lr=0.1,nadam:lr=0.1")
    run_batch(landscape, configs, [(-7.0, 2.0)], 10)
    assert calls == []  # the default: the reference rules
    run_batch(landscape, configs, [(-7.0, 2.0)], 10, impl="auto")
    # every step after the first (which builds the fast path) of each of the three
    assert sorted(set(calls)) == ["Adam", "NAdam", "SGD"] and len(calls) == 3 * 9


def test_bad_impl_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"invalid impl='fused'; valid: reference, auto"):
        run_batch(get_function("ravine"), build_configs("sgd"), [(-7.0, 2.0)], 3, impl="fused")
