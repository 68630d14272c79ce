r"""The batched trajectory runner: many trajectories advance in one vectorized computation.

Every trajectory is one row of a parameter tensor.  Each optimizer configuration owns one
parameter of shape ``[n, 2]`` (its rows: learning rates × starts × noise seeds) and a learning
rate tensor of shape ``[n, 1]``, so one ``optimizer.step()`` of the real optimlab class advances
all ``n`` rows (all optimizers are elementwise: rows never interact).  The loss handed to autograd
is the sum of the per-row values, whose gradient with respect to each row is that row's ∇f.

Fair protocol: every row gets the same step budget; nothing is clipped and no learning rate
decays unless the optimizer's own options say so.  Gradient noise (to mimic minibatch SGD) adds
``σ·ξ_t`` to the gradient, with ξ_t ~ N(0, I) drawn from a generator seeded by the row's noise
seed, so rows with the same seed see the same noise whatever the optimizer or learning rate
(common random numbers make comparisons sharper).

Two different ways of going away are told apart (both recorded):

* **diverged** — the point or its loss becomes non-finite, or the loss grows past
  ``f(θ_0) + GROWTH·s`` with s = max(1, f(θ_0) − f*) (s = max(1, |f(θ_0)|) on surfaces unbounded
  below) and ``GROWTH = 1e6``.  The row is frozen at its last good point: its gradient is routed
  to zero and its point held, so it can poison nothing; ``diverged_at`` records the step.
* **left the plotted region** — the point is outside the plotting box (``left_at``: the first
  step).  That is no failure: an escape from a saddle leaves the box while still descending.  A
  row that gets further than the box enlarged 10× about its centre with its loss not above its
  start value is stopped there (``stopped_at``), since nothing further can be drawn, and it
  would only overflow in the end on a surface unbounded below.

A start must lie within that 10× region and have a finite loss (else ValueError naming the box).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from optimlab.landscapes.functions import Landscape, Point
from optimlab.optim.registry import create, get_info

#: how far outside the plotting box (in multiples of its half-size, about its centre) a descending
#: row is stopped, and a start is refused
DIVERGENCE_FACTOR = 10.0
#: a loss grown past f(θ_0) + GROWTH·max(1, f(θ_0) − f*) counts as diverged
GROWTH = 1e6
MAX_STEPS = 1_000_000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Config:
    """One optimizer configuration: a registry name and hyperparameters (torch.optim names).

    ``lrs`` are the learning rates it runs with (one, or a tuning grid); every other
    hyperparameter is shared by its rows.
    """

    name: str
    hyperparameters: dict[str, Any]
    lrs: tuple[float, ...]
    label: str
    #: whether the spec gave the lr (else it is the optimizer's default, or tuned on a grid)
    given_lr: bool = True


@dataclass
class Batch:
    """The outcome of one batched run: every row's path, loss and divergence step.

    ``positions[i, t]`` is row i's point after t steps (``t = 0`` is the start) and
    ``losses[i, t]`` the true (noise-free) f there.  A diverged row keeps its last good point from
    ``diverged_at[i]`` on; a row stopped far outside the box keeps the point of ``stopped_at[i]``
    after it; ``left_at[i]`` is the first step outside the plotting box.  Each is -1 when it
    never happened.
    """

    landscape: Landscape
    configs: list[Config]
    starts: list[Point]
    seeds: list[int]
    steps: int
    noise: float
    row_config: np.ndarray
    row_lr: np.ndarray
    row_start: np.ndarray
    row_seed: np.ndarray
    positions: np.ndarray
    losses: np.ndarray
    diverged_at: np.ndarray
    stopped_at: np.ndarray
    left_at: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.row_config)


def check_steps(steps: Any) -> int:
    """steps must be an integer in [1, 1e6]."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"invalid steps={steps!r}; steps must be an integer in [1, {MAX_STEPS}]")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"invalid steps={steps!r}; steps must be an integer in [1, {MAX_STEPS}]")
    return int(steps)


def check_start(start: Any) -> Point:
    """A start point is two finite numbers."""
    try:
        x, y = (float(v) for v in start)
    except (TypeError, ValueError):
        raise ValueError(
            f"invalid start={start!r}; a start point must be two finite numbers, e.g. (-7, 2)"
        ) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(
            f"invalid start={start!r}; a start point must be two finite numbers, e.g. (-7, 2)"
        )
    return x, y


def box_text(box: tuple[float, float, float, float]) -> str:
    xmin, xmax, ymin, ymax = box
    return f"[{xmin:g}, {xmax:g}]×[{ymin:g}, {ymax:g}]"


def far_box(landscape: Landscape) -> tuple[float, float, float, float]:
    """The plotting box enlarged DIVERGENCE_FACTOR× about its centre."""
    xmin, xmax, ymin, ymax = landscape.box
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    hx, hy = DIVERGENCE_FACTOR * (xmax - xmin) / 2, DIVERGENCE_FACTOR * (ymax - ymin) / 2
    return cx - hx, cx + hx, cy - hy, cy + hy


def inside(box: tuple[float, float, float, float], point: Point) -> bool:
    xmin, xmax, ymin, ymax = box
    return xmin <= point[0] <= xmax and ymin <= point[1] <= ymax


def check_start_on(landscape: Landscape, start: Any) -> Point:
    """A start of `landscape`: two finite numbers, within the box enlarged 10×, finite loss.

    ValueError names the plotting box otherwise.  (A start outside the plotting box but within
    the 10× region is allowed: the pictures widen to show it; the CLI warns.)
    """
    point = check_start(start)
    far = far_box(landscape)
    if not inside(far, point):
        raise ValueError(
            f"invalid start={point!r} for {landscape.name}: outside {box_text(far)}, the plotting "
            f"box {box_text(landscape.box)} enlarged {DIVERGENCE_FACTOR:g}× (a run from there "
            "shows nothing of the surface); choose a start within it"
        )
    if not math.isfinite(landscape.value(*point)):
        raise ValueError(
            f"invalid start={point!r} for {landscape.name}: f is not finite there (overflow); "
            f"choose a start within the plotting box {box_text(landscape.box)}"
        )
    return point


def check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise ValueError(f"invalid noise={noise!r}; noise σ must be a finite number ≥ 0")
    return float(noise)


def _noise_table(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """ξ of shape [seeds, steps, 2]: each seed's own stream, independent of the other seeds."""
    table = torch.empty(len(seeds), max(steps, 1), 2, dtype=torch.float64)
    for index, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        table[index] = torch.randn(max(steps, 1), 2, generator=generator, dtype=torch.float64)
    return table


def bare_step(optimizer: torch.optim.Optimizer) -> Callable[[torch.optim.Optimizer], Any]:
    """The class's own ``step`` without its decorators, to be called under ``torch.no_grad()``.

    torch wraps every optimizer's ``step`` in a profiler record and its step hooks, and optimlab's
    ``step`` enters ``no_grad`` itself: about half the cost of one step on a parameter of a few
    rows, paid once per optimizer per step.  The runner's optimizers are its own (created here,
    never handed out, no hooks), so the update is the same code with the same numbers."""
    return inspect.unwrap(type(optimizer).step)


def run_batch(
    landscape: Landscape,
    configs: Sequence[Config],
    starts: Sequence[Point],
    steps: int,
    *,
    noise: float = 0.0,
    seeds: Sequence[int] = (0,),
    progress: Progress | None = None,
) -> Batch:
    """Run every (configuration, learning rate, start, seed) row for `steps` steps, together.

    Rows of configuration k are ordered learning rate (outermost), start, seed (innermost).
    """
    steps = check_steps(steps)
    noise = check_noise(noise)
    starts = [check_start_on(landscape, s) for s in starts]
    seeds = [int(s) for s in seeds]
    if not configs or not starts or not seeds:
        raise ValueError("run_batch needs at least one configuration, one start and one seed")
    dtype = torch.float64
    start_grid = torch.tensor(starts, dtype=dtype)
    per_lr = len(starts) * len(seeds)
    start_index = torch.arange(len(starts)).repeat_interleave(len(seeds))
    seed_index = torch.arange(len(seeds)).repeat(len(starts))

    params, optimizers = [], []
    row_config, row_lr, row_start, row_seed = [], [], [], []
    for k, config in enumerate(configs):
        get_info(config.name)  # unknown names fail here, listing the valid ones
        n = len(config.lrs) * per_lr
        lr = torch.tensor(config.lrs, dtype=dtype).repeat_interleave(per_lr)[:, None]
        param = start_grid[start_index].repeat(len(config.lrs), 1).clone().requires_grad_(True)
        # A tensor lr always takes the optimizers' reference path (plain torch ops, elementwise);
        # asking for it directly spares loading the fused-kernel package (numba) for nothing.
        hyperparameters = {"impl": "reference", **config.hyperparameters, "lr": lr}
        optimizers.append(create(config.name, [param], **hyperparameters))
        params.append(param)
        row_config.append(np.full(n, k))
        row_lr.append(lr[:, 0].numpy().copy())
        row_start.append(start_index.repeat(len(config.lrs)).numpy())
        row_seed.append(seed_index.repeat(len(config.lrs)).numpy())
    row_seed_np = np.concatenate(row_seed)
    rows = len(row_seed_np)

    # The bookkeeping (divergence, leaving the box, recording the path) runs in NumPy on views
    # of the same memory: on a few rows a NumPy operation costs a fraction of a torch one, and
    # these checks run once per step.  Only f and its gradient need torch (autograd).
    xmin, xmax, ymin, ymax = landscape.box
    lower, upper = np.array([xmin, ymin]), np.array([xmax, ymax])
    fxmin, fxmax, fymin, fymax = far_box(landscape)
    far_lower, far_upper = np.array([fxmin, fymin]), np.array([fxmax, fymax])
    if noise > 0:
        table = noise * _noise_table(seeds, steps)
        row_noise_index = torch.from_numpy(row_seed_np)
    steppers = [bare_step(optimizer) for optimizer in optimizers]
    # row ranges of each configuration's parameter in the stacked point
    bounds = np.cumsum([0, *(len(p) for p in params)])
    slices = [slice(int(a), int(b)) for a, b in pairwise(bounds)]

    positions_t = torch.empty(steps + 1, rows, 2, dtype=dtype)
    losses_t = torch.empty(steps + 1, rows, dtype=dtype)
    positions, losses = positions_t.numpy(), losses_t.numpy()
    frozen = np.zeros(rows, dtype=bool)
    any_frozen = False
    diverged_at = np.full(rows, -1, dtype=np.int64)
    stopped_at = np.full(rows, -1, dtype=np.int64)
    left_at = np.full(rows, -1, dtype=np.int64)
    never_left = np.ones(rows, dtype=bool)
    bound = start_loss = None

    def hold(x: torch.Tensor, t: int) -> torch.Tensor:
        """Frozen rows at their last recorded point; torch.where routes a zero gradient to them,
        so their NaN or huge values never reach a finite row."""
        mask = torch.from_numpy(frozen)[:, None]
        return torch.where(mask, positions_t[t - 1], x)

    for t in range(steps + 1):
        # One leaf holding every row: a single gradient, split back into each parameter's rows
        # (the gradient of a concatenation is the matching slice, so nothing changes numerically).
        with torch.no_grad():
            stacked = torch.cat(params)
        leaf = stacked.detach().requires_grad_(True)
        x = leaf
        if t > 0:
            finite_rows = np.isfinite(stacked.numpy()).all(axis=1)
            if not finite_rows.all():
                newly = ~finite_rows & ~frozen
                diverged_at[newly] = t
                frozen |= newly
                any_frozen = True
            if any_frozen:
                x = hold(leaf, t)
        values = landscape.fn(x)
        value_np = values.detach().numpy()
        if t == 0:
            start_loss = value_np.copy()
            floor = landscape.min_value
            scale = (start_loss - floor) if math.isfinite(floor) else np.abs(start_loss)
            bound = start_loss + GROWTH * np.maximum(scale, 1.0)
        else:
            grown = (~np.isfinite(value_np) | (value_np > bound)) & ~frozen
            if grown.any():  # rare: once per diverging row, so a second evaluation is cheap
                diverged_at[grown] = t
                frozen |= grown
                any_frozen = True
                x = hold(leaf, t)
                values = landscape.fn(x)
                value_np = values.detach().numpy()
        point = x.detach().numpy()
        outside = ((point < lower) | (point > upper)).any(axis=1)
        if outside.any():
            out = outside & ~frozen & never_left
            left_at[out] = t
            never_left &= ~out
            far = ((point < far_lower) | (point > far_upper)).any(axis=1) & ~frozen
            stop = far & (value_np <= start_loss)
        else:
            stop = None
        positions[t] = point
        losses[t] = value_np
        if stop is not None and stop.any():
            stopped_at[stop] = t
            frozen |= stop  # held from the next step on, at the point just recorded
            any_frozen = True
        if t == steps:
            break
        loss = values.sum()
        if noise > 0:
            loss = loss + (table[row_noise_index, t] * x).sum()  # ∂/∂x adds σ·ξ_t
        (grad,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            for param, rows_of, optimizer, step in zip(params, slices, optimizers, steppers):
                param.grad = grad[rows_of]
                step(optimizer)
        if progress is not None:
            progress(t + 1, steps)

    return Batch(
        landscape=landscape,
        configs=list(configs),
        starts=starts,
        seeds=seeds,
        steps=steps,
        noise=noise,
        row_config=np.concatenate(row_config),
        row_lr=np.concatenate(row_lr),
        row_start=np.concatenate(row_start),
        row_seed=row_seed_np,
        positions=positions.transpose(1, 0, 2).copy(),
        losses=losses.T.copy(),
        diverged_at=diverged_at,
        stopped_at=stopped_at,
        left_at=left_at,
    )


__all__ = [
    "DIVERGENCE_FACTOR",
    "GROWTH",
    "MAX_STEPS",
    "Batch",
    "Config",
    "box_text",
    "check_start_on",
    "far_box",
    "run_batch",
]
