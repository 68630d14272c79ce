"""Speed of the batched landscape runner against one torch.optim loop per trajectory.

The sweep of the issue: 9 optimizers × 36 learning rates (log grid 1e-5…1e2) × 4 starts × 500
steps = 1,296 trajectories on Rosenbrock.  The batched run is ``run_landscape(..., tune=True)``
(runner, metrics and tuning included).  The baseline runs each trajectory alone: a [2] parameter,
its own torch.optim optimizer, 500 forward/backward/step iterations; it is timed on an evenly
spread subsample of the 1,296 trajectories (every optimizer, every start, a spread of learning
rates) and extrapolated linearly to all of them (each trajectory costs the same: fixed steps).

    .venv/bin/python benchmarks/landscape_speed.py [--repeats 3] [--sample 72] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from optimlab.landscapes.experiment import default_optimizers, run_landscape
from optimlab.landscapes.functions import get_function
from optimlab.landscapes.tuning import lr_grid

STARTS = [(-1.5, 2.5), (-1.0, -0.5), (1.5, -0.5), (0.0, 2.0)]
STEPS = 500

TORCH = {
    "sgd": lambda p, lr: torch.optim.SGD([p], lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
    "nag": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad([p], lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop([p], lr=lr),
    "adadelta": lambda p, lr: torch.optim.Adadelta([p], lr=lr),
    "adam": lambda p, lr: torch.optim.Adam([p], lr=lr),
    "adamax": lambda p, lr: torch.optim.Adamax([p], lr=lr),
    "nadam": lambda p, lr: torch.optim.NAdam([p], lr=lr),
}


def batched() -> tuple[float, int]:
    start = time.perf_counter()
    result = run_landscape(
        "rosenbrock", default_optimizers(), steps=STEPS, starts=STARTS, tune=True
    )
    elapsed = time.perf_counter() - start
    assert result.batch is not None
    return elapsed, result.batch.rows


def loop_one(name: str, lr: float, start: tuple[float, float]) -> None:
    fn = get_function("rosenbrock").fn
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = TORCH[name](p, lr)
    for _ in range(STEPS):
        optimizer.zero_grad()
        fn(p[None]).sum().backward()
        optimizer.step()


def loop_sample(sample: int) -> tuple[float, int, int]:
    """Seconds for `sample` trajectories spread over the sweep, their count, the sweep size."""
    every = [(n, lr, s) for n in TORCH for lr in lr_grid() for s in STARTS]
    stride = max(1, len(every) // sample)
    chosen = every[::stride][:sample]
    start = time.perf_counter()
    for name, lr, point in chosen:
        loop_one(name, lr, point)
    return time.perf_counter() - start, len(chosen), len(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=72, help="trajectories timed in the loop")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    batched()  # warm-up: torch's lazy imports on the first optimizer
    loop_one("adam", 1e-3, STARTS[0])
    batch_times = []
    loop_rates = []
    for _ in range(args.repeats):
        seconds, rows = batched()
        batch_times.append(seconds)
        loop_seconds, n, total = loop_sample(args.sample)
        loop_rates.append(loop_seconds / n)
    best, median = min(batch_times), statistics.median(batch_times)
    loop_total = statistics.median(loop_rates) * total
    table = {
        "trajectories": rows,
        "steps": STEPS,
        "threads": torch.get_num_threads(),
        "batched_seconds_min": best,
        "batched_seconds_median": median,
        "loop_seconds_per_trajectory": statistics.median(loop_rates),
        "loop_sample": n,
        "loop_seconds_extrapolated": loop_total,
        "speedup_median": loop_total / median,
    }
    print(f"rosenbrock sweep: {rows} trajectories × {STEPS} steps, {table['threads']} threads, "
          f"{args.repeats} repeats (median, min)")  # fmt: skip
    print(f"{'method':56s} {'seconds':>9s} {'ratio':>8s}")
    print(f"{'batched run_landscape (tune=True), median':56s} {median:9.2f} {1.0:8.2f}")
    print(f"{'batched run_landscape (tune=True), best':56s} {best:9.2f} {median / best:8.2f}")
    label = f"torch.optim loop per trajectory ({n} timed, extrapolated)"
    print(f"{label:56s} {loop_total:9.2f} {loop_total / median:8.1f}×")
    if args.json:
        temporary = args.json.with_name(f".{args.json.name}.tmp{os.getpid()}")
        temporary.write_text(json.dumps(table, indent=2))
        os.replace(temporary, args.json)


if __name__ == "__main__":
    main()
