"""Throughput of the Ray executor against the local process pool, on the quick suite.

Both executors run the same comparison (default: the whole quick suite, 4 problems × 9
optimizers) into fresh output directories with the same number of workers (2), one after the
other in this one run. Each time covers everything an executor costs: starting its workers (and,
for Ray, the local Ray instance), shipping the data sets, every trial, storing each result. The
MNIST-1D data are generated once, before both. Printed per executor: wall seconds, trials,
trials per second, the summed seconds of the trials themselves, and the overhead
(wall − summed trial seconds / workers); then the throughput ratio Ray / local (target ≥ 0.8)
and whether both stores hold the same numbers. Ray's start-up (``ray.init``) is also shown on
its own, and included in its wall time.

The cost model it measures, and the README's projection for larger clusters, uses:
wall ≈ trials × mean trial seconds / workers + overhead.

    .venv/bin/python benchmarks/executor_overhead.py [--workers 2] [--optimizers SPEC]
        [--order local,ray] [--json PATH]

``--full-trial-costs`` instead times one trial (adam at its default rate, seed 0) of each
full-suite problem at the full suite's budget, and counts the full suite's trials from the
protocol: the inputs of the projection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from optimlab.cli.compare import build_comparison
from optimlab.lab.executor import Executor, single_threaded
from optimlab.lab.protocol import SUITES, Comparison, run_comparison
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from optimlab.lab.trial import TrialSpec

TIMING = {"seconds", "cpu_seconds", "seconds_per_step"}


def suite_comparison(suite: str, optimizers: str | None = None) -> Comparison:
    """The suite exactly as ``optimlab compare --suite SUITE`` builds it (every problem built
    here: MNIST-1D is generated once, for both executors)."""
    return build_comparison(suite, None, optimizers, None, "constant", None)


def run(name: str, comparison: Comparison, directory: Path, workers: int) -> dict[str, Any]:
    store = ResultStore(directory, fresh=True)
    started = time.perf_counter()
    startup = 0.0
    if name == "ray":
        from optimlab.lab.ray_executor import RayExecutor

        executor = RayExecutor(store, workers)
        executor.start()
        startup = time.perf_counter() - started
    else:
        executor = Executor(store, workers)
    counts = run_comparison(comparison, store, workers, executor=executor)
    wall = time.perf_counter() - started
    trials = list(store.iter())
    trial_seconds = sum(t.result.metrics.get("seconds", 0.0) for t in trials)
    return {
        "executor": name,
        "workers": workers,
        "wall_seconds": wall,
        "startup_seconds": startup,
        "trials": counts["run"],
        "trials_per_second": counts["run"] / wall,
        "trial_seconds_sum": trial_seconds,
        "mean_trial_seconds": trial_seconds / max(1, len(trials)),
        "overhead_seconds": wall - trial_seconds / workers,
    }


def same_numbers(first: Path, second: Path) -> bool:
    a, b = ResultStore(first, create=False).get(), ResultStore(second, create=False).get()
    if set(a) != set(b):
        return False
    for key, trial in a.items():
        other = b[key].result
        if (trial.result.status, trial.result.predictions) != (other.status, other.predictions):
            return False
        mine = {k: v for k, v in trial.result.metrics.items() if k not in TIMING}
        if mine != {k: v for k, v in other.metrics.items() if k not in TIMING}:
            return False
    return True


def full_trial_costs() -> dict[str, Any]:
    """One trial per full-suite problem at the full budget, and the full suite's trial count."""
    suite = SUITES["full"]
    comparison = suite_comparison("full")
    # trials per (problem, optimizer): the grid and the defaults (seed 0 at a default rate
    # that is a grid point is the grid trial), plus seeds 1 … N−1 at the best rate (when the
    # best rate is the default rate, those are default trials already: an upper bound)
    total = 0
    for problem, steps, c in comparison.pairs():
        keys = {s.key for s in comparison.grid_trials(problem, steps, c)}
        keys |= {s.key for s in comparison.default_trials(problem, steps, c)}
        total += len(keys) + comparison.seeds - 1
    single_threaded()
    per_problem = {}
    for problem, steps in comparison.problems:
        canonical, label = comparison.resolved[problem]
        spec = TrialSpec(canonical, "adam", {"lr": 1e-3}, seed=0, steps=steps, evals=suite.evals)
        result = train(spec)
        per_problem[label] = {"steps": steps, "seconds": result.metrics["seconds"]}
        print(f"{label:<40} {steps:>6} steps {result.metrics['seconds']:8.2f} s", flush=True)
    pairs = len(comparison.optimizers)
    mean = statistics.fmean(p["seconds"] for p in per_problem.values())
    return {
        "full_suite_trials": total,
        "trials_per_problem_and_optimizer": total / (len(comparison.problems) * pairs),
        "trial_seconds": per_problem,
        "mean_trial_seconds": mean,
    }


def write_json(path: str, payload: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(payload, f, indent=2)
        temporary = f.name
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--optimizers", default=None, help="a subset (default: all nine)")
    parser.add_argument("--order", default="local,ray", help="which executor runs first")
    parser.add_argument("--full-trial-costs", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    if args.full_trial_costs:
        payload: dict[str, Any] = full_trial_costs()
        print(
            f"full suite: {payload['full_suite_trials']} trials, mean trial "
            f"{payload['mean_trial_seconds']:.1f} s (adam, one per problem)"
        )
    else:
        comparison = suite_comparison("quick", args.optimizers)
        rows: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="executor-overhead-") as scratch:
            for name in args.order.split(","):
                rows[name] = run(name, comparison, Path(scratch) / name, args.workers)
                print(f"{name}: {rows[name]['wall_seconds']:.1f} s", flush=True)
            identical = same_numbers(Path(scratch) / "local", Path(scratch) / "ray")
        ratio = rows["ray"]["trials_per_second"] / rows["local"]["trials_per_second"]
        print()
        header = f"{'executor':<9}{'wall s':>9}{'trials':>8}{'trials/s':>10}"
        header += f"{'Σ trial s':>11}{'mean trial s':>14}{'overhead s':>12}{'start-up s':>12}"
        print(header)
        for row in rows.values():
            print(
                f"{row['executor']:<9}{row['wall_seconds']:>9.1f}{row['trials']:>8}"
                f"{row['trials_per_second']:>10.2f}{row['trial_seconds_sum']:>11.1f}"
                f"{row['mean_trial_seconds']:>14.3f}{row['overhead_seconds']:>12.1f}"
                f"{row['startup_seconds']:>12.1f}"
            )
        print(f"\nthroughput Ray / local: {ratio:.3f} (target >= 0.8)")
        print(f"same trials and numbers in both stores: {identical}")
        payload = {
            "suite": "quick",
            "optimizers": [c.label for c in comparison.optimizers],
            "rows": list(rows.values()),
            "ray_over_local_throughput": ratio,
            "same_numbers": identical,
        }
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
