r"""Learning-rate tuning on a log grid, by final loss.

The grid is just more rows of the same batch: a configuration without a given ``lr`` runs once per
grid point.  Each learning rate is scored by the mean, over starts and noise seeds, of its final
loss gap f(θ_T) − f* (f itself on surfaces unbounded below); a learning rate for which any row
diverges scores +∞, so the winner is stable from every start.  Ties (several rates reaching the
minimum exactly) go to the rate with the fewest mean steps to ε, then to the smaller rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optimlab.landscapes.runner import Batch

GRID_POINTS = 36
GRID_LOW = 1e-5
GRID_HIGH = 1e2


def lr_grid(points: int = GRID_POINTS, low: float = GRID_LOW, high: float = GRID_HIGH) -> tuple:
    """`points` learning rates evenly spaced in log scale over [low, high]."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"invalid points={points!r}; the grid needs an integer ≥ 1 of points")
    if not (0 < low <= high < math.inf):
        raise ValueError(f"invalid grid [{low!r}, {high!r}]; need 0 < low ≤ high < inf")
    return tuple(float(v) for v in np.logspace(math.log10(low), math.log10(high), points))


@dataclass(frozen=True)
class TuningResult:
    """The score of every learning rate of one configuration and the one chosen."""

    lrs: tuple[float, ...]
    scores: tuple[float, ...]
    chosen: float


def choose(batch: Batch, metrics: dict, config: int) -> TuningResult:
    """Score each learning rate of configuration `config` and pick the best."""
    rows = np.flatnonzero(batch.row_config == config)
    lrs = tuple(dict.fromkeys(float(v) for v in batch.row_lr[rows]))
    floor = batch.landscape.min_value if math.isfinite(batch.landscape.min_value) else 0.0
    worst = batch.steps + 1
    scores, keys = [], []
    for lr in lrs:
        mine = rows[batch.row_lr[rows] == lr]
        final = metrics["final_loss"][mine]
        score = math.inf if np.isnan(final).any() else float(np.mean(final - floor))
        reached = metrics["steps_to_eps"][mine]
        speed = float(np.mean(np.where(reached >= 0, reached, worst)))
        scores.append(score)
        keys.append((score, speed, lr))
    best = min(keys)
    return TuningResult(lrs, tuple(scores), best[2])


__all__ = ["GRID_POINTS", "TuningResult", "choose", "lr_grid"]
