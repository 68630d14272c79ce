"""Successive halving over the learning-rate grid (``--tuner halving``), decided by Optuna.

The exhaustive grid trains every rate for the whole budget T. Successive halving (Jamieson &
Talwalkar 2016; asynchronous: Li et al. 2020) evaluates every point at *rungs*, budgets growing
geometrically — rung k at r·ηᵏ steps (r: the minimum resource, η: the reduction factor) — and
lets only the best 1/η of the points at a rung go on. The decision is Optuna's
`optuna.pruners.SuccessiveHalvingPruner`, not a scheduler of ours:

- **Single trials** (``--population off``, or a population that cannot be batched): the grid of
  one (problem, optimizer) is one unit of work; its points run one after the other, each an
  Optuna trial of one in-memory study with the pruner, reporting its validation loss at every
  evaluation and asking ``should_prune()`` (Optuna's usual loop; the pruner then compares a
  point with those that reached the rung before it — asynchronous successive halving).
- **Populations** (``--population auto``): the grid trains as one population
  (`optimlab.lab.population.train_population`, ``rung=``). At a rung every member's value is
  known at once, and each member's decision is the pruner's with *all* other members' values at
  that rung before it (`keep_at_rung`): a synchronous rung. (Optuna's pruner records a point's
  rung value when that point asks, not when it reports, so asking M members of one study in
  turn would let the first ones see only those asked before them; each member is therefore
  asked last, in a study of its own where the others asked first.) The pruned members leave the
  batched model (`optimlab.lab.population` compacts it); the rest continue bit for bit.

Either way a pruned point is stored with status ``pruned``, its curve up to the rung, the step
(``pruned_at``) and the reason; the ranking never takes it as the tuned rate (only ``ok`` trials
are), and a resumed run does not train it again (it is in the store).

Choices (`HalvingPolicy`): η = 2 and r = ⌈T / η²⌉, so two rungs, at T/4 and T/2, each keeping
the better half. Chosen by replaying halvings on the exhaustive grid's recorded curves
(``benchmarks/halving_agreement.py --replay``, docs/compare.md): on the full suite's finished
problems (29 pairs, 36 points, 1,500 steps) η = 2 with two rungs tuned the grid's rate in 29 of
29 pairs running 52 % of its steps; η = 3 with two rungs (T/9, T/3) only 22 of 29 (29 % of the
steps), η = 3 with one rung (T/3) 29 of 29 but 57 %. A learning-rate grid's curves cross
late — a small rate that ends best is still behind early — so early rungs judge the rates on
their first steps and favour the large ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from optimlab.lab.train import eval_steps, train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import Problem


@dataclass(frozen=True)
class HalvingPolicy:
    """How the grid is halved: reduction factor η, the number of rungs below the budget (the
    minimum resource is ⌈T / η^rungs⌉), and whether the unit trains as a population."""

    reduction_factor: int = 2
    rungs: int = 2
    batched: bool = True

    def __post_init__(self) -> None:
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor={self.reduction_factor}; allowed: >= 2")
        if self.rungs < 1:
            raise ValueError(f"rungs={self.rungs}; allowed: >= 1")

    def min_resource(self, steps: int) -> int:
        """r = ⌈T / η^rungs⌉: rung k is at r·ηᵏ steps."""
        return max(1, math.ceil(steps / self.reduction_factor**self.rungs))

    def rung_steps(self, steps: int, evals: int) -> list[int]:
        """The evaluation steps at which the rungs are decided: for each rung step r·ηᵏ < T,
        the first evaluation at or after it (a trial reports at its evaluations only)."""
        checkpoints = sorted(eval_steps(steps, evals))
        r, rungs = self.min_resource(steps), []
        k = 0
        while r * self.reduction_factor**k < steps:
            target = r * self.reduction_factor**k
            at = next((s for s in checkpoints if s >= target), None)
            if at is not None and at < steps and at not in rungs:
                rungs.append(at)
            k += 1
        return rungs

    def single(self) -> HalvingPolicy:
        return replace(self, batched=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "halving",
            "pruner": "optuna.pruners.SuccessiveHalvingPruner",
            "reduction_factor": self.reduction_factor,
            "min_resource": f"ceil(steps / {self.reduction_factor}**{self.rungs})",
        }


def _optuna() -> Any:
    from optimlab.lab.tuner import import_optuna

    optuna = import_optuna()
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def _pruner(optuna: Any, policy: HalvingPolicy, min_resource: int) -> Any:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_resource,
        reduction_factor=policy.reduction_factor,
        min_early_stopping_rate=0,
        bootstrap_count=0,
    )


def keep_at_rung(values: Sequence[float], policy: HalvingPolicy) -> list[bool]:
    """Optuna's SuccessiveHalvingPruner's verdict on each point of a synchronous rung: point i
    is asked in a study where every other point reported its value at the rung and asked
    before it, so it is compared with all of them (True: it goes on)."""
    optuna = _optuna()
    keep = []
    for i, value in enumerate(values):
        study = optuna.create_study(direction="minimize", pruner=_pruner(optuna, policy, 1))
        for j, other in enumerate(values):
            if j != i:
                trial = study.ask()
                trial.report(float(other), 1)
                trial.should_prune()
        trial = study.ask()
        trial.report(float(value), 1)
        keep.append(not trial.should_prune())
    return keep


class RungJudge:
    """The population's rung hook (`train_population`'s ``rung``): at a rung step, the members'
    validation losses go to `keep_at_rung`; returns {member: reason} of those to stop."""

    def __init__(self, policy: HalvingPolicy, steps: int, evals: int) -> None:
        self.policy = policy
        self.rungs = policy.rung_steps(steps, evals)

    def __call__(self, step: int, values: dict[int, float]) -> dict[int, str]:
        if step not in self.rungs or len(values) < 2:
            return {}
        members = list(values)
        verdict = keep_at_rung([values[i] for i in members], self.policy)
        rung = self.rungs.index(step)
        return {
            i: _reason(rung, step, values[i], len(members), self.policy)
            for i, kept in zip(members, verdict)
            if not kept
        }


def _reason(rung: int, step: int, value: float, competitors: int, policy: HalvingPolicy) -> str:
    return (
        f"pruned by Optuna's SuccessiveHalvingPruner at rung {rung} (step {step}, η="
        f"{policy.reduction_factor}): validation loss {value:.4g} is not among the best "
        f"1/{policy.reduction_factor} of the {competitors} points at this rung"
    )


def as_pruned(result: TrialResult) -> TrialResult:
    """A run the halving stopped (`train`'s ``diverged`` with ``pruned: true``) as status
    ``pruned``, with ``pruned_at`` its step."""
    if result.status != "diverged" or not result.metrics.get("pruned"):
        return result
    metrics = dict(result.metrics)
    metrics["pruned_at"] = metrics.pop("diverged_at")
    return TrialResult("pruned", metrics, reason=result.reason)


def run_halving(
    specs: list[TrialSpec], problem: Problem | None, policy: HalvingPolicy
) -> list[TrialResult]:
    """One (problem, optimizer)'s grid, halved: as one population (``policy.batched``) or as
    single trials one after the other in one Optuna study (results in the order of `specs`)."""
    if policy.batched and len(specs) > 1:
        from optimlab.lab.population import Unbatchable, train_population

        judge = RungJudge(policy, specs[0].steps, specs[0].evals)
        try:
            return train_population(specs, problem, rung=judge)
        except Unbatchable:
            pass
    return _run_single(specs, problem, policy)


def _run_single(
    specs: list[TrialSpec], problem: Problem | None, policy: HalvingPolicy
) -> list[TrialResult]:
    optuna = _optuna()
    steps = specs[0].steps
    study = optuna.create_study(
        direction="minimize", pruner=_pruner(optuna, policy, policy.min_resource(steps))
    )
    results = []
    for spec in specs:
        trial = study.ask()
        rungs = policy.rung_steps(spec.steps, spec.evals)

        def stop_if(
            step: int, curve: dict[str, list[Any]], trial: Any = trial, rungs: list[int] = rungs
        ) -> str | None:
            value = curve["val_loss"][-1]
            if step == 0 or not math.isfinite(value):
                return None  # (a non-finite loss is train's: status diverged)
            trial.report(float(value), step)
            if not trial.should_prune():
                return None
            rung = next((k for k, s in enumerate(rungs) if s >= step), len(rungs))
            competitors = len(
                [t for t in study.get_trials(deepcopy=False) if t.last_step is not None]
            )
            return _reason(rung, step, value, competitors, policy)

        result = as_pruned(train(spec, problem, stop_if=stop_if))
        value = result.metrics.get("final_val_loss")
        if result.status == "ok" and value is not None and math.isfinite(value):
            study.tell(trial, value)
        elif result.status == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        results.append(result)
    return results
