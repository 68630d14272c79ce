"""Tuning: which trials find the best hyperparameters of one (problem, optimizer).

Two tuners, chosen with ``--tuner``:

- **grid** (default): one trial per point of the log learning-rate grid, seed 0
  (`GridTuning`).
- **halving**: the grid, successively halved — the losing points stop at rungs, decided by
  Optuna's SuccessiveHalvingPruner (`HalvingTuning`, `optimlab.lab.halving`).
- **optuna**: Optuna's TPE sampler proposes ``trials`` points per (problem, optimizer) over the
  learning rate and, on request (``search``), the other hyperparameters in `SEARCH` — only
  those the optimizer has (`OptunaTuner`). This process asks Optuna for a point, submits the
  trial to the executor (local pool or Ray) like any other, and tells Optuna the result when
  it arrives (Optuna's ask-and-tell interface), keeping about one trial per free worker in
  flight. A trial whose validation loss explodes is stopped early (`optimlab.lab.pruning`),
  stored as ``diverged`` and told as pruned. With ``--population auto`` it asks for a
  population's worth of points at once (`OptunaTuner.ask_in_populations`): the batch trains as
  one population (the trials differ only in their rate) and each member is told alone.

Either way the tuning trials are ordinary trials in the results store (seed 0, keyed by their
spec): the best one (lowest final validation loss, ties to the smaller rate) is rerun with the
other seeds, and the summary, report and export work the same.

The studies live in the output directory, ``DIR/optuna.journal`` (Optuna's
`JournalStorage`, an append-only log: ≈12 ms per ask and tell here, against ≈60 ms for its
SQLite storage), one study per (problem, optimizer, schedule, steps, search space). Rerunning
the command resumes each study: finished trials count towards ``trials`` (so a larger
``--trials`` adds only the missing ones), and a trial asked but never told (the command was
killed) is told from the store if its result got there, or run again with the same point.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.optim.registry import get_info


# --- what a tuner needs from the comparison (a narrow interface: this module does not import
# optimlab.lab.protocol, which imports it) ------------------------------------------------------
class Contender(Protocol):
    """One optimizer entry (`optimlab.lab.protocol.Contender`)."""

    label: str
    name: str
    options: dict[str, Any]
    custom: Any

    @property
    def default_lr(self) -> float | None: ...


class Comparison(Protocol):
    """What the tuner reads and calls on the comparison (`optimlab.lab.protocol.Comparison`):
    the problems' canonical specs, the schedule and evaluation count (parts of a study's name),
    and the factory of trial specs."""

    resolved: dict[str, tuple[str, str]]
    schedule: str
    evals: int

    def spec(
        self, problem: str, steps: int, c: Any, hyperparameters: dict[str, Any], seed: int
    ) -> TrialSpec: ...

    def schedule_of(self, c: Any) -> str: ...


TUNERS = ("grid", "optuna", "halving")
#: rounds of ask-and-tell a study takes when it asks in populations (`ask_in_populations`)
POPULATION_ROUNDS = 4
JOURNAL_NAME = "optuna.journal"
INSTALL_HINT = "pip install 'optimlab[optuna]'"


class OptunaUnavailable(ImportError):
    """Optuna is not installed (the ``optuna`` extra)."""


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise OptunaUnavailable(
            f"the optuna tuner needs Optuna ({error}); {INSTALL_HINT}"
        ) from None
    return optuna


def remove_studies(directory: str | Path) -> None:
    """Delete the Optuna studies of an output directory (``--fresh``)."""
    path = Path(directory) / JOURNAL_NAME
    for file in (path, Path(f"{path}.lock")):
        file.unlink(missing_ok=True)


# --- the search space ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One ``--search`` name: the Optuna parameters it samples (each log-uniform in
    [low, high]), which optimizers have it, and the hyperparameters it sets."""

    name: str
    #: the optimizer's keyword argument it sets
    key: str
    #: (Optuna parameter, low, high); ``1-x`` parameters sample the distance of x from 1
    params: tuple[tuple[str, float, float], ...]
    values: Callable[[dict[str, float]], Any]
    #: the range of the hyperparameter itself, for the docs and the report
    meaning: str

    def applies(self, defaults: dict[str, Any]) -> bool:
        """The optimizer has it (momentum: only the momentum methods, so that plain sgd stays
        gradient descent and RMSProp stays RMSProp)."""
        if self.key not in defaults:
            return False
        default = defaults[self.key]
        if self.key == "momentum":
            return default > 0
        if self.key == "betas":  # (β₁, β₂): not Adan's or AdEMAMix's three betas
            return isinstance(default, list | tuple) and len(default) == 2
        if self.key in ("alpha", "rho"):  # a decay rate: not AdEMAMix's mixing weight α = 5
            return isinstance(default, int | float) and 0 < default < 1
        # one number (Adafactor's eps is a pair: a sampled number would replace both)
        return isinstance(default, int | float) and not isinstance(default, bool)


SEARCH: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension(
            "betas",
            "betas",
            (("1-beta1", 1e-3, 0.5), ("1-beta2", 1e-4, 0.1)),
            lambda p: (1.0 - p["1-beta1"], 1.0 - p["1-beta2"]),
            "β₁ ∈ [0.5, 0.999], β₂ ∈ [0.9, 0.9999] (1−β log-uniform)",
        ),
        Dimension(
            "momentum",
            "momentum",
            (("1-momentum", 1e-3, 1.0),),
            lambda p: 1.0 - p["1-momentum"],
            "μ ∈ [0, 0.999] (1−μ log-uniform)",
        ),
        Dimension(
            "alpha",
            "alpha",
            (("1-alpha", 1e-4, 0.1),),
            lambda p: 1.0 - p["1-alpha"],
            "α ∈ [0.9, 0.9999] (1−α log-uniform)",
        ),
        Dimension(
            "rho",
            "rho",
            (("1-rho", 1e-3, 0.5),),
            lambda p: 1.0 - p["1-rho"],
            "ρ ∈ [0.5, 0.999] (1−ρ log-uniform)",
        ),
        Dimension(
            "eps",
            "eps",
            (("eps", 1e-10, 1.0),),
            lambda p: p["eps"],
            "ε ∈ [1e-10, 1] log-uniform",
        ),
        Dimension(
            "weight_decay",
            "weight_decay",
            (("weight_decay", 1e-6, 0.1),),
            lambda p: p["weight_decay"],
            "λ ∈ [1e-6, 0.1] log-uniform (the optimizer's weight_decay)",
        ),
    )
}
#: every name ``--search`` accepts (the learning rate is always searched)
SEARCH_NAMES = ("lr", *SEARCH)


def parse_search(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"lr,betas"`` -> ("betas",): the extra dimensions, in `SEARCH` order (ValueError naming
    an unknown one)."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    for name in names:
        if name not in SEARCH_NAMES:
            raise ValueError(f"unknown search name {name!r}; valid: {', '.join(SEARCH_NAMES)}")
    return tuple(n for n in SEARCH if n in names)


def _defaults(c: Contender) -> dict[str, Any]:
    if c.custom is not None:  # a user's class: only its learning rate is searched
        return {"lr": c.default_lr or 1e-3}
    return get_info(c.name).cls.default_hyperparameters(c.options.get("convention", "torch"))


# --- the grid ---------------------------------------------------------------------------------
class GridTuning:
    """The grid of one (problem, optimizer): every point at once, complete when all are stored."""

    prune = False
    needs_results = False

    def __init__(self, specs: list[TrialSpec]) -> None:
        self._waiting = {spec.key for spec in specs}
        self._specs = specs

    def initial(self) -> list[TrialSpec]:
        return list(self._specs)

    def done_before(self) -> list[TrialSpec]:
        """Trials finished before this run that `initial` does not hand out again."""
        return []

    def more(self, parallel: int) -> list[TrialSpec]:
        return []

    def observe(self, spec: TrialSpec, result: TrialResult | None) -> None:
        self._waiting.discard(spec.key)

    @property
    def complete(self) -> bool:
        return not self._waiting

    @property
    def remaining(self) -> int:
        """Trials not yet handed out (the grid hands out all at once)."""
        return 0


class HalvingTuning(GridTuning):
    """The grid of one (problem, optimizer), successively halved (``--tuner halving``,
    `optimlab.lab.halving`): handed out at once like the grid, its trials carry the policy as
    their pruning, so the executor trains them as one unit whose losing points Optuna's
    SuccessiveHalvingPruner stops at the rungs (stored ``pruned``)."""

    def __init__(self, specs: list[TrialSpec], policy: Any) -> None:
        super().__init__(specs)
        self.prune = policy


# --- Optuna -----------------------------------------------------------------------------------
class OptunaTuner:
    """TPE over the learning rate (log-uniform over `lr_range`) and the `search` dimensions,
    `trials` finished trials per (problem, optimizer), studies in ``DIR/optuna.journal``."""

    name = "optuna"

    def __init__(
        self,
        directory: str | Path,
        trials: int,
        search: str | Sequence[str] = ("lr",),
        lr_range: tuple[float, float] = (1e-4, 10.0),
    ) -> None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"trials={trials!r}; allowed: an integer >= 1")
        low, high = lr_range
        if not (0 < low < high):
            raise ValueError(f"lr_range={lr_range!r}; allowed: 0 < low < high")
        self.search = parse_search(search)
        self.optuna = import_optuna()
        self.path = Path(directory) / JOURNAL_NAME
        self.trials = trials
        self.lr_range = (float(low), float(high))
        self._storage: Any = None
        self._sessions: dict[str, OptunaTuning] = {}
        #: each search name's optimizers (their labels), recorded by `check`
        self._applies: dict[str, list[str]] = {}
        #: points asked at once per study: 1 (about one per free worker), or a population's
        #: worth (`ask_in_populations`)
        self.batch = 1

    @property
    def startup_trials(self) -> int:
        """TPE's random start-up points per study (then it models the results)."""
        return max(3, min(10, self.trials // 4))

    def ask_in_populations(self) -> None:
        """Ask each study for M points at once, told before the next M are asked (``study.ask()``
        × M): M = max(TPE's start-up points, ⌈trials / 4⌉), so a study takes about four rounds,
        the first its random start-up.  Submitted together, the M trials form one population
        (`optimlab.lab.population`) when the executor batches.  The sampler then uses TPE's
        constant liar, so that the points of one batch do not crowd the same place."""
        self.batch = max(self.startup_trials, math.ceil(self.trials / POPULATION_ROUNDS))

    # -- the search space for one optimizer --------------------------------------------------
    def dimensions(self, c: Contender) -> list[Dimension]:
        """The requested dimensions this optimizer has and the spec does not fix."""
        defaults = _defaults(c)
        return [
            SEARCH[name]
            for name in self.search
            if SEARCH[name].applies(defaults) and SEARCH[name].key not in c.options
        ]

    def check(self, contenders: Sequence[Contender]) -> None:
        """ValueError if a requested dimension applies to none of the optimizers; records which
        optimizers each applies to (for `describe`: the meanings used to name a fixed list,
        ``betas: adam, adamax, nadam``, while AdamW, Lion, … have betas too)."""
        for name in self.search:
            having = [c.label for c in contenders if SEARCH[name] in self.dimensions(c)]
            if not having:
                labels = ", ".join(c.label for c in contenders)
                raise ValueError(
                    f"search name {name!r} applies to none of the optimizers ({labels}): "
                    f"none has a {SEARCH[name].key!r} argument"
                    f"{' with momentum > 0' if name == 'momentum' else ''}; "
                    f"{name}: {SEARCH[name].meaning}"
                )
            self._applies[name] = having

    def hyperparameters(self, c: Contender, params: dict[str, float]) -> dict[str, Any]:
        """The optimizer's keyword arguments for a point of the search space."""
        values: dict[str, Any] = {**c.options, "lr": float(params["lr"])}
        for dimension in self.dimensions(c):
            values[dimension.key] = dimension.values(params)
        return values

    def suggest(self, trial: Any, c: Contender) -> dict[str, Any]:
        params = {"lr": trial.suggest_float("lr", *self.lr_range, log=True)}
        for dimension in self.dimensions(c):
            for param, low, high in dimension.params:
                params[param] = trial.suggest_float(param, low, high, log=True)
        return self.hyperparameters(c, params)

    def describe(self) -> dict[str, Any]:
        low, high = self.lr_range
        return {
            "name": self.name,
            "trials": self.trials,
            "search": {
                "lr": f"log-uniform in [{low:g}, {high:g}]",
                **{name: self._meaning(name) for name in self.search},
            },
            "storage": str(self.path),
            "batch": self.batch,
        }

    def _meaning(self, name: str) -> str:
        having = self._applies.get(name)
        return SEARCH[name].meaning + (f"; {', '.join(having)}" if having else "")

    # -- studies ----------------------------------------------------------------------------
    def storage(self) -> Any:
        if self._storage is None:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._storage = JournalStorage(JournalFileBackend(str(self.path)))
        return self._storage

    def study_name(self, comparison: Comparison, problem: str, steps: int, c: Contender) -> str:
        """What makes two tuning trials comparable: problem, optimizer entry, schedule, budget,
        evaluations and the search space."""
        canonical = comparison.resolved[problem][0]
        space = ",".join(
            [f"lr[{self.lr_range[0]:g},{self.lr_range[1]:g}]"]
            + [d.name for d in self.dimensions(c)]
        )
        return (
            f"problem={canonical}|optimizer={c.label}|schedule={comparison.schedule_of(c)}"
            f"|steps={steps}|evals={comparison.evals}|search={space}"
        )

    def tuning(
        self, comparison: Comparison, problem: str, steps: int, c: Contender
    ) -> OptunaTuning:
        """The (resumed) study of one (problem, optimizer), opened once per tuner."""
        name = self.study_name(comparison, problem, steps, c)
        if name not in self._sessions:
            self._sessions[name] = OptunaTuning(self, comparison, problem, steps, c, name)
        return self._sessions[name]

    def trial_specs(
        self, comparison: Comparison, problem: str, steps: int, c: Contender
    ) -> list[TrialSpec]:
        """Every tuning trial of the study that was handed out (any state)."""
        return [spec for _, spec in self.tuning(comparison, problem, steps, c).handed_out()]

    def hyperparameters_at(
        self, comparison: Comparison, problem: str, steps: int, c: Contender, lr: float
    ) -> dict[str, Any]:
        """The hyperparameters of the best finished tuning trial with learning rate `lr` (the
        other dimensions come with it); just the rate if no tuning trial had it."""
        return self.tuning(comparison, problem, steps, c).best_at(lr) or {**c.options, "lr": lr}


class OptunaTuning:
    """One study, driven by ask-and-tell: `more` asks for points (trials to submit), `observe`
    tells a finished trial's result."""

    prune = True
    needs_results = True

    def __init__(
        self,
        tuner: OptunaTuner,
        comparison: Comparison,
        problem: str,
        steps: int,
        c: Contender,
        name: str,
    ) -> None:
        optuna = tuner.optuna
        self.tuner, self.comparison, self.problem, self.steps, self.c = (
            tuner,
            comparison,
            problem,
            steps,
            c,
        )
        self.states = optuna.trial.TrialState
        storage = tuner.storage()
        try:
            existing = len(optuna.load_study(study_name=name, storage=storage).trials)
        except KeyError:
            existing = 0
        # seeded per study, and moved on by what the study already holds: a resumed study
        # must not replay the first run's random start-up points
        seed = (zlib.crc32(name.encode()) + existing) % 2**32
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=tuner.startup_trials, constant_liar=tuner.batch > 1
        )
        self.study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            direction="minimize",
            load_if_exists=True,
        )
        self.name = name
        self._live: dict[int, Any] = {}  # trials asked by this process, by number
        self._waiting: dict[str, list[int]] = {}  # spec key -> trial numbers to tell
        self.finished = 0
        self._started = False
        self._done_before: list[TrialSpec] = []

    # -- bookkeeping -------------------------------------------------------------------------
    def spec(self, params: dict[str, float]) -> TrialSpec:
        hyperparameters = self.tuner.hyperparameters(self.c, params)
        return self.comparison.spec(self.problem, self.steps, self.c, hyperparameters, seed=0)

    def handed_out(self) -> list[tuple[Any, TrialSpec]]:
        """(frozen trial, spec) of every trial asked completely (its key attribute is set)."""
        return [
            (t, self.spec(t.params))
            for t in self.study.get_trials(deepcopy=False)
            if "key" in t.user_attrs
        ]

    def best_at(self, lr: float) -> dict[str, Any] | None:
        complete = [
            (t.value, t.number, spec)
            for t, spec in self.handed_out()
            if t.state == self.states.COMPLETE and spec.lr == lr
        ]
        return (
            dict(min(complete, key=lambda x: (x[0], x[1]))[2].hyperparameters) if complete else None
        )

    @property
    def running(self) -> int:
        return sum(len(numbers) for numbers in self._waiting.values())

    @property
    def remaining(self) -> int:
        """Trials still to ask for."""
        return max(0, self.tuner.trials - self.finished - self.running)

    @property
    def complete(self) -> bool:
        return self._started and self.finished >= self.tuner.trials and not self.running

    # -- ask and tell ------------------------------------------------------------------------
    def initial(self) -> list[TrialSpec]:
        """Resume: the trials a killed run asked for but never told, to run (again)."""
        self._started, self.finished, self._done_before = True, 0, []
        finished = (self.states.COMPLETE, self.states.PRUNED, self.states.FAIL)
        specs = []
        for trial in self.study.get_trials(deepcopy=False):
            if "key" not in trial.user_attrs:
                if trial.state == self.states.RUNNING:  # killed between ask and submit
                    self.study.tell(trial.number, state=self.states.FAIL)
                continue
            if trial.state in finished:
                self.finished += 1
                self._done_before.append(self.spec(trial.params))
            elif trial.state == self.states.RUNNING:
                spec = self.spec(trial.params)
                self._waiting.setdefault(spec.key, []).append(trial.number)
                specs.append(spec)
        return specs

    def done_before(self) -> list[TrialSpec]:
        """The trials this study had finished before this run (told, not to be run again)."""
        return list(self._done_before)

    def more(self, parallel: int) -> list[TrialSpec]:
        """Ask for new points while fewer than `parallel` of this study's trials are running;
        asking in populations (``tuner.batch`` > 1): a batch once the last one is all told."""
        specs = []
        if self.tuner.batch > 1:
            if self.running:
                return []
            parallel = min(self.tuner.batch, self.remaining)
        while self.remaining and self.running < parallel:
            trial = self.study.ask()
            spec = self.comparison.spec(
                self.problem, self.steps, self.c, self.tuner.suggest(trial, self.c), seed=0
            )
            trial.set_user_attr("key", spec.key)
            self._live[trial.number] = trial
            self._waiting.setdefault(spec.key, []).append(trial.number)
            specs.append(spec)
        return specs

    def observe(self, spec: TrialSpec, result: TrialResult | None) -> None:
        """Tell Optuna the result of `spec`: its final validation loss; pruned if it diverged
        (the last finite validation loss reported at its step); failed if it failed."""
        assert result is not None
        for number in self._waiting.pop(spec.key, []):
            trial = self._live.pop(number, None)
            target = trial if trial is not None else number
            value = result.metrics.get("final_val_loss")
            if result.status == "ok" and value is not None and math.isfinite(value):
                self.study.tell(target, value)
            elif result.status == "diverged":
                if trial is not None:
                    last = _last_finite(result.metrics.get("curve") or {})
                    if last is not None:
                        trial.report(last[1], last[0])
                self.study.tell(target, state=self.states.PRUNED)
            else:
                if trial is not None:
                    trial.set_user_attr("reason", result.reason[:500])
                self.study.tell(target, state=self.states.FAIL)
            self.finished += 1


def _last_finite(curve: dict[str, list[Any]]) -> tuple[int, float] | None:
    points = [
        (int(step), float(value))
        for step, value in zip(curve.get("step", []), curve.get("val_loss", []))
        if value is not None and math.isfinite(value)
    ]
    return points[-1] if points else None
