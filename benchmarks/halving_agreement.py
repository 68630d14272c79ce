"""How well ``--tuner halving`` agrees with the exhaustive grid, and what it saves.

Reads two finished comparison directories — the exhaustive grid's and the halving's, same
suite — and prints:

- per (problem, optimizer): the tuned rate of each, whether they are the same, the grid points
  halving pruned, and the training steps its tuning trials ran against the grid's;
- per problem and overall: Kendall's τ between the two rankings (scipy.stats.kendalltau when
  scipy is installed, else the exact τ-b below), and whether the winner is the same;
- both runs' wall clock, summed trial seconds and summed trial CPU seconds (from their
  summaries), and the same sums over the tuning trials alone.

    .venv/bin/python benchmarks/halving_agreement.py GRID_DIR HALVING_DIR [--problems P,...]
        [--json PATH]

``--problems`` restricts both to some problems (e.g. a halving run of one full-suite problem
against the exhaustive full suite's directory); the overall τ is then the ranking over those
problems' mean ranks, computed here from the per-problem rankings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

from optimlab.lab.halving import HalvingPolicy, keep_at_rung
from optimlab.lab.protocol import SUITES, best_lr, lr_grid
from optimlab.lab.store import ResultStore


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b of two paired lists (scipy's when installed; the same formula else)."""
    try:
        from scipy.stats import kendalltau
    except ImportError:
        concordant = discordant = ties_a = ties_b = 0
        for (x1, y1), (x2, y2) in itertools.combinations(zip(a, b, strict=True), 2):
            dx, dy = x1 - x2, y1 - y2
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_a += 1
            elif dy == 0:
                ties_b += 1
            elif dx * dy > 0:
                concordant += 1
            else:
                discordant += 1
        denominator = math.sqrt(
            (concordant + discordant + ties_a) * (concordant + discordant + ties_b)
        )
        return (concordant - discordant) / denominator if denominator else math.nan
    return float(kendalltau(a, b).statistic)


def _summary(directory: Path, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """The directory's summary.json; for a run still in progress (no summary yet, e.g. the
    exhaustive full suite being computed), the summary of its stored trials for the problems
    and optimizers of `like` (the halving run's summary), read without writing."""
    path = directory / "summary.json"
    if path.is_file() or like is None:
        return json.loads(path.read_text())
    from optimlab.cli.compare import build_comparison
    from optimlab.lab.summary import summarize_store

    run = like["run"]
    comparison = build_comparison(
        run["suite"],
        ",".join(p["problem"] for p in run["problems"]),
        ",".join(run["optimizers"]),
        None,
        run["schedule"],
        None,
        evals=run["evals"],
    )
    summary = summarize_store(comparison, ResultStore(directory, create=False))
    summary["run"]["seconds"] = math.nan  # still running: no wall clock of its own
    return summary


def _tuning(directory: Path) -> dict[tuple[str, str], list[Any]]:
    """(problem label, optimizer) → its seed-0 grid trials (with their status and steps)."""
    pairs: dict[tuple[str, str], list[Any]] = {}
    for trial in ResultStore(directory, create=False).iter():
        if trial.spec.seed == 0:
            label = trial.spec.problem_label or trial.spec.problem
            pairs.setdefault((label, trial.spec.optimizer), []).append(trial)
    return pairs


def _ranks(order: list[str], names: list[str]) -> list[float]:
    position = {name: i for i, name in enumerate(order)}
    return [float(position.get(name, len(order))) for name in names]


def overall(summary: dict[str, Any], problems: list[str]) -> list[str]:
    """The overall ranking: the summary's own, or (for a subset of problems) by mean rank."""
    if set(problems) == set(summary["per_problem_ranking"]):
        return [entry["optimizer"] for entry in summary["ranking"]]
    names = sorted({n for p in problems for n in summary["per_problem_ranking"][p]})
    mean = {
        n: sum(_ranks(summary["per_problem_ranking"][p], [n])[0] for p in problems) / len(problems)
        for n in names
    }
    return sorted(names, key=lambda n: (mean[n], n))


def compare(grid_dir: Path, halving_dir: Path, problems: list[str] | None) -> dict[str, Any]:
    halving = _summary(halving_dir)
    grid = _summary(grid_dir, like=halving)
    chosen = problems or list(halving["per_problem_ranking"])
    grid_trials, halving_trials = _tuning(grid_dir), _tuning(halving_dir)
    rows = []
    for problem in chosen:
        for optimizer, entry in halving["problems"][problem].items():
            exhaustive = grid["problems"][problem][optimizer]
            grid_points = [
                t
                for t in grid_trials.get((problem, optimizer), [])
                if "lr" in t.spec.hyperparameters
            ]
            halved = halving_trials.get((problem, optimizer), [])
            lrs = {p["lr"] for p in entry.get("lr_sensitivity", [])}
            grid_steps = sum(
                t.result.metrics.get("steps_run", 0) for t in grid_points if t.spec.lr in lrs
            )
            halving_steps = sum(
                t.result.metrics.get("steps_run", 0) for t in halved if t.spec.lr in lrs
            )
            rows.append(
                {
                    "problem": problem,
                    "optimizer": optimizer,
                    "grid_lr": exhaustive.get("best_lr"),
                    "halving_lr": entry.get("best_lr"),
                    "same": exhaustive.get("best_lr") == entry.get("best_lr"),
                    "pruned": sum(t.result.status == "pruned" for t in halved),
                    "points": len(lrs),
                    "steps_fraction": halving_steps / grid_steps if grid_steps else math.nan,
                    # a grid run still in progress may not have stored its seed reruns yet:
                    # its ranking then rests on fewer seeds and τ is not comparable
                    "seeds": (exhaustive.get("seeds_ok", 0), entry.get("seeds_ok", 0)),
                }
            )
    per_problem = {}
    for problem in chosen:
        a, b = grid["per_problem_ranking"][problem], halving["per_problem_ranking"][problem]
        names = sorted(set(a) | set(b))
        per_problem[problem] = {
            "tau": kendall_tau(_ranks(a, names), _ranks(b, names)),
            "same_winner": a[:1] == b[:1],
        }
    a, b = overall(grid, chosen), overall(halving, chosen)
    names = sorted(set(a) | set(b))

    def times(
        summary: dict[str, Any], trials: dict[tuple[str, str], list[Any]]
    ) -> dict[str, float]:
        tuning = [t for (p, _), ts in trials.items() if p in chosen for t in ts]
        return {
            "wall_seconds": summary["run"]["seconds"],
            "trial_seconds": summary["run"]["trial_seconds"],
            "trial_cpu_seconds": summary["run"]["trial_cpu_seconds"],
            "seed0_trial_seconds": sum(t.result.metrics.get("seconds", 0.0) for t in tuning),
            "seed0_cpu_seconds": sum(t.result.metrics.get("cpu_seconds", 0.0) for t in tuning),
        }

    return {
        "pairs": rows,
        "per_problem": per_problem,
        "overall": {
            "grid": a,
            "halving": b,
            "tau": kendall_tau(_ranks(a, names), _ranks(b, names)),
        },
        "times": {"grid": times(grid, grid_trials), "halving": times(halving, halving_trials)},
    }


# --- replaying the halving on the exhaustive grid's curves ------------------------------------
def replay(
    points: list[Any], policy: HalvingPolicy, outside: set[float]
) -> tuple[float | None, float]:
    """What a synchronous halving of these grid points (the exhaustive run's seed-0 trials)
    would tune, from their recorded curves: the rung values are the curves' validation losses
    at the rung steps (a member's numbers do not depend on its population: tested), each rung
    decided by `keep_at_rung` (Optuna's pruner). `outside`: rates that also are a default trial,
    which run in full outside the halving (as in a real run). Returns the tuned rate and the
    fraction of the grid's training steps it would run."""
    steps, evals = points[0].spec.steps, points[0].spec.evals
    standing = [t for t in points if t.spec.lr not in outside]
    trained = {t.spec.lr: t.result.metrics.get("steps_run", 0) for t in points}
    for at in policy.rung_steps(steps, evals):
        values = {}
        for t in standing:
            curve = t.result.metrics["curve"]
            if at in curve["step"]:
                i = curve["step"].index(at)
                value, train_loss = curve["val_loss"][i], curve["train_loss"][i]
                if value is not None and train_loss is not None and math.isfinite(value):
                    values[t.spec.lr] = value
        kept = keep_at_rung(list(values.values()), policy) if len(values) > 1 else [True]
        survivors = {lr for lr, k in zip(values, kept) if k}
        for t in standing:
            if t.spec.lr in values and t.spec.lr not in survivors:
                trained[t.spec.lr] = at
        standing = [t for t in standing if t.spec.lr in survivors]
    finishers = [t for t in points if t in standing or t.spec.lr in outside]
    total = sum(t.result.metrics.get("steps_run", 0) for t in points)
    return best_lr(finishers), sum(trained.values()) / total if total else math.nan


def replay_table(
    directory: Path, policies: list[HalvingPolicy], suite_name: str
) -> list[dict[str, Any]]:
    """Per policy: how often the replayed halving tunes the exhaustive grid's rate, the mean
    and worst relative regret of the final validation loss at its rate, and the steps run."""
    from optimlab.optim.registry import get_info

    pairs = _tuning(directory)
    suite = SUITES[suite_name]
    lrs = set(lr_grid(suite.grid_points, *suite.lr_range))
    rows = []
    for policy in policies:
        same = regret_sum = worst = fraction_sum = 0.0
        count = 0
        for (_, optimizer), trials in sorted(pairs.items()):
            grid = [t for t in trials if t.spec.lr in lrs]
            if len({t.spec.lr for t in grid}) < len(lrs):  # (a run still in progress)
                continue
            default = get_info(optimizer).cls.default_hyperparameters("torch").get("lr")
            seed0 = {t.spec.lr: t for t in grid}
            points = sorted(seed0.values(), key=lambda t: t.spec.lr)
            exhaustive = best_lr(points)
            if exhaustive is None:
                continue
            tuned, fraction = replay(points, policy, {default})
            best = seed0[exhaustive].result.metrics["final_val_loss"]
            got = seed0[tuned].result.metrics["final_val_loss"] if tuned is not None else math.inf
            regret = (got - best) / abs(best) if best else 0.0
            count += 1
            same += tuned == exhaustive
            regret_sum += regret
            worst = max(worst, regret)
            fraction_sum += fraction
        rows.append(
            {
                "reduction_factor": policy.reduction_factor,
                "rungs": policy.rungs,
                "pairs": count,
                "same": int(same),
                "mean_regret": regret_sum / count if count else math.nan,
                "worst_regret": worst,
                "steps_fraction": fraction_sum / count if count else math.nan,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("halving", type=Path, nargs="?")
    parser.add_argument("--suite", default="quick", help="the grid's suite (for --replay)")
    parser.add_argument(
        "--replay",
        default=None,
        help="η:rungs,... — replay these halvings on GRID's curves instead (no halving run)",
    )
    parser.add_argument("--problems", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    problems = [p.strip() for p in args.problems.split(",")] if args.problems else None
    if args.replay:
        policies = [
            HalvingPolicy(int(eta), int(rungs))
            for eta, rungs in (item.split(":") for item in args.replay.split(","))
        ]
        table = replay_table(args.grid, policies, args.suite)
        print("| η | rungs | pairs | same tuned rate | mean regret | worst regret | steps run |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in table:
            print(
                f"| {r['reduction_factor']} | {r['rungs']} | {r['pairs']} | {r['same']} | "
                f"{r['mean_regret']:.2%} | {r['worst_regret']:.2%} | {r['steps_fraction']:.2f} |"
            )
        if args.json:
            args.json.write_text(json.dumps(table, indent=1))
        return 0
    result = compare(args.grid, args.halving, problems)
    print(
        "| problem | optimizer | tuned lr grid | tuned lr halving | same | pruned / points | steps trained (halving / grid) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in result["pairs"]:
        print(
            f"| {r['problem']} | {r['optimizer']} | {r['grid_lr']} | {r['halving_lr']} | "
            f"{'yes' if r['same'] else 'no'} | {r['pruned']} / {r['points']} | {r['steps_fraction']:.2f} |"
        )
    same = sum(r["same"] for r in result["pairs"])
    print(f"\nsame tuned rate: {same} of {len(result['pairs'])}")
    short = [r for r in result["pairs"] if r["seeds"][0] < r["seeds"][1]]
    if short:
        print(
            f"warning: the grid run has fewer finished seeds at its tuned rate than the halving "
            f"run for {len(short)} pairs (e.g. {short[0]['problem']} {short[0]['optimizer']}: "
            f"{short[0]['seeds'][0]} vs {short[0]['seeds'][1]}): its seed reruns are not stored "
            f"yet, so the rankings below are not comparable"
        )
    print("\n| problem | Kendall τ (grid vs halving ranking) | same winner |")
    print("| --- | --- | --- |")
    for problem, p in result["per_problem"].items():
        print(f"| {problem} | {p['tau']:.3f} | {'yes' if p['same_winner'] else 'no'} |")
    o = result["overall"]
    print(f"| overall | {o['tau']:.3f} | {'yes' if o['grid'][:1] == o['halving'][:1] else 'no'} |")
    print(f"\noverall ranking, grid:    {', '.join(o['grid'])}")
    print(f"overall ranking, halving: {', '.join(o['halving'])}")
    print(
        "\n| run | wall s | trial s (sum) | trial CPU s (sum) | seed-0 trials s | seed-0 trials CPU s |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, t in result["times"].items():
        print(
            f"| {name} | {t['wall_seconds']:.0f} | {t['trial_seconds']:.0f} | "
            f"{t['trial_cpu_seconds']:.0f} | {t['seed0_trial_seconds']:.0f} | {t['seed0_cpu_seconds']:.0f} |"
        )
    g, h = result["times"]["grid"], result["times"]["halving"]
    print(
        f"\nhalving / grid: wall {h['wall_seconds'] / g['wall_seconds']:.2f}, trial CPU "
        f"{h['trial_cpu_seconds'] / g['trial_cpu_seconds']:.2f}, seed-0 CPU "
        f"{h['seed0_cpu_seconds'] / g['seed0_cpu_seconds']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
