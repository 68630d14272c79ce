r"""The float8_e4m3fn code of the fused kernels: torch's cast, element-wise on the float32 bits.

``low_precision.fp8`` (torchao's AdamWFp8) stores x as ``fl8(x / s_b)`` with one float32 scale
``s_b = max(amax, 1e-12) / 448`` per block of 256. The kernels compute the same bits:

* **the quotient** x / s_b is a true float32 division (`encode_fp8_divided`: the rule; the
  kernels reach the same codes without it, see below);
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
* **decoding** (`decode_fp8`) is arithmetic on the code's bits, exactly torch's
  ``codes.float()``: a normal code (exponent field E ≥ 1) is the float32 whose bits are the
  code's 7 magnitude bits placed at bit 20 plus 120 in the exponent (re-bias 7 → 127, exact);
  a subnormal one (E = 0, mantissa k) is ``float(k) · 2⁻⁹`` (exact); 0x7F is NaN; then the
  sign bit, then times the scale (torch's product). No table and no subnormal float32 on the
  way, so a process that flushes subnormals (``torch.set_flush_denormal``) decodes the same.

**The block coding without division** (`encode_fp8_block`, the kernels' path): the quotient
x / s_b is replaced by ``y = x · r`` with ``r = fl(1 / s_b) · 2⁻¹²⁰`` (exact power-of-two
scaling: r is normal while s_b ≤ 64). At 2⁻¹²⁰ the float32 exponent of y *is* e4m3's biased
exponent, and e4m3's subnormals (|q| < 2⁻⁶) land on float32's subnormals with e4m3's step at
bit 20, so the code is y's bits rounded at bit 20, ties to even (add ``0x7FFFF + bit 20``,
shift by 20), at most 0x7E, and the sign: 5 integer operations and a multiply per element.
**Exactness**: torch's quotient fl(x / s_b) is within 2⁻²⁴ (relative) of x / s_b, and
y · 2¹²⁰ within 2·2⁻²⁴ (the reciprocal's rounding and the product's), so the two differ by
less than 3 ulps of y (1.5 where y is subnormal: its rounding is absolute, 2⁻¹⁵⁰, the other
errors far below); they round to different codes only if a rounding midpoint (bits 0–19 of y
equal to 0x80000) lies within that distance, or on it (a tie). A lane
whose bits 0–19 are within 8 of 0x80000 is *flagged* and coded again from the true quotient
(`encode_fp8`), as is one whose y is 0 though x is not (y subnormal, flushed to zero by a
process that flushes) and a NaN. A block whose scale is above 64 (r would be subnormal) or NaN is coded
whole from quotients. Checked against torch's cast on every 4,099th float32 pattern and every
value near a midpoint, scaled by several block scales (``tests/test_fp8_state.py``,
``benchmarks/low_precision.py --check-codes``).
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


#: the re-bias of a normal code's exponent (7 → 127) in place, and e4m3's subnormal step
_NORMAL_BIAS = np.uint32(120 << 23)
_SUBNORMAL_STEP = np.float32(2.0**-9)
_NAN32 = np.uint32(0x7FC00000)
#: ``encode_fp8_block``: y = x · fl(1/s) · 2⁻¹²⁰ puts e4m3's code at bit 20 of y's bits
_DOWN = np.float32(2.0**-120)
#: the largest block scale whose r = fl(1/s) · 2⁻¹²⁰ is a normal float32 (1/s ≥ 2⁻⁶)
_LARGEST_SCALE = np.float32(64.0)
#: a lane is flagged when bits 0–19 of y lie within this many units of the midpoint 0x80000
_NEAR = np.uint32(8)
_U_HALF = np.uint32(0x7FFFF)
_U_MIDPOINT = np.uint32(0x80000)
_U_LOW = np.uint32(0xFFFFF)
_U_LARGEST = np.uint32(0x7E)
_U_SIGN = np.uint32(0x80000000)
_U_INFINITY = np.uint32(0x7F800000)


@numba.njit(inline="always")
def decode_fp8(code):
    """float8_e4m3fn bits (uint8) → float32, as ``torch.Tensor.float()``: exact, NaN for 0x7F/0xFF,
    with no subnormal float32 on the way."""
    c = np.uint32(code)
    magnitude = np.uint32(c & np.uint32(0x7F))
    normal = bits_float(np.uint32(np.uint32(magnitude << np.uint32(20)) + _NORMAL_BIAS))
    subnormal = np.float32(np.int32(magnitude)) * _SUBNORMAL_STEP  # (magnitude < 8 there)
    value = float_bits(subnormal if magnitude < np.uint32(8) else normal)
    value = _NAN32 if magnitude == np.uint32(0x7F) else value
    sign = np.uint32(np.uint32(c & np.uint32(0x80)) << np.uint32(24))
    return bits_float(np.uint32(value | sign))


@numba.njit(inline="always")
def decode_fp8_block(codes, scale, out, n):
    """``out[j] = decode_fp8(codes[j]) · scale`` for j < n: torch's ``codes.float() * scale``."""
    for j in range(n):
        out[j] = decode_fp8(codes[j]) * scale


@numba.njit(inline="always")
def _code_of_scaled(y):
    """(code, flagged) of y = x · fl(1/s) · 2⁻¹²⁰: y's bits rounded at bit 20 (ties to even),
    at most 0x7E, with the sign; flagged when bits 0–19 lie within `_NEAR` of the midpoint, or
    y is NaN (a block holds NaN only when its scale is NaN, which is divided whole; flagged
    anyway, so that the function is the rule for every input).
    (Every step is wrapped in uint32: numba widens shifts and mixed operations to 64 bits,
    which would halve the lanes per vector.)"""
    u = float_bits(y)
    sign = np.uint32(u & _U_SIGN)
    a = np.uint32(u ^ sign)
    odd = np.uint32(np.uint32(a >> np.uint32(20)) & np.uint32(1))
    code = np.uint32(np.uint32(a + _U_HALF + odd) >> np.uint32(20))
    code = code if code < _U_LARGEST else _U_LARGEST
    distance = np.uint32(np.uint32(a & _U_LOW) - np.uint32(_U_MIDPOINT - _NEAR))
    near = (distance <= np.uint32(2 * _NEAR)) | (a > _U_INFINITY)  # (NaN: the rule's 0x7F)
    return np.uint8(np.uint32(code | np.uint32(sign >> np.uint32(24)))), near


@numba.njit(inline="always")
def encode_fp8_block(values, scale, codes, n):
    """``codes[j] = encode_fp8(fl(values[j] / scale))`` for j < n, without the division: the
    codes of y = x · fl(1/scale) · 2⁻¹²⁰ on the bits (see the module docstring), the flagged
    lanes (near a rounding midpoint, or y flushed to 0) coded again from the quotient; a scale
    above 64 or NaN codes every lane from the quotient."""
    if not scale <= _LARGEST_SCALE:
        encode_fp8_divided(values, scale, codes, n)
        return
    r = (np.float32(1.0) / scale) * _DOWN
    flagged = False
    for j in range(n):
        x = values[j]
        y = x * r
        code, near = _code_of_scaled(y)
        codes[j] = code
        flagged |= near | ((y == np.float32(0.0)) & (x != np.float32(0.0)))
    if flagged:  # (a few blocks in a thousand)
        for j in range(n):
            x = values[j]
            y = x * r
            code, near = _code_of_scaled(y)
            if near or (y == np.float32(0.0) and x != np.float32(0.0)):
                codes[j] = encode_fp8(x / scale)


@functools.cache
def _values() -> np.ndarray:
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
    return every.to(torch.float32).numpy()


def values() -> np.ndarray:
    """float32[256]: the value of each e4m3fn code (0x7F and 0xFF are NaN), torch's decoding."""
    return _values().copy()
