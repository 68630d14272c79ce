r"""Metrics of trajectories, computed for all rows of a batch at once (NumPy).

For a row with points θ_0 … θ_T and losses f(θ_t):

* ``final_loss`` — f(θ_T); None when the row diverged.
* ``distance_to_min`` — ‖θ_T − m‖ for the nearest global minimum m; None without one.
* ``steps_to_eps`` — the first t with f(θ_t) − f* ≤ ε (f* the global minimum value); None if it
  never gets there (or the surface is unbounded below).
* ``diverged`` / ``diverged_step`` — the point or the loss became non-finite, or the loss grew past
  the runner's bound (see :mod:`~optimlab.landscapes.runner`).
* ``left_step`` — the first step outside the plotting box (finite, maybe still descending: no
  failure); ``stopped_step`` — the step a row was stopped far outside it, still descending.
* ``status`` — "diverged", "left" (finite, ends outside the plotting box) or "inside".
* ``zigzag`` — the share of steps that reverse direction along the highest-curvature axis v (the
  Hessian's top eigenvector at the global minimum, or at the saddle point): among consecutive
  steps whose components d_t = (θ_{t+1} − θ_t)·v are both non-negligible, the fraction with
  sign(d_t) ≠ sign(d_{t−1}).  Gradient descent across a ravine scores near 1, a smooth slide 0.
* ``minimum`` / ``minimum_kind`` — the named minimum (global or local) the row ends within 1 % of
  the box diagonal of, else None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optimlab.landscapes.functions import Landscape
from optimlab.landscapes.runner import Batch

DEFAULT_EPS = 1e-3
#: a row ends "in" a minimum when it is closer than this share of the box diagonal
MINIMUM_RADIUS = 0.01
#: steps shorter than this share of the box diagonal do not count for zigzag (rounding noise)
NEGLIGIBLE_STEP = 1e-9


def _diagonal(landscape: Landscape) -> float:
    xmin, xmax, ymin, ymax = landscape.box
    return math.hypot(xmax - xmin, ymax - ymin)


def final_points(batch: Batch) -> np.ndarray:
    return batch.positions[:, -1]


def distance_to_min(landscape: Landscape, points: np.ndarray) -> np.ndarray:
    """Distance of each point to its nearest global minimum (NaN without one)."""
    minima = np.array([m.point for m in landscape.global_minima], dtype=float)
    if not len(minima):
        return np.full(len(points), np.nan)
    return np.linalg.norm(points[:, None, :] - minima[None], axis=2).min(axis=1)


def steps_to_eps(landscape: Landscape, losses: np.ndarray, eps: float) -> np.ndarray:
    """First step with loss − f* ≤ eps, or -1."""
    if not math.isfinite(landscape.min_value):
        return np.full(len(losses), -1)
    reached = losses - landscape.min_value <= eps
    first = reached.argmax(axis=1)
    return np.where(reached.any(axis=1), first, -1)


def zigzag(landscape: Landscape, positions: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Share of direction reversals along the top curvature axis (NaN when undefined).

    `valid[i]` is the number of leading points of row i that count (its pre-divergence path).
    """
    axis = landscape.curvature_axis()
    if axis is None:
        return np.full(len(positions), np.nan)
    along = np.diff(positions, axis=1) @ np.asarray(axis)  # [rows, steps]
    steps = along.shape[1]
    counted = np.arange(steps)[None, :] < (valid[:, None] - 1)
    moving = (np.abs(along) > NEGLIGIBLE_STEP * _diagonal(landscape)) & counted
    pairs = moving[:, 1:] & moving[:, :-1]
    reversals = pairs & (np.sign(along[:, 1:]) != np.sign(along[:, :-1]))
    total = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, reversals.sum(axis=1) / np.maximum(total, 1), np.nan)


def nearest_minimum(landscape: Landscape, points: np.ndarray) -> list[Any]:
    """Index into landscape.minima of the minimum each point ends in, or None."""
    candidates = [i for i, m in enumerate(landscape.minima) if m.kind != "saddle"]
    if not candidates:
        return [None] * len(points)
    minima = np.array([landscape.minima[i].point for i in candidates])
    distances = np.linalg.norm(points[:, None, :] - minima[None], axis=2)
    nearest = distances.argmin(axis=1)
    radius = MINIMUM_RADIUS * _diagonal(landscape)
    return [candidates[j] if distances[i, j] <= radius else None for i, j in enumerate(nearest)]


def path_lengths(batch: Batch) -> np.ndarray:
    """How many leading points of each row were simulated: up to (not including) the step it
    diverged at, up to and including the step it was stopped at, else all."""
    return np.where(
        batch.diverged_at >= 0,
        batch.diverged_at,
        np.where(batch.stopped_at >= 0, batch.stopped_at + 1, batch.steps + 1),
    )


def compute(batch: Batch, eps: float = DEFAULT_EPS) -> dict[str, np.ndarray | list]:
    """Every metric for every row, as arrays (NaN / -1 / None where undefined)."""
    landscape = batch.landscape
    diverged = batch.diverged_at >= 0
    valid = path_lengths(batch)
    points = final_points(batch)
    final = np.where(diverged, np.nan, batch.losses[:, -1])
    distance = np.where(diverged, np.nan, distance_to_min(landscape, points))
    reached = steps_to_eps(landscape, batch.losses, eps)
    # A diverged row's held points do not count as arriving.
    reached = np.where(diverged & (reached >= batch.diverged_at), -1, reached)
    minimum = nearest_minimum(landscape, points)
    minimum = [None if d else m for m, d in zip(minimum, diverged)]
    xmin, xmax, ymin, ymax = landscape.box
    outside = (
        (points[:, 0] < xmin)
        | (points[:, 0] > xmax)
        | (points[:, 1] < ymin)
        | (points[:, 1] > ymax)
    )
    status = np.where(diverged, "diverged", np.where(outside, "left", "inside"))
    return {
        "status": status,
        "left_step": batch.left_at,
        "stopped_step": batch.stopped_at,
        "final_loss": final,
        "distance_to_min": distance,
        "steps_to_eps": reached,
        "diverged": diverged,
        "diverged_step": batch.diverged_at,
        "zigzag": zigzag(landscape, batch.positions, valid),
        "minimum": minimum,
    }


def row_metrics(batch: Batch, metrics: dict[str, Any], row: int) -> dict[str, Any]:
    """One row's metrics as plain JSON-ready Python values (None where undefined)."""

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    def count(value: int) -> int | None:
        return int(value) if value >= 0 else None

    index = metrics["minimum"][row]
    minimum = batch.landscape.minima[index] if index is not None else None
    return {
        "status": str(metrics["status"][row]),
        "final_loss": number(metrics["final_loss"][row]),
        "distance_to_min": number(metrics["distance_to_min"][row]),
        "steps_to_eps": count(metrics["steps_to_eps"][row]),
        "diverged": bool(metrics["diverged"][row]),
        "diverged_step": count(metrics["diverged_step"][row]),
        "left_step": count(metrics["left_step"][row]),
        "stopped_step": count(metrics["stopped_step"][row]),
        "zigzag": number(metrics["zigzag"][row]),
        "minimum": minimum.label if minimum else None,
        "minimum_kind": minimum.kind if minimum else None,
    }


__all__ = ["DEFAULT_EPS", "compute", "path_lengths", "row_metrics"]
