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
from optimlab.optim.registry import create, list_optimizers

STEPS = 40


def plain_loop(function: str, name: str, lr: float, start: tuple[float, float]) -> np.ndarray:
    landscape = get_function(function)
    param = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    lr_tensor = torch.tensor([[lr]], dtype=torch.float64)
    optimizer = create(name, [param], impl="reference", lr=lr_tensor)
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
