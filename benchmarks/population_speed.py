"""Populations against their floor: per built-in problem, the FLOPs of one training step, this
machine's matmul rate, the floor per member-step, a single trial's time per step and a
36-member population's time per member-step (same run), and the population's peak memory.

    python benchmarks/population_speed.py [--members 36] [--steps 100] [--json]

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward and backward of one model
  on one minibatch (matmuls and convolutions; the elementwise work and the optimizer step are
  not counted, so the floor is a lower bound).
- Matmul rate: a float32 (128×64)·(64×128) matmul, one thread, best of 5 × 2,000 — the size of
  these networks' layers.
- Single trial: `optimlab.lab.train.train`, Adam at lr 1e-3, ``seconds_per_step`` (training
  steps after the first; evaluations excluded). Population: `train_population` of `--members`
  Adam trials (rates 1e-4 … 1e-1, seeds 0 …), its ``seconds_per_step`` (the population's step
  time divided by the members). One torch thread throughout, as in the executors' workers.
- Peak memory: the single trial and the population each run in a fresh process; the peak
  resident set (``ru_maxrss``) of that process (Python, torch and the data sets included).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time

PROBLEMS = [
    "quadratic-deep",
    "digits-logreg",
    "digits-mlp",
    "mnist1d-mlp",
    "mnist1d-cnn",
    "deep-mlp:depth=10:activation=sigmoid",
    "deep-mlp:depth=10:activation=relu:init=he",
]


def matmul_gflops() -> float:
    import torch

    a, b = torch.randn(128, 64), torch.randn(64, 128)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 128 * 64 * 128 * 2000 / best / 1e9


def step_flops(problem) -> int:
    """Matmul/convolution FLOPs of one forward and backward on one minibatch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = problem.build_model(0)
    x, y = problem.train
    batch = min(problem.batch_size, len(x))
    with FlopCounterMode(display=False) as counter:
        problem.loss_fn(model(x[:batch]), y[:batch]).backward()
    return counter.get_total_flops()


def specs(problem, members: int, steps: int):
    from optimlab.lab.protocol import lr_grid
    from optimlab.lab.trial import TrialSpec

    rates = lr_grid(members, 1e-4, 1e-1)
    return [
        TrialSpec(problem.spec, "adam", {"lr": lr}, seed=i, steps=steps, evals=2)
        for i, lr in enumerate(rates)
    ]


def run(spec: str, members: int, steps: int, queue) -> None:
    """In a fresh process, one thread: a single trial (members = 1) or a population; its time
    per (member-)step and the process's peak resident set in MB."""
    from optimlab.lab.executor import single_threaded
    from optimlab.lab.population import train_population
    from optimlab.lab.train import train
    from optimlab.problems import get_problem

    single_threaded()
    problem = get_problem(spec)
    if members == 1:
        results = [train(specs(problem, 1, steps)[0], problem)]
    else:
        results = train_population(specs(problem, members, steps), problem)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((results[0].metrics["seconds_per_step"], peak, sorted({r.status for r in results})))


def in_fresh_process(spec: str, members: int, steps: int) -> tuple[float, float, list[str]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run, args=(spec, members, steps, queue))
    process.start()
    answer = queue.get()
    process.join()
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=36)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from optimlab.lab.executor import single_threaded
    from optimlab.problems import get_problem

    single_threaded()
    rate = matmul_gflops()
    rows = []
    for spec in args.problems.split(","):
        problem = get_problem(spec)
        flops = step_flops(problem)
        floor = flops / (rate * 1e9)
        single_step, single_memory, _ = in_fresh_process(spec, 1, args.steps)
        member_step, memory, statuses = in_fresh_process(spec, args.members, args.steps)
        rows.append(
            {
                "problem": spec,
                "mflop_per_step": flops / 1e6,
                "matmul_gflops": rate,
                "floor_ms": floor * 1e3,
                "single_ms": single_step * 1e3,
                "population_ms": member_step * 1e3,
                "speedup": single_step / member_step,
                "population_vs_floor": member_step / floor if floor else None,
                "single_peak_mb": single_memory,
                "population_peak_mb": memory,
                "statuses": statuses,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)  # each row as it is measured
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{args.members} members, {args.steps} steps, Adam, one thread; matmul {rate:.1f} GFLOP/s\n"
    )
    print(
        "| problem | MFLOP/step | floor ms | single ms/step | population ms/member-step "
        "| speed-up | × floor | peak MB single / population |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        vs_floor = "—" if r["population_vs_floor"] is None else f"{r['population_vs_floor']:.1f}"
        print(
            f"| {r['problem']} | {r['mflop_per_step']:.2f} | {r['floor_ms']:.3f} | "
            f"{r['single_ms']:.3f} | {r['population_ms']:.3f} | {r['speedup']:.2f}× | "
            f"{vs_floor} | {r['single_peak_mb']:.0f} / {r['population_peak_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
