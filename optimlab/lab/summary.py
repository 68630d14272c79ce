"""From stored trials to the comparison's results: statistics over seeds, ensembles, learning-rate
sensitivity, steps to a target, rankings per problem and overall by performance profile.

Steps to target. Each problem gets a target training loss by the convergence test of Moré & Wild
(2009, "Benchmarking derivative-free optimization algorithms"): a run has converged when
f(0) − f ≥ (1 − tol)·(f(0) − f_best), i.e. when it has achieved a share 1 − tol of the largest
reduction any optimizer achieved (f_best = the lowest point of any optimizer's mean curve).
An optimizer's steps to target are the first evaluation step at which the mean over its seeds of
the full-training-set loss meets the target. Moré & Wild report several tolerances because each
answers another question; the summary holds tol = 1e-1, 1e-2 and 1e-3 and ranks by 1e-2. At 1e-1
(90% of the best reduction) the target sits where the loss falls steeply, so it mostly measures
the first few steps: on the quick suite's quadratic it is a loss of 133 that every optimizer
passes within 25 steps while their final losses are 86–89.

Performance profile (Dolan & Moré 2002). With t(p, s) the steps to target of optimizer s on
problem p, r(p, s) = t(p, s) / min over s of t(p, s) (∞ if s never reaches the target), and
ρ_s(τ) = share of problems with r(p, s) ≤ τ, for τ from 1 to 4. The overall ranking orders the
optimizers by the mean of ρ_s over that τ grid (the normalized area under the profile); the
ones a bootstrap over their seeds cannot separate share a rank (`optimlab.lab.profile_bootstrap`).

Per-problem rank: by test accuracy (classification) or final test loss (regression, language
models) across the seeds, with ties where the difference is within noise (`optimlab.lab.significance`: Welch's
t-test, Holm's correction): rank = 1 + the number of optimizers significantly better. An
optimizer whose tuned runs all diverged or failed is not ranked (rank None, its status and
reason say why). A problem that no optimizer learned (chance accuracy, or no drop from the
starting loss) is reported as such and left out of the overall ranking.

Failed seeds count. A seed rerun at the tuned rate that diverged or failed counts in the ranking
as an untrained model from the step it stopped (`COUNTED_FAILURES`): its ranked metric is the
untrained value — chance accuracy for classification, its step-0 validation loss for a loss
metric (the test loss is not measured at step 0) — and its training-loss curve from that step
on is its step-0 value, in the steps to target and the bootstrap alike. An optimizer that
diverges on half its seeds is then ranked on a mean that says so, not on its survivors. The
statistics over the ok seeds (``*_mean``, ``*_std``) stay in the summary beside what the
ranking used (``ranked_mean``, ``ranked_std`` and ``values``, per seed as ranked). An optimizer with no ok
seed stays unranked; a grid point stopped by successive halving (``pruned``) is no seed.

Wall-clock time to the target (``seconds_to_target``) sits beside the steps: the training time
(evaluations and the first step's warm-up excluded) until the evaluation step at which the mean
curve met the target, mean over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from optimlab import __version__
from optimlab.lab.profile_bootstrap import (
    SeedCurves,
    bootstrap_scores,
    replicates_for,
    supported_ranks,
)
from optimlab.lab.protocol import Comparison, Contender, best_lr
from optimlab.lab.significance import ALPHA, chance_accuracy, learned, tied_ranks
from optimlab.lab.store import ResultStore, StoredTrial
from optimlab.lab.trial import jsonable, perplexity

#: Moré & Wild's tolerances the summary reports; the overall ranking uses `RANKING_TOLERANCE`
TARGET_TOLERANCES = (0.1, 0.01, 0.001)
RANKING_TOLERANCE = 0.01
TAUS = [round(1 + 0.1 * i, 1) for i in range(31)]  # 1.0, 1.1, …, 4.0
STATS = (
    "final_train_loss",
    "final_val_loss",
    "final_test_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "val_perplexity",
    "test_perplexity",
    "seconds_per_step",
    "warmup_seconds",
)


#: seed statuses that count in the ranking as an untrained model from the step they stopped
COUNTED_FAILURES = ("diverged", "failed")


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    # one value has no spread: std is None (not 0) so the report does not claim ± 0
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else None


def seed_statistics(
    trials: list[StoredTrial], classification: bool = True, language_model: bool = False
) -> dict[str, Any]:
    """mean and std over the ok seeds of every metric in `STATS` (None where no seed finished;
    accuracies for classification only, perplexities for language models only), and run
    counts."""
    ok = [t for t in trials if t.result.status == "ok"]
    stats: dict[str, Any] = {
        "seeds": len(trials),
        "seeds_ok": len(ok),
        "seeds_diverged": sum(t.result.status == "diverged" for t in trials),
        "seeds_failed": sum(t.result.status == "failed" for t in trials),
    }
    for name in STATS:
        if "accuracy" in name and not classification:
            continue
        if "perplexity" in name and not language_model:
            continue
        stats[f"{name}_mean"], stats[f"{name}_std"] = mean_std(
            t.result.metrics.get(name) for t in ok
        )
    return stats


def ensemble_accuracy(trials: list[StoredTrial], test_targets: np.ndarray | None) -> float | None:
    """Test accuracy of the seeds' models averaged: argmax of the mean class probabilities."""
    probabilities = [
        np.frombuffer(t.result.predictions, dtype=np.float16).astype(np.float64)
        for t in trials
        if t.result.status == "ok" and t.result.predictions is not None
    ]
    if not probabilities or test_targets is None:
        return None
    mean = np.mean(probabilities, axis=0).reshape(len(test_targets), -1)
    return float((mean.argmax(1) == test_targets).mean())


def failure_step(trial: StoredTrial) -> int:
    """The step from which a diverged or failed seed counts as untrained: where it diverged
    (``diverged_at``), else 0 (it raised, or never trained)."""
    at = trial.result.metrics.get("diverged_at") if trial.result.status == "diverged" else None
    return int(at) if isinstance(at, int | float) and math.isfinite(at) else 0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def counted_curves(
    trials: list[StoredTrial], key: str = "train_loss"
) -> tuple[list[int], list[list[float]]]:
    """The evaluation steps every ok seed reached (early stopping cuts curves short) and, per
    seed that counts in the ranking, its curve at them: an ok seed's own values (NaN where
    missing); a diverged or failed one's own values before `failure_step` and its step-0 value
    from there on (an untrained model; the ok seeds' mean step-0 value when it has none). A
    pruned trial is no seed: left out. No ok seed: no steps, no rows."""
    ok = [t for t in trials if t.result.status == "ok"]
    curves = [t.result.metrics["curve"] for t in ok]
    if not curves:
        return [], []
    length = min(len(c["step"]) for c in curves)
    steps = [int(s) for s in curves[0]["step"][:length]]
    starts = [c[key][0] for c in curves if c[key] and _finite(c[key][0])]
    fallback = float(np.mean(starts)) if starts else math.nan
    rows = []
    for t in trials:
        curve = t.result.metrics.get("curve") or {}
        values = curve.get(key) or []
        if t.result.status == "ok":
            rows.append([math.nan if v is None else float(v) for v in values[:length]])
        elif t.result.status in COUNTED_FAILURES:
            start = float(values[0]) if values and _finite(values[0]) else fallback
            stop = failure_step(t)
            own = dict(zip(curve.get("step") or [], values))
            rows.append(
                [float(own[s]) if s < stop and _finite(own.get(s)) else start for s in steps]
            )
    return steps, rows


def mean_curve(
    trials: list[StoredTrial],
    key: str = "train_loss",
    seconds: bool = False,
    count_failures: bool = False,
) -> dict[str, list[Any]]:
    """Mean and std over the ok seeds of a curve, at each evaluation step that every seed
    reached (early stopping and divergence cut curves short). `seconds`: also the mean
    training seconds at each step (when the trials recorded them). `count_failures`: the mean
    over every seed as the ranking counts them (`counted_curves`: a diverged or failed seed at
    its step-0 value from the step it stopped)."""
    ok = [t for t in trials if t.result.status == "ok"]
    curves = [t.result.metrics["curve"] for t in ok]
    if not curves:
        return {"step": [], "mean": [], "std": []}
    length = min(len(c["step"]) for c in curves)
    if count_failures:
        values = np.array(counted_curves(trials, key)[1], dtype=float)
    else:
        values = np.array([[np.nan if v is None else v for v in c[key][:length]] for c in curves])
    out = {
        "step": curves[0]["step"][:length],
        "mean": [float(v) for v in np.nanmean(values, axis=0)],
        "std": [float(v) for v in np.nanstd(values, axis=0)],
    }
    timings = [t.result.metrics.get("curve_seconds") for t in ok]
    if seconds and all(t is not None and len(t) >= length for t in timings):
        out["seconds"] = [float(v) for v in np.mean([t[:length] for t in timings], axis=0)]
    return out


def seconds_at(curve: dict[str, list[Any]], step: int | None) -> float | None:
    """The mean training seconds at evaluation step `step` of a mean curve (None if unknown)."""
    if step is None or "seconds" not in curve:
        return None
    return curve["seconds"][curve["step"].index(step)]


def steps_to(curve: dict[str, list[Any]], target: float) -> int | None:
    for step, value in zip(curve["step"], curve["mean"]):
        if value is not None and math.isfinite(value) and value <= target:
            return int(step)
    return None


def target_loss(curves: Iterable[dict[str, list[Any]]], tolerance: float) -> float | None:
    """Moré & Wild's target: f_best + tol·(f(0) − f_best) over the optimizers' mean curves
    (f(0): the mean of their starting points, which differ only by the seeds' initializations)."""
    curves = [c for c in curves if c["mean"]]
    if not curves:
        return None
    f0 = float(np.mean([c["mean"][0] for c in curves]))
    best = min(min(c["mean"]) for c in curves)
    return best + tolerance * (f0 - best)


def tolerance_key(tolerance: float) -> str:
    """The JSON key of a tolerance: "0.1", "0.01", "0.001"."""
    return repr(float(tolerance))


def performance_profile(
    steps: dict[str, dict[str, int | None]], labels: list[str]
) -> dict[str, list[float]]:
    """ρ_s(τ) for each optimizer label over `TAUS`; `steps[problem][label]` = steps to target."""
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    for per_optimizer in steps.values():
        reached = [v for v in per_optimizer.values() if v is not None]
        if not reached:
            continue
        best = max(min(reached), 1)
        for label in labels:
            value = per_optimizer.get(label)
            ratios[label].append(math.inf if value is None else max(value, 1) / best)
    profile = {}
    for label in labels:
        r = ratios[label]
        profile[label] = [sum(x <= tau for x in r) / len(r) if r else 0.0 for tau in TAUS]
    return profile


def summarize(
    comparison: Comparison,
    trials: dict[str, StoredTrial],
    test_targets: dict[str, np.ndarray | None],
    seconds: float | None = None,
    tasks: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The summary.json document of a comparison (see docs/compare.md for every field).

    `trials`: stored trials by key; `test_targets`: each problem spec's test labels (for the
    ensembles; None for regression and language models); `tasks`: each problem spec's task
    (default: classification where there are test labels, else regression).
    """
    problems: dict[str, dict[str, Any]] = {}
    steps_tables: dict[float, dict[str, dict[str, int | None]]] = {
        tol: {} for tol in TARGET_TOLERANCES
    }
    per_problem_ranking: dict[str, list[str]] = {}
    seed_curves: dict[str, dict[str, SeedCurves | None]] = {}
    labels = [c.label for c in comparison.optimizers]
    for problem, steps in comparison.problems:
        canonical, plabel = comparison.resolved[problem]
        entries: dict[str, Any] = {}
        curves: dict[str, dict[str, list[Any]]] = {}
        starts: list[float] = []  # every seed's step-0 validation loss: the untrained model's
        task = (tasks or {}).get(problem) or (
            "classification" if test_targets.get(problem) is not None else "regression"
        )
        for c in comparison.optimizers:
            entry, curve, seeds = _pair(
                comparison, problem, steps, c, trials, test_targets.get(problem), task
            )
            entries[c.label] = entry
            curves[c.label] = curve
            starts += [v for t in seeds if (v := _start_loss(t)) is not None]
            # the bootstrap redraws the seeds as the ranking counts them: a diverged or
            # failed seed is an untrained model from the step it stopped (`counted_curves`)
            steps_run, rows = counted_curves(seeds)
            seed_curves.setdefault(plabel, {})[c.label] = SeedCurves.from_curves(
                [(True, steps_run, row) for row in rows]
            )
        # the targets: a share 1 - tol of the best reduction of the mean training loss
        targets = {tol: target_loss(curves.values(), tol) for tol in TARGET_TOLERANCES}
        for label, curve in curves.items():
            entries[label]["steps_to_targets"] = {}
            for tol, target in targets.items():
                reached = steps_to(curve, target) if target is not None else None
                entries[label]["steps_to_targets"][tolerance_key(tol)] = reached
                steps_tables[tol].setdefault(plabel, {})[label] = reached
            entries[label]["steps_to_target"] = steps_tables[RANKING_TOLERANCE][plabel][label]
            entries[label]["seconds_to_target"] = seconds_at(
                curve, entries[label]["steps_to_target"]
            )
        test_set = test_targets.get(problem)
        # a test accuracy moves in steps of one test example (see significance.welch_p)
        classification = task == "classification" and test_set is not None
        resolution = 1.0 / len(test_set) if classification else 0.0
        untrained = (
            chance_accuracy(test_set)
            if classification
            else (float(np.mean(starts)) if starts else None)
        )
        ranking = _rank_problem(entries, task, resolution, untrained)
        per_problem_ranking[plabel] = ranking
        info = _learned(entries, curves, task, test_set)
        problems[plabel] = {
            "spec": canonical,
            "task": task,
            "steps": steps,
            "metric": METRICS[task],
            **info,
            "target_tolerance": RANKING_TOLERANCE,
            "target_train_loss": targets[RANKING_TOLERANCE],
            "target_train_losses": {tolerance_key(t): v for t, v in targets.items()},
            "optimizers": entries,
        }
    # the overall ranking: problems someone learned, optimizers that ran somewhere
    learned_problems = [p for p in problems if problems[p]["learned"]]
    # ranked on a problem someone learned: with none learned there is no overall ranking (a
    # table "on 0 learned problems" with a rank 1 contradicted the answer's "no ranking")
    ranked_labels = [
        label
        for label in labels
        if any(problems[p]["optimizers"][label]["rank"] is not None for p in learned_problems)
    ]
    profiles = {
        tol: performance_profile({p: steps_tables[tol][p] for p in learned_problems}, ranked_labels)
        for tol in TARGET_TOLERANCES
    }
    profile = profiles[RANKING_TOLERANCE]
    overall = []
    for label in ranked_labels:
        ranks = [problems[p]["optimizers"][label]["rank"] for p in learned_problems]
        ranks = [r for r in ranks if r is not None]
        overall.append(
            {
                "optimizer": label,
                "profile_score": float(np.mean(profile[label])),
                "profile_scores": {
                    tolerance_key(tol): float(np.mean(profiles[tol][label]))
                    for tol in TARGET_TOLERANCES
                },
                "solved_within_best": profile[label][0],
                "mean_rank": float(np.mean(ranks)) if ranks else None,
            }
        )
    # the ranks the seeds support: optimizers within the bootstrap's noise of a group's best
    # share its rank (see optimlab.lab.profile_bootstrap)
    replicates = bootstrap_scores(
        {p: seed_curves[p] for p in learned_problems}, ranked_labels, RANKING_TOLERANCE, TAUS
    )
    # one seed per problem: redrawing it measures no noise (see supported_ranks)
    testable = {
        label: any(
            (curve := seed_curves[p].get(label)) is not None and int(curve.ok.sum()) >= 2
            for p in learned_problems
        )
        for label in ranked_labels
    }
    ranks = supported_ranks(ranked_labels, replicates, testable=testable) if ranked_labels else {}
    for row in overall:
        row["rank"] = ranks[row["optimizer"]]
        row["tied_with"] = [
            other for other in ranks if other != row["optimizer"] and ranks[other] == row["rank"]
        ]
    overall.sort(key=lambda r: (r["rank"], -r["profile_score"], r["mean_rank"] or math.inf))
    unranked = [
        {"optimizer": label, "reason": _unranked_reason(problems, label)}
        for label in labels
        if label not in ranked_labels
    ]
    counts = {"ok": 0, "diverged": 0, "failed": 0}
    for t in trials.values():
        counts[t.result.status] = counts.get(t.result.status, 0) + 1
    return jsonable(
        {
            "optimlab_version": __version__,
            "run": {
                **comparison.describe(),
                "seconds": seconds,
                "trials": len(trials),
                "trial_status": counts,
                "trial_seconds": float(
                    sum(t.result.metrics.get("seconds", 0.0) for t in trials.values())
                ),
                "trial_cpu_seconds": float(
                    sum(t.result.metrics.get("cpu_seconds", 0.0) for t in trials.values())
                ),
            },
            # summary.json's main table: PROBLEM → OPTIMIZER → metrics (curves live in "curves")
            "problems": {p: v["optimizers"] for p, v in problems.items()},
            "problem_info": {
                p: {k: v for k, v in info.items() if k != "optimizers"}
                for p, info in problems.items()
            },
            "ranking": overall,
            "unranked": unranked,
            "ranked_problems": learned_problems,
            "recommendations": recommendations(problems, overall, unranked, comparison.seeds),
            "per_problem_ranking": per_problem_ranking,
            "target_tolerance": RANKING_TOLERANCE,
            "ranking_ties": {
                "method": "bootstrap over seeds",
                "replicates": replicates_for(len(ranked_labels)),
                "alpha": ALPHA,
            },
            "performance_profile": {"tau": TAUS, **profile},
            "performance_profiles": {
                tolerance_key(tol): {"tau": TAUS, **profiles[tol]} for tol in TARGET_TOLERANCES
            },
            "curves": _curves(comparison, trials),
        }
    )


def _pair(
    comparison: Comparison,
    problem: str,
    steps: int,
    c: Contender,
    trials: dict[str, StoredTrial],
    test_targets: np.ndarray | None,
    task: str = "classification",
) -> tuple[dict[str, Any], dict[str, list[Any]], list[StoredTrial]]:
    grid = [trials[s.key] for s in comparison.grid_trials(problem, steps, c) if s.key in trials]
    lr = best_lr(grid)
    sensitivity = [
        {
            "lr": t.spec.lr,
            "status": t.result.status,
            "final_val_loss": t.result.metrics.get("final_val_loss"),
            # --tuner halving: the validation loss at the rung where it stopped
            **({"last_val_loss": _last_val_loss(t)} if t.result.status == "pruned" else {}),
        }
        for t in sorted(grid, key=lambda t: t.spec.lr)
    ]
    entry: dict[str, Any] = {
        "best_lr": lr,
        "lr_sensitivity": sensitivity,
        # how it was run: at its defaults (no grid) / tuned but never scheduled / the protocol
        "learning_rate_free": c.learning_rate_free,
        "schedule_free": c.schedule_free,
        "protocol": protocol_note(comparison, c),
    }
    grid_lrs = [s["lr"] for s in sensitivity]
    entry["best_lr_at_grid_edge"] = _at_edge(comparison, lr, grid_lrs)
    # not tuned, and shown so: a rate the user fixed (NAME:lr=…), or a one-point grid
    # (--grid-points 1), which runs one rate and calls it tuned otherwise
    entry["lr_fixed"] = "lr" in c.options
    entry["lr_untuned"] = (
        comparison.tuner is None
        and not c.learning_rate_free
        and not entry["lr_fixed"]
        and len(comparison.grid) == 1
    )
    seeds: list[StoredTrial] = []
    # what the tuner chose besides lr (Optuna's --search: betas, eps, ...), so that the answer
    # can be reproduced; empty for the grid
    entry["tuned_hyperparameters"] = {}
    if lr is not None:
        specs = comparison.seed_trials(problem, steps, c, lr)
        seeds = [trials[s.key] for s in specs if s.key in trials]
        if specs:
            entry["tuned_hyperparameters"] = {
                k: v
                for k, v in specs[0].hyperparameters.items()
                if k != "lr" and c.options.get(k, object()) != v
            }
    classification = test_targets is not None
    language_model = task == "language-model"
    entry.update(seed_statistics(seeds, classification, language_model))
    entry["ensemble_test_accuracy"] = ensemble_accuracy(seeds, test_targets)
    defaults = [
        trials[s.key] for s in comparison.default_trials(problem, steps, c) if s.key in trials
    ]
    if c.learning_rate_free:  # its tuned seeds are its defaults: nothing else was run
        defaults = seeds
    entry["default"] = {
        "lr": c.default_lr,
        **seed_statistics(defaults, classification, language_model),
    }
    metric = "test_accuracy" if classification else "final_test_loss"
    untrained = _untrained_values(seeds, test_targets)
    imputed = [v for v in untrained if v is not None]
    # what the ranking uses: every seed, a diverged or failed one at the untrained value (none
    # if no seed finished: the pair stays unranked)
    entry["values"] = []
    if entry["seeds_ok"]:
        for t, value in zip(seeds, untrained):
            if t.result.status == "ok" and t.result.metrics.get(metric) is not None:
                entry["values"].append(t.result.metrics[metric])
            elif value is not None:
                entry["values"].append(value)
    entry["ranked_mean"], entry["ranked_std"] = mean_std(entry["values"])
    entry["seeds_counted_untrained"] = len(imputed) if entry["seeds_ok"] else 0
    entry["untrained_value"] = float(np.mean(imputed)) if imputed else None
    entry["status"], entry["reason"] = _status(entry, grid, lr)
    if entry["status"] == "ok" and entry["seeds_counted_untrained"]:
        shown_as = "classification" if classification else task
        entry["reason"] = _seed_failures(
            entry, seeds, shown_as if shown_as in METRICS else "regression"
        )
    return entry, mean_curve(seeds, seconds=True, count_failures=True), seeds


def _start_loss(t: StoredTrial) -> float | None:
    """A trial's validation loss at step 0 (its untrained model's), None if not finite."""
    losses = (t.result.metrics.get("curve") or {}).get("val_loss") or [None]
    return float(losses[0]) if _finite(losses[0]) else None


def _untrained_values(
    seeds: list[StoredTrial], test_targets: np.ndarray | None
) -> list[float | None]:
    """Per seed, in order: for a diverged or failed one, the ranked metric of an untrained
    model — chance accuracy (classification), else its step-0 validation loss (the ok seeds'
    mean when it has none; None when nobody has one); None for the others."""
    if not any(t.result.status in COUNTED_FAILURES for t in seeds):
        return [None] * len(seeds)
    chance = chance_accuracy(test_targets) if test_targets is not None else None
    start = _start_loss
    known = [v for t in seeds if t.result.status == "ok" and (v := start(t)) is not None]
    fallback = float(np.mean(known)) if known else None
    values: list[float | None] = []
    for t in seeds:
        if t.result.status not in COUNTED_FAILURES:
            values.append(None)
        elif chance is not None:
            values.append(chance)
        else:
            own = start(t)
            values.append(own if own is not None else fallback)
    return values


def _seed_failures(entry: dict[str, Any], seeds: list[StoredTrial], task: str) -> str:
    """``3 of 10 seeds diverged at steps 40, 80 and 120 at lr 0.1: ranked counting each as an
    untrained model (test accuracy 10.0 %, chance); the 7 that finished: 97.0 ± 0.3 %``."""
    parts = []
    for status in COUNTED_FAILURES:
        stopped = [t for t in seeds if t.result.status == status]
        if not stopped:
            continue
        text = f"{len(stopped)} of {len(seeds)} seeds {status}"
        if status == "diverged":
            steps = [str(step) for step in sorted({failure_step(t) for t in stopped})]
            text += f" at step{'s' if len(steps) > 1 else ''} {_names(steps)}"
        parts.append(text)
    lr = entry.get("best_lr")
    where = f" at lr {lr:g}" if lr is not None else ""
    value = entry["untrained_value"]
    classification = task == "classification"
    shown = (
        f"test accuracy {100 * value:.1f} %, chance"
        if classification
        else f"test loss {value:.4g}, its step-0 validation loss"
    )
    key = METRICS[task]["key"]
    finished = format_metric(task, entry.get(f"{key}_mean"), entry.get(f"{key}_std"))
    return (
        f"{'; '.join(parts)}{where}: ranked counting each as an untrained model ({shown}); "
        f"the {entry['seeds_ok']} that finished: {finished}"
    )


def _last_val_loss(trial: StoredTrial) -> float | None:
    losses = (trial.result.metrics.get("curve") or {}).get("val_loss") or [None]
    value = losses[-1]
    return value if isinstance(value, float) and math.isfinite(value) else None


def _at_edge(comparison: Comparison, lr: float | None, tried: list[float]) -> bool:
    """Whether the tuned rate sits where a better one may lie beyond what was searched: the
    grid's first or last point; for Optuna, within a factor 2 of its range's ends (its
    largest sample is no edge when the range goes ten times further)."""
    if lr is None or len(tried) < 2:
        return False
    if comparison.tuner is not None:
        low, high = comparison.tuner.lr_range
        return lr <= 2 * low or lr >= high / 2
    return lr in (tried[0], tried[-1])


def _status(entry: dict[str, Any], grid: list[StoredTrial], lr: float | None) -> tuple[str, str]:
    """``ok``; ``failed`` (every tuning trial raised: the class rejected a value, a bug in a
    custom optimizer…; the first reason); ``diverged`` (none finished with a finite loss);
    ``incomplete`` (not run yet)."""
    if entry["seeds_ok"]:
        return "ok", ""
    if grid and all(t.result.status == "failed" for t in grid):
        return "failed", grid[0].result.reason or "every trial failed"
    if grid and lr is None:
        failed = sum(t.result.status == "failed" for t in grid)
        detail = f" ({failed} failed)" if failed else ""
        if entry.get("lr_fixed"):  # NAME:lr=…: its seed 0 is the tuning trial
            return "diverged", (
                f"it diverged at its fixed lr {grid[0].spec.lr:g} on seed 0, so its other seeds "
                f"did not run{detail}"
            )
        if len({t.spec.lr for t in grid}) == 1:  # a one-point grid
            return "diverged", f"it diverged at lr {grid[0].spec.lr:g}, the only rate run{detail}"
        return "diverged", f"every learning rate diverged{detail}"
    return "incomplete", "not run yet"


def _curves(comparison: Comparison, trials: dict[str, StoredTrial]) -> dict[str, Any]:
    """Per problem and optimizer: the mean ± std train- and validation-loss curves of the tuned
    seeds."""
    out: dict[str, Any] = {}
    for problem, steps in comparison.problems:
        plabel = comparison.resolved[problem][1]
        out[plabel] = {}
        for c in comparison.optimizers:
            grid = [
                trials[s.key] for s in comparison.grid_trials(problem, steps, c) if s.key in trials
            ]
            lr = best_lr(grid)
            seeds = []
            if lr is not None:
                seeds = [
                    trials[s.key]
                    for s in comparison.seed_trials(problem, steps, c, lr)
                    if s.key in trials
                ]
            out[plabel][c.label] = {
                "train_loss": mean_curve(seeds, "train_loss"),
                "val_loss": mean_curve(seeds, "val_loss"),
            }
    return out


def protocol_note(comparison: Comparison, c: Contender) -> str:
    """How `c` was run, in words, when it differs from the tuned protocol ("" otherwise)."""
    if c.learning_rate_free:
        return "learning-rate-free: run at its defaults, no learning-rate grid"
    if c.schedule_free and comparison.schedule != "constant":
        return (
            f"schedule-free: tuned learning rate, constant schedule "
            f"(not {comparison.schedule}: its averaging replaces the schedule)"
        )
    if c.schedule_free:
        return "schedule-free: tuned learning rate, never scheduled"
    return ""


#: the metric each task is ranked by: summary key, display name, unit, direction
METRICS = {
    "classification": {
        "key": "test_accuracy",
        "name": "test accuracy",
        "unit": "%",
        "higher_is_better": True,
        "label": "test accuracy ↑ %",
    },
    "regression": {
        "key": "final_test_loss",
        "name": "test loss",
        "unit": "",
        "higher_is_better": False,
        "label": "test loss ↓",
    },
    "language-model": {
        "key": "final_test_loss",
        "name": "test loss",
        "unit": "nats/token",
        "higher_is_better": False,
        "label": "test loss ↓ (perplexity)",
    },
}


def _rank_problem(
    entries: dict[str, dict[str, Any]],
    task: str,
    resolution: float = 0.0,
    untrained: float | None = None,
) -> list[str]:
    """Set each entry's ``rank`` (tied where within noise; None if it has no finished seed),
    ``tied_with`` and ``no_better_than_untrained`` (its ranked mean is no better than
    `untrained`, the metric of an untrained model, while another's is: it never shares a rank
    with one that learned, `tied_ranks`); return the labels ordered by rank, then mean,
    unranked last."""
    metric = METRICS[task]
    ranked = {label: e["values"] for label, e in entries.items() if e["values"]}
    higher = metric["higher_is_better"]
    ranks = tied_ranks(ranked, higher, resolution, untrained) if ranked else {}
    sign = -1.0 if higher else 1.0
    means = {label: float(np.mean(values)) for label, values in ranked.items()}
    someone_learned = untrained is not None and any(
        sign * (m - untrained) < 0 for m in means.values()
    )
    for label, entry in entries.items():
        entry["rank"] = ranks.get(label)
        entry["tied_with"] = [
            other for other in ranks if other != label and ranks[other] == ranks.get(label)
        ]
        entry["no_better_than_untrained"] = bool(
            someone_learned and label in means and sign * (means[label] - untrained) >= 0
        )
        if entry["no_better_than_untrained"]:
            shown = (
                f"test accuracy {format_metric(task, means[label], None)} against chance "
                f"{format_metric(task, untrained, None)}"
                if higher
                else f"test loss {means[label]:.4g} against {untrained:.4g} at step 0"
            )
            note = (
                f"ended no better than an untrained model ({shown}): it did not learn, and "
                f"ranks after every optimizer that did"
            )
            entry["reason"] = f"{entry['reason']}; {note}" if entry.get("reason") else note

    def key(label: str) -> tuple[float, float]:
        values = ranked.get(label)
        if not values:
            return (math.inf, math.inf)
        return (ranks[label], sign * float(np.mean(values)))

    return sorted(entries, key=key)


def _learned(
    entries: dict[str, dict[str, Any]],
    curves: dict[str, dict[str, list[Any]]],
    task: str,
    test_targets: np.ndarray | None,
) -> dict[str, Any]:
    """``learned`` and its ``learned_reason`` (see `optimlab.lab.significance.learned`)."""
    if task == "classification" and test_targets is not None:
        chance = chance_accuracy(test_targets)
        accuracies = [e["test_accuracy_mean"] for e in entries.values()]
        best = max((a for a in accuracies if a is not None), default=None)
        ok = learned(best_accuracy=best, chance=chance)
        shown = "none finished" if best is None else f"{100 * best:.1f} %"
        reason = f"best test accuracy {shown}, chance {100 * chance:.1f} %"
        return {"learned": ok, "learned_reason": reason, "chance_accuracy": chance}
    starts = [c["mean"][0] for c in curves.values() if c["mean"]]
    start = float(np.mean(starts)) if starts else None
    losses = [e["final_train_loss_mean"] for e in entries.values()]
    best = min((v for v in losses if v is not None), default=None)
    ok = learned(best_loss=best, start_loss=start)
    shown = "none finished" if best is None else f"{best:.4g}"
    start_text = "unknown" if start is None else f"{start:.4g}"
    reason = f"best final training loss {shown}, starting loss {start_text}"
    return {"learned": ok, "learned_reason": reason, "chance_accuracy": None}


def _unranked_reason(problems: dict[str, dict[str, Any]], label: str) -> str:
    if any(problems[p]["optimizers"][label]["rank"] is not None for p in problems):
        return "ran, but no optimizer learned any problem it ran on"
    reasons = {problems[p]["optimizers"][label]["reason"] for p in problems}
    statuses = {problems[p]["optimizers"][label]["status"] for p in problems}
    status = statuses.pop() if len(statuses) == 1 else "failed or diverged"
    return f"{status} on every problem: {'; '.join(sorted(r for r in reasons if r))}"


def format_metric(task: str, mean: float | None, std: float | None) -> str:
    """``98.0 ± 0.3 %`` (accuracy) or ``0.0123 ± 0.0004`` (loss)."""
    if mean is None:
        return "—"
    if task == "classification":
        spread = f" ± {100 * std:.1f}" if std is not None else ""
        return f"{100 * mean:.1f}{spread} %"
    spread = f" ± {std:.2g}" if std is not None else ""
    if task == "language-model":  # nats per token, and the perplexity exp(mean loss)
        return f"{mean:.4g}{spread} ({perplexity(mean):.3g})"
    return f"{mean:.4g}{spread}"


def ranked_metric(entry: dict[str, Any], task: str) -> str:
    """The metric the rank follows: the ok seeds' mean ± std, or, when seeds diverged or
    failed, the mean over all seeds counting those as untrained, marked with how many
    finished (``54.0 ± 46.5 % (5 of 10 seeds ok)``)."""
    key = METRICS[task]["key"]
    if not entry.get("seeds_counted_untrained"):
        return format_metric(task, entry.get(f"{key}_mean"), entry.get(f"{key}_std"))
    shown = format_metric(task, entry.get("ranked_mean"), entry.get("ranked_std"))
    return f"{shown} ({entry['seeds_ok']} of {entry['seeds']} seeds ok)"


def _names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _short_value(value: Any) -> str:
    """A tuned value for the answer line: floats to 3 significant digits, tuples item by item."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_short_value(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def problem_recommendation(problem: str, info: dict[str, Any]) -> str:
    """One line: the winner, its tuned rate and result, and who is tied with it."""
    entries, task = info["optimizers"], info["task"]
    if not info["learned"]:
        return f"{problem}: no optimizer learned this problem ({info['learned_reason']})"
    ranked = [label for label, e in entries.items() if e["rank"] is not None]
    if not ranked:
        return f"{problem}: every optimizer failed or diverged"
    best = min(ranked, key=lambda label: (entries[label]["rank"], -_score(entries[label], task)))
    e = entries[best]
    result = ranked_metric(e, task)
    where = (
        "at its defaults (learning-rate-free)"
        if e.get("learning_rate_free")
        else (
            f"at its fixed lr {e['best_lr']:.3g}"
            if e.get("lr_fixed")
            else f"at lr {e['best_lr']:.3g}"
        )
    )
    if e.get("lr_untuned"):
        where += " (the only rate run: not tuned)"
    tuned = e.get("tuned_hyperparameters") or {}
    if tuned and not e.get("learning_rate_free"):
        where += " (" + ", ".join(f"{k}={_short_value(v)}" for k, v in tuned.items()) + ")"
    line = f"{problem}: {best} {where} — {METRICS[task]['name']} {result}"
    if e["tied_with"]:
        # "within noise" read as "equal" to a newcomer who saw 77 % tied with 97 % on two
        # seeds; what the test says is that these seeds cannot tell them apart
        seeds = len(e.get("values") or [])
        line += f", tied with {_names(e['tied_with'])} (not significantly different"
        line += f" with {seeds} seed{'s' if seeds != 1 else ''})" if seeds else ")"
    return line


def _score(entry: dict[str, Any], task: str) -> float:
    mean = float(np.mean(entry["values"])) if entry["values"] else -math.inf
    return mean if METRICS[task]["higher_is_better"] else -mean


def recommendations(
    problems: dict[str, dict[str, Any]],
    overall: list[dict[str, Any]],
    unranked: list[dict],
    seeds: int | None = None,
) -> dict[str, Any]:
    """The one-line answers: per problem and overall (the overall leaders: every
    optimizer of rank 1, tied where the seeds do not separate them; the problems left out and
    why)."""
    per_problem = {p: problem_recommendation(p, info) for p, info in problems.items()}
    learned_count = sum(info["learned"] for info in problems.values())
    left_out = [p for p, info in problems.items() if not info["learned"]]
    if not overall or not learned_count:
        line = "overall: no ranking — " + (
            "every optimizer failed or diverged"
            if not overall
            else "no optimizer learned any problem"
        )
    else:
        first = [row for row in overall if row["rank"] == 1]
        leaders = [row["optimizer"] for row in first]
        scores = [f"{row['profile_score']:.3f}" for row in first]
        problems = f"on {learned_count} learned problem{'s' if learned_count != 1 else ''}"
        if len(set(scores)) == 1:
            line = f"overall: {_names(leaders)} (performance-profile score {scores[0]} {problems})"
        else:  # each its own score: one number for all would misstate the ones below the best
            line = f"overall: {_names(leaders)} (performance-profile scores {_names(scores)} {problems})"
        if len(leaders) > 1:
            line += (
                ", tied (one seed each: differences cannot be tested)"
                if seeds == 1
                else ", tied (a bootstrap over the seeds does not separate them"
                + (
                    ": other draws of the same seeds reorder their scores)"
                    if len(set(scores)) > 1
                    else ")"
                )
            )
        if learned_count == 1:
            # the score ranks speed to the training-loss target; with one problem the answer
            # to read is that problem's own (its test metric, with ties)
            line += " — speed to the training-loss target only; for one problem, read its answer"
    if left_out:
        line += f"; left out, not learned: {', '.join(left_out)}"
    if unranked:
        line += f"; not ranked: {', '.join(u['optimizer'] for u in unranked)}"
    return {"overall": line, "problems": per_problem}


def summarize_store(
    comparison: Comparison, store: ResultStore, seconds: float | None = None
) -> dict[str, Any]:
    """`summarize` over the trials of `store` that belong to `comparison`."""
    from optimlab.problems import get_problem

    targets: dict[str, np.ndarray | None] = {}
    tasks: dict[str, str] = {}
    for problem, _ in comparison.problems:
        built = get_problem(problem)
        targets[problem] = built.test[1].numpy() if built.task == "classification" else None
        tasks[problem] = built.task
    stored = comparison.reusable(store)  # a pruned point only for the halving
    keys: set[str] = set()
    for problem, steps, c in comparison.pairs():
        grid = comparison.grid_trials(problem, steps, c)
        keys |= {s.key for s in grid}
        keys |= {s.key for s in comparison.default_trials(problem, steps, c)}
        lr = best_lr([stored[s.key] for s in grid if s.key in stored])
        if lr is not None:
            keys |= {s.key for s in comparison.seed_trials(problem, steps, c, lr)}
    # only this comparison's trials: the directory may hold others (another optimizer set)
    trials = {key: trial for key, trial in stored.items() if key in keys}
    return summarize(comparison, trials, targets, seconds, tasks)
