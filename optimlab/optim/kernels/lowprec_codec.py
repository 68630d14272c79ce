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
  coded as the index of the nearest entry of a sorted 256-entry map, ties to the upper one
  (``code = c + 1`` iff ``s − map[c] ≥ (map[c+1] − map[c])·½`` in float32, c the entry below).
  The reference finds c with a binary search (``torch.searchsorted``). Here the code is a
  non-decreasing step function of s, so it is tabled once: the 255 *thresholds* where it steps
  up (found by bisection over the reference's own arithmetic) and a *bucket table* indexed by the
  upper 16 bits of s's float32 pattern giving the code at the bucket's start; one comparison with
  the next threshold finishes it. Two table loads and a compare per element, no branch.
* **8-bit decoding** of a whole block, ``map[code] · a_b`` for 256 codes (`decode8_block`):
  LLVM does not vectorize the 256-entry lookup on its own (it declines gathers on AMD Zen 4,
  where they are microcoded and slower than scalar loads). With AVX-512 VBMI the lookup is a byte
  permute instead: the map is cut into four *byte planes* (byte k of every entry), each a
  256-byte table that two ``vpermi2b`` (128 entries each) and a select by the code's top bit
  look up for 64 codes at once; interleaving the four planes gives the 64 float32 entries
  bit for bit, then one multiply by a_b (the same float32 product as the scalar path). Without
  VBMI the same function is a masked gather, which LLVM lowers to whatever the target has.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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
def encode8(s, thresholds, bucket):
    """The 8-bit code of s = x / a_b: the nearest map entry, the upper one on a tie.

    `bucket[bits(s) >> 16]` is the code of the smallest float32 of s's bucket, and
    ``thresholds[c]`` the smallest float32 whose code exceeds c: one comparison finishes the
    lookup, since no bucket holds two thresholds (checked when the tables are built). NaN falls
    in a bucket of code 255 and compares false: 255, where ``torch.searchsorted`` sorts it.
    """
    c = bucket[float_bits(s) >> np.uint32(16)]
    return np.uint8(c + np.uint8(s >= thresholds[c]))


#: the x86 features the byte-permute decoding needs (AVX-512 VBMI's vpermi2b on 64 bytes)
_BYTE_PERMUTE_FEATURES = ("avx512f", "avx512bw", "avx512vbmi")


def byte_permute_supported() -> bool:
    """Whether numba's target CPU has AVX-512 VBMI (read when `decode8_block` is compiled).

    The target is numba's: ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` when set (portable caches),
    else the host. numba keys its on-disk cache on the CPU name and features, so code compiled
    here with the permute is never loaded on a machine without it.
    """
    if numba.config.CPU_NAME:
        features = numba.config.CPU_FEATURES or ""
    else:
        features = binding.get_host_cpu_features().flatten()
    present = set(features.split(","))
    return all("+" + name in present for name in _BYTE_PERMUTE_FEATURES)


#: force the portable (gather) decoding, for tests of it on a machine with VBMI
FORCE_PORTABLE_DECODE = False

_LANES = 64  # codes per vector: one 512-bit register of bytes


def _vector(element: ir.Type, count: int = _LANES) -> ir.VectorType:
    return ir.VectorType(element, count)


def _data_pointer(context, builder, array_type, array, element: ir.Type):
    """The first element's address of a numba array, as a pointer to `element` vectors."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(data, element.as_pointer())


def _decode_permute(builder, table, codes, scale, out):
    """The VBMI decoding of `_LANES`·4 codes (see the module docstring)."""
    i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
    whole = builder.load(builder.bitcast(table, _vector(i8, 1024).as_pointer()), align=4)
    # planes[4·k + q]: byte k of entries 64·q ... 64·q + 63 (little-endian float32 bytes)
    planes = [
        builder.shuffle_vector(
            whole, whole, ir.Constant(_vector(i32), [4 * (64 * q + i) + k for i in range(64)])
        )
        for k in range(4)
        for q in range(4)
    ]
    permute = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(_vector(i8), [_vector(i8)] * 3),
        "llvm.x86.avx512.vpermi2var.qi.512",
    )
    interleave = ir.Constant(_vector(i32, 128), [j for i in range(64) for j in (i, 64 + i)])
    zero = ir.Constant(_vector(i8), [0] * _LANES)
    for part in range(4):
        code = builder.load(builder.gep(codes, [ir.Constant(i32, part)]), align=1)
        upper_half = builder.icmp_signed("<", code, zero)  # code ≥ 128: entries 128..255
        byte = []
        for k in range(4):
            low = builder.call(permute, [planes[4 * k], code, planes[4 * k + 1]])
            high = builder.call(permute, [planes[4 * k + 2], code, planes[4 * k + 3]])
            byte.append(builder.select(upper_half, high, low))
        pairs01 = builder.bitcast(
            builder.shuffle_vector(byte[0], byte[1], interleave), _vector(i16)
        )
        pairs23 = builder.bitcast(
            builder.shuffle_vector(byte[2], byte[3], interleave), _vector(i16)
        )
        entries = builder.bitcast(
            builder.shuffle_vector(pairs01, pairs23, interleave), _vector(ir.FloatType())
        )
        builder.store(
            builder.fmul(entries, scale), builder.gep(out, [ir.Constant(i32, part)]), align=4
        )


def _decode_gather(builder, table, codes, scale, out):
    """The portable decoding: LLVM's masked gather (vector gathers, or scalar loads)."""
    i1, i32, f32 = ir.IntType(1), ir.IntType(32), ir.FloatType()
    gather = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(_vector(f32), [_vector(ir.PointerType()), i32, _vector(i1), _vector(f32)]),
        f"llvm.masked.gather.v{_LANES}f32.v{_LANES}p0",
    )
    base = builder.bitcast(table, ir.PointerType())
    for part in range(4):
        code = builder.load(builder.gep(codes, [ir.Constant(i32, part)]), align=1)
        addresses = builder.gep(base, [builder.zext(code, _vector(i32))], source_etype=f32)
        addresses.type = _vector(ir.PointerType())  # (llvmlite types a GEP by its base only)
        entries = builder.call(
            gather,
            [
                addresses,
                ir.Constant(i32, 4),
                ir.Constant(_vector(i1), [1] * _LANES),
                ir.Constant(_vector(f32), ir.Undefined),
            ],
        )
        builder.store(
            builder.fmul(entries, scale), builder.gep(out, [ir.Constant(i32, part)]), align=4
        )


@intrinsic
def decode8_block(typingctx, table, codes, scale, out):
    """``out[j] = table[codes[j]] · scale`` for j < 256: one block of 8-bit codes decoded.

    `table` float32[256] (a map), `codes` uint8 and `out` float32 contiguous arrays of at least
    256 elements (not checked: the caller passes whole blocks). Bit for bit the scalar loop's
    result: the same entries, the same float32 product.
    """
    if not (
        isinstance(table, types.Array)
        and table.dtype == types.float32
        and isinstance(codes, types.Array)
        and codes.dtype == types.uint8
        and scale == types.float32
        and isinstance(out, types.Array)
        and out.dtype == types.float32
    ):
        return None
    signature = types.void(table, codes, scale, out)

    def codegen(context, builder, sig, args):
        f32 = ir.FloatType()
        table_ptr = _data_pointer(context, builder, sig.args[0], args[0], f32)
        codes_ptr = _data_pointer(context, builder, sig.args[1], args[1], _vector(ir.IntType(8)))
        out_ptr = _data_pointer(context, builder, sig.args[3], args[3], _vector(f32))
        first = builder.insert_element(
            ir.Constant(_vector(f32), ir.Undefined), args[2], ir.Constant(ir.IntType(32), 0)
        )
        scale = builder.shuffle_vector(
            first, first, ir.Constant(_vector(ir.IntType(32)), [0] * _LANES)
        )
        if byte_permute_supported() and not FORCE_PORTABLE_DECODE:
            _decode_permute(builder, table_ptr, codes_ptr, scale, out_ptr)
        else:
            _decode_gather(builder, table_ptr, codes_ptr, scale, out_ptr)
        return context.get_dummy_value()

    return signature, codegen


def _reference_codes(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``quantize.quantize``'s rule on values already divided by their block maximum, in numpy
    float32 (the same IEEE operations: the lower neighbour by a right-sided search, then the tie
    rule); NaN, which no table row is built from, is not handled."""
    scaled = np.ascontiguousarray(values, dtype=np.float32)
    lower = np.clip(np.searchsorted(table, scaled, side="right") - 1, 0, 255)
    upper = np.minimum(lower + 1, 255)
    low, high = table[lower], table[upper]
    return np.where(scaled - low >= (high - low) * np.float32(0.5), upper, lower)


@functools.cache
def code_tables(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds float32[256], bucket uint8[2¹⁶]) of the signed or unsigned dynamic map.

    ``thresholds[c]``: the smallest float32 whose reference code exceeds c: in [map[c],
    map[c+1]] the code is c + 1 exactly when fl(s − map[c]) ≥ fl((map[c+1] − map[c])·½), so it
    is fl(map[c] + half) moved by an ulp or two until that holds and fails one ulp below (+inf
    for 255). ``bucket[k]``: the reference code of the smallest float32 whose upper 16 bits are
    k. Both are checked against the reference's own arithmetic, and the assertion proves that one
    comparison after the bucket always suffices.
    """
    from optimlab.optim.low_precision.quantize import dynamic_map

    table = dynamic_map(signed).numpy()
    low, high = table[:-1], table[1:]
    half = (high - low) * np.float32(0.5)

    def steps_up(s: np.ndarray) -> np.ndarray:
        return (s - low) >= half

    first = low + half
    for _ in range(4):  # float32 rounding leaves it within an ulp or two
        below = np.nextafter(first, np.float32(-np.inf))
        first = np.where(steps_up(below), below, first)
        first = np.where(steps_up(first), first, np.nextafter(first, np.float32(np.inf)))
    before = np.nextafter(first, np.float32(-np.inf))
    assert np.all(steps_up(first)) and not np.any(steps_up(before) & (before >= low))
    codes = np.arange(255)
    assert np.all(_reference_codes(first, table) == codes + 1)
    assert np.all(_reference_codes(before, table) == codes)
    thresholds = np.append(first, np.float32(np.inf)).astype(np.float32)

    keys = np.arange(1 << 16, dtype=np.int64)
    negative = keys >= 0x8000
    smallest = np.where(negative, keys << 16 | 0xFFFF, keys << 16)
    largest = np.where(negative, keys << 16, keys << 16 | 0xFFFF)
    with np.errstate(invalid="ignore"):
        floats = smallest.astype(np.uint32).view(np.float32)
        nan = np.isnan(floats) | np.isnan(largest.astype(np.uint32).view(np.float32))
        clipped = np.clip(np.nan_to_num(floats, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    bucket = np.where(nan, 255, _reference_codes(clipped, table))
    span = np.clip(np.nan_to_num(largest.astype(np.uint32).view(np.float32)), -1.0, 1.0)
    inside = (
        ~nan & (np.abs(floats) <= 1) & (np.abs(largest.astype(np.uint32).view(np.float32)) <= 1)
    )
    steps = _reference_codes(span, table) - bucket
    assert np.all(steps[inside] <= 1), "a bucket holds two thresholds"
    return thresholds, bucket.astype(np.uint8)


def codec_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps float32[2, 256], thresholds float32[2, 256], buckets uint8[2, 2¹⁶]): row 0 for the
    signed map, row 1 for the unsigned one."""
    from optimlab.optim.low_precision.quantize import dynamic_map

    signed, unsigned = code_tables(True), code_tables(False)
    maps = np.stack([dynamic_map(True).numpy(), dynamic_map(False).numpy()])
    return maps, np.stack([signed[0], unsigned[0]]), np.stack([signed[1], unsigned[1]])
