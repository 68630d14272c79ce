r"""The result types of a landscape experiment: one :class:`Run` per trajectory, gathered in a
:class:`LandscapeResult`, and their JSON form.

These are plain data at the bottom of the package: the runner and the experiment build them, the
views (:mod:`~optimlab.landscapes.plots`, :mod:`~optimlab.landscapes.output`, the CLI) read them.
Nothing here imports a view, so data flows one way.

JSON has no ∞ or NaN: :func:`json_safe` turns every non-finite (or overflowing) float into
``None`` on the way out, so a path that reached 1e308 is written as ``null``, never refused by the
writer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimlab.landscapes.functions import Landscape, Point
from optimlab.landscapes.runner import Batch
from optimlab.landscapes.tuning import TuningResult


def json_safe(value: Any) -> Any:
    """`value` with NumPy scalars made Python numbers and every non-finite float made None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Run:
    """One trajectory: its optimizer configuration, start, path, losses and metrics.

    ``path`` holds the points the row was simulated through (all ``steps + 1`` unless it diverged,
    or left far outside the plotting box and was stopped), the start first; ``losses`` the true f
    at each.  ``lr_source`` says where the learning rate came from: "given", "tuned" or
    "default".
    """

    optimizer: str
    label: str
    hyperparameters: dict[str, Any]
    start: Point
    seed: int
    path: np.ndarray
    losses: np.ndarray
    metrics: dict[str, Any]
    lr_source: str = "given"

    @property
    def legend(self) -> str:
        """The label with the learning rate when the spec did not give one: ``adam (lr 0.001,
        default)``; a given lr is in the label already (``sgd:lr=0.1``)."""
        if self.lr_source == "given":
            return self.label
        return f"{self.label} (lr {self.hyperparameters['lr']:.3g}, {self.lr_source})"

    def to_json(self) -> dict[str, Any]:
        """The issue's schema: optimizer, hyperparameters, path as [x, y, loss] rows, metrics."""
        return json_safe(
            {
                "optimizer": self.optimizer,
                "label": self.label,
                "hyperparameters": self.hyperparameters,
                "lr_source": self.lr_source,
                "start": list(self.start),
                "seed": self.seed,
                "path": [
                    [float(x), float(y), float(f)] for (x, y), f in zip(self.path, self.losses)
                ],
                "metrics": self.metrics,
            }
        )


@dataclass
class LandscapeResult:
    """The runs of one experiment (the chosen learning rate of each configuration) and, when
    tuned, the score of every grid point; ``theory`` holds the closed forms of a quadratic
    surface when they were asked for (see :mod:`~optimlab.landscapes.theory`)."""

    landscape: Landscape
    steps: int
    noise: float
    runs: list[Run]
    tuning: dict[str, TuningResult] = field(default_factory=dict)
    batch: Batch | None = None
    theory: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        land = self.landscape
        data = {
            "function": land.name,
            "function_options": land.options,
            "formula": land.formula,
            "box": list(land.box),
            "minima": [
                {"label": m.label, "point": list(m.point), "value": m.value, "kind": m.kind}
                for m in land.minima
            ],
            "steps": self.steps,
            "noise": self.noise,
            "runs": [run.to_json() for run in self.runs],
            "tuning": {
                label: {"lrs": list(t.lrs), "scores": list(t.scores), "chosen": t.chosen}
                for label, t in self.tuning.items()
            },
        }
        if self.theory is not None:
            data["theory"] = self.theory
        return json_safe(data)


__all__ = ["LandscapeResult", "Run", "json_safe"]
