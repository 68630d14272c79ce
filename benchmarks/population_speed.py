"""Populations against their floor: per built-in problem, the FLOPs of one training step, this
machine's matmul rate, the floor per member-step, a single trial's time per step and a
36-member population's time per member-step (wall clock and CPU time), and peak memory.

    python benchmarks/population_speed.py [--members 36] [--steps 100] [--repeats 3] [--json]

- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward and backward of one model
  on one minibatch (matmuls and convolutions; the elementwise work and the optimizer step are
  not counted, so the floor is a lower bound).
- Matmul rate: a float32 (128×64)·(64×128) matmul, one thread, best of 5 × 2,000 — the size of
  these networks' layers — measured again before each problem (the machine is shared: the
  floor of a problem uses the rate measured next to it).
- Element-wise floor: work a FLOP count leaves out but a population step cannot avoid, timed
  on this machine next to each problem (one thread, best of 5 × 200) and added to the FLOP
  floor, per member-step: gathering the members' minibatches (``index_select`` of M·B rows of
  the training inputs: each member reads its own) and one ``exp`` over the M·B·C logits of a
  classification problem (the softmax's; its backward needs them again, not counted). The
  products themselves are counted at the 128×64·64×128 rate, not at their own shapes' (a
  10-row product, digits-logreg's, runs at ≈ 55–59 GFLOP/s: docs/compare.md).
- Single trial: `optimlab.lab.train.train`, Adam at lr 1e-3, ``seconds_per_step`` (training
  steps after the first; evaluations excluded). Population: `train_population` of `--members`
  Adam trials (rates 1e-4 … 1e-1, seeds 0 …), its ``seconds_per_step`` (the population's step
  time divided by the members). One torch thread throughout, as in the executors' workers.
- Fair under load: each run is a fresh process that trains twice, the second time with the
  lab's clock (``time.perf_counter``) replaced by the process's CPU clock, so it reports wall
  and CPU time per (member-)step; per problem the single trial and the population run back to
  back, `--repeats` times interleaved (single, population, single, …), and the table shows
  medians. The speed-up is the ratio of the medians, wall and CPU.
- Formulations: a third run per repeat trains the population under ``vmap`` over the problem's
  module (``Conv1d`` as one matmul per member, `optimlab.lab.population_conv`) instead of the
  hand-written forward (`optimlab.lab.population_batched`), in the same interleaving; printed
  in a second table. ``--vmap-conv`` adds a fourth for problems with ``Conv1d``: ``vmap``'d
  ``conv1d`` itself.
- Peak memory: the peak resident set (``ru_maxrss``) of the run's process, largest over the
  repeats (Python, torch and the data sets included).
- The load average (1 minute) is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
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


def best_seconds(call, repeats: int = 5, number: int = 200) -> float:
    """The fastest of `repeats` timings of `number` calls, per call."""
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, time.perf_counter() - start)
    return best / number


def elementwise_seconds(problem, members: int) -> float:
    """Seconds per member-step of the work outside the products (module docstring): the
    members' minibatch gather and, for classification, one exp over their logits."""
    import torch

    x, _ = problem.train
    batch = min(problem.batch_size, len(x))
    index = torch.randint(0, len(x), (members * batch,), generator=torch.Generator().manual_seed(0))
    gathered = torch.empty(members * batch, *x.shape[1:], dtype=x.dtype)
    seconds = best_seconds(lambda: torch.index_select(x, 0, index, out=gathered))
    if problem.task == "classification":
        with torch.no_grad():
            classes = problem.build_model(0)(x[:1]).shape[-1]
        logits = torch.randn(members, batch, classes, dtype=x.dtype)
        out = torch.empty_like(logits)
        seconds += best_seconds(lambda: torch.exp(logits, out=out))
    return seconds / members


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


def run(spec: str, members: int, steps: int, variant: str, queue) -> None:
    """In a fresh process, one thread: a single trial (members = 1) or a population (`variant`
    "explicit": the hand-written forward; "vmap": vmap over the module; "vmap-conv": with
    vmap's conv1d), trained twice — wall clock, then CPU clock; its times
    per (member-)step and the process's peak resident set in MB."""
    from optimlab.lab import population
    from optimlab.lab.executor import single_threaded
    from optimlab.lab.train import train
    from optimlab.problems import get_problem

    single_threaded()
    problem = get_problem(spec)
    if variant in ("vmap", "vmap-conv"):  # vmap over the module, not the hand-written forward
        population.explicit_forward = lambda module: None
    if variant == "vmap-conv":  # the population's module as it is: conv1d under vmap
        population.batchable = lambda module: module

    def once() -> tuple[float, list[str]]:
        if members == 1:
            results = [train(specs(problem, 1, steps)[0], problem)]
        else:
            results = population.train_population(specs(problem, members, steps), problem)
        return results[0].metrics["seconds_per_step"], sorted({r.status for r in results})

    wall, statuses = once()
    time.perf_counter = time.process_time  # the lab's step clock is now this process's CPU
    cpu, _ = once()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((wall, cpu, peak, statuses))


def in_fresh_process(
    spec: str, members: int, steps: int, variant: str = "explicit"
) -> tuple[float, float, float, list[str]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run, args=(spec, members, steps, variant, queue))
    process.start()
    answer = queue.get()
    process.join()
    return answer


def has_conv(problem) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv1d) for m in problem.build_model(0).modules())


def measure(spec: str, members: int, steps: int, repeats: int, vmap_conv: bool = False) -> dict:
    """One problem's row: single and population back to back, `repeats` times interleaved."""
    from optimlab.problems import get_problem

    problem = get_problem(spec)
    flops = step_flops(problem)
    rate = matmul_gflops()
    floor = flops / (rate * 1e9)
    elementwise = elementwise_seconds(problem, members)
    variants = [
        ("single", 1, "explicit"),
        ("population", members, "explicit"),
        ("vmap", members, "vmap"),
    ]
    if vmap_conv and has_conv(problem):
        variants.append(("vmap_conv", members, "vmap-conv"))
    runs: dict[str, list[tuple[float, float, float, list[str]]]] = {v: [] for v, _, _ in variants}
    for _ in range(repeats):
        for name, size, variant in variants:
            runs[name].append(in_fresh_process(spec, size, steps, variant))
    row = {
        "problem": spec,
        "mflop_per_step": flops / 1e6,
        "matmul_gflops": rate,
        "floor_ms": floor * 1e3,
        "elementwise_ms": elementwise * 1e3,
        "floor_with_elementwise_ms": (floor + elementwise) * 1e3,
    }
    for name, values in runs.items():
        row[f"{name}_ms"] = statistics.median(v[0] for v in values) * 1e3
        row[f"{name}_cpu_ms"] = statistics.median(v[1] for v in values) * 1e3
        row[f"{name}_peak_mb"] = max(v[2] for v in values)
        row[f"{name}_statuses"] = sorted({s for v in values for s in v[3]})
    row["speedup"] = row["single_ms"] / row["population_ms"]
    row["cpu_speedup"] = row["single_cpu_ms"] / row["population_cpu_ms"]
    row["population_vs_floor"] = row["population_ms"] / row["floor_ms"] if floor else None
    row["population_cpu_vs_floor"] = row["population_cpu_ms"] / row["floor_ms"] if floor else None
    row["population_vs_elementwise_floor"] = row["population_ms"] / row["floor_with_elementwise_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=36)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--vmap-conv", action="store_true", help="also time vmap'd conv1d")
    args = parser.parse_args(argv)

    from optimlab.lab.executor import single_threaded

    single_threaded()
    load_start, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for spec in args.problems.split(","):
        rows.append(measure(spec, args.members, args.steps, args.repeats, args.vmap_conv))
        print(json.dumps(rows[-1]), file=sys.stderr)  # each row as it is measured
    load_end = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"load_average": [load_start, load_end], "rows": rows}, indent=2))
        return 0
    print(
        f"{args.members} members, {args.steps} steps, Adam, one thread, medians of "
        f"{args.repeats} interleaved repeats; started {started}; load average (1 min) "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end\n"
    )
    print(
        "| problem | MFLOP/step | matmul GFLOP/s | floor ms | single ms/step | population "
        "ms/member-step | speed-up | × floor | CPU ms single / population | CPU speed-up "
        "| CPU × floor | floor + gather + exp ms | × that (CPU) | peak MB single / population |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:

        def ratio(value):
            return "—" if value is None else f"{value:.1f}"

        print(
            f"| {r['problem']} | {r['mflop_per_step']:.2f} | {r['matmul_gflops']:.0f} | "
            f"{r['floor_ms']:.3f} | {r['single_ms']:.3f} | {r['population_ms']:.3f} | "
            f"{r['speedup']:.2f}× | {ratio(r['population_vs_floor'])} | "
            f"{r['single_cpu_ms']:.3f} / {r['population_cpu_ms']:.3f} | "
            f"{r['cpu_speedup']:.2f}× | {ratio(r['population_cpu_vs_floor'])} | "
            f"{r['floor_with_elementwise_ms']:.3f} | {r['population_vs_elementwise_floor']:.1f} "
            f"({r['population_cpu_ms'] / r['floor_with_elementwise_ms']:.1f}) | "
            f"{r['single_peak_mb']:.0f} / {r['population_peak_mb']:.0f} |"
        )
    print(
        "\n| problem | population under vmap ms/member-step | hand-written forward | "
        "speed-up over vmap | (CPU) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['problem']} | {r['vmap_ms']:.3f} ({r['single_ms'] / r['vmap_ms']:.2f}×) | "
            f"{r['population_ms']:.3f} ({r['speedup']:.2f}×) | "
            f"{r['vmap_ms'] / r['population_ms']:.2f}× | "
            f"{r['vmap_cpu_ms'] / r['population_cpu_ms']:.2f}× |"
        )
    for r in rows:
        if "vmap_conv_ms" in r:
            print(
                f"\n{r['problem']}: vmap'd conv1d {r['vmap_conv_ms']:.3f} ms per member-step "
                f"(CPU {r['vmap_conv_cpu_ms']:.3f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
