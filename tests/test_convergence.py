"""Each optimizer, with a reasonable learning rate, brings classic problems near their minimum.

Minima are known in closed form: the convex quadratic 0.5 (x - c)^T A (x - c) has its minimum at c,
Rosenbrock (1 - x)^2 + 100 (y - x^2)^2 at (1, 1).
"""

from __future__ import annotations

import pytest
import torch

import optimlab
from optimlab.optim.registry import REGISTRY

# Each optimizer declares where it converges (``OptimizerInfo.convergence``): learning rates picked
# once from a coarse log grid for each problem (not tuned to the tolerance).  Rosenbrock: RMSProp's
# constant-size steps orbit the minimum at a distance set by lr, AdaDelta crawls along the curved
# valley floor (its steps are in units of past updates), and AdamW's decoupled decay (1e-2) moves
# its fixed point off (1, 1).


@pytest.mark.parametrize("name", list(REGISTRY))
def test_convex_quadratic_reaches_its_minimum(name: str) -> None:
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a = m @ m.T / 6 + torch.eye(6, dtype=torch.float64)  # condition number about 10
    c = torch.linspace(-1, 2, 6, dtype=torch.float64)
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    optimizer = optimlab.create(name, [x], lr=REGISTRY[name].convergence.quadratic_lr)
    for _ in range(1500):
        optimizer.zero_grad()
        (0.5 * (x - c) @ a @ (x - c)).backward()
        optimizer.step()
    assert torch.linalg.vector_norm(x.detach() - c) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_rosenbrock_reaches_the_valley_floor_minimum(name: str) -> None:
    lr, steps, tolerance = REGISTRY[name].convergence.rosenbrock
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    optimizer = optimlab.create(name, [xy], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        x, y = xy
        ((1 - x) ** 2 + 100 * (y - x**2) ** 2).backward()
        optimizer.step()
    start_distance = 2.69  # |(-1.5, 2) - (1, 1)|
    distance = torch.linalg.vector_norm(xy.detach() - torch.ones(2, dtype=torch.float64))
    assert distance < tolerance < start_distance
