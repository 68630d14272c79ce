r"""Element-wise codecs of the low-precision kernels: bfloat16, 8-bit block codes, random bits.

Each piece reproduces, bit for bit, what the reference path (``optimlab.optim.low_precision``)
does with torch operations, so that a fused step differs from the reference by nothing but the
order of independent operations (and usually not at all):

* **bfloat16** is the upper half of a float32. Decoding shifts the 16 bits up (exact);
  encoding rounds to nearest, ties to even, as torch's ``.to(torch.bfloat16)`` does
  (c10's ``round_to_nearest_even``: add ``0x7FFF + (bit 16)`` and truncate; NaN becomes 0x7FC0).
* **Stochastic rounding** to bfloat16 adds 16 uniform random bits to the float32 pattern and
  truncates (``low_precision.rounding``): the carry reaches the upper half with probability
  (low half) / 2¹⁶, the distance to the lower neighbour in ulps, so the rounding is unbiased.
  The bits come from **splitmix64** used as a counter-based generator: element i of a tensor
  draws ``mix(key + (i + 1)·γ)`` (γ = 0x9E3779B97F4A7C15), its key a hash of (seed, the tensor's
  position in the optimizer, its update count). Each element's bits depend on those four numbers
  only, never on which thread computes it or in which chunk: runs repeat bit for bit for every
  thread count.
* **8-bit codes** (torchao's AdamW8bit scheme, ``low_precision.quantize``): x / a_b is
  coded as the index of the nearest entry of a sorted 256-entry map, ties to the upper one. The
  reference finds the lower neighbour with a binary search (``torch.searchsorted``); here a
  *bucket table* indexed by the upper 16 bits of the float32 pattern gives the lower neighbour
  of the bucket's smallest value, and at most `BUCKET_STEPS` comparisons with the next entries
  correct it. Then the same tie rule: ``code = c + 1`` iff ``s − map[c] ≥ (map[c+1] − map[c])·½``
  in float32. No branch depends on the data, so the compiler vectorizes it (AVX-512 gathers).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: comparisons after the bucket lookup that always suffice (checked when the table is built)
BUCKET_STEPS = 2
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@intrinsic
def float_bits(typingctx, x):
    """The IEEE bit pattern of a float32 as a uint32 (an LLVM ``bitcast``, no memory trip)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def bits_float(typingctx, u):
    """The float32 whose IEEE bit pattern is the uint32 `u`."""
    if u != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(u), codegen


@numba.njit(inline="always")
def bf16_to_float(h):
    """bfloat16 bits (uint16) → float32, exactly."""
    return bits_float(np.uint32(np.uint32(h) << np.uint32(16)))  # (numba widens shifts)


@numba.njit(inline="always")
def float_to_bf16(x):
    """float32 → bfloat16 bits, round to nearest even; NaN → 0x7FC0 (as torch converts)."""
    if x != x:
        return np.uint16(0x7FC0)
    u = float_bits(x)
    bias = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return np.uint16((u + bias) >> np.uint32(16))


@numba.njit(inline="always")
def splitmix64(z):
    """splitmix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mix."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def random16(key, index):
    """16 uniform random bits for element `index` of the tensor whose stream key is `key`."""
    return np.uint32(splitmix64(key + (np.uint64(index) + np.uint64(1)) * _GOLDEN) >> np.uint64(48))


@numba.njit(inline="always")
def float_to_bf16_stochastic(x, noise):
    """float32 → bfloat16 bits, rounded up with probability (distance to the lower neighbour) /
    ulp, given 16 uniform random bits; ±inf and NaN converted as round-to-nearest does."""
    if not np.isfinite(x):
        return float_to_bf16(x)
    return np.uint16(np.uint32(float_bits(x) + noise) >> np.uint32(16))


@numba.njit(inline="always")
def _at_most_255(c):
    return c if c < np.uint32(255) else np.uint32(255)


@numba.njit(inline="always")
def encode8(s, table, bucket):
    """The 8-bit code of s = x / a_b: the nearest entry of the sorted `table`, the upper on a tie.

    `bucket[bits(s) >> 16]` is the index of the largest entry ≤ the smallest float32 of s's
    bucket; `BUCKET_STEPS` comparisons move it to the largest entry ≤ s. NaN codes as 255 (where
    ``torch.searchsorted`` sorts it). Unsigned indices and selects, no branches: the compiler
    vectorizes the loop that calls it.
    """
    c = np.uint32(bucket[float_bits(s) >> np.uint32(16)])
    for _ in range(BUCKET_STEPS):
        c = _at_most_255(np.uint32(c + np.uint32(table[_at_most_255(c + np.uint32(1))] <= s)))
    up = _at_most_255(c + np.uint32(1))
    low = table[c]
    # on the last entry up == c: the test holds and the code stays 255
    c = _at_most_255(np.uint32(c + np.uint32(s - low >= (table[up] - low) * np.float32(0.5))))
    return np.uint8(np.uint32(255) if s != s else c)


@functools.cache
def bucket_table(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(map, bucket): the float32 dynamic map and its uint8 bucket table over 2¹⁶ buckets.

    Bucket k holds the float32 numbers whose upper 16 bits are k; its entry is the index of the
    largest map value ≤ the bucket's smallest number (0 below the map). Built from the reference's
    map, so the two can never disagree; the assertion proves `BUCKET_STEPS` comparisons suffice.
    """
    from optimlab.optim.low_precision.quantize import dynamic_map

    table = dynamic_map(signed).numpy()
    keys = np.arange(1 << 16, dtype=np.uint32)
    low_bits = np.where(keys & 0x8000, 0xFFFF, 0).astype(np.uint32)  # the smallest number: the
    smallest = ((keys << 16) | low_bits).view(np.float32)  # largest magnitude when negative
    largest = ((keys << 16) | (0xFFFF - low_bits)).view(np.float32)
    finite = np.isfinite(smallest) & np.isfinite(largest)
    with np.errstate(invalid="ignore"):
        lower = np.searchsorted(table, smallest, side="right") - 1
        last = np.searchsorted(table, largest, side="right") - 1
    lower = np.clip(np.where(finite, lower, 0), 0, 255)
    steps = np.where(finite, np.clip(last, 0, 255) - lower, 0)
    assert steps.max() <= BUCKET_STEPS, steps.max()
    return table, lower.astype(np.uint8)


def codec_tables() -> tuple[np.ndarray, np.ndarray]:
    """(maps float32[2, 256], buckets uint8[2, 65536]): row 0 the signed map, row 1 the unsigned."""
    signed, unsigned = bucket_table(True), bucket_table(False)
    return np.stack([signed[0], unsigned[0]]), np.stack([signed[1], unsigned[1]])
