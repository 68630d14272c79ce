r"""The float8_e4m3fn code of the fused kernels: torch's cast, element-wise on the float32 bits.

``low_precision.fp8`` (torchao's AdamWFp8) stores x as ``fl8(x / s_b)`` with one float32 scale
``s_b = max(amax, 1e-12) / 448`` per block of 256. The kernels compute the same bits:

* **the quotient** x / s_b is a true float32 division (no reciprocal: AVX-512 divides 16 lanes in
  a few cycles, so the exact quotient costs less than flagging near-midpoint lanes would);
* **the cast** float32 → e4m3fn, round to nearest even, is c10's rule written branch-free so that
  LLVM vectorizes it: with a = |x|'s bits,
  - NaN → 0x7F (e4m3fn's NaN); whatever rounds past 448, ±inf included, → 0x7E (±448): torch's
    CPU cast saturates (measured on torch 2.13; ``tests/test_fp8_state.py`` checks it);
  - a < bits(2⁻⁶) (below the smallest normal): the float32 sum ``|x| + 2¹⁴`` has an ulp of
    2¹⁴⁻²³ = 2⁻⁹, the subnormal step, so the FPU's own round-to-nearest-even rounds |x| onto the
    subnormal grid; the code is the sum's bits minus 2¹⁴'s;
  - else: re-bias the exponent (127 → 7), add ``0x7FFFF + (bit 20)`` (half an e4m3 ulp minus one,
    plus the round-to-even bit), keep bits 20 and up, at most 0x7E;
  - then the sign bit.
* **decoding** is a 256-entry table of the codes' float32 values (``values()``), looked up 64 at a
  time by ``lowprec_codec.decode8_block``, times the scale: torch's ``codes.float() * scale``.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch

from optimlab.optim.kernels.lowprec_codec import bits_float, float_bits

#: |x| bits above which x is NaN (those of +inf); the largest finite code, 448
_INFINITY = np.int64(0x7F800000)
_LARGEST = np.int64(0x7E)
#: |x| bits below which the code is subnormal (2⁻⁶)
_NORMAL_FROM = np.int64(121 << 23)
#: the subnormal rounding constant (2¹⁴ as float32) and its bits
_MAGIC_BITS = np.int64(141 << 23)
_MAGIC = np.float32(2.0**14)
#: exponent re-bias (127 → 7) in place, and half an e4m3 ulp minus one in float32 bits
_REBIAS = np.int64(120 << 23)
_HALF = np.int64(0x7FFFF)


@numba.njit(inline="always")
def encode_fp8(x):
    """float32 → float8_e4m3fn bits (uint8), as ``torch.Tensor.to(torch.float8_e4m3fn)``."""
    u = np.int64(float_bits(x))
    sign = u & np.int64(0x80000000)
    a = u ^ sign
    subnormal = np.int64(float_bits(bits_float(np.uint32(a)) + _MAGIC)) - _MAGIC_BITS
    normal = (a - _REBIAS + _HALF + ((a >> np.int64(20)) & np.int64(1))) >> np.int64(20)
    code = subnormal if a < _NORMAL_FROM else min(normal, _LARGEST)
    code = np.int64(0x7F) if a > _INFINITY else code
    return np.uint8((code | (sign >> np.int64(24))) & np.int64(0xFF))


@numba.njit(inline="always")
def encode_fp8_divided(values, scale, codes, n):
    """``codes[j] = encode_fp8(values[j] / scale)`` for j < n (one block)."""
    for j in range(n):
        codes[j] = encode_fp8(values[j] / scale)


@functools.cache
def _values() -> np.ndarray:
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    return every.to(torch.float32).numpy()


def values() -> np.ndarray:
    """float32[256]: the value of each e4m3fn code (0x7F and 0xFF are NaN), torch's decoding."""
    return _values().copy()
