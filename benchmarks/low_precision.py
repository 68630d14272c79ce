"""Low-precision optimizer state: bytes per parameter and step time, one run.

AdamW on one workload (default: step_speed.py's large one, 64 tensors of 2^19 elements, 32M
parameters): torch.optim's fused AdamW (the bar), optimlab's fused kernel with float32, bf16,
int8 and fp8 (e4m3) state, bfloat16 weights with int8 state and stochastic rounding (``--with-reference``: the
int8 reference rule too), and torchao's AdamW8bit and AdamWFp8 run eagerly (its ``torch.compile`` needs a C++
toolchain; eager is what runs here; it and the reference rule take seconds per step, so they
take `--slow-repeat` of the rounds). It prints the bytes one step must move per parameter (the floor), the state bytes
per parameter measured from the state tensors, ms/step (median of interleaved steps: load drift
touches every row alike), the ratios to torch's fused AdamW (wall time, and CPU time of the
process, which suffers less on a loaded machine) and to torchao's AdamW8bit.

    .venv/bin/python benchmarks/low_precision.py [--tensors 64] [--size 524288] [--repeat 7] [--slow-repeat 3] [--with-reference] [--json PATH]

``--check-codes [STRIDE]`` instead checks the kernel's 8-bit coding (``lowprec_codec.encode8_many``:
16 codes at a time, flagged ones by the table) against the reference rule
(``quantize.quantize``: ``torch.searchsorted`` and the tie rule) on every STRIDE-th (default 7th)
float32 bit pattern in [-1, 1], NaN included, for both maps, and prints the differences and the
share of 16-value vectors the arithmetic path flagged; and the kernel's fp8 coding
(``lowprec_fp8.encode_fp8_divided``: fl(x / scale) cast to e4m3fn on the bits, and the kernels'
``encode_fp8_block``: x · fl(1/scale) on the bits, flagged lanes divided) against torch's
``(x / scale).to(torch.float8_e4m3fn)`` on ``--fp8-values`` (default 10⁸) random values of random
magnitudes (NaN and ±inf included) and scales, plus every float32 quotient within 8 ulps of each
e4m3 rounding midpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from optimlab.optim.adam import AdamW


def _torchao(name: str = "AdamW8bit") -> Callable | None:
    try:
        import torchao.optim.adam as torchao_adam
    except ImportError:
        return None
    torchao_adam.torch.compile = lambda fn, **_: fn  # eager: no compiler needed
    return getattr(torchao_adam, name)


def check_fp8_codes(count: int = 10**8, chunk: int = 1 << 22, seed: int = 0) -> int:
    """The kernel's fp8 codes of x / scale against torch's cast of the same quotient, on `count`
    random (x, scale) pairs and on the quotients next to every rounding midpoint of e4m3fn (and
    those quotients times three scales whose reciprocal rounds), both codings: the rule on the
    true quotient (``encode_fp8_divided``) and the kernels' block coding without division
    (``encode_fp8_block``); returns the number of differences."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_fp8

    @numba.njit
    def encode(values, scale, codes, blocked):
        for b in range(0, values.shape[0], 256):
            e = b + 256
            lowprec_fp8.encode_fp8_divided(values[b:e], scale, codes[b:e], 256)
            lowprec_fp8.encode_fp8_block(values[b:e], scale, blocked[b:e], 256)

    rng = np.random.default_rng(seed)
    checked = differ = 0
    while checked < count:
        # |x| log-uniform over 2^-150 .. 2^130 (subnormal codes, saturation, float32 subnormals),
        # both signs, then a few NaN/inf; one scale per chunk as in a block
        magnitude = np.exp2(rng.uniform(-150, 130, chunk)).astype(np.float32)
        values = np.where(rng.random(chunk) < 0.5, -magnitude, magnitude).astype(np.float32)
        values[rng.integers(0, chunk, 64)] = np.float32(np.nan)
        values[rng.integers(0, chunk, 64)] = np.float32(np.inf)
        scale = np.float32(np.exp2(rng.uniform(-40, 40)))
        codes, blocked = np.empty(chunk, np.uint8), np.empty(chunk, np.uint8)
        encode(values, scale, codes, blocked)
        quotient = torch.from_numpy(values) / torch.tensor(scale)
        expected = quotient.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        differ += int(np.count_nonzero(codes != expected))
        differ += int(np.count_nonzero(blocked != expected))
        checked += chunk
    # midpoints: halfway between neighbouring e4m3fn values (and past 448), ±8 float32 ulps
    grid = np.unique(np.abs(lowprec_fp8.values()[np.isfinite(lowprec_fp8.values())]))
    middles = np.append((grid[:-1] + grid[1:]) / 2, np.float32(464.0)).astype(np.float32)
    bits = middles.view(np.uint32).astype(np.int64)[:, None] + np.arange(-8, 9)[None, :]
    near = bits.reshape(-1).astype(np.uint32).view(np.float32)
    near = np.concatenate([near, -near, np.zeros(-2 * len(near) % 256, np.float32)])
    near_differ = near_checked = 0
    for scale in map(np.float32, (1.0, 0.7310585 / 448, 3.1415927e-3, 1e-12 / 448)):
        values = (near * scale).astype(np.float32)  # (scale 1: the quotients themselves)
        codes, blocked = np.empty(len(near), np.uint8), np.empty(len(near), np.uint8)
        encode(values, scale, codes, blocked)
        quotient = torch.from_numpy(values) / torch.tensor(scale)
        expected = quotient.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        near_differ += int(np.count_nonzero(codes != expected))
        near_differ += int(np.count_nonzero(blocked != expected))
        near_checked += len(values)
    print(
        f"fp8 (e4m3fn), the rule and the block coding: {checked:,} random values, {differ} "
        f"differences; {near_checked:,} values within 8 ulps of a rounding midpoint (four "
        f"scales), {near_differ} differences"
    )
    return differ + near_differ


def _state_bytes(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> float:
    total = 0
    for p in params:
        for value in optimizer.state[p].values():
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                continue
            parts = [value.codes, value.scale] if hasattr(value, "codes") else [value]
            total += sum(t.numel() * t.element_size() for t in parts)
    return total / sum(p.numel() for p in params)


def check_codes(stride: int = 7, chunk: int = 1 << 24) -> int:
    """Every `stride`-th float32 pattern in [-1, 1] (and NaN): the kernel's code against the
    reference's; returns the number of differences."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec
    from optimlab.optim.low_precision import quantize

    @numba.njit
    def encode(values, thresholds, bucket, linear, codes):
        flagged = 0  # (the vectors' arithmetic codes, overwritten by encode8_many below)
        for j in range(0, values.shape[0] - values.shape[0] % 16, 16):
            flagged += lowprec_codec.encode8_vector16(values, j, linear, codes)
        lowprec_codec.encode8_many(values, codes, thresholds, bucket, linear)
        return flagged

    wrong = 0
    for signed in (True, False):
        thresholds, bucket = lowprec_codec.code_tables(signed)
        linear = lowprec_codec.linear_code_tables(signed)
        checked = flagged = differ = 0
        for first in range(0, 1 << 32, chunk * stride):
            patterns = np.arange(first, min(first + chunk * stride, 1 << 32), stride, np.uint64)
            values = patterns.astype(np.uint32).view(np.float32)
            with np.errstate(invalid="ignore"):
                keep = np.isnan(values) | (np.abs(values) <= 1)
            values = values[keep]
            if not len(values):
                continue
            codes = np.empty(len(values), np.uint8)
            flagged += encode(values, thresholds, bucket, linear, codes)
            nan = np.isnan(values)
            # the reference on blocks led by 1.0 (their maximum: each value divided by 1, exact)
            finite = np.where(nan, np.float32(0), values)
            padded = np.concatenate([finite, np.zeros(-len(finite) % 255, np.float32)])
            blocks = np.concatenate(
                [np.ones((len(padded) // 255, 1), np.float32), padded.reshape(-1, 255)], axis=1
            )
            expected, _ = quantize.quantize(torch.from_numpy(blocks), signed)
            expected = expected.numpy()[:, 1:].reshape(-1)[: len(values)]
            expected = np.where(nan, 255, expected)  # where torch.searchsorted sorts NaN
            differ += int(np.count_nonzero(codes != expected))
            checked += len(values)
        print(
            f"{'signed' if signed else 'unsigned'} map: {checked:,} values, {differ} differences, "
            f"{flagged / (checked / 16):.2%} of 16-value vectors flagged"
        )
        wrong += differ
    return wrong


#: block maxima of `check_block_codes`: 1 (the division exact), and three whose reciprocal
#: rounds (so x · fl(1/max) differs from fl(x / max) in the last bits)
BLOCK_CHECK_MAXIMA = (1.0, 0.7310585, 3.1415927e-3, 123.456)


def check_block_codes(stride: int = 7, chunk: int = 255 * (1 << 16)) -> int:
    """The kernel's block coding (``lowprec_codec.encode8_block_exact``: x · fl(1/max) coded
    16 at a time, flagged vectors divided and looked up) against the reference's
    (``quantize.quantize`` on the same 256-value blocks: fl(x / max), ``torch.searchsorted``
    and the tie rule), for every `stride`-th float32 pattern s in [-1, 1] scaled to x =
    fl(s · M) (clipped to [-M, M]) in blocks led by M, for each M of `BLOCK_CHECK_MAXIMA`, both
    maps; returns the number of differences."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec
    from optimlab.optim.low_precision import quantize

    @numba.njit
    def encode(blocks, scale, thresholds, bucket, linear, signed, codes):
        for b in range(blocks.shape[0]):
            lowprec_codec.encode8_block_exact(
                blocks[b], scale, codes[b], thresholds, bucket, linear, signed
            )

    wrong = 0
    for signed in (True, False):
        thresholds, bucket = lowprec_codec.code_tables(signed)
        linear = lowprec_codec.linear_code_tables(signed)
        checked = differ = 0
        for first in range(0, 1 << 32, chunk * stride):
            patterns = np.arange(first, min(first + chunk * stride, 1 << 32), stride, np.uint64)
            values = patterns.astype(np.uint32).view(np.float32)
            with np.errstate(invalid="ignore"):
                values = values[np.abs(values) <= 1]  # (NaN: `check_codes`)
            if not len(values):
                continue
            padded = np.concatenate([values, np.zeros(-len(values) % 255, np.float32)])
            for peak in BLOCK_CHECK_MAXIMA:
                top = np.float32(peak)
                scaled = np.clip(padded * top, -top, top).reshape(-1, 255)
                blocks = np.concatenate(
                    [np.full((len(scaled), 1), top, np.float32), scaled], axis=1
                )
                codes = np.empty(blocks.shape, np.uint8)
                encode(blocks, top, thresholds, bucket, linear, signed, codes)
                expected, maxima = quantize.quantize(torch.from_numpy(blocks), signed)
                assert bool((maxima == top).all())
                differ += int(np.count_nonzero(codes != expected.numpy()))
                checked += blocks.size
        print(
            f"{'signed' if signed else 'unsigned'} map, blocks scaled by "
            f"{', '.join(f'{m:g}' for m in BLOCK_CHECK_MAXIMA)}: {checked:,} values, "
            f"{differ} differences"
        )
        wrong += differ
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--size", type=int, default=1 << 19)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--slow-repeat", type=int, default=3, help="timed steps of the reference and torchao rows"
    )
    parser.add_argument("--with-reference", action="store_true", help="add the reference rule")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--check-codes",
        type=int,
        nargs="?",
        const=7,
        default=None,
        metavar="STRIDE",
        help="check the 8-bit coding on every STRIDE-th float32 pattern instead (and fp8's)",
    )
    parser.add_argument(
        "--fp8-values", type=int, default=10**8, help="random values of the fp8 code check"
    )
    parser.add_argument(
        "--only-fp8", action="store_true", help="with --check-codes: the fp8 check alone"
    )
    args = parser.parse_args(argv)
    if args.check_codes is not None:
        wrong = check_fp8_codes(args.fp8_values)
        if not args.only_fp8:
            wrong += check_codes(args.check_codes) + check_block_codes(args.check_codes)
        return 1 if wrong else 0
    # (factory, weights' dtype, bytes per parameter one step moves at least: weights, gradient
    # and state read, weights and state written; 8-bit state adds two float32 maxima per 256)
    maxima = 2 * 2 * 4 / 256
    factories: dict[str, tuple[Callable, torch.dtype, float]] = {
        "torch fused AdamW (fp32)": (
            lambda ps: torch.optim.AdamW(ps, fused=True),
            torch.float32,
            28,
        ),
        "optimlab fused, float32 state": (lambda ps: AdamW(ps, impl="fused"), torch.float32, 28),
        "optimlab fused, bf16 state": (
            lambda ps: AdamW(ps, state_dtype="bf16", impl="fused"),
            torch.float32,
            20,
        ),
        "optimlab fused, int8 state": (
            lambda ps: AdamW(ps, state_dtype="int8", impl="fused"),
            torch.float32,
            16 + maxima,
        ),
        "optimlab fp8 state": (
            lambda ps: AdamW(ps, state_dtype="fp8", impl="fused"),
            torch.float32,
            16 + maxima,
        ),
        "optimlab fused, bf16 weights + int8 state + SR": (
            lambda ps: AdamW(ps, state_dtype="int8", stochastic_rounding=True, impl="fused"),
            torch.bfloat16,
            10 + maxima,
        ),
    }
    if args.with_reference:  # the int8 reference rule: seconds per step on the large workload
        factories["optimlab reference, int8 state"] = (
            lambda ps: AdamW(ps, state_dtype="int8", impl="reference"),
            torch.float32,
            16 + maxima,
        )
    torchao, torchao_fp8 = _torchao("AdamW8bit"), _torchao("AdamWFp8")
    if torchao is not None:
        factories["torchao AdamW8bit (eager)"] = (
            lambda ps: torchao(ps),
            torch.float32,
            16 + maxima,
        )
        factories["torchao AdamWFp8"] = (lambda ps: torchao_fp8(ps), torch.float32, 16 + maxima)
    runs = {}
    for name, (factory, dtype, floor) in factories.items():
        params = [
            torch.nn.Parameter(torch.randn(args.size, dtype=dtype)) for _ in range(args.tensors)
        ]
        for p in params:
            p.grad = torch.randn(args.size, dtype=dtype)
        optimizer = factory(params)
        optimizer.step()  # state created, kernels compiled
        runs[name] = (optimizer, params, floor, [], [])
    slow = ("optimlab reference, int8 state", "torchao AdamW8bit (eager)", "torchao AdamWFp8")
    for round_ in range(args.repeat):  # interleaved: load drift touches every row alike
        for name, (optimizer, _, _, times, cpu) in runs.items():
            if name in slow and round_ >= args.slow_repeat:
                continue  # seconds per step: a few steps suffice
            start, start_cpu = time.perf_counter(), time.process_time()
            optimizer.step()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    bar = statistics.median(runs["torch fused AdamW (fp32)"][3])
    bar_cpu = statistics.median(runs["torch fused AdamW (fp32)"][4])
    peer = statistics.median(runs["torchao AdamW8bit (eager)"][3]) if torchao else None
    rows = []
    n = args.tensors * args.size
    for name, (optimizer, params, floor, times, cpu) in runs.items():
        seconds = statistics.median(times)
        rows.append(
            {
                "name": name,
                "bytes_per_param": floor,
                "state_bytes": _state_bytes(optimizer, params),
                "ms": seconds * 1e3,
                "gbs": floor * n / seconds / 1e9,
                "vs_torch_fused": bar / seconds,
                "vs_torch_fused_cpu": bar_cpu / statistics.median(cpu),
                "vs_torchao": peer / seconds if peer else None,
            }
        )
    load = os.getloadavg()
    print(
        f"AdamW, {args.tensors} x {args.size} = {n:,} parameters, {torch.get_num_threads()} "
        f"threads, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        "| implementation | B/param moved | state B/param | ms/step | GB/s | "
        "× torch fused (speed) | × torch fused (CPU time) | × torchao (speed) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        versus = f"{r['vs_torchao']:.1f}" if r["vs_torchao"] else "—"
        print(
            f"| {r['name']} | {r['bytes_per_param']:.2f} | {r['state_bytes']:.3f} | "
            f"{r['ms']:.2f} | {r['gbs']:.1f} | {r['vs_torch_fused']:.2f} | "
            f"{r['vs_torch_fused_cpu']:.2f} | {versus} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": load, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
