"""fp8-state AdamW step: the kernel before and after the bit-level coding, A/B in one process.

Three versions of ``lowprec_adam``'s kernel are compiled side by side (its ``_load``,
``_store`` and ``_torch_update`` rebound in copies of its chunk and kernel functions) and take
turns on the same workload, interleaved, each with its own optimizer:

* ``before``: e4m3 codes decoded by the 256-entry table (``decode8_block``'s byte permutes) and
  coded from the true quotient x / scale (``lowprec_fp8.encode_fp8_divided``); the update
  divides by √(1 − β₂ᵗ);
* ``bit codec``: decoded and coded on the bits (``lowprec_fp8.decode_fp8_block``,
  ``encode_fp8_block``: x · fl(1/scale) · 2⁻¹²⁰ rounded at bit 20, flagged lanes divided);
* ``bit codec + reciprocal``: the kernel as it is (the update multiplies by fl(1/√(1 − β₂ᵗ))).

torch's fused AdamW runs in the same rounds as the bar. Printed: ms per step (median), CPU time
per step (median) and the ratios, and the load average (on a shared machine the CPU-time ratios
are the measure). ``--agreement`` instead runs AdamW with fp8 state (before/after update, kernel
and reference) against torchao's AdamWFp8 for 100 steps and prints the weights' largest
difference in float32 ulps and the codes that differ.

    nice -n 19 .venv/bin/python benchmarks/lowprec_fp8_ab.py [--tensors 64] [--size 524288] [--repeat 9] [--threads 2] [--agreement [--with-before]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from collections.abc import Callable

import numba
import numpy as np
import torch

from optimlab.optim.adam import AdamW
from optimlab.optim.kernels import lowprec_adam, lowprec_fp8
from optimlab.optim.kernels.adam import C
from optimlab.optim.kernels.common import decayed_gradient, lerp, maximum
from optimlab.optim.kernels.compile import KERNEL_OPTIONS, pointer_view
from optimlab.optim.kernels.lowprec_codec import decode8_block
from optimlab.optim.kernels.skeleton import prologue

_FP8_TABLE = lowprec_fp8.values()
_F32 = np.empty(0, np.float32)
_U8 = np.empty(0, np.uint8)
_current_load = lowprec_adam._load
_current_store = lowprec_adam._store


@numba.njit(inline="always")
def _load_by_table(address, maxima, start, n, mode, table, out):
    if mode == lowprec_adam.MODE_FP8 and n == lowprec_adam.BLOCK:
        codes = pointer_view(address, start, start + n, _U8)
        scale = pointer_view(maxima, start // 256, start // 256 + 1, _F32)[0]
        decode8_block(_FP8_TABLE, codes, scale, out)
    else:
        _current_load(address, maxima, start, n, mode, table, out)


@numba.njit(inline="always")
def _store_divided(address, maxima, start, n, mode, thresholds, bucket, values):
    if mode == lowprec_adam.MODE_FP8:
        scale = lowprec_adam._block_absmax(values, n) / lowprec_adam.FP8_LARGEST
        codes = pointer_view(address, start, start + n, _U8)
        lowprec_fp8.encode_fp8_divided(values, scale, codes, n)
        pointer_view(maxima, start // 256, start // 256 + 1, _F32)[0] = scale
    else:
        _current_store(address, maxima, start, n, mode, thresholds, bucket, values)


@numba.njit(inline="always")
def _update_divided(p, g, m, v, vmax, n, k, flags, amsgrad):
    """The update before: p += step · m / (√v / √bc2 + ε)."""
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, one, w2, eps = k[C.w1], k[C.one], k[C.w2], k[C.eps]
    step_size, root_bc2 = k[C.step_size], k[C.root_bias_correction2]
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj = lerp(m[j], gj, w1, one)
        vj = lerp(v[j], gj * gj, w2, one)
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj + step_size * mj / (np.sqrt(vj) / root_bc2 + eps)


def _rebound(function: Callable, name: str, **bound: object) -> Callable:
    code = getattr(function, "py_func", function).__code__
    copy = types.FunctionType(code, {**vars(lowprec_adam), **bound}, name)
    copy.__qualname__ = name
    return copy


def variant(load: Callable, store: Callable, torch_update: Callable, name: str) -> Callable:
    """``lowprec_adam``'s kernel with `load`, `store` and `torch_update` in place of its own."""
    inline = numba.njit(inline="always")
    update = inline(_rebound(lowprec_adam._update, f"{name}_update", _torch_update=torch_update))
    chunk = inline(
        _rebound(lowprec_adam._chunk, f"{name}_chunk", _load=load, _store=store, _update=update)
    )
    return numba.njit(**KERNEL_OPTIONS)(
        _rebound(lowprec_adam._kernel, f"{name}_kernel", _chunk=chunk)
    )


VARIANTS = {
    "before (table, x / scale, √v / √bc2)": (_load_by_table, _store_divided, _update_divided),
    "bit codec": (lowprec_adam._load, lowprec_adam._store, _update_divided),
    "bit codec + reciprocal": (lowprec_adam._load, lowprec_adam._store, lowprec_adam._torch_update),
}


def speed(tensors: int, size: int, repeat: int, threads: int) -> None:
    torch.set_num_threads(threads)
    kernels = {
        name: variant(*parts, name=f"ab{i}") for i, (name, parts) in enumerate(VARIANTS.items())
    }
    kernel_now = lowprec_adam.KERNEL
    rows: dict[str, tuple[Callable, Callable | None]] = {}

    def params() -> list[torch.Tensor]:
        ps = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
        for p in ps:
            p.grad = torch.randn(size)
        return ps

    rows["torch fused AdamW (fp32)"] = (torch.optim.AdamW(params(), fused=True).step, None)
    for name, kernel in kernels.items():
        rows[f"fp8: {name}"] = (AdamW(params(), state_dtype="fp8", impl="fused").step, kernel)
    wall: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for round_ in range(repeat + 1):  # round 0: state created, kernels compiled
            for name, (step, kernel) in rows.items():
                if kernel is not None:
                    lowprec_adam.KERNEL = kernel
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                if round_:
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    finally:
        lowprec_adam.KERNEL = kernel_now
    load = os.getloadavg()
    n = tensors * size
    print(
        f"AdamW, {tensors} x {size} = {n:,} parameters, {threads} threads, {repeat} rounds, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    first = next(iter(VARIANTS))
    base_wall = statistics.median(wall[f"fp8: {first}"])
    base_cpu = statistics.median(cpu[f"fp8: {first}"])
    bar_wall = statistics.median(wall["torch fused AdamW (fp32)"])
    bar_cpu = statistics.median(cpu["torch fused AdamW (fp32)"])
    print(
        "| implementation | ms/step | CPU ms/step | CPU ns/param | × before (CPU time) | "
        "× torch fused (speed) | × torch fused (CPU time) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in rows:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"| {name} | {w * 1e3:.2f} | {c * 1e3:.2f} | {c / n * 1e9:.3f} | {base_cpu / c:.2f} | "
            f"{bar_wall / w:.2f} | {bar_cpu / c:.2f} |"
        )
    del base_wall


def agreement(steps: int = 100, with_before: bool = False) -> None:
    """AdamW with fp8 state against torchao's AdamWFp8 (eager), `steps` steps."""
    import torchao.optim.adam as torchao_adam

    torchao_adam.torch.compile = lambda fn, **_: fn  # eager: no compiler needed
    shapes = [(32, 128), (40, 256), (7,)]
    torch.manual_seed(0)
    initial = [torch.randn(shape) for shape in shapes]
    grads = [
        [torch.randn(shape) * torch.logspace(-2.5, 0, shape[-1]) for shape in shapes]
        for _ in range(steps)
    ]

    def run(factory: Callable, kernel: Callable | None = None) -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(x.clone()) for x in initial]
        optimizer = factory(params)
        kernel_now = lowprec_adam.KERNEL
        try:
            if kernel is not None:
                lowprec_adam.KERNEL = kernel
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = g.clone()
                optimizer.step()
        finally:
            lowprec_adam.KERNEL = kernel_now
        return params

    lr, wd = 1e-2, 1e-2
    theirs = run(lambda ps: torchao_adam.AdamWFp8(ps, lr=lr, weight_decay=wd))
    rows = {}
    if with_before:  # (compiles the kernel before: a minute or more)
        before = variant(*VARIANTS["before (table, x / scale, √v / √bc2)"], name="agreement0")
        rows["kernel before (√v / √bc2)"] = run(
            lambda ps: AdamW(ps, lr=lr, weight_decay=wd, state_dtype="fp8", impl="fused"), before
        )
    rows |= {
        "kernel after (√v · fl(1/√bc2))": run(
            lambda ps: AdamW(ps, lr=lr, weight_decay=wd, state_dtype="fp8", impl="fused")
        ),
        "reference rule": run(
            lambda ps: AdamW(ps, lr=lr, weight_decay=wd, state_dtype="fp8", impl="reference")
        ),
    }
    print(
        f"AdamW lr {lr}, weight decay {wd}, {steps} steps, shapes {shapes}; against torchao AdamWFp8"
    )
    print("| run | largest weight difference (float32 ulps of the weight) | weights equal |")
    print("| --- | ---: | ---: |")
    for name, params in rows.items():
        worst, equal, total = 0.0, 0, 0
        for mine, ref in zip(params, theirs):
            a, b = mine.detach(), ref.detach()
            ulp = torch.finfo(torch.float32).eps * b.abs().clamp(
                min=torch.finfo(torch.float32).tiny
            )
            worst = max(worst, float(((a - b).abs() / ulp).max()))
            equal += int((a == b).sum())
            total += a.numel()
        print(f"| {name} | {worst:.1f} | {equal:,} / {total:,} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--size", type=int, default=1 << 19)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument(
        "--with-before", action="store_true", help="with --agreement: the kernel before too"
    )
    args = parser.parse_args(argv)
    if args.agreement:
        agreement(with_before=args.with_before)
    else:
        speed(args.tensors, args.size, args.repeat, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
