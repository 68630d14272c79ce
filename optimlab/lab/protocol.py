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
from optimlab.lab.halving import HalvingPolicy
from optimlab.lab.schedules import parse_schedule
from optimlab.lab.store import ResultStore, StoredTrial
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.lab.tuner import GridTuning, HalvingTuning, OptunaTuner, OptunaTuning
from optimlab.optim.registry import get_info
from optimlab.problems import get_problem
from optimlab.problems.registry import full_label
from optimlab.spec import expand_presets, parse_optimizer_items


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
        info = get_info(self.name)
        if info.whole_model_lr is not None:  # compare builds it for the whole network
            return float(info.whole_model_lr)
        convention = self.options.get("convention", "torch")
        return float(info.cls.default_hyperparameters(convention)["lr"])

    @property
    def learning_rate_free(self) -> bool:
        """Declared learning-rate-free (`OptimizerInfo.learning_rate_free`, e.g. Prodigy) and
        given no ``lr``: run at its defaults, with no learning-rate grid or tuner. A custom
        class is never taken for one."""
        if self.custom is not None or "lr" in self.options:
            return False
        return get_info(self.name).learning_rate_free

    @property
    def schedule_free(self) -> bool:
        """It has Schedule-Free's ``train()``/``eval()`` modes (`optimlab.optim.modes`): its
        averaging replaces the learning-rate schedule, so it always runs with a constant one."""
        from optimlab.optim.modes import has_modes

        if self.custom is not None:
            target = self.custom.resolve()
            return isinstance(target, type) and has_modes(target)
        return has_modes(get_info(self.name).cls)

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
    """Parse ``--optimizers`` and build each optimizer once on a dummy parameter
    (`Contender.check`); labels must be unique. ValueError if not.

    None means the "classic" preset (the textbook's nine, at their defaults); the preset words
    ``classic``, ``modern`` and ``all`` stand for their optimizers and mix with other entries
    (``classic,lion``)."""
    if spec is None:
        spec = "classic"
    items = parse_optimizer_items(spec)  # the user's spec: its errors quote what was typed
    labels = [part.strip() for part in expand_presets(spec).split(",")]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(
            f"optimizer spec {spec!r} lists {', '.join(twice)} twice (a preset word includes "
            f"its optimizers); each must be unique"
        )
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
    #: the options that replaced the suite's own sizes (``["--problems", "--steps"]``)
    suite_changes: list[str] = field(default_factory=list)
    #: seeds for the untuned defaults (None: `seeds`)
    default_seeds: int | None = None
    #: canonical spec and label of each problem, filled by `resolve`
    resolved: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: None: the learning-rate grid; an `OptunaTuner`: Optuna's TPE in place of the grid
    tuner: OptunaTuner | None = None
    #: ``--tuner halving``: the grid, successively halved by Optuna's pruner (None: exhaustive)
    halving: HalvingPolicy | None = None

    def resolve(self) -> None:
        """Check every problem and the schedule now (clear errors before any work)."""
        parse_schedule(self.schedule)
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds}; allowed: an integer >= 1")
        for spec, steps in self.problems:
            if steps < 1:
                raise ValueError(f"steps={steps} for problem {spec!r}; allowed: an integer >= 1")
            problem = get_problem(spec)
            self.resolved[spec] = (problem.spec, full_label(spec, problem.label))

    def describe(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_changes": self.suite_changes,
            "problems": [
                {"problem": self.resolved[s][1], "spec": self.resolved[s][0], "steps": n}
                for s, n in self.problems
            ],
            "optimizers": [c.label for c in self.optimizers],
            # the grid tuner's rates; Optuna's points differ per pair (see "tuner")
            "lr_grid": self.grid if self.tuner is None else [],
            "tuner": (
                self.tuner.describe()
                if self.tuner is not None
                else self.halving.describe()
                if self.halving is not None
                else {"name": "grid"}
            ),
            "seeds": self.seeds,
            "default_seeds": self.default_seeds or self.seeds,
            "schedule": self.schedule,
            "evals": self.evals,
            # run at their defaults, no learning-rate grid (AlgoPerf's self-tuning spirit)
            "learning_rate_free": [c.label for c in self.optimizers if c.learning_rate_free],
            # tuned learning rate, but always the constant schedule
            "schedule_free": [c.label for c in self.optimizers if c.schedule_free],
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
            schedule=self.schedule_of(c),
            seed=seed,
            steps=steps,
            evals=self.evals,
            problem_label=label,
            custom=c.custom,
        )

    def schedule_of(self, c: Contender) -> str:
        """The learning-rate schedule `c` runs with: the comparison's, except for a
        schedule-free optimizer (`Contender.schedule_free`), which never gets one."""
        return "constant" if c.schedule_free else self.schedule

    def _tuned(self, c: Contender) -> bool:
        """Tuned by the tuner (a fixed ``lr`` in the optimizer spec, or a learning-rate-free
        optimizer, turns tuning off)."""
        return self.tuner is not None and "lr" not in c.options and not c.learning_rate_free

    def grid_trials(self, problem: str, steps: int, c: Contender) -> list[TrialSpec]:
        """The tuning trials (seed 0): the grid, or the points Optuna proposed so far; one
        trial at the class's default ``lr`` for a learning-rate-free optimizer."""
        if self._tuned(c):
            assert self.tuner is not None
            return self.tuner.trial_specs(self, problem, steps, c)
        if c.learning_rate_free:
            assert c.default_lr is not None
            grid = [c.default_lr]
        else:
            grid = [float(c.options["lr"])] if "lr" in c.options else self.grid
        return [self.spec(problem, steps, c, {**c.options, "lr": lr}, 0) for lr in grid]

    def tuning(self, problem: str, steps: int, c: Contender) -> GridTuning | OptunaTuning:
        """What `run_comparison` drives to tune one (problem, optimizer)."""
        if self._tuned(c):
            assert self.tuner is not None
            return self.tuner.tuning(self, problem, steps, c)
        specs = self.grid_trials(problem, steps, c)
        halved = self.halving is not None and "lr" not in c.options and not c.learning_rate_free
        return HalvingTuning(specs, self.halving) if halved else GridTuning(specs)

    def seed_trials(self, problem: str, steps: int, c: Contender, lr: float) -> list[TrialSpec]:
        """Seeds 0 … N−1 at the tuned point whose learning rate is `lr` (Optuna: with the
        other hyperparameters of that trial)."""
        hyperparameters = {**c.options, "lr": lr}
        if self._tuned(c):
            assert self.tuner is not None
            hyperparameters = self.tuner.hyperparameters_at(self, problem, steps, c, lr)
        return [self.spec(problem, steps, c, hyperparameters, s) for s in range(self.seeds)]

    def default_trials(self, problem: str, steps: int, c: Contender) -> list[TrialSpec]:
        """The untuned defaults (none for a custom class without a default ``lr``, and none
        for a learning-rate-free optimizer: its seed runs are already at its defaults)."""
        if c.default_lr is None or c.learning_rate_free:
            return []
        seeds = self.default_seeds or self.seeds
        hyperparameters = {**c.options, "lr": c.default_lr}
        return [self.spec(problem, steps, c, hyperparameters, s) for s in range(seeds)]

    def pairs(self) -> list[tuple[str, int, Contender]]:
        return [(p, steps, c) for p, steps in self.problems for c in self.optimizers]

    def reusable(self, store: ResultStore) -> dict[str, StoredTrial]:
        """The stored trials this comparison may reuse, by spec key (`ResultStore.answers`):
        a grid point successive halving stopped at a rung (``pruned``) only when this
        comparison's tuner is the halving too. One directory may hold a halving run and an
        exhaustive grid: the grid trains the pruned points to the end instead of taking their
        truncated curves for finished runs, and the halving keeps its own decisions."""
        return store.answers(pruned=self.halving is not None)


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
#: a trial to hand to the executor and whether a tuner may prune it
Job = tuple[TrialSpec, bool | HalvingPolicy]


class Planner:
    """Which trials a comparison needs, in which order, and which are reused — with no executor.

    `start` returns every trial to run first (the defaults and the tuning of every pair,
    in pair order); `finished` takes each result and returns what it unlocks (Optuna's next
    points; the seed reruns once a pair's tuning is complete). A trial whose key is in `known`
    (stored) is counted as reused and not handed out; a trial two roles need (seed 0 at the
    best point *is* that tuning trial) is handed out once.

    `results(keys)` reads stored trials (the store's `get`); `slots`: how many trials run at
    once (Optuna asks for about one point per free slot and study).

    The total is known from the start: the trials planned, the points the tuners will still
    ask for, and an estimate of the seed reruns (seeds − 1 per pair not yet tuned; seed 0 is the
    tuning trial) — `approximate` while any estimate is in it. When a pair's reruns turn out
    fewer (every rate diverged, or they coincide with the default trials) the difference is
    counted as `skipped`, so the total never goes down.
    """

    def __init__(
        self,
        comparison: Comparison,
        known: set[str],
        results: Callable[[list[str]], dict[str, StoredTrial]],
        slots: int = 1,
    ) -> None:
        comparison.resolve()
        self.comparison = comparison
        self.known = set(known)
        self.results = results
        self.slots = slots
        self.pairs = {(p, c.label): (p, steps, c) for p, steps, c in comparison.pairs()}
        self.tunings = {key: comparison.tuning(p, n, c) for key, (p, n, c) in self.pairs.items()}
        self.planned: set[str] = set()
        self.reused = 0
        self.skipped = 0
        self.seeded: set[tuple[str, str]] = set()
        self._listeners: dict[str, list[tuple[str, str]]] = {}

    # -- the total ------------------------------------------------------------------------------
    @property
    def estimated_reruns(self) -> int:
        return sum(max(0, self.comparison.seeds - 1) for k in self.pairs if k not in self.seeded)

    @property
    def total(self) -> int:
        remaining = sum(t.remaining for t in self.tunings.values())
        return len(self.planned) + remaining + self.estimated_reruns + self.skipped

    @property
    def approximate(self) -> bool:
        return self.estimated_reruns > 0

    # -- the plan -------------------------------------------------------------------------------
    def start(self) -> list[Job]:
        jobs: list[Job] = []
        for pair, tuning in self.tunings.items():
            problem, steps, c = self.pairs[pair]
            jobs += self._plan(self.comparison.default_trials(problem, steps, c))
            specs = tuning.initial()
            for spec in tuning.done_before():  # Optuna: told in an earlier run
                if spec.key not in self.planned:
                    self.planned.add(spec.key)
                    self.reused += 1
            jobs += self._feed(pair, specs)
        return jobs

    def finished(self, spec: TrialSpec, result: TrialResult) -> list[Job]:
        self.known.add(spec.key)
        jobs: list[Job] = []
        for pair in self._listeners.pop(spec.key, []):
            self.tunings[pair].observe(spec, result)
            jobs += self._feed(pair, [])
        return jobs

    def _plan(self, specs: list[TrialSpec], prune: bool | HalvingPolicy = False) -> list[Job]:
        jobs = []
        for spec in specs:
            if spec.key in self.planned:
                continue
            self.planned.add(spec.key)
            if spec.key in self.known:
                self.reused += 1
            else:
                jobs.append((spec, prune))
        return jobs

    def _parallel(self) -> int:
        """Tuning trials in flight per study: about one per slot, spread over the studies."""
        active = sum(not t.complete for t in self.tunings.values())
        return max(1, math.ceil(self.slots / max(1, active)))

    def _feed(self, pair: tuple[str, str], specs: list[TrialSpec]) -> list[Job]:
        """Plan `specs` and whatever the tuning asks for next; results already stored are
        observed at once (which may ask for more); a complete tuning unlocks its seeds."""
        tuning = self.tunings[pair]
        jobs: list[Job] = []
        while True:
            specs = [*specs, *(tuning.more(self._parallel()) if tuning.remaining else [])]
            for spec in specs:
                self._listeners.setdefault(spec.key, []).append(pair)
            jobs += self._plan(specs, prune=tuning.prune)
            stored = [s for s in specs if s.key in self.known]
            if not stored:
                break
            results = self.results([s.key for s in stored]) if tuning.needs_results else {}
            for spec in stored:
                if pair in self._listeners.get(spec.key, []):
                    self._listeners[spec.key].remove(pair)
                    trial = results.get(spec.key)
                    tuning.observe(spec, trial.result if trial else None)
            specs = []
        if tuning.complete and pair not in self.seeded:
            self.seeded.add(pair)
            problem, steps, c = self.pairs[pair]
            grid = self.comparison.grid_trials(problem, steps, c)
            lr = best_lr(list(self.results([s.key for s in grid]).values()))
            before = len(self.planned)
            if lr is not None:
                jobs += self._plan(self.comparison.seed_trials(problem, steps, c, lr))
            self.skipped += max(0, self.comparison.seeds - 1 - (len(self.planned) - before))
        return jobs


def run_comparison(
    comparison: Comparison,
    store: ResultStore,
    workers: int,
    progress: ProgressFn | None = None,
    executor: BaseExecutor | None = None,
) -> dict[str, int]:
    """Run every trial the protocol needs that is not in `store` yet (the `Planner` decides
    which; the executor runs them).

    `executor`: where the trials run (default: a local `Executor` with `workers` processes;
    e.g. `optimlab.lab.ray_executor.RayExecutor`); it is closed at the end.
    `progress` receives ``{"event": "planned", "total": N, "done": D, "approximate": bool,
    "skipped": K}`` once the first trials are planned and whenever the total or K changes (K: seed
    reruns found unnecessary, counted in both N and D though they never run), and
    ``{"event": "finished", "spec": TrialSpec, "result": TrialResult, "status": S, "reason": R,
    "done": D, "total": N, "approximate": bool}`` per trial. Returns counts: run (this call), reused (already stored),
    total.
    """
    executor = executor if executor is not None else Executor(store, workers)

    def stored(keys: list[str]) -> dict[str, StoredTrial]:
        reusable = comparison.reusable(store)
        return {key: reusable[key] for key in keys if key in reusable}

    planner = Planner(comparison, set(comparison.reusable(store)), stored, executor.slots)
    run = 0
    shown: tuple[int, int] | None = None

    def event(name: str, **extra: Any) -> dict[str, Any]:
        done = run + planner.reused + planner.skipped
        return {
            "event": name,
            "done": done,
            "total": planner.total,
            "approximate": planner.approximate,
            "skipped": planner.skipped,  # reruns found unnecessary: in done and total, never run
            **extra,
        }

    def submit(jobs: list[Job]) -> None:
        nonlocal shown
        for spec, prune in jobs:
            executor.submit(spec, prune)
        if progress is not None and (planner.total, planner.skipped) != shown:
            shown = (planner.total, planner.skipped)  # a skip changes what is left to run
            progress(event("planned"))

    with executor:
        submit(planner.start())
        while executor.pending:
            spec, result = executor.wait_one()
            run += 1
            if progress is not None:  # before the tuner is told (a Ctrl-C here loses nothing)
                progress(
                    event(
                        "finished",
                        spec=spec,
                        result=result,
                        status=result.status,
                        reason=result.reason,
                    )
                )
            submit(planner.finished(spec, result))
    return {"run": run, "reused": planner.reused, "total": len(planner.planned)}
