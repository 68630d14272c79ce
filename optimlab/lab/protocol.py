"""The comparison protocol: for each (problem, optimizer), tune the learning rate (on a log grid,
or with Optuna) by validation loss, rerun the best point with N seeds, and run the untuned
defaults.

`Comparison` holds what to compare; `run_comparison` drives an executor (the local process pool
of `optimlab.lab.executor` or the Ray executor of `optimlab.lab.ray_executor`, through the same
interface): it submits every grid and default trial at once (Optuna: about one trial per free
worker and study, asking for the next point as each result arrives) and, as soon as the tuning
of one (problem, optimizer) is complete, submits its seed reruns — so workers never idle waiting
for a whole phase. Seed 0 at the best point *is* the tuning trial (same spec, same key), so it is
not run twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimlab.lab.executor import BaseExecutor, Executor
from optimlab.lab.schedules import parse_schedule
from optimlab.lab.store import ResultStore, StoredTrial
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.lab.tuner import GridTuning, OptunaTuner, OptunaTuning
from optimlab.optim.registry import get_info, list_optimizers
from optimlab.problems import get_problem
from optimlab.spec import parse_optimizer_items


@dataclass(frozen=True)
class Suite:
    """A named set of problems (with step budgets) and the protocol's sizes."""

    name: str
    problems: tuple[tuple[str, int], ...]
    grid_points: int
    lr_range: tuple[float, float]
    seeds: int
    evals: int = 20
    #: seeds for the untuned defaults (None: as many as for the tuned rate)
    default_seeds: int | None = None


SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick",
        (
            ("quadratic-deep", 200),
            ("digits-mlp", 200),
            ("mnist1d-mlp", 400),
            # the vanishing-gradient pair: the same 10-layer net, stuck with sigmoid, trained
            # with the chapter's fix (ReLU and He initialization)
            ("deep-mlp:depth=10:activation=sigmoid", 200),
            ("deep-mlp:depth=10:activation=relu:init=he", 200),
        ),
        grid_points=8,
        lr_range=(1e-4, 10.0),
        seeds=3,
        evals=16,
        default_seeds=1,
    ),
    "full": Suite(
        "full",
        (
            ("quadratic-deep", 1500),
            ("digits-logreg", 1000),
            ("digits-mlp", 1500),
            ("mnist1d-mlp", 6000),
            ("mnist1d-cnn", 6000),
            ("deep-mlp:depth=10:activation=sigmoid", 3000),
            ("deep-mlp:depth=10:activation=relu:init=he", 3000),
        ),
        grid_points=36,
        lr_range=(1e-5, 100.0),
        seeds=10,
        evals=30,
    ),
}


def lr_grid(points: int, low: float, high: float) -> list[float]:
    """`points` learning rates evenly spaced in log10 from `low` to `high`, rounded to 3
    significant digits (readable, and identical in every run)."""
    if points == 1:
        return [float(f"{math.sqrt(low * high):.3g}")]
    return [float(f"{lr:.3g}") for lr in np.logspace(math.log10(low), math.log10(high), points)]


@dataclass(frozen=True)
class Contender:
    """One optimizer entry of the comparison: its label (the spec item as given), registry name
    (or the custom optimizer's label), and fixed hyperparameters. A fixed ``lr`` turns tuning
    off for it. `custom`: the user's optimizer class (``mine.py:MyOpt``, ``torch.optim:AdamW``),
    None for a built-in."""

    label: str
    name: str
    options: dict[str, Any]
    custom: Any = None

    @property
    def default_lr(self) -> float | None:
        """The class's default learning rate (None: a custom class without one)."""
        if self.custom is not None:
            lr = self.custom.default_lr()
            return None if lr is None else float(lr)
        convention = self.options.get("convention", "torch")
        return float(get_info(self.name).cls.default_hyperparameters(convention)["lr"])

    def check(self) -> None:
        """Build the optimizer once on a dummy parameter, so the class's own validation rejects a
        bad value now (ValueError naming the optimizer, option, value and allowed range), not
        in a trial. A custom class is also stepped once."""
        import torch

        if self.custom is not None:
            from optimlab.lab.custom_optimizers import check_custom

            check_custom(self.custom, self.options)
            return
        options = {"lr": 1e-3, **self.options} if "lr" not in self.options else self.options
        try:
            get_info(self.name).cls([torch.zeros(1, requires_grad=True)], **options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.label}: {error}") from None
        if "lr" not in self.options:
            try:
                self.default_lr  # noqa: B018 - a bad convention fails here too
            except (KeyError, ValueError) as error:
                raise ValueError(f"{self.label}: {error}") from None


def contenders(spec: str | None) -> list[Contender]:
    """Parse ``--optimizers`` (None: all nine with their defaults) and build each optimizer once
    on a dummy parameter (`Contender.check`); labels must be unique. ValueError if not."""
    if spec is None:
        return [Contender(name, name, {}) for name in list_optimizers()]
    items = parse_optimizer_items(spec)
    labels = [part.strip() for part in spec.split(",") if part.strip()]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optimizer spec {spec!r} lists an entry twice; each must be unique")
    entries = [
        Contender(label, name, options, custom)
        for label, (name, options, custom) in zip(labels, items)
    ]
    for entry in entries:
        entry.check()
    return entries


@dataclass
class Comparison:
    """What to run. `problems`: (problem spec, step budget)."""

    problems: list[tuple[str, int]]
    optimizers: list[Contender]
    grid: list[float]
    seeds: int
    schedule: str = "constant"
    evals: int = 20
    suite: str = "custom"
    #: seeds for the untuned defaults (None: `seeds`)
    default_seeds: int | None = None
    #: canonical spec and label of each problem, filled by `resolve`
    resolved: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: None: the learning-rate grid; an `OptunaTuner`: Optuna's TPE in place of the grid
    tuner: OptunaTuner | None = None

    def resolve(self) -> None:
        """Check every problem and the schedule now (clear errors before any work)."""
        parse_schedule(self.schedule)
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds}; allowed: an integer >= 1")
        for spec, steps in self.problems:
            if steps < 1:
                raise ValueError(f"steps={steps} for problem {spec!r}; allowed: an integer >= 1")
            problem = get_problem(spec)
            self.resolved[spec] = (problem.spec, problem.label)

    def describe(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "problems": [
                {"problem": self.resolved[s][1], "spec": self.resolved[s][0], "steps": n}
                for s, n in self.problems
            ],
            "optimizers": [c.label for c in self.optimizers],
            # the grid tuner's rates; Optuna's points differ per pair (see "tuner")
            "lr_grid": self.grid if self.tuner is None else [],
            "tuner": {"name": "grid"} if self.tuner is None else self.tuner.describe(),
            "seeds": self.seeds,
            "default_seeds": self.default_seeds or self.seeds,
            "schedule": self.schedule,
            "evals": self.evals,
        }

    # --- the trials -----------------------------------------------------------------------
    def spec(
        self, problem: str, steps: int, c: Contender, hyperparameters: dict[str, Any], seed: int
    ) -> TrialSpec:
        """The trial of `c` on `problem` with these hyperparameters (``lr`` included)."""
        canonical, label = self.resolved[problem]
        return TrialSpec(
            problem=canonical,
            optimizer=c.name,
            hyperparameters=hyperparameters,
            schedule=self.schedule,
            seed=seed,
            steps=steps,
            evals=self.evals,
            problem_label=label,
            custom=c.custom,
        )

    def _tuned(self, c: Contender) -> bool:
        """Tuned by the tuner (a fixed ``lr`` in the optimizer spec turns tuning off)."""
        return self.tuner is not None and "lr" not in c.options

    def grid_trials(self, problem: str, steps: int, c: Contender) -> list[TrialSpec]:
        """The tuning trials (seed 0): the grid, or the points Optuna proposed so far."""
        if self._tuned(c):
            assert self.tuner is not None
            return self.tuner.trial_specs(self, problem, steps, c)
        grid = [float(c.options["lr"])] if "lr" in c.options else self.grid
        return [self.spec(problem, steps, c, {**c.options, "lr": lr}, 0) for lr in grid]

    def tuning(self, problem: str, steps: int, c: Contender) -> GridTuning | OptunaTuning:
        """What `run_comparison` drives to tune one (problem, optimizer)."""
        if self._tuned(c):
            assert self.tuner is not None
            return self.tuner.tuning(self, problem, steps, c)
        return GridTuning(self.grid_trials(problem, steps, c))

    def seed_trials(self, problem: str, steps: int, c: Contender, lr: float) -> list[TrialSpec]:
        """Seeds 0 … N−1 at the tuned point whose learning rate is `lr` (Optuna: with the
        other hyperparameters of that trial)."""
        hyperparameters = {**c.options, "lr": lr}
        if self._tuned(c):
            assert self.tuner is not None
            hyperparameters = self.tuner.hyperparameters_at(self, problem, steps, c, lr)
        return [self.spec(problem, steps, c, hyperparameters, s) for s in range(self.seeds)]

    def default_trials(self, problem: str, steps: int, c: Contender) -> list[TrialSpec]:
        """The untuned defaults (none for a custom class without a default ``lr``)."""
        if c.default_lr is None:
            return []
        seeds = self.default_seeds or self.seeds
        hyperparameters = {**c.options, "lr": c.default_lr}
        return [self.spec(problem, steps, c, hyperparameters, s) for s in range(seeds)]

    def pairs(self) -> list[tuple[str, int, Contender]]:
        return [(p, steps, c) for p, steps in self.problems for c in self.optimizers]


def best_lr(trials: list[StoredTrial]) -> float | None:
    """The grid's learning rate with the lowest final validation loss among finished, finite
    runs (ties: the smaller rate); None if every run diverged or failed."""
    scored = [
        (t.result.metrics["final_val_loss"], t.spec.lr)
        for t in trials
        if t.result.status == "ok" and t.result.metrics.get("final_val_loss") is not None
    ]
    return min(scored)[1] if scored else None


ProgressFn = Callable[[dict[str, Any]], None]


def run_comparison(
    comparison: Comparison,
    store: ResultStore,
    workers: int,
    progress: ProgressFn | None = None,
    executor: BaseExecutor | None = None,
) -> dict[str, int]:
    """Run every trial the protocol needs that is not in `store` yet.

    `executor`: where the trials run (default: a local `Executor` with `workers` processes;
    e.g. `optimlab.lab.ray_executor.RayExecutor`); it is closed at the end.
    `progress` receives ``{"event": "planned", "total": N, "done": D}`` when the total grows and
    ``{"event": "finished", "spec": TrialSpec, "status": S, "done": D, "total": N}`` per trial.
    Returns counts: run (this call), reused (already stored), total.
    """
    comparison.resolve()
    counts = {"run": 0, "reused": 0, "total": 0}
    planned: set[str] = set()
    tunings = {(p, c.label): comparison.tuning(p, steps, c) for p, steps, c in comparison.pairs()}
    pairs = {(p, c.label): (p, steps, c) for p, steps, c in comparison.pairs()}
    listeners: dict[str, list[tuple[str, str]]] = {}
    seeded: set[tuple[str, str]] = set()
    executor = executor if executor is not None else Executor(store, workers)

    def notify(event: dict[str, Any]) -> None:
        if progress is not None:
            progress(event)

    def done() -> int:
        return counts["run"] + counts["reused"]

    def update_total() -> None:
        total = len(planned) + sum(t.remaining for t in tunings.values())
        if total != counts["total"]:
            counts["total"] = total
            notify({"event": "planned", "total": total, "done": done()})

    def plan(specs: list[TrialSpec], prune: bool = False) -> None:
        for spec in specs:
            if spec.key in planned:
                continue
            planned.add(spec.key)
            if not executor.submit(spec, prune):
                counts["reused"] += 1
        update_total()

    def parallel() -> int:
        """Tuning trials in flight per study: about one per worker, spread over the studies."""
        active = sum(not t.complete for t in tunings.values())
        return max(1, math.ceil(executor.slots / max(1, active)))

    def feed(pair: tuple[str, str], specs: list[TrialSpec]) -> None:
        """Hand `specs` and whatever the tuning asks for next to the executor; results already
        stored are observed at once (which may ask for more)."""
        tuning = tunings[pair]
        while True:
            specs = [*specs, *(tuning.more(parallel()) if tuning.remaining else [])]
            for spec in specs:
                listeners.setdefault(spec.key, []).append(pair)
            plan(specs, prune=tuning.prune)
            stored = [s for s in specs if executor.is_done(s)]
            if not stored:
                break
            results = store.get([s.key for s in stored]) if tuning.needs_results else {}
            for spec in stored:
                if pair in listeners.get(spec.key, []):
                    listeners[spec.key].remove(pair)
                    trial = results.get(spec.key)
                    tuning.observe(spec, trial.result if trial else None)
            specs = []
        if tuning.complete and pair not in seeded:
            seeded.add(pair)
            problem, steps, c = pairs[pair]
            grid = comparison.grid_trials(problem, steps, c)
            lr = best_lr(list(store.get([s.key for s in grid]).values()))
            if lr is not None:
                plan(comparison.seed_trials(problem, steps, c, lr))

    def finished(spec: TrialSpec, result: TrialResult) -> None:
        for pair in listeners.pop(spec.key, []):
            tunings[pair].observe(spec, result)
            feed(pair, [])

    with executor:
        for pair, tuning in tunings.items():
            problem, steps, c = pairs[pair]
            plan(comparison.default_trials(problem, steps, c))
            specs = tuning.initial()
            for spec in tuning.done_before():  # Optuna: told in an earlier run
                if spec.key not in planned:
                    planned.add(spec.key)
                    counts["reused"] += 1
            feed(pair, specs)
        while executor.pending:
            spec, result = executor.wait_one()
            counts["run"] += 1
            notify(
                {
                    "event": "finished",
                    "spec": spec,
                    "status": result.status,
                    "done": done(),
                    "total": counts["total"],
                }
            )
            finished(spec, result)
        update_total()
    return counts
