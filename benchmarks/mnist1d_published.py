"""The published MNIST-1D baselines, reproduced with optimlab's runner.

Greydanus (2020), "Scaling down deep learning": on MNIST-1D (4,000 training and 1,000 test
sequences, generated locally by ``mnist1d.data.make_dataset(get_dataset_args())``) Adam with
lr 1e-2, batch 100, 6,000 steps reaches about 92–94% test accuracy with the small CNN and
65–68% with the MLP. Here both train on all 4,000 training sequences (``validation=false``)
through `optimlab.lab.train.train`, exactly as `optimlab compare` trains; the table gives the
test accuracy of each seed and their mean, against the thresholds CNN ≥ 90%, MLP ≥ 60%.

    .venv/bin/python benchmarks/mnist1d_published.py [--seeds 1] [--steps 6000] [--json PATH]
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
from optimlab.problems import get_problem

SETUPS = {"mnist1d-cnn": 0.90, "mnist1d-mlp": 0.60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    print(f"Adam lr 1e-2, batch 100, {args.steps} steps, trained on all 4,000 sequences")
    print(f"{'problem':14} {'seed':>4} {'test acc':>9} {'train acc':>9} {'s':>7}")
    for name, threshold in SETUPS.items():
        problem = get_problem(f"{name}:validation=false:batch_size=100")
        accuracies = []
        for seed in range(args.seeds):
            spec = TrialSpec(
                problem.spec, "adam", {"lr": 1e-2}, seed=seed, steps=args.steps, evals=12
            )
            start = time.perf_counter()
            result = train(spec, problem)
            seconds = time.perf_counter() - start
            accuracy = result.metrics.get("test_accuracy", float("nan"))
            accuracies.append(accuracy)
            train_accuracy = result.metrics.get("train_accuracy", float("nan"))
            print(f"{name:14} {seed:4d} {accuracy:9.1%} {train_accuracy:9.1%} {seconds:7.1f}")
        mean = statistics.mean(accuracies)
        verdict = "meets" if mean >= threshold else "BELOW"
        print(f"{name:14} mean {mean:9.1%}  ({verdict} the {threshold:.0%} threshold)")
        results[name] = {"test_accuracy": accuracies, "mean": mean, "threshold": threshold}
    if args.json:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)))
        with os.fdopen(handle, "w") as file:
            json.dump({"config": vars(args), "results": results}, file, indent=1)
        os.replace(temporary, args.json)


if __name__ == "__main__":
    main()
