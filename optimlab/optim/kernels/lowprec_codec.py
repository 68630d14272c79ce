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
* **8-bit encoding of 16 values at once** (`encode8_vector16`, AVX-512): the map is linear per
  decade (``map = D·(0.1 + (j + ½)·0.9/n)``), so inside decade d the code of a = |s| is
  ``floor(t)``, ``t = a·A_d + B_d``, the thresholds sitting at the integers of t. The decade is
  found exactly: a's binary octave (its exponent) holds at most one decade boundary T (an exact
  threshold), so a 32-entry register permute of per-octave tables gives T and the decade below
  it, and ``a ≥ T`` picks the side; A_d, B_d and the decade's first and last codes come from
  16-entry permutes. A negative s takes the mirror code ``254 − code(|s|)`` (the signed map is
  symmetric). Where t lies within 2⁻¹² of an integer, a within 2⁻¹⁶ (relative) of T, s is
  NaN, above 1, or negative for the unsigned map, the 16 values are flagged and the caller codes
  them with `encode8` (about 1 % of vectors). Why the rest is exact: float32 rounding leaves the
  computed t within 2⁻¹⁵ of the real a·A + B, and every exact threshold (both signs) within
  2⁻¹⁴ of its integer (asserted when the tables are built), so a t more than 2⁻¹² from every
  integer is strictly between the same two thresholds as a itself.
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


#: flagged when t lies this close to an integer (a threshold), in codes
_NEAR_THRESHOLD = 2.0**-12
#: ... or a this close to a decade boundary, relatively
_NEAR_BOUNDARY = 2.0**-16
#: biased exponent of the first octave tabled (2⁻³¹); smaller values code as 0 (zero entry)
_FIRST_EXPONENT = 96
#: layout of `linear_code_tables`: 32 octaves (T, decade below), 16 segments (A, B, last
#: code), then 1.0 for the signed map
_OCTAVE_ROWS, _DECADE_ROWS = 2, 3
_SIGNED_AT = 32 * _OCTAVE_ROWS + 16 * _DECADE_ROWS
_PARAMETERS = _SIGNED_AT + 16
#: the boundary of an octave that holds none: above every value coded without a flag (≤ 1)
_NO_BOUNDARY = 4.0


@functools.cache
def linear_code_tables(signed: bool) -> np.ndarray:
    """The parameters of `encode8_vector16` for the signed or unsigned map (float32[112]).

    Segments: the zero entry, the seven decades, the entry 1.0. Asserts what the exactness
    argument needs: one boundary per octave at most; every threshold of both signs within 2⁻¹⁴
    of its integer of t (float64 arithmetic on the float32 parameters); and t at each boundary
    at least 2⁻¹⁰ inside the segment's first code, and past the last code of the segment below
    (whose t runs on to the boundary: floor(t) is clamped to its last code).
    """
    from optimlab.optim.low_precision.quantize import dynamic_map

    table = dynamic_map(signed).numpy().astype(np.float64)
    thresholds = code_tables(signed)[0].astype(np.float64)
    zero = 127 if signed else 0
    segments = [(zero, zero, 0.0, zero + 0.5)]  # (first, last code, A, B)
    for decade in range(7):
        count = 2**decade if signed else 2 ** (decade + 1)
        first = zero + count if signed else count - 1
        scale = 10.0 ** (decade - 6)
        entries = table[first : first + count]
        assert np.all((entries > 0.1 * scale) & (entries < scale)), "not a decade"
        slope = np.float64(np.float32(count / (0.9 * scale)))
        offset = np.float64(np.float32(first - 0.1 * count / 0.9))
        segments.append((first, first + count - 1, slope, offset))
    segments.append((255, 255, 0.0, 255.5))
    parameters = np.zeros(_PARAMETERS, np.float64)
    decades = parameters[32 * _OCTAVE_ROWS : _SIGNED_AT].reshape(_DECADE_ROWS, 16)

    def position(values, segment):
        return values * segment[2] + segment[3]

    margin = 2.0**-10
    for d, segment in enumerate(segments):
        first, last, slope, offset = segment
        decades[:, d] = (slope, offset, last)
        # the thresholds inside the segment sit at the integers first + 1 ... last of t
        t = position(thresholds[first:last], segment)
        assert np.all(np.abs(t - np.arange(first + 1, last + 1)) <= 2.0**-14), "not linear"
        if signed:  # the negative side's thresholds, mirrored: code(s) = 254 - code(|s|)
            t = position(-thresholds[254 - last : 254 - first], segment)
            assert np.all(np.abs(t - np.arange(last, first, -1)) <= 2.0**-14), "not mirrored"
        if d > 0:  # the boundary below: t inside this segment's codes and the one below's
            boundary = thresholds[first - 1]
            above = position(boundary, segment) - first
            below = position(boundary, segments[d - 1]) - segments[d - 1][1]
            assert margin < above < 1 - margin and below > margin, "codes outside a segment"
    boundaries = np.array([thresholds[first - 1] for first, *_ in segments[1:]])
    if signed:  # the negative side's boundaries lie within the flagged band around T
        # (but the last: 1.0 has no negative twin, codes 254 and 255 both mirror to 0)
        mirrored = -np.array([thresholds[254 - first] for first, *_ in segments[1:-1]])
        assert np.all(np.abs(mirrored - boundaries[:-1]) <= boundaries[:-1] * _NEAR_BOUNDARY / 4)
    octaves = parameters[: 32 * _OCTAVE_ROWS].reshape(_OCTAVE_ROWS, 32)
    for octave in range(32):
        low = 2.0 ** (_FIRST_EXPONENT + octave - 127)
        inside = boundaries[(boundaries > low) & (boundaries < 2 * low)]
        assert len(inside) <= 1, "two decade boundaries in one octave"
        bound = inside[0] if len(inside) else _NO_BOUNDARY
        octaves[:, octave] = (bound, np.count_nonzero(boundaries <= low))
    assert boundaries[0] > 2.0 ** (_FIRST_EXPONENT - 127)  # below the first octave: zero
    parameters[_SIGNED_AT] = 1.0 if signed else 0.0
    return parameters.astype(np.float32)


def _encode_vector(builder, values, parameters, codes):
    """The AVX-512 body of `encode8_vector16`; returns the i1 'needs the exact path' flag."""
    i1, i8, i32, f32 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.FloatType()
    lanes = 16

    def vector(element):
        return ir.VectorType(element, lanes)

    def splat(value, element):
        return ir.Constant(vector(element), [value] * lanes)

    def function(name, result, arguments):
        return cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(result, arguments), name
        )

    row_pointer = builder.bitcast(parameters, vector(f32).as_pointer())

    def row(index):
        return builder.load(builder.gep(row_pointer, [ir.Constant(i32, index)]), align=4)

    permute32 = function(
        "llvm.x86.avx512.vpermi2var.ps.512", vector(f32), [vector(f32), vector(i32), vector(f32)]
    )
    permute16 = function("llvm.x86.avx512.permvar.sf.512", vector(f32), [vector(f32), vector(i32)])
    fma = function("llvm.fma.v16f32", vector(f32), [vector(f32)] * 3)
    floor = function("llvm.floor.v16f32", vector(f32), [vector(f32)])

    value = builder.load(builder.bitcast(values, vector(f32).as_pointer()), align=4)
    bits = builder.bitcast(value, vector(i32))
    negative = builder.icmp_signed("<", bits, splat(0, i32))
    a = builder.bitcast(builder.and_(bits, splat(0x7FFFFFFF, i32)), vector(f32))
    exponent = builder.and_(builder.lshr(bits, splat(23, i32)), splat(0xFF, i32))
    octave = builder.sub(exponent, splat(_FIRST_EXPONENT, i32))
    octave = builder.select(builder.icmp_signed("<", octave, splat(0, i32)), splat(0, i32), octave)
    octave = builder.select(
        builder.icmp_signed(">", octave, splat(31, i32)), splat(31, i32), octave
    )

    def by_octave(index):
        return builder.call(permute32, [row(2 * index), octave, row(2 * index + 1)])

    boundary, below = (by_octave(k) for k in range(_OCTAVE_ROWS))
    up = builder.fcmp_ordered(">=", a, boundary)
    decade = builder.fadd(below, builder.select(up, splat(1.0, f32), splat(0.0, f32)))
    decade = builder.fptosi(decade, vector(i32))

    def by_decade(index):
        return builder.call(permute16, [row(2 * _OCTAVE_ROWS + index), decade])

    slope, offset, last = (by_decade(k) for k in range(_DECADE_ROWS))
    t = builder.call(fma, [a, slope, offset])
    whole = builder.call(floor, [t])
    fraction = builder.fsub(t, whole)
    code = builder.select(builder.fcmp_ordered(">", whole, last), last, whole)
    distance = builder.bitcast(
        builder.and_(
            builder.bitcast(builder.fsub(a, boundary), vector(i32)), splat(0x7FFFFFFF, i32)
        ),
        vector(f32),
    )
    signed_value = builder.load(builder.gep(parameters, [ir.Constant(i32, _SIGNED_AT)]))
    signed = builder.fcmp_ordered("!=", signed_value, ir.Constant(f32, 0.0))
    mirrored = builder.fsub(splat(254.0, f32), code)
    mirrored = builder.select(
        builder.fcmp_ordered("<", mirrored, splat(0.0, f32)), splat(0.0, f32), mirrored
    )
    code = builder.select(
        builder.and_(negative, builder.select(signed, splat(True, i1), splat(False, i1))),
        mirrored,
        code,
    )
    flags = [
        builder.fcmp_ordered("<", fraction, splat(_NEAR_THRESHOLD, f32)),
        builder.fcmp_ordered(">", fraction, splat(1 - _NEAR_THRESHOLD, f32)),
        builder.fcmp_ordered("<=", distance, builder.fmul(boundary, splat(_NEAR_BOUNDARY, f32))),
        builder.fcmp_unordered(">", a, splat(1.0, f32)),  # above 1, or NaN
        builder.and_(negative, builder.select(signed, splat(False, i1), splat(True, i1))),
    ]
    flag = flags[0]
    for other in flags[1:]:
        flag = builder.or_(flag, other)
    result = builder.trunc(builder.fptoui(code, vector(i32)), vector(i8))
    builder.store(result, builder.bitcast(codes, vector(i8).as_pointer()), align=1)
    return builder.icmp_unsigned(
        "!=", builder.bitcast(flag, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0)
    )


def vector_encode_supported() -> bool:
    """Whether numba's target CPU has AVX-512F (`encode8_vector16`'s permutes)."""
    if numba.config.CPU_NAME:
        features = numba.config.CPU_FEATURES or ""
    else:
        features = binding.get_host_cpu_features().flatten()
    return "+avx512f" in set(features.split(","))


#: force `encode8_vector16` to flag everything (the scalar path), for tests of the fallback
FORCE_SCALAR_ENCODE = False


@intrinsic
def encode8_vector16(typingctx, values, start, parameters, codes):
    """Code ``values[start : start + 16]`` into ``codes[start : start + 16]``; True when those
    16 must be coded again with `encode8` (see the module docstring; always True without
    AVX-512F). `parameters`: `linear_code_tables` of the map."""
    if not (
        isinstance(values, types.Array)
        and values.dtype == types.float32
        and isinstance(start, types.Integer)
        and isinstance(parameters, types.Array)
        and parameters.dtype == types.float32
        and isinstance(codes, types.Array)
        and codes.dtype == types.uint8
    ):
        return None
    signature = types.boolean(values, start, parameters, codes)

    def codegen(context, builder, sig, args):
        if not vector_encode_supported() or FORCE_SCALAR_ENCODE:
            return ir.Constant(ir.IntType(1), 1)
        f32 = ir.FloatType()
        value_ptr = _data_pointer(context, builder, sig.args[0], args[0], f32)
        code_ptr = _data_pointer(context, builder, sig.args[3], args[3], ir.IntType(8))
        offset = builder.sext(args[1], ir.IntType(64)) if args[1].type.width < 64 else args[1]
        parameter_ptr = _data_pointer(context, builder, sig.args[2], args[2], f32)
        return _encode_vector(
            builder,
            builder.gep(value_ptr, [offset]),
            parameter_ptr,
            builder.gep(code_ptr, [offset]),
        )

    return signature, codegen


@numba.njit(inline="always")
def encode8_many(values, codes, thresholds, bucket, linear):
    """``codes[j] = encode8(values[j], ...)`` for every j: 16 at a time by `encode8_vector16`
    (`linear`: `linear_code_tables` of the same map), the flagged 16 and the tail by `encode8`."""
    n = values.shape[0]
    whole = n - n % 16
    for j in range(0, whole, 16):
        if encode8_vector16(values, j, linear, codes):
            for i in range(j, j + 16):
                codes[i] = encode8(values[i], thresholds, bucket)
    for i in range(whole, n):
        codes[i] = encode8(values[i], thresholds, bucket)


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
