"""Low-precision optimizer state: bytes per parameter and reference-rule step time, one run.

Adam on one workload (default 64 tensors of 2^14 float32 elements, 1M parameters), five state
forms: optimlab's float32 reference rule, its bf16 and int8 state (reference rule: no fused
kernel yet), torch.optim's fused AdamW (the bar), and torchao's AdamW8bit run eagerly (its
``torch.compile`` needs a C++ toolchain; eager is what runs here). It prints the state bytes per
parameter measured from the state tensors, and ms/step (median of interleaved steps) with the
ratio to torch's fused AdamW.

    .venv/bin/python benchmarks/low_precision.py [--tensors 64] [--size 16384] [--repeat 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from optimlab.optim.adam import AdamW


def _torchao_adamw8bit() -> Callable | None:
    try:
        import torchao.optim.adam as torchao_adam
    except ImportError:
        return None
    torchao_adam.torch.compile = lambda fn, **_: fn  # eager: no compiler needed
    return torchao_adam.AdamW8bit


def _state_bytes(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> float:
    total = 0
    for p in params:
        for value in optimizer.state[p].values():
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                continue
            parts = [value.codes, value.scale] if hasattr(value, "codes") else [value]
            total += sum(t.numel() * t.element_size() for t in parts)
    return total / sum(p.numel() for p in params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--size", type=int, default=1 << 14)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    factories: dict[str, Callable] = {
        "torch fused AdamW (fp32)": lambda ps: torch.optim.AdamW(ps, fused=True),
        "optimlab reference, float32 state": lambda ps: AdamW(ps, impl="reference"),
        "optimlab reference, bf16 state": lambda ps: AdamW(ps, state_dtype="bf16"),
        "optimlab reference, int8 state": lambda ps: AdamW(ps, state_dtype="int8"),
    }
    torchao = _torchao_adamw8bit()
    if torchao is not None:
        factories["torchao AdamW8bit (eager)"] = lambda ps: torchao(ps)
    runs = {}
    for name, factory in factories.items():
        params = [torch.nn.Parameter(torch.randn(args.size)) for _ in range(args.tensors)]
        for p in params:
            p.grad = torch.randn(args.size)
        optimizer = factory(params)
        optimizer.step()  # state created
        runs[name] = (optimizer, params, [])
    for _ in range(args.repeat):  # interleaved: load drift touches every row alike
        for optimizer, _, times in runs.values():
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
    bar = statistics.median(runs["torch fused AdamW (fp32)"][2])
    rows = []
    for name, (optimizer, params, times) in runs.items():
        ms = statistics.median(times) * 1e3
        rows.append((name, _state_bytes(optimizer, params), ms, ms / (bar * 1e3)))
    n = args.tensors * args.size
    print(
        f"Adam, {args.tensors} x {args.size} = {n:,} parameters, {torch.get_num_threads()} threads"
    )
    print(f"{'implementation':36} {'state B/param':>13} {'ms/step':>9} {'x torch fused':>13}")
    for name, state_bytes, ms, ratio in rows:
        print(f"{name:36} {state_bytes:13.3f} {ms:9.2f} {ratio:13.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(zip(("name", "state_bytes", "ms", "ratio"), r)) for r in rows], f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
