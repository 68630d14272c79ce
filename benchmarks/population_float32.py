"""Populations in float32: how far a member ends from its single trial, against how far two
single trials end apart when their initial weights differ by one ulp (issue 14, point 1).

    python benchmarks/population_float32.py [--optimizers sgd,momentum,adam,rmsprop]
        [--problems quadratic-deep,...] [--steps-scale 1.0] [--json]

Per quick-suite problem (its float32 data and models, its step budget) and optimizer: the quick
suite's learning-rate grid (8 rates, 1e-4 … 10), seed 0, the quick suite's 16 evaluations —
the tuning trials of `optimlab compare --suite quick`. Each grid point runs three ways
(`optimlab.lab.population_agreement`): a single trial (`train`), two single trials whose initial
weights are every one moved one ulp up / down, and a member of one population of the whole grid
(`train_population`, the fused kernels stepping it with a rate per member). Columns: the largest
over the grid of the relative difference of the final validation loss and of the absolute
difference of the test accuracy — between two of the three single runs (the one-ulp spread) and
member vs single; the same two at the single trials' tuned rate alone (the run `compare`
reports); grid points whose statuses differ (one diverged, the other not); the tuned rate
(lowest final validation loss) of the single trials, the up / down ones and the population. One torch thread, as in the executors' workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam", "nadam"]


def rate(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--problems", default=None, help="default: the quick suite's")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="budget × this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from optimlab.lab.executor import single_threaded
    from optimlab.lab.population_agreement import measure, to_row
    from optimlab.lab.protocol import SUITES, lr_grid
    from optimlab.lab.trial import TrialSpec
    from optimlab.problems import get_problem

    single_threaded()
    suite = SUITES["quick"]
    budgets = dict(suite.problems)
    problems = args.problems.split(",") if args.problems else list(budgets)
    grid = lr_grid(suite.grid_points, *suite.lr_range)
    rows = []
    started = time.perf_counter()
    for spec in problems:
        problem = get_problem(spec)
        steps = max(1, round(budgets.get(spec, 200) * args.steps_scale))
        for optimizer in args.optimizers.split(","):
            specs = [
                TrialSpec(
                    problem.spec, optimizer, {"lr": lr}, seed=0, steps=steps, evals=suite.evals
                )
                for lr in grid
            ]
            tick = time.perf_counter()
            row = {"problem": spec, "optimizer": optimizer, "steps": steps}
            row.update(to_row(measure(specs, problem)))
            row["seconds"] = time.perf_counter() - tick
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)  # each row as it is measured
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"quick suite, grid {len(grid)} rates {grid[0]:g}…{grid[-1]:g}, seed 0, float32, one "
        f"thread; {time.perf_counter() - started:.0f} s\n"
    )
    print(
        "| problem | optimizer | val loss: one-ulp spread | val loss: member vs single "
        "| test acc: one-ulp | test acc: member | at the tuned rate: val loss one-ulp / member "
        "| test acc one-ulp / member | status differs (ulp / member) "
        "| tuned rate single / up / down / population |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = (
            ("—", "—")
            if r["one_ulp_test_accuracy"] == 0 and r["member_test_accuracy"] == 0
            else (f"{r['one_ulp_test_accuracy']:.4f}", f"{r['member_test_accuracy']:.4f}")
        )
        print(
            f"| {r['problem']} | {r['optimizer']} | {r['one_ulp_val_loss']:.2e} "
            f"| {r['member_val_loss']:.2e} | {acc[0]} | {acc[1]} "
            f"| {r['tuned_one_ulp_val_loss']:.2e} / {r['tuned_member_val_loss']:.2e} "
            f"| {r['tuned_one_ulp_test_accuracy']:.4f} / {r['tuned_member_test_accuracy']:.4f} "
            f"| {r['status_mismatches_one_ulp']} / {r['status_mismatches_member']} "
            f"| {' / '.join(rate(r[k]) for k in ('tuned_single', 'tuned_up', 'tuned_down', 'tuned_population'))} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
