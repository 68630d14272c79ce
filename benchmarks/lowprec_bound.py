"""The bound of an 8-bit-state Adam step on this machine: what the bytes and the arithmetic cost.

Issue 16 asks an 8-bit-state AdamW ≥ 1.5× faster than torch's fused float32 AdamW. This
benchmark measures, in one run beside torch's fused AdamW and optimlab's own int8 and fp8 steps,
numba kernels that move **exactly the bytes of the 8-bit layout** (read p and g as float32, the
1-byte codes of m and v and one float32 scale per 256-element block of each; write p, the codes
and the scales: 16.06 B per parameter) with a **trivial coding** (the e4m3 bit layout: decode
``bits((c & 0x7F) << 20 | sign) · 2¹²⁰ · scale``, encode the float32 bits of ``q · 2⁻¹²⁰``
shifted right by 20, truncated, no rounding or flags) and the block maximum of each moment, in
the blocked layout of the fused kernel (decode a block into float32 scratch, update, take the
block maxima, code). The rows differ in the arithmetic only:

* ``exact``: torch's AdamW update as the fused kernel computes it (two ``lerp``, one √, the
  division by √(1 − β₂ᵗ) and the division of the step) and the coding's division x / scale of
  torchao's AdamWFp8 (per element: 1 √ and 4 divisions);
* ``recip-code``: the same update, the coding as a multiply by fl(1 / scale) (1 √, 2 ÷);
* ``minimal``: what float32 arithmetic cannot avoid: one √ and one division per element, the
  division by √(1 − β₂ᵗ) and the coding's divisions as multiplies by precomputed reciprocals;
* ``no-div``: no √ and no division at all (the denominator's √ and ÷ replaced by multiplies: the
  cost of everything else);
* ``copy``: the same bytes with no arithmetic (p ← g, the codes and scales of m and v swapped).

Each row is timed at 1 and 2 threads (``--threads``), interleaved with the others, median of
``--repeat`` rounds; printed: ms per step, ns per parameter and thread, and the speed against
torch's fused AdamW in the same run (wall time and CPU time). The load average is printed: on a
shared machine the CPU-time ratios are the measure.

    nice -n 19 .venv/bin/python benchmarks/lowprec_bound.py [--tensors 64] [--size 524288] [--repeat 9] [--threads 2 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
import torch
from numba import prange

from optimlab.optim.adam import AdamW
from optimlab.optim.kernels.common import lerp
from optimlab.optim.kernels.layout import CHUNK
from optimlab.optim.kernels.lowprec_codec import bits_float, float_bits, largest_magnitude_bits

BLOCK = 256
#: e4m3's largest value; the scale of a block is its maximum over it
LARGEST = np.float32(448.0)
_UP = np.float32(2.0**120)
_DOWN = np.float32(2.0**-120)
_MIN_ABSMAX = np.float32(1e-12)
#: the arithmetic variants (see the module docstring)
EXACT, RECIP_CODE, MINIMAL, NO_DIV, COPY = 0, 1, 2, 3, 4
VARIANTS = {"exact": EXACT, "recip-code": RECIP_CODE, "minimal": MINIMAL, "no-div": NO_DIV}


@numba.njit(inline="always")
def _decode(code, scale):
    """The e4m3 value of `code` times `scale` (the layout's decoding; NaN codes not handled)."""
    c = np.uint32(code)
    bits = ((c & np.uint32(0x7F)) << np.uint32(20)) | ((c & np.uint32(0x80)) << np.uint32(24))
    return bits_float(np.uint32(bits)) * _UP * scale


@numba.njit(inline="always")
def _encode(q):
    """A trivial e4m3-shaped code of q (|q| ≤ 448): q's bits at 2⁻¹²⁰, shifted, truncated."""
    u = float_bits(q * _DOWN)
    return np.uint8(
        ((u >> np.uint32(20)) & np.uint32(0x7F)) | ((u >> np.uint32(24)) & np.uint32(0x80))
    )


@numba.njit(inline="always")
def _scale(values):
    amax = bits_float(np.uint32(largest_magnitude_bits(values)))
    return (_MIN_ABSMAX if amax < _MIN_ABSMAX else amax) / LARGEST


@numba.njit(inline="always")
def _block(p, g, cm, cv, sm, sv, i, k, variant, m, v):
    """One block of 256 (p, g, cm, cv: the block's slices; block i): decode, update, maxima,
    code."""
    w1, one, w2, eps, step, root_bc2, decay = k[0], k[1], k[2], k[3], k[4], k[5], k[6]
    inv_root_bc2 = k[7]
    scale_m, scale_v = sm[i], sv[i]
    for j in range(BLOCK):
        m[j] = _decode(cm[j], scale_m)
        v[j] = _decode(cv[j], scale_v)
    if variant <= RECIP_CODE:  # (EXACT or RECIP_CODE)
        for j in range(BLOCK):
            gj = g[j]
            mj = lerp(m[j], gj, w1, one)
            vj = lerp(v[j], gj * gj, w2, one)
            m[j] = mj
            v[j] = vj
            p[j] = p[j] * decay + step * mj / (np.sqrt(vj) / root_bc2 + eps)
    elif variant == MINIMAL:
        for j in range(BLOCK):
            gj = g[j]
            mj = lerp(m[j], gj, w1, one)
            vj = lerp(v[j], gj * gj, w2, one)
            m[j] = mj
            v[j] = vj
            p[j] = p[j] * decay + step * mj / (np.sqrt(vj) * inv_root_bc2 + eps)
    else:  # NO_DIV: the same data flow, √ and ÷ replaced by multiplies
        for j in range(BLOCK):
            gj = g[j]
            mj = lerp(m[j], gj, w1, one)
            vj = lerp(v[j], gj * gj, w2, one)
            m[j] = mj
            v[j] = vj
            p[j] = p[j] * decay + step * mj * (vj * inv_root_bc2 + eps)
    new_m, new_v = _scale(m), _scale(v)
    if variant == EXACT:
        for j in range(BLOCK):
            cm[j] = _encode(m[j] / new_m)
            cv[j] = _encode(v[j] / new_v)
    else:
        inv_m, inv_v = np.float32(1.0) / new_m, np.float32(1.0) / new_v
        for j in range(BLOCK):
            cm[j] = _encode(m[j] * inv_m)
            cv[j] = _encode(v[j] * inv_v)
    sm[i] = new_m
    sv[i] = new_v


@numba.njit(parallel=True, fastmath=False, nogil=True)
def step_kernel(p, g, cm, cv, sm, sv, k, variant):
    """One 8-bit-layout step over flat arrays, chunks of `CHUNK` elements over the threads."""
    chunks = p.shape[0] // CHUNK
    for c in prange(chunks):
        m = np.empty(BLOCK, np.float32)
        v = np.empty(BLOCK, np.float32)
        for b in range(c * CHUNK, (c + 1) * CHUNK, BLOCK):
            e = b + BLOCK
            _block(p[b:e], g[b:e], cm[b:e], cv[b:e], sm, sv, b // BLOCK, k, variant, m, v)


@numba.njit(parallel=True, fastmath=False, nogil=True)
def copy_kernel(p, g, cm, cv, sm, sv):
    """The same bytes, no arithmetic: p ← g, the codes and scales of m and v swapped."""
    chunks = p.shape[0] // CHUNK
    for c in prange(chunks):
        lo, hi = c * CHUNK, (c + 1) * CHUNK
        # (slices indexed from 0: numba's negative-index check on `lo + j` blocks vectorizing)
        pc, gc, mc, vc = p[lo:hi], g[lo:hi], cm[lo:hi], cv[lo:hi]
        for j in range(CHUNK):
            pc[j] = gc[j]
            a = mc[j]
            mc[j] = vc[j]
            vc[j] = a
        ms, vs = sm[lo // BLOCK : hi // BLOCK], sv[lo // BLOCK : hi // BLOCK]
        for i in range(CHUNK // BLOCK):
            s = ms[i]
            ms[i] = vs[i]
            vs[i] = s


def _coefficients(step: int = 10) -> np.ndarray:
    """AdamW's defaults at `step` (lr 1e-3, β 0.9/0.999, ε 1e-8, weight decay 1e-2)."""
    lr, beta1, beta2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 1e-2
    root_bc2 = (1 - beta2**step) ** 0.5
    step_size = -lr / (1 - beta1**step)
    values = [1 - beta1, 1.0, 1 - beta2, eps, step_size, root_bc2, 1 - lr * wd, 1 / root_bc2]
    return np.array(values, dtype=np.float32)


class Layout:
    """Flat arrays of the 8-bit layout for n parameters (codes of a random state)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.p = rng.standard_normal(n, dtype=np.float32)
        self.g = rng.standard_normal(n, dtype=np.float32)
        self.cm = rng.integers(0, 0x7F, n, dtype=np.uint8) | (
            rng.integers(0, 2, n, dtype=np.uint8) << 7
        )
        self.cv = rng.integers(0, 0x7F, n, dtype=np.uint8)
        self.sm = np.full(n // BLOCK, 1e-3, np.float32)
        self.sv = np.full(n // BLOCK, 1e-6, np.float32)

    def arguments(self) -> tuple[np.ndarray, ...]:
        return self.p, self.g, self.cm, self.cv, self.sm, self.sv


def _rows(n: int, tensors: int, size: int) -> dict[str, Callable[[], Callable[[], None]]]:
    """name → a factory of a zero-argument step (state created, compiled)."""
    k = _coefficients()

    def numba_row(variant: int | None) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            layout = Layout(n)
            if variant is None:
                return lambda: copy_kernel(*layout.arguments())
            return lambda: step_kernel(*layout.arguments(), k, variant)

        return make

    def optimizer_row(factory: Callable) -> Callable[[], Callable[[], None]]:
        def make() -> Callable[[], None]:
            params = [torch.nn.Parameter(torch.randn(size)) for _ in range(tensors)]
            for p in params:
                p.grad = torch.randn(size)
            optimizer = factory(params)
            return optimizer.step

        return make

    rows: dict[str, Callable[[], Callable[[], None]]] = {
        "torch fused AdamW (fp32)": optimizer_row(lambda ps: torch.optim.AdamW(ps, fused=True)),
        "optimlab fused, int8 state": optimizer_row(
            lambda ps: AdamW(ps, state_dtype="int8", impl="fused")
        ),
        "optimlab fused, fp8 state": optimizer_row(
            lambda ps: AdamW(ps, state_dtype="fp8", impl="fused")
        ),
    }
    for name, variant in VARIANTS.items():
        rows[f"bound: {name}"] = numba_row(variant)
    rows["bound: copy"] = numba_row(None)
    return rows


def measure(threads: int, tensors: int, size: int, repeat: int) -> list[dict[str, float | str]]:
    """Every row at `threads` threads, interleaved; returns the table's rows."""
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    n = tensors * size
    steps = {name: make() for name, make in _rows(n, tensors, size).items()}
    for step in steps.values():
        step()  # compiled, state created
        numba.set_num_threads(threads)  # (optimlab's dispatcher follows torch's count)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            numba.set_num_threads(threads)
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    bar = statistics.median(wall["torch fused AdamW (fp32)"])
    bar_cpu = statistics.median(cpu["torch fused AdamW (fp32)"])
    table = []
    for name in steps:
        seconds, seconds_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        table.append(
            {
                "threads": threads,
                "name": name,
                "ms": seconds * 1e3,
                "ns_per_param_thread": seconds * threads / n * 1e9,
                "cpu_ns_per_param": seconds_cpu / n * 1e9,
                "vs_torch_fused": bar / seconds,
                "vs_torch_fused_cpu": bar_cpu / seconds_cpu,
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--size", type=int, default=1 << 19)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if (args.tensors * args.size) % CHUNK:
        parser.error(f"--tensors × --size must be a multiple of {CHUNK} (one chunk)")
    load_before = os.getloadavg()
    tables = [measure(t, args.tensors, args.size, args.repeat) for t in args.threads]
    load = os.getloadavg()
    n = args.tensors * args.size
    print(
        f"{args.tensors} x {args.size} = {n:,} parameters, 16.06 B/param for the 8-bit rows "
        f"(28 for torch's); load average before {load_before[0]:.2f}, after {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}"
    )
    print(
        "| threads | implementation | ms/step | ns/param/thread | CPU ns/param | "
        "× torch fused (speed) | × torch fused (CPU time) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for table in tables:
        for r in table:
            print(
                f"| {r['threads']} | {r['name']} | {r['ms']:.2f} | "
                f"{r['ns_per_param_thread']:.3f} | {r['cpu_ns_per_param']:.3f} | "
                f"{r['vs_torch_fused']:.2f} | {r['vs_torch_fused_cpu']:.2f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": [load_before, load], "rows": [r for t in tables for r in t]}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
