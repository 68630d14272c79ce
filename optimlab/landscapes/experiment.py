r"""One landscape experiment from Python: build the batch, run it, measure, tune, collect runs.

>>> result = run_landscape("ravine", "sgd:lr=0.95,momentum:lr=0.1", steps=30, starts=[(-7, 2)])
>>> [run.metrics["distance_to_min"] for run in result.runs]   # doctest: +SKIP

A configuration's learning rate is, in order: the ``lr`` given in its spec; with ``tune=True``, the
best of the log grid (see :mod:`optimlab.landscapes.tuning`), except for a learning-rate-free
optimizer (Prodigy), which runs at its default as compare runs it; else the optimizer's own
default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from optimlab.landscapes import metrics as metrics_module
from optimlab.landscapes.functions import Landscape, Point, get_function
from optimlab.landscapes.results import LandscapeResult, Run
from optimlab.landscapes.runner import Batch, Config, Progress, run_batch
from optimlab.landscapes.theory import THEORY_ROLES, quadratic_theory, report
from optimlab.landscapes.tuning import TuningResult, choose, lr_grid
from optimlab.optim.registry import get_info, list_optimizers
from optimlab.spec import parse_optimizer_spec

DEFAULT_STEPS = 200


def default_optimizers() -> str:
    """The default set: the "classic" preset (the textbook's nine, read from the registry);
    ``--optimizers all`` (or ``modern``) shows every registered one."""
    return "classic"


OptimizerSpec = str | Sequence[tuple[str, dict[str, Any]]]


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return "/".join(str(_plain(v)) for v in value)
    if isinstance(value, np.generic):
        value = value.item()
    return _short(value)


def spec_label(name: str, options: dict[str, Any]) -> str:
    """A configuration's label in the spec syntax it was given in: ``sgd:lr=0.1:momentum=0.5``,
    so two runs of one optimizer always read differently."""
    return ":".join([name, *(f"{k}={_plain(v)}" for k, v in options.items())])


def _short(value: Any) -> Any:
    """Floats in labels with 4 significant digits (a computed lr 0.9523809523809523 → 0.9524)."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


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
        raise ValueError("no optimizers given; valid names: " + ", ".join(list_optimizers()))
    grid = tuple(grid) if grid is not None else lr_grid()
    configs = []
    for name, options in parsed:
        info = get_info(name)
        hyperparameters = {k: v for k, v in options.items() if k != "lr"}
        if "lr" in options:
            lrs = (_check_lr(name, options["lr"]),)
        elif tune and not info.learning_rate_free:
            # (Prodigy estimates its own step size: compare runs it at its defaults, and so
            # does --tune; its lr is a multiplier of that estimate, 1 by design)
            lrs = grid
        else:
            convention = options.get("convention", "torch")
            lrs = (float(info.cls.default_hyperparameters(convention)["lr"]),)
        label = spec_label(name, options)
        configs.append(Config(name, hyperparameters, lrs, label, "lr" in options))
    labels = [c.label for c in configs]
    for index, config in enumerate(configs):
        if labels.count(config.label) > 1:  # the same spec twice: number them
            configs[index] = Config(
                config.name,
                config.hyperparameters,
                config.lrs,
                f"{config.label} #{index + 1}",
                config.given_lr,
            )
    return configs


def collect_runs(batch: Batch, values: dict[str, Any], rows: Sequence[int]) -> list[Run]:
    lengths = metrics_module.path_lengths(batch)
    runs = []
    for row in rows:
        config = batch.configs[batch.row_config[row]]
        end = lengths[row]
        given = len(config.lrs) == 1 and config.given_lr
        source = "given" if given else "tuned" if len(config.lrs) > 1 else "default"
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
                lr_source=source,
            )
        )
    return runs


def run_landscape(
    function: str | Landscape,
    optimizers: OptimizerSpec | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    starts: Sequence[Point] | None = None,
    noise: float = 0.0,
    seeds: Sequence[int] = (0,),
    tune: bool = False,
    grid: Sequence[float] | None = None,
    eps: float = metrics_module.DEFAULT_EPS,
    progress: Progress | None = None,
    theory: bool = False,
    impl: str = "reference",
) -> LandscapeResult:
    """Run each optimizer configuration from each start (and noise seed) on `function`.

    `function` is a name (see :func:`list_functions`) or a :class:`Landscape`; `optimizers` a
    spec string or (name, options) pairs (default: every optimizer of the registry).  Returns the runs of the chosen learning rates, with
    the full batch (every grid row) kept in ``result.batch``.

    With ``theory=True`` (quadratic surfaces only), gradient descent at its best rate and heavy-ball
    momentum at its optimal (α*, β*) run beside the given optimizers, and ``result.theory`` holds
    the closed forms with each run's predicted and achieved contraction per step (see
    :mod:`optimlab.landscapes.theory`).

    `impl` is the runner's (:func:`~optimlab.landscapes.runner.run_batch`): ``"auto"`` lets a
    configuration with one learning rate take its optimizer's fused kernel (within rounding of
    the reference rule; worth it in a long-lived process that has loaded numba).
    """
    landscape = get_function(function) if isinstance(function, str) else function
    if optimizers is None:
        optimizers = default_optimizers()
    closed_forms = quadratic_theory(landscape) if theory else None
    roles: dict[str, str] = {}
    if closed_forms is not None:
        if isinstance(optimizers, str):
            parsed = parse_optimizer_spec(optimizers) if optimizers.strip() else []
        else:
            parsed = optimizers
        extra = closed_forms.specs()
        roles = {
            spec_label(name, options): role for (name, options), role in zip(extra, THEORY_ROLES)
        }
        optimizers = [*[(name, dict(options)) for name, options in parsed], *extra]
    configs = build_configs(optimizers, tune=tune, grid=grid)
    starts = list(starts) if starts is not None else [landscape.default_start]
    batch = run_batch(
        landscape, configs, starts, steps, noise=noise, seeds=seeds, progress=progress, impl=impl
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
    result = LandscapeResult(landscape, batch.steps, batch.noise, runs, tuning, batch)
    if closed_forms is not None:
        result.theory = report(closed_forms, runs, roles, landscape.reference_point)
    return result


__all__ = [
    "DEFAULT_STEPS",
    "LandscapeResult",
    "Run",
    "build_configs",
    "default_optimizers",
    "run_landscape",
    "spec_label",
]
