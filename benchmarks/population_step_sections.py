"""Where a population's training step spends its time: the step of
`optimlab.lab.population._train_population` replayed section by section, CPU microseconds per
population step (one thread), for two formulations measured interleaved in one process:

- ``now``: the population as it runs (for digits-logreg: the Linear layer and the loss as one
  node, `optimlab.lab.population_logistic`; minibatches gathered by ``index_select``);
- ``unfused``: the layer and the loss as separate nodes (`BatchedLinear`, then
  `population_loss.member_cross_entropy`) and the minibatches by advanced indexing
  ``x[index]`` (what ran before).

    python benchmarks/population_step_sections.py [--problem digits-logreg] [--members 36]
        [--steps 200] [--rounds 3]

Each round runs ``--steps`` steps of each formulation (Adam, the benchmark's rates 1e-4 … 1e-1),
after 8 warm-up steps; the table shows the median over rounds of each section's mean. The
sections are those of the step: the epoch's shuffles (``randperm`` per member, every
⌊n / B⌋ steps), the gather, the forward and loss, the non-finite check, ``zero_grad``, the masked
sum, the backward, setting the rates, the optimizer's step, the schedule. CPU time
(``time.thread_time``) suffers less than wall clock from a loaded machine; the load average is
printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time


def replay(problem, members: int, steps: int, fused: bool) -> dict[str, float]:
    """Mean CPU µs per population step of each section, over `steps` steps after a warm-up."""
    import torch

    from optimlab.lab import population_logistic
    from optimlab.lab.population import BatchedModel, _Member, _orders, _PopulationSchedule
    from optimlab.lab.protocol import lr_grid
    from optimlab.lab.trial import TrialSpec
    from optimlab.optim.modes import to_train_point
    from optimlab.optim.registry import create

    rates = lr_grid(members, 1e-4, 1e-1)
    specs = [
        TrialSpec(problem.spec, "adam", {"lr": lr}, seed=i, steps=steps)
        for i, lr in enumerate(rates)
    ]
    states = [_Member(s) for s in specs]
    names = population_logistic.names
    if not fused:
        population_logistic.names = lambda module: None
    try:
        model = BatchedModel([problem.build_model(s.seed) for s in specs])
    finally:
        population_logistic.names = names

    def gather(x, y, index):
        if fused:
            return BatchedModel.minibatches(x, y, index)
        return x[index], y[index]

    x_train, y_train = problem.train
    n, batch = len(x_train), min(problem.batch_size, len(x_train))
    base = torch.tensor(rates, dtype=torch.float64).view(members, 1)
    optimizer = create("adam", model.leaves, lr=base.clone())
    to_train_point(optimizer)
    schedule = _PopulationSchedule("constant", base, steps)
    active = torch.ones(members, dtype=torch.bool)
    orders, position = _orders(states, n), 0
    totals: dict[str, int] = collections.defaultdict(int)
    clock = time.thread_time_ns
    for step in range(steps + 8):
        if step == 8:
            totals.clear()
        marks = [clock()]
        if position + batch > n:
            orders, position = _orders(states, n), 0
        index = orders[:, position : position + batch]
        position += batch
        marks.append(clock())
        inputs, targets = gather(x_train, y_train, index)
        marks.append(clock())
        losses = model.losses(inputs, targets, problem.loss_fn, problem.penalty)
        marks.append(clock())
        stopped = (active & ~torch.isfinite(losses.detach())).nonzero().flatten().tolist()
        assert not stopped and bool(active.any())
        marks.append(clock())
        optimizer.zero_grad(set_to_none=True)
        marks.append(clock())
        total = torch.where(active, losses, torch.zeros((), dtype=losses.dtype)).sum()
        marks.append(clock())
        total.backward()
        marks.append(clock())
        for group in optimizer.param_groups:
            group["lr"] = schedule.rates() * active.view(members, 1)
        marks.append(clock())
        optimizer.step()
        marks.append(clock())
        schedule.after_step()
        marks.append(clock())
        for name, start, end in zip(SECTIONS, marks[:-1], marks[1:], strict=True):
            totals[name] += end - start
    return {name: totals[name] / steps / 1e3 for name in SECTIONS}


SECTIONS = [
    "shuffles (randperm per member, per epoch)",
    "gather the minibatches",
    "forward and loss",
    "non-finite check",
    "zero_grad",
    "masked sum",
    "backward",
    "set the rates",
    "optimizer step (Adam, fused kernel)",
    "schedule",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="digits-logreg")
    parser.add_argument("--members", type=int, default=36)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from optimlab.lab.executor import single_threaded
    from optimlab.problems import get_problem

    single_threaded()
    problem = get_problem(args.problem)
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {"unfused": [], "now": []}
    for _ in range(args.rounds):
        for variant in runs:
            runs[variant].append(replay(problem, args.members, args.steps, variant == "now"))
    load_end = os.getloadavg()[0]
    print(
        f"{args.problem}, {args.members} members, Adam, one thread, CPU µs per population step, "
        f"medians of {args.rounds} interleaved rounds of {args.steps} steps; load average "
        f"(1 min) {load_start:.1f} at the start, {load_end:.1f} at the end\n"
    )
    print("| section | unfused µs | now µs |")
    print("| --- | --- | --- |")
    medians = {
        v: {s: statistics.median(r[s] for r in rounds) for s in SECTIONS}
        for v, rounds in runs.items()
    }
    for section in SECTIONS:
        print(f"| {section} | {medians['unfused'][section]:.1f} | {medians['now'][section]:.1f} |")
    totals = {v: sum(m.values()) for v, m in medians.items()}
    print(f"| **total** | {totals['unfused']:.1f} | {totals['now']:.1f} |")
    print(
        f"\nper member-step: unfused {totals['unfused'] / args.members:.1f} µs, now "
        f"{totals['now'] / args.members:.1f} µs ({totals['unfused'] / totals['now']:.2f}×)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
