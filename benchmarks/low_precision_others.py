"""Low-precision state beyond Adam: AdaMax, NAdam, RMSprop and Momentum, step time in one run.

For each optimizer, on one workload (default: 16 tensors of 2^19 elements, 8M parameters), the
rows are torch.optim's fastest CPU version of the same optimizer (``fused=True`` where torch has
it, SGD; else ``foreach=True``: the bar), optimlab's fused kernel with float32, bf16 and int8
state, and bfloat16 weights with int8 state and stochastic rounding. It prints the bytes one step
must move per parameter (the floor: weights, gradient and state read, weights and state written;
8-bit state adds a float32 maximum per 256 elements and state), the state bytes per parameter
measured from the state tensors, ms/step (median of interleaved steps, so load drift touches
every row of an optimizer alike) and the ratio to torch's row.

    .venv/bin/python benchmarks/low_precision_others.py [--tensors 16] [--size 524288] [--repeat 7] [--only adamax,...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from optimlab.optim.registry import get_info

#: optimizer: (torch's factory, optimlab name, options, element-wise states)
OPTIMIZERS: dict[str, tuple[Callable, str, dict, int]] = {
    "adamax": (lambda ps: torch.optim.Adamax(ps, foreach=True), "adamax", {}, 2),
    "nadam": (lambda ps: torch.optim.NAdam(ps, foreach=True), "nadam", {}, 2),
    "rmsprop": (lambda ps: torch.optim.RMSprop(ps, foreach=True), "rmsprop", {}, 1),
    "momentum": (
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, fused=True),
        "sgd",
        {"lr": 0.01, "momentum": 0.9},
        1,
    ),
}


def _state_bytes(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> float:
    total = 0
    for p in params:
        for value in optimizer.state[p].values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                total += value.numel() * value.element_size()
    return total / sum(p.numel() for p in params)


def _rows(torch_factory: Callable, name: str, options: dict, states: int) -> dict:
    """(factory, weights' dtype, floor in bytes per parameter) per row of one optimizer."""
    cls = get_info(name).cls
    maxima = states * 2 * 4 / 256  # one float32 maximum per 256 elements, read and written

    def ours(**extra) -> Callable:
        return lambda ps: cls(ps, impl="fused", **options, **extra)

    return {
        "torch (fused/foreach, fp32)": (torch_factory, torch.float32, 12 + 8 * states),
        "optimlab fused, float32 state": (ours(), torch.float32, 12 + 8 * states),
        "optimlab fused, bf16 state": (ours(state_dtype="bf16"), torch.float32, 12 + 4 * states),
        "optimlab fused, int8 state": (
            ours(state_dtype="int8"),
            torch.float32,
            12 + 2 * states + maxima,
        ),
        "optimlab fused, bf16 weights + int8 state + SR": (
            ours(state_dtype="int8", stochastic_rounding=True),
            torch.bfloat16,
            6 + 2 * states + maxima,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--size", type=int, default=1 << 19)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", default=",".join(OPTIMIZERS), help="comma-separated subset")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    chosen = args.only.split(",")
    unknown = sorted(set(chosen) - set(OPTIMIZERS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; valid: {', '.join(OPTIMIZERS)}")
    print(
        f"{args.tensors} tensors × {args.size} = {args.tensors * args.size / 1e6:.1f}M parameters, "
        f"{torch.get_num_threads()} threads ({os.cpu_count()} CPUs), median of {args.repeat}"
    )
    report = {}
    for optimizer_name in chosen:
        runs = {}
        for row, (factory, dtype, floor) in _rows(*OPTIMIZERS[optimizer_name]).items():
            params = [
                torch.nn.Parameter(torch.randn(args.size, dtype=dtype)) for _ in range(args.tensors)
            ]
            for p in params:
                p.grad = torch.randn(args.size, dtype=dtype)
            optimizer = factory(params)
            optimizer.step()  # state created, kernels compiled
            runs[row] = (optimizer, params, floor, [])
        for _ in range(args.repeat):  # interleaved: load drift touches every row alike
            for optimizer, _, _, times in runs.values():
                start = time.perf_counter()
                optimizer.step()
                times.append(time.perf_counter() - start)
        bar = statistics.median(runs["torch (fused/foreach, fp32)"][3])
        print(f"\n{optimizer_name}")
        print(
            f"{'row':<48} {'floor B/param':>13} {'state B/param':>13} {'ms/step':>8} {'speed-up':>8}"
        )
        rows = []
        for row, (optimizer, params, floor, times) in runs.items():
            ms = statistics.median(times) * 1e3
            state = _state_bytes(optimizer, params)
            print(f"{row:<48} {floor:>13.2f} {state:>13.2f} {ms:>8.2f} {bar * 1e3 / ms:>7.2f}×")
            rows.append({"row": row, "floor": floor, "state": state, "ms": ms})
        report[optimizer_name] = rows
        del runs
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
