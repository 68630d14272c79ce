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


#: the implementations the runner can ask its optimizers for (see `run_batch`)
IMPLEMENTATIONS = ("reference", "auto")


def check_impl(impl: Any) -> str:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"invalid impl={impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    return impl


def run_batch(
    landscape: Landscape,
    configs: Sequence[Config],
    starts: Sequence[Point],
    steps: int,
    *,
    noise: float = 0.0,
    seeds: Sequence[int] = (0,),
    progress: Progress | None = None,
    impl: str = "reference",
) -> Batch:
    """Run every (configuration, learning rate, start, seed) row for `steps` steps, together.

    Rows of configuration k are ordered learning rate (outermost), start, seed (innermost).

    `impl` chooses how an elementwise configuration with **one** learning rate is stepped:

    * ``"reference"`` (default): with a tensor lr, so its optimizer runs its reference rule (the
      path a tuning grid always takes: one optimizer for the rows of every learning rate);
    * ``"auto"``: with that lr as a Python number and the optimizer's own ``impl`` (``"auto"``
      unless the spec says otherwise), so the fused kernel runs where the optimizer has one —
      its serial twin and per-call fast path (``kernels.dispatch.FastStep``) on these few rows,
      about a third of the reference rule's cost.  Trajectories then agree with the reference
      within rounding (the kernels' parity guarantee), and bit for bit with a plain
      ``loss.backward(); optimizer.step()`` loop of an optimizer created the same way.  The first
      kernel call of a process loads numba (a second or two): the choice of a long-lived process
      (``optimlab serve``), not of a one-shot command.
    """
    steps = check_steps(steps)
    noise = check_noise(noise)
    impl = check_impl(impl)
    starts = [check_start_on(landscape, s) for s in starts]
    seeds = [int(s) for s in seeds]
    if not configs or not starts or not seeds:
        raise ValueError("run_batch needs at least one configuration, one start and one seed")
    dtype = torch.float64
    start_grid = torch.tensor(starts, dtype=dtype)
    per_lr = len(starts) * len(seeds)
    start_index = torch.arange(len(starts)).repeat_interleave(len(seeds))
    seed_index = torch.arange(len(seeds)).repeat(len(starts))
    infos = [get_info(config.name) for config in configs]  # unknown names fail here
    sizes = [len(config.lrs) * per_lr for config in configs]
    rows = sum(sizes)

    # Every row's point lives in one [rows, 2] tensor and every gradient in another: each
    # optimizer's parameter (and its .grad, set once) is a view of its rows, so the optimizers
    # update the points in place and f and ∇f are evaluated on all rows at once, with no
    # per-step concatenation or splitting.
    points = torch.empty(rows, 2, dtype=dtype)
    gradients = torch.zeros(rows, 2, dtype=dtype)
    optimizers = []
    row_config, row_lr, row_start, row_seed = [], [], [], []
    first = 0
    for k, (config, info, n) in enumerate(zip(configs, infos, sizes)):
        lr = torch.tensor(config.lrs, dtype=dtype).repeat_interleave(per_lr)[:, None]
        own = slice(first, first + n)
        points[own] = start_grid[start_index].repeat(len(config.lrs), 1)
        if info.elementwise:  # every row of one parameter is its own run: one optimizer for all
            param = points[own]
            param.grad = gradients[own]
            if impl == "auto" and len(config.lrs) == 1:
                hyperparameters = {**config.hyperparameters, "lr": config.lrs[0]}
            else:
                # A tensor lr always takes the optimizers' reference path (plain torch ops,
                # elementwise); asking for it directly spares loading numba for nothing.
                hyperparameters = {"impl": "reference", **config.hyperparameters, "lr": lr}
            optimizers.append(create(config.name, [param], **hyperparameters))
        else:  # a norm, a factored moment or a shared estimate couples a tensor's rows
            for row in range(first, first + n):
                point = points[row : row + 1]
                point.grad = gradients[row : row + 1]
                hyperparameters = {**config.hyperparameters, "lr": float(lr[row - first, 0])}
                optimizers.append(create(config.name, [point], **hyperparameters))
        first += n
        row_config.append(np.full(n, k))
        row_lr.append(lr[:, 0].numpy().copy())
        row_start.append(start_index.repeat(len(config.lrs)).numpy())
        row_seed.append(seed_index.repeat(len(config.lrs)).numpy())
    row_seed_np = np.concatenate(row_seed)
    steppers = [bare_step(optimizer) for optimizer in optimizers]
    work = list(zip(optimizers, steppers))

    # The bookkeeping (divergence, leaving the box, recording the path) runs in NumPy on views
    # of the same memory: on a few rows a NumPy operation costs a fraction of a torch one.  f
    # and ∇f come from the surface's closed form (autograd's very numbers, without its graph).
    xmin, xmax, ymin, ymax = landscape.box
    lower, upper = np.array([xmin, ymin]), np.array([xmax, ymax])
    fxmin, fxmax, fymin, fymax = far_box(landscape)
    far_lower, far_upper = np.array([fxmin, fymin]), np.array([fxmax, fymax])
    value_and_grad = landscape.value_and_grad
    table = (noise * _noise_table(seeds, steps)).numpy() if noise > 0 else None
    current, gradient = points.numpy(), gradients.numpy()

    positions = np.empty((steps + 1, rows, 2))
    losses = np.empty((steps + 1, rows))
    frozen = np.zeros(rows, dtype=bool)
    any_frozen = False
    diverged_at = np.full(rows, -1, dtype=np.int64)
    stopped_at = np.full(rows, -1, dtype=np.int64)
    left_at = np.full(rows, -1, dtype=np.int64)
    never_left = np.ones(rows, dtype=bool)
    bound = start_loss = None

    def hold(point: np.ndarray, t: int) -> np.ndarray:
        """Frozen rows at their last recorded point (their gradient is set to zero below), so
        their NaN or huge values never reach a finite row."""
        return np.where(frozen[:, None], positions[t - 1], point)

    # A diverging row overflows on its way out (caught by the checks, never recorded), and the
    # optimizers need no autograd graph: the gradient is computed, not traced.
    with np.errstate(all="ignore"), torch.no_grad():
        for t in range(steps + 1):
            point = current
            if t > 0:
                if not np.isfinite(current).all():
                    newly = ~np.isfinite(current).all(axis=1) & ~frozen
                    diverged_at[newly] = t
                    frozen |= newly
                    any_frozen = True
                if any_frozen:
                    point = hold(current, t)
            # σ·ξ_t: the gradient of the noise term σ·ξ_t·x, added as autograd would add it
            linear = None if table is None or t == steps else table[row_seed_np, t]
            values, grad = value_and_grad(point, linear)
            if t == 0:
                start_loss = values.copy()
                floor = landscape.min_value
                scale = (start_loss - floor) if math.isfinite(floor) else np.abs(start_loss)
                bound = start_loss + GROWTH * np.maximum(scale, 1.0)
            elif not (np.isfinite(values).all() and (values <= bound).all()):
                grown = (~np.isfinite(values) | (values > bound)) & ~frozen
                if grown.any():  # rare: once per diverging row, so a second evaluation is cheap
                    diverged_at[grown] = t
                    frozen |= grown
                    any_frozen = True
                    point = hold(current, t)
                    values, grad = value_and_grad(point, linear)
            if not ((point >= lower) & (point <= upper)).all():
                outside = ((point < lower) | (point > upper)).any(axis=1)
                out = outside & ~frozen & never_left
                left_at[out] = t
                never_left &= ~out
                far = ((point < far_lower) | (point > far_upper)).any(axis=1) & ~frozen
                stop = far & (values <= start_loss)
            else:
                stop = None
            positions[t] = point
            losses[t] = values
            if stop is not None and stop.any():
                stopped_at[stop] = t
                frozen |= stop  # held from the next step on, at the point just recorded
                any_frozen = True
            if t == steps:
                break
            gradient[...] = grad
            if any_frozen:
                gradient[frozen] = 0.0
            for optimizer, step in work:
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
    "IMPLEMENTATIONS",
    "MAX_STEPS",
    "Batch",
    "Config",
    "box_text",
    "check_impl",
    "check_start_on",
    "far_box",
    "run_batch",
]
