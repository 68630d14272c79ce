"""How long the diagnostics take, and how the LR range test's cost compares with plain training.

The issue's target: ``lr-find`` on digits-mlp with Adam in ≤ 10 s. Measured here in one run:

* ``lr_find`` alone (model and problem already built) with optimlab's Adam and torch.optim.Adam,
  against the floor it cannot beat — the same number of plain forward/backward/step iterations
  (ratio = range test / plain loop; the extra is snapshot, restore and smoothing);
* the whole ``optimlab lr-find --problem digits-mlp --optimizer adam`` in a fresh process
  (interpreter, torch and scikit-learn imports, data loading included);
* each check of ``run_diagnosis`` on digits-mlp, and the Hessian-vector products the Hessian
  check needs on quadratic-deep.

    .venv/bin/python benchmarks/diagnose_speed.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from optimlab.diagnose import lr_find, run_diagnosis
from optimlab.optim import create
from optimlab.problems import get_problem


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def plain_loop(problem, make, iterations: int) -> None:
    model = problem.build_model(0)
    optimizer = make(model.parameters())
    x, y = problem.train
    generator = torch.Generator().manual_seed(0)
    for _ in range(iterations):
        index = torch.randint(0, len(x), (problem.batch_size,), generator=generator)
        optimizer.zero_grad()
        problem.loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()

    problem = get_problem("digits-mlp")
    rows = []
    for label, make in (
        ("optimlab adam", lambda p: create("adam", p)),
        ("torch.optim Adam", lambda p: torch.optim.Adam(p)),
    ):
        iterations = []

        def range_test(make=make, iterations=iterations) -> None:
            model = problem.build_model(0)
            result = lr_find(model, problem.train, problem.loss_fn, make(model.parameters()),
                             batch_size=problem.batch_size)  # fmt: skip
            iterations.append(len(result.lrs))

        seconds = best_of(args.repeats, range_test)
        count = iterations[0]
        floor = best_of(args.repeats, lambda make=make, n=count: plain_loop(problem, make, n))
        rows.append({"what": f"lr_find digits-mlp, {label}", "iterations": count,
                     "seconds": seconds, "plain_loop_seconds": floor,
                     "ratio": seconds / floor})  # fmt: skip

    command = [sys.executable, "-m", "optimlab.cli", "lr-find", "--problem", "digits-mlp",
               "--optimizer", "adam", "--json"]  # fmt: skip
    cli = best_of(args.repeats, lambda: subprocess.run(command, check=True, capture_output=True))
    rows.append({"what": "optimlab lr-find digits-mlp adam (fresh process)", "seconds": cli})

    for check in ("lr", "gradflow", "hessian", "landscape"):
        result = run_diagnosis("digits-mlp", "adam", check)
        rows.append({"what": f"diagnose digits-mlp --checks {check}",
                     "seconds": result[check]["seconds"]})  # fmt: skip
    quadratic = run_diagnosis("quadratic-deep", "adam", "hessian")["hessian"]
    rows.append({"what": "diagnose quadratic-deep --checks hessian",
                 "seconds": quadratic["seconds"], "hvps": quadratic["hvps"]})  # fmt: skip

    print(f"{'measurement':<52} {'seconds':>8} {'ratio to plain loop':>20}")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else ""
        print(f"{row['what']:<52} {row['seconds']:>8.2f} {ratio:>20}")
    print(f"torch threads: {torch.get_num_threads()}, best of {args.repeats}")
    if args.json:
        path = Path(args.json)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temporary.write_text(json.dumps({"rows": rows, "repeats": args.repeats}, indent=1))
        os.replace(temporary, path)


if __name__ == "__main__":
    main()
