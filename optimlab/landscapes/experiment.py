r"""One landscape experiment from Python: build the batch, run it, measure, tune, collect runs.

>>> result = run_landscape("ravine", "sgd:lr=0.95,momentum:lr=0.1", steps=30, starts=[(-7, 2)])
>>> [run.metrics["distance_to_min"] for run in result.runs]   # doctest: +SKIP

A configuration's learning rate is, in order: the ``lr`` given in its spec; with ``tune=True``, the
best of the log grid (see :mod:`optimlab.landscapes.tuning`); else the optimizer's own default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimlab.landscapes import metrics as metrics_module
from optimlab.landscapes.functions import Landscape, Point, get_function
from optimlab.landscapes.runner import Batch, Config, Progress, run_batch
from optimlab.landscapes.tuning import TuningResult, choose, lr_grid
from optimlab.optim.registry import get_info
from optimlab.spec import parse_optimizer_spec

DEFAULT_OPTIMIZERS = "sgd,momentum,nag,adagrad,rmsprop,adadelta,adam,adamax,nadam"
DEFAULT_STEPS = 200

OptimizerSpec = str | Sequence[tuple[str, dict[str, Any]]]


@dataclass
class Run:
    """One trajectory: its optimizer configuration, start, path, losses and metrics.

    ``path`` holds the points up to divergence (all ``steps + 1`` when it did not diverge), the
    start first; ``losses`` the true f at each.
    """

    optimizer: str
    label: str
    hyperparameters: dict[str, Any]
    start: Point
    seed: int
    path: np.ndarray
    losses: np.ndarray
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The issue's schema: optimizer, hyperparameters, path as [x, y, loss] rows, metrics."""
        return {
            "optimizer": self.optimizer,
            "label": self.label,
            "hyperparameters": _plain(self.hyperparameters),
            "start": list(self.start),
            "seed": self.seed,
            "path": [[float(x), float(y), float(f)] for (x, y), f in zip(self.path, self.losses)],
            "metrics": self.metrics,
        }


@dataclass
class LandscapeResult:
    """The runs of one experiment (the chosen learning rate of each configuration) and, when
    tuned, the score of every grid point."""

    landscape: Landscape
    steps: int
    noise: float
    runs: list[Run]
    tuning: dict[str, TuningResult] = field(default_factory=dict)
    batch: Batch | None = None

    def to_json(self) -> dict[str, Any]:
        land = self.landscape
        return {
            "function": land.name,
            "function_options": _plain(land.options),
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
                label: {
                    "lrs": list(t.lrs),
                    "scores": [_finite(s) for s in t.scores],
                    "chosen": t.chosen,
                }
                for label, t in self.tuning.items()
            },
        }

    def figures(self) -> dict[str, Any]:
        """The contour plot with trajectories and the loss curves, as matplotlib figures."""
        from optimlab.landscapes import plots

        return {"landscape": plots.contour_figure(self), "loss": plots.loss_figure(self)}


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _label(name: str, options: dict[str, Any], ambiguous: bool) -> str:
    if not ambiguous or not options:
        return name
    shown = ", ".join(f"{k}={_plain(v)}" for k, v in options.items())
    return f"{name} ({shown})"


def _check_lr(name: str, lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 <= lr < math.inf:
        raise ValueError(f"{name}: invalid lr={lr!r}; lr must be a finite number ≥ 0")
    return float(lr)


def build_configs(
    optimizers: OptimizerSpec, *, tune: bool = False, grid: Sequence[float] | None = None
) -> list[Config]:
    """Configurations from a spec string (``"sgd:lr=0.95,adam"``) or (name, options) pairs."""
    parsed = parse_optimizer_spec(optimizers) if isinstance(optimizers, str) else optimizers
    parsed = [(name, dict(options)) for name, options in parsed]
    if not parsed:
        raise ValueError("no optimizers given; valid names: " + DEFAULT_OPTIMIZERS)
    names = [name for name, _ in parsed]
    grid = tuple(grid) if grid is not None else lr_grid()
    configs = []
    for name, options in parsed:
        info = get_info(name)
        hyperparameters = {k: v for k, v in options.items() if k != "lr"}
        if "lr" in options:
            lrs = (_check_lr(name, options["lr"]),)
        elif tune:
            lrs = grid
        else:
            convention = options.get("convention", "torch")
            lrs = (float(info.cls.default_hyperparameters(convention)["lr"]),)
        label = _label(name, options, names.count(name) > 1)
        configs.append(Config(name, hyperparameters, lrs, label))
    labels = [c.label for c in configs]
    for index, config in enumerate(configs):
        if labels.count(config.label) > 1:  # the same spec twice: number them
            configs[index] = Config(
                config.name, config.hyperparameters, config.lrs, f"{config.label} #{index + 1}"
            )
    return configs


def collect_runs(batch: Batch, values: dict[str, Any], rows: Sequence[int]) -> list[Run]:
    runs = []
    for row in rows:
        config = batch.configs[batch.row_config[row]]
        end = batch.diverged_at[row] if batch.diverged_at[row] >= 0 else batch.steps + 1
        runs.append(
            Run(
                optimizer=config.name,
                label=config.label,
                hyperparameters={**config.hyperparameters, "lr": float(batch.row_lr[row])},
                start=batch.starts[batch.row_start[row]],
                seed=batch.seeds[batch.row_seed[row]],
                path=batch.positions[row, :end],
                losses=batch.losses[row, :end],
                metrics=metrics_module.row_metrics(batch, values, row),
            )
        )
    return runs


def run_landscape(
    function: str | Landscape,
    optimizers: OptimizerSpec = DEFAULT_OPTIMIZERS,
    *,
    steps: int = DEFAULT_STEPS,
    starts: Sequence[Point] | None = None,
    noise: float = 0.0,
    seeds: Sequence[int] = (0,),
    tune: bool = False,
    grid: Sequence[float] | None = None,
    eps: float = metrics_module.DEFAULT_EPS,
    progress: Progress | None = None,
) -> LandscapeResult:
    """Run each optimizer configuration from each start (and noise seed) on `function`.

    `function` is a name (see :func:`list_functions`) or a :class:`Landscape`; `optimizers` a
    spec string or (name, options) pairs.  Returns the runs of the chosen learning rates, with
    the full batch (every grid row) kept in ``result.batch``.
    """
    landscape = get_function(function) if isinstance(function, str) else function
    configs = build_configs(optimizers, tune=tune, grid=grid)
    starts = list(starts) if starts is not None else [landscape.default_start]
    batch = run_batch(
        landscape, configs, starts, steps, noise=noise, seeds=seeds, progress=progress
    )
    values = metrics_module.compute(batch, eps=eps)
    tuning: dict[str, TuningResult] = {}
    chosen_rows = []
    for k, config in enumerate(configs):
        rows = np.flatnonzero(batch.row_config == k)
        if len(config.lrs) > 1:
            tuning[config.label] = choose(batch, values, k)
            rows = rows[batch.row_lr[rows] == tuning[config.label].chosen]
        chosen_rows.extend(rows.tolist())
    runs = collect_runs(batch, values, chosen_rows)
    return LandscapeResult(landscape, batch.steps, batch.noise, runs, tuning, batch)


__all__ = ["DEFAULT_OPTIMIZERS", "LandscapeResult", "Run", "build_configs", "run_landscape"]
