"""Trajectories of real optimizers on bfloat16 weights (the ``bf16-stagnation`` scenario).

The batched landscape runner simulates every row in float64, which is the point of it: no
rounding gets in the way of the phenomenon a surface shows. Rounding *is* the phenomenon here,
so each configuration runs the real optimizer class (``optimlab.create``) on a bfloat16 tensor
holding the point (x, y): the gradient of the float64 surface at the bfloat16 point, cast to
bfloat16, is the gradient the optimizer sees, and the optimizer's own rounding (to nearest, or
``stochastic_rounding=True``) decides whether the weight moves. The result is an ordinary
``Batch`` (float64 positions of the bfloat16 points), so metrics, tables, plots and
``trajectories.json`` are the landscape's usual ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from optimlab.landscapes.experiment import build_configs, collect_runs
from optimlab.landscapes.functions import Landscape, Point
from optimlab.landscapes.metrics import compute
from optimlab.landscapes.results import LandscapeResult
from optimlab.landscapes.runner import Batch


def _trajectories(landscape: Landscape, rows: list[tuple[str, dict, Point]], steps: int):
    """Positions [rows, steps + 1, 2]: one optimizer per row, one gradient call per step."""
    import optimlab

    weights = [
        torch.nn.Parameter(torch.tensor(start, dtype=torch.float64).to(torch.bfloat16))
        for _, _, start in rows
    ]
    optimizers = [
        optimlab.create(name, [w], **options) for (name, options, _), w in zip(rows, weights)
    ]
    positions = np.empty((len(rows), steps + 1, 2))
    points = torch.stack([w.detach().double() for w in weights])
    positions[:, 0] = points.numpy()
    for t in range(1, steps + 1):
        grads = landscape.gradient(points).to(torch.bfloat16)
        for w, optimizer, grad in zip(weights, optimizers, grads):
            w.grad = grad.clone()
            optimizer.step()
        points = torch.stack([w.detach().double() for w in weights])
        positions[:, t] = points.numpy()
    return positions


def run_bfloat16(
    landscape: Landscape, optimizers: str, starts: Sequence[Point], steps: int
) -> LandscapeResult:
    """Each configuration of the spec `optimizers` from each start, on bfloat16 weights."""
    configs = build_configs(optimizers)
    rows = [(k, start) for k, _ in enumerate(configs) for start in starts]
    positions = _trajectories(
        landscape,
        [
            (configs[k].name, {**configs[k].hyperparameters, "lr": configs[k].lrs[0]}, start)
            for k, start in rows
        ],
        steps,
    )
    flat = torch.from_numpy(positions.reshape(-1, 2))
    losses = landscape.fn(flat).numpy().reshape(len(rows), steps + 1)
    xmin, xmax, ymin, ymax = landscape.box
    x, y = positions[..., 0], positions[..., 1]
    outside = (x < xmin) | (x > xmax) | (y < ymin) | (y > ymax)
    finite = np.isfinite(losses)
    never = np.full(len(rows), -1)
    batch = Batch(
        landscape=landscape,
        configs=configs,
        starts=list(starts),
        seeds=[0],
        steps=steps,
        noise=0.0,
        row_config=np.array([k for k, _ in rows]),
        row_lr=np.array([configs[k].lrs[0] for k, _ in rows]),
        row_start=np.array([list(starts).index(start) for _, start in rows]),
        row_seed=np.zeros(len(rows), dtype=int),
        positions=positions,
        losses=losses,
        diverged_at=np.where(finite.all(axis=1), never, np.argmin(finite, axis=1)),
        stopped_at=never.copy(),
        left_at=np.where(outside.any(axis=1), outside.argmax(axis=1), never),
    )
    runs = collect_runs(batch, compute(batch), list(range(len(rows))))
    return LandscapeResult(landscape, steps, 0.0, runs, {}, batch)
