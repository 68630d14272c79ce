"""Overhead of the comparison runner's training loop against a hand-written torch loop.

Both train digits-mlp (64-128-10, batch 128) with optimlab's Adam for the same number of steps,
same minibatch order, one torch thread. Measured in one run, interleaved (runner, hand, runner,
hand, …) so that machine load hits both alike; the table shows medians and their ratio.

* loop: the runner's time per training step (its own ``seconds_per_step``: sampling, forward,
  backward, step, schedule, divergence check) vs the hand loop's.
* trial: a whole ``train()`` call with one evaluation (initial and final evaluations of the
  train/val/test splits, metrics, test probabilities) vs the hand loop plus a test evaluation.

    .venv/bin/python benchmarks/runner_overhead.py [--steps 500] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from optimlab.lab.train import train
from optimlab.lab.trial import TrialSpec
from optimlab.optim.registry import create
from optimlab.problems import get_problem


def hand_loop(problem, steps: int, seed: int = 0) -> float:
    """The loop one writes by hand; returns (training seconds, seconds including a test
    evaluation)."""
    start = time.perf_counter()
    model = problem.build_model(seed)
    optimizer = create("adam", model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    x, y = problem.train
    n, batch = len(x), problem.batch_size
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if position + batch > n:
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position : position + batch]
        position += batch
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loop = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x_test, y_test = problem.test
        (model(x_test).argmax(1) == y_test).float().mean().item()
    return loop, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = get_problem("digits-mlp")
    spec = TrialSpec(problem.spec, "adam", {"lr": 1e-3}, steps=args.steps, evals=1)
    train(spec, problem)  # warm-up: kernels, allocator
    hand_loop(problem, 50)
    runner_step, runner_trial, hand_step, hand_trial = [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = train(spec, problem)
        runner_trial.append(time.perf_counter() - start)
        runner_step.append(result.metrics["seconds_per_step"])
        loop, total = hand_loop(problem, args.steps)
        hand_step.append(loop / args.steps)
        hand_trial.append(total)
    rows = {
        "loop (ms/step)": (
            statistics.median(runner_step) * 1e3,
            statistics.median(hand_step) * 1e3,
        ),
        "trial (s)": (statistics.median(runner_trial), statistics.median(hand_trial)),
    }
    print(f"digits-mlp, adam, {args.steps} steps, {args.repeats} interleaved repeats, medians")
    print(f"{'':16} {'runner':>10} {'hand loop':>10} {'ratio':>8}")
    for name, (runner, hand) in rows.items():
        print(f"{name:16} {runner:10.4f} {hand:10.4f} {runner / hand:8.3f}")
    if args.json:
        payload = {name: {"runner": r, "hand": h, "ratio": r / h} for name, (r, h) in rows.items()}
        payload["config"] = {"steps": args.steps, "repeats": args.repeats}
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)))
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file, indent=1)
        os.replace(temporary, args.json)


if __name__ == "__main__":
    main()
