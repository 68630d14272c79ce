"""How well can any cheaper suite agree with the full suite? An upper bound from two real runs.

A quick suite spends less: fewer problems, fewer seeds, coarser grids, shorter budgets. Each cut
only adds noise or bias, so the best a quick suite of the full suite's own problems can do is
what the full protocol itself does on a subset of the problems: the full grid's tuned rates, the
full budgets, and some of the seeds. This script measures exactly that, from two full runs A
and B whose trials were run independently (their float32 rounding differs, as two runs' do):

for every subset of the ranked problems and every seed set (seeds 0–2, 3–5, all), the subset is
ranked from run A's seed reruns at A's tuned rates — by the same bootstrap-tied performance
profile compare prints (`optimlab.lab.profile_bootstrap`) — and compared with run B's full
overall ranking by Kendall's τ-b (ties as ties); then the same with A and B swapped. The
subset's cost is the trial CPU its problems took in a cost run (``--cost DIR``, e.g. a
``--tuner halving`` run with the current code; default B).

    .venv/bin/python benchmarks/suite_subset_bound.py FULL_A FULL_B [--cost DIR] [--budget S ...]

It prints the subsets that agree best in both directions (the smaller of the two τ-b), and the
best one within each CPU budget. `make demo` at ≤ 3 minutes on 2 workers leaves ≈ 300 s of trial
CPU. docs/compare.md ("The quick suite against the full suite") reports its output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from halving_agreement import kendall_tau
from suite_agreement import load, rebuilt_comparison

#: per problem, per optimizer label: (seed, finished, steps, training losses) of each seed rerun
Curves = dict[str, dict[str, list[tuple[int, bool, list[int] | None, list[float] | None]]]]

SEED_SETS = {"0-2": set(range(3)), "3-5": set(range(3, 6)), "all": None}


def tuned_seed_curves(directory: Path) -> Curves:
    """Each ranked problem's seed reruns at each optimizer's tuned rate, from a run's store."""
    from optimlab.lab.protocol import best_lr
    from optimlab.lab.store import ResultStore

    summary = load(directory)
    comparison = rebuilt_comparison(summary["run"])
    stored = ResultStore(directory, create=False).get()
    out: Curves = {}
    for problem, steps in comparison.problems:
        label = comparison.resolved[problem][1]
        if label not in summary["ranked_problems"]:
            continue
        out[label] = {}
        for contender in comparison.optimizers:
            grid = [
                stored[s.key]
                for s in comparison.grid_trials(problem, steps, contender)
                if s.key in stored
            ]
            lr = best_lr(grid)
            seeds = []
            for spec in comparison.seed_trials(problem, steps, contender, lr) if lr else []:
                trial = stored.get(spec.key)
                if trial is None:
                    continue
                ok = trial.result.status == "ok"
                curve = trial.result.metrics.get("curve") if ok else None
                seeds.append(
                    (
                        spec.seed,
                        ok,
                        None if curve is None else curve["step"],
                        None if curve is None else curve["train_loss"],
                    )
                )
            out[label][contender.label] = seeds
    return out


def trial_cpu_by_problem(directory: Path) -> dict[str, float]:
    """Summed trial CPU seconds per problem label in a run's store."""
    cpu: Counter[str] = Counter()
    with sqlite3.connect(directory / "results.sqlite") as db:
        for label, metrics in db.execute("SELECT problem_label, metrics FROM trials"):
            cpu[label] += json.loads(metrics).get("cpu_seconds") or 0.0
    return dict(cpu)


def ranks(curves: Curves, problems: tuple[str, ...], seeds: set[int] | None) -> dict[str, int]:
    """The overall ranking compare would print for these problems and seeds."""
    from optimlab.lab.profile_bootstrap import SeedCurves, bootstrap_scores, supported_ranks
    from optimlab.lab.summary import RANKING_TOLERANCE, TAUS

    labels = sorted({label for p in problems for label in curves[p]})
    chosen = {
        p: {
            label: SeedCurves.from_curves(
                [
                    (ok, steps, losses)
                    for seed, ok, steps, losses in curves[p][label]
                    if seeds is None or seed in seeds
                ]
            )
            for label in labels
        }
        for p in problems
    }
    scores = bootstrap_scores(chosen, labels, RANKING_TOLERANCE, TAUS)
    return supported_ranks(labels, scores)


def tau(a: dict[str, int], b: dict[str, int]) -> float:
    names = sorted(set(a) & set(b))
    return kendall_tau([a[n] for n in names], [b[n] for n in names])


def bound(a: Curves, b: Curves, cost: dict[str, float]) -> list[dict[str, Any]]:
    """Every proper subset × seed set: τ-b of A's subset against B's full ranking and back."""
    problems = tuple(p for p in a if p in b)
    full_a, full_b = ranks(a, problems, None), ranks(b, problems, None)
    rows = []
    for size in range(1, len(problems)):
        for subset in itertools.combinations(problems, size):
            for tag, seeds in SEED_SETS.items():
                a_to_b = tau(ranks(a, subset, seeds), full_b)
                b_to_a = tau(ranks(b, subset, seeds), full_a)
                if a_to_b != a_to_b or b_to_a != b_to_a:  # NaN: a subset that ranks nothing
                    continue
                rows.append(
                    {
                        "problems": list(subset),
                        "seeds": tag,
                        "tau_a_to_b": a_to_b,
                        "tau_b_to_a": b_to_a,
                        "tau_min": min(a_to_b, b_to_a),
                        "cpu_seconds": sum(cost.get(p, float("nan")) for p in subset),
                    }
                )
    rows.sort(key=lambda r: (-r["tau_min"], r["cpu_seconds"]))
    return [{"full_a_vs_full_b": tau(full_a, full_b)}, *rows]


def short(problem: str) -> str:
    """deep-mlp:depth=10:activation=sigmoid → deep-mlp sigmoid (table width)."""
    name, _, options = problem.partition(":")
    activation = dict(o.split("=", 1) for o in options.split(":") if "=" in o).get("activation")
    return f"{name} {activation}" if activation else name


def table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| problems | seeds | τ-b A→B | τ-b B→A | trial CPU s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {', '.join(short(p) for p in r['problems'])} | {r['seeds']} | "
            f"{r['tau_a_to_b']:.3f} | {r['tau_b_to_a']:.3f} | {r['cpu_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("full_a", type=Path, help="a full-suite run's output directory")
    parser.add_argument("full_b", type=Path, help="another, independent full-suite run")
    parser.add_argument("--cost", type=Path, help="the run whose trial CPU prices a subset")
    parser.add_argument("--budget", type=float, nargs="*", default=[300.0, 900.0])
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    for d in (args.full_a, args.full_b, args.cost):
        if d is not None and not (d / "summary.json").is_file():
            raise SystemExit(f"{d}: no summary.json (is the run finished?)")
    a, b = tuned_seed_curves(args.full_a), tuned_seed_curves(args.full_b)
    cost = trial_cpu_by_problem(args.cost or args.full_b)
    head, *rows = bound(a, b, cost)
    print(f"full run A against full run B: τ-b {head['full_a_vs_full_b']:.3f}\n")
    print(table(rows[: args.top], "proper subsets that agree best (smaller τ-b first)"))
    for budget in args.budget:
        affordable = [r for r in rows if r["cpu_seconds"] <= budget]
        print()
        print(table(affordable[: args.top], f"best within {budget:g} s of trial CPU"))
    reaching = [r for r in rows if r["tau_min"] >= 0.8]
    cheapest = min(reaching, key=lambda r: r["cpu_seconds"], default=None)
    print(
        "\ncheapest proper subset with τ-b ≥ 0.8 both ways: "
        + (
            "none"
            if cheapest is None
            else f"{', '.join(map(short, cheapest['problems']))} ({cheapest['cpu_seconds']:.0f} s)"
        )
    )
    if args.json:
        args.json.write_text(json.dumps([head, *rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
