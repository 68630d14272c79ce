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
  integer is strictly between the same two thresholds as a itself. The octave is the biased
  exponent itself (the permute reads its low 5 bits), the decade below is tabled as an integer
  and the distance to T is counted in ulps of the octave (256 of them, ≥ 2⁻¹⁶·T): integer
  operations where the first version spent float conversions and products.
* **A whole block without the division** (`encode8_block_exact`, the kernels' path): the codes
  of fl(x / max) for 256 values x, computed as the codes of x · fl(1 / max) by the same
  arithmetic — three roundings relative apart from the quotient, which moves t by less than
  3·2⁻¹⁶ and stays inside the flagged band (see `encode8_block`) — so no division pass over
  the block and no scratch round trip; the flagged vectors are divided and looked up. The 16
  vectors are one straight-line body (the tables loaded once, the sign handling of the map
  compiled in, the codes packed 64 at a time), and the block maximum is a vector reduction
  (`largest_magnitude_bits`).
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
#: ... or a this close to a decade boundary T, relatively (at least: the band is
#: `_NEAR_BOUNDARY_ULPS` float32 steps of T's octave, 2⁻¹⁵ of its lower end ≥ 2⁻¹⁶·T)
_NEAR_BOUNDARY = 2.0**-16
_NEAR_BOUNDARY_ULPS = 256
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
    result = parameters.astype(np.float32)
    # the decade below each octave as int32 bits (the kernel adds the side to it as an integer)
    result[32 : 2 * 32] = octaves[1].astype(np.int32).view(np.float32)
    # the flagged band around T in ulps of its octave holds the negative side's boundaries
    # and 2⁻¹⁶·T, and the octave is the biased exponent's low 5 bits
    assert _FIRST_EXPONENT % 32 == 0
    if signed:
        steps = mirrored.astype(np.float32).view(np.int32).astype(np.int64) - boundaries[
            :-1
        ].astype(np.float32).view(np.int32)
        assert np.all(np.abs(steps) <= _NEAR_BOUNDARY_ULPS // 4)
    return result


def _encode_vector(builder, values, parameters, codes, reciprocal=None, rows=None, signed=None):
    """The AVX-512 body of `encode8_vector16`; returns the i1 'needs the exact path' flag.

    With `reciprocal` (a float32 splat of fl(1 / max)) the 16 values are x, coded as
    x · reciprocal (`encode8_block`); `rows`: the parameter rows already loaded, by index;
    `signed`: which map, when known at compile time (else read from the parameters).
    """
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
        if rows is not None:
            return rows[index]
        return builder.load(builder.gep(row_pointer, [ir.Constant(i32, index)]), align=4)

    permute32 = function(
        "llvm.x86.avx512.vpermi2var.ps.512", vector(f32), [vector(f32), vector(i32), vector(f32)]
    )
    permute16 = function("llvm.x86.avx512.permvar.sf.512", vector(f32), [vector(f32), vector(i32)])
    fma = function("llvm.fma.v16f32", vector(f32), [vector(f32)] * 3)
    floor = function("llvm.floor.v16f32", vector(f32), [vector(f32)])

    value = builder.load(builder.bitcast(values, vector(f32).as_pointer()), align=4)
    if reciprocal is not None:
        value = builder.fmul(value, reciprocal)
    bits = builder.bitcast(value, vector(i32))
    negative = builder.icmp_signed("<", bits, splat(0, i32))
    a = builder.bitcast(builder.and_(bits, splat(0x7FFFFFFF, i32)), vector(f32))
    # the octave: the permute reads the index's low 5 bits only, and _FIRST_EXPONENT is a
    # multiple of 32, so the biased exponent (raised to the first octave's) is the index;
    # exponents above the last octave (a ≥ 2, inf, NaN) wrap around, and are flagged below
    a_bits = builder.and_(bits, splat(0x7FFFFFFF, i32))
    octave = builder.lshr(a_bits, splat(23, i32))
    octave = builder.select(
        builder.icmp_unsigned("<", octave, splat(_FIRST_EXPONENT, i32)),
        splat(_FIRST_EXPONENT, i32),
        octave,
    )

    def by_octave(index):
        return builder.call(permute32, [row(2 * index), octave, row(2 * index + 1)])

    boundary, below = (by_octave(k) for k in range(_OCTAVE_ROWS))
    up = builder.fcmp_ordered(">=", a, boundary)
    # (the decade below is tabled as int32 bits: one masked integer add picks the side)
    decade = builder.add(builder.bitcast(below, vector(i32)), builder.zext(up, vector(i32)))

    def by_decade(index):
        return builder.call(permute16, [row(2 * _OCTAVE_ROWS + index), decade])

    slope, offset, last = (by_decade(k) for k in range(_DECADE_ROWS))
    t = builder.call(fma, [a, slope, offset])
    whole = builder.call(floor, [t])
    fraction = builder.fsub(t, whole)
    code = builder.select(builder.fcmp_ordered(">", whole, last), last, whole)
    # the distance to the boundary in ulps: a and T share the octave, so the bit patterns'
    # difference counts float32 steps of that octave (no float subtraction, no product)
    absolute = function("llvm.abs.v16i32", vector(i32), [vector(i32), i1])
    distance = builder.call(
        absolute,
        [builder.sub(a_bits, builder.bitcast(boundary, vector(i32))), ir.Constant(i1, 0)],
    )
    if signed is not None:  # a constant: LLVM drops the other map's instructions
        signed = ir.Constant(i1, int(signed))
    else:
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
        builder.icmp_unsigned("<=", distance, splat(_NEAR_BOUNDARY_ULPS, i32)),
        builder.fcmp_unordered(">", a, splat(1.0, f32)),  # above 1, or NaN
        builder.and_(negative, builder.select(signed, splat(False, i1), splat(True, i1))),
    ]
    flag = flags[0]
    for other in flags[1:]:
        flag = builder.or_(flag, other)
    any_flag = builder.icmp_unsigned(
        "!=", builder.bitcast(flag, ir.IntType(lanes)), ir.Constant(ir.IntType(lanes), 0)
    )
    if codes is None:  # the caller stores the codes (int32 lanes, 0 ... 255)
        return any_flag, builder.fptoui(code, vector(i32))
    result = builder.trunc(builder.fptoui(code, vector(i32)), vector(i8))
    builder.store(result, builder.bitcast(codes, vector(i8).as_pointer()), align=1)
    return any_flag


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


#: values per `encode8_block` call: one 8-bit block, 16 vectors of 16
_BLOCK_VALUES = 256


def _encode8_block(signed: bool):
    """`encode8_block`'s intrinsic for one map (its sign handling compiled in)."""

    def encode8_block(typingctx, values, reciprocal, parameters, codes):
        return _encode8_block_signature(signed, values, reciprocal, parameters, codes)

    return intrinsic(encode8_block)


def _encode8_block_signature(signed, values, reciprocal, parameters, codes):
    """`encode8_block`: code the 256 values x of one block, scaled by ``reciprocal = fl(1 / max)``, into
    ``codes[0:256]``; returns a uint32 whose bit q is set when values 16·q … 16·q + 15 must be
    coded again as ``encode8(fl(x / max))`` (all bits without AVX-512F).

    The code is the reference's code of ``fl(x / max)``, not of ``x · reciprocal``: the two
    differ by at most 3 float32 roundings relative (2⁻²⁴ each: the reciprocal, the product, the
    quotient), which moves t = a·A + B by at most 3·2⁻²⁴·(a·A) < 3·2⁻¹⁶ (a·A < 2⁸ on both
    maps), and a by 3·2⁻²⁴ relative. With `encode8_vector16`'s budget (t within 2⁻¹⁵ of its
    real value, thresholds within 2⁻¹⁴ of their integers) the total, 9·2⁻¹⁶, stays inside the
    flagged band (2⁻¹² = 16·2⁻¹⁶), and a value more than 2⁻¹⁶ from a decade boundary T
    relatively stays on its side. The argument needs a normal reciprocal: the caller passes
    maxima up to 2¹⁰⁰ only (and never NaN) and divides otherwise. One straight-line body for the
    16 vectors: the parameter rows are loaded once, the division pass is gone.
    """
    if not (
        isinstance(values, types.Array)
        and values.dtype == types.float32
        and reciprocal == types.float32
        and isinstance(parameters, types.Array)
        and parameters.dtype == types.float32
        and isinstance(codes, types.Array)
        and codes.dtype == types.uint8
    ):
        return None
    signature = types.uint32(values, reciprocal, parameters, codes)

    def codegen(context, builder, sig, args):
        i32, f32 = ir.IntType(32), ir.FloatType()
        if not vector_encode_supported() or FORCE_SCALAR_ENCODE:
            return ir.Constant(i32, 0xFFFF)
        lanes = 16
        value_ptr = _data_pointer(context, builder, sig.args[0], args[0], f32)
        code_ptr = _data_pointer(context, builder, sig.args[3], args[3], ir.IntType(8))
        parameter_ptr = _data_pointer(context, builder, sig.args[2], args[2], f32)
        row_pointer = builder.bitcast(parameter_ptr, ir.VectorType(f32, lanes).as_pointer())
        rows = [
            builder.load(builder.gep(row_pointer, [ir.Constant(i32, index)]), align=4)
            for index in range(_PARAMETERS // lanes)
        ]
        first = builder.insert_element(
            ir.Constant(ir.VectorType(f32, lanes), ir.Undefined), args[1], ir.Constant(i32, 0)
        )
        scale = builder.shuffle_vector(
            first, first, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        )
        mask = ir.Constant(i32, 0)
        codes = []
        for q in range(_BLOCK_VALUES // lanes):
            offset = ir.Constant(i32, q * lanes)
            flag, code = _encode_vector(
                builder,
                builder.gep(value_ptr, [offset]),
                parameter_ptr,
                None,
                reciprocal=scale,
                rows=rows,
                signed=signed,
            )
            codes.append(code)
            bit = builder.shl(builder.zext(flag, i32), ir.Constant(i32, q))
            mask = builder.or_(mask, bit)
        for part in range(_BLOCK_VALUES // _LANES):
            _store_packed(builder, codes[4 * part : 4 * part + 4], code_ptr, part)
        return mask

    return signature, codegen


#: `encode8_block` of the signed map (first moments) and of the unsigned one (second moments):
#: `parameters` must be that map's `linear_code_tables`
encode8_block_signed = _encode8_block(True)
encode8_block_unsigned = _encode8_block(False)


def _store_packed(builder, codes, code_ptr, part):
    """Store four vectors of 16 int32 codes as 64 bytes at ``code_ptr + 64·part``: two
    saturating packs (``vpackusdw``, ``vpackuswb``: 3 instructions for 64 codes, where four
    narrowing stores ``vpmovdb`` are slow on Zen 4) and one dword permute that undoes the packs'
    per-128-bit-lane interleaving (dword 4·L + k of the packed vector holds codes 4·L … 4·L + 3
    of vector k)."""
    i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)

    def function(name, result, argument):
        return cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(result, [argument, argument]), name
        )

    words = function("llvm.x86.avx512.packusdw.512", _vector(i16, 32), _vector(i32, 16))
    bytes_ = function("llvm.x86.avx512.packuswb.512", _vector(i8, 64), _vector(i16, 32))
    low = builder.call(words, codes[:2])
    high = builder.call(words, codes[2:])
    packed = builder.bitcast(builder.call(bytes_, [low, high]), _vector(i32, 16))
    order = ir.Constant(_vector(i32, 16), [4 * lane + k for k in range(4) for lane in range(4)])
    ordered = builder.shuffle_vector(packed, packed, order)
    target = builder.gep(
        builder.bitcast(code_ptr, _vector(i32, 16).as_pointer()), [ir.Constant(i32, part)]
    )
    builder.store(ordered, target, align=1)


@intrinsic
def largest_magnitude_bits(typingctx, values):
    """max over j < 256 of ``bits(values[j]) & 0x7FFFFFFF``: the block maximum of |x| on the
    bit patterns (for non-negative floats the integer order is the numeric order, and NaN's
    pattern exceeds every other, as torch.amax returns NaN). 16 vector loads and an unsigned
    maximum tree: LLVM leaves numba's scalar loop of the same reduction unvectorized."""
    if not (isinstance(values, types.Array) and values.dtype == types.float32):
        return None
    signature = types.uint32(values)

    def codegen(context, builder, sig, args):
        i32, lanes = ir.IntType(32), 16
        word = ir.VectorType(i32, lanes)
        pointer = _data_pointer(context, builder, sig.args[0], args[0], word)
        umax = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(word, [word, word]), "llvm.umax.v16i32"
        )
        reduce = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [word]), "llvm.vector.reduce.umax.v16i32"
        )
        magnitude = ir.Constant(word, [0x7FFFFFFF] * lanes)
        parts = [
            builder.and_(
                builder.load(builder.gep(pointer, [ir.Constant(i32, q)]), align=4), magnitude
            )
            for q in range(_BLOCK_VALUES // lanes)
        ]
        while len(parts) > 1:
            parts = [builder.call(umax, parts[i : i + 2]) for i in range(0, len(parts), 2)]
        return builder.call(reduce, parts)

    return signature, codegen


@numba.njit(inline="always")
def encode8_block_exact(values, scale, codes, thresholds, bucket, linear, signed):
    """``codes[j] = encode8(fl(values[j] / scale))`` for the 256 values of one block:
    `encode8_block` on x · fl(1 / scale), its flagged vectors (and every vector when the
    maximum is above 2¹⁰⁰ or NaN, where fl(1 / scale) is not normal) divided and looked up."""
    if scale <= np.float32(2.0**100):
        if signed:
            flagged = encode8_block_signed(values, np.float32(1.0) / scale, linear, codes)
        else:
            flagged = encode8_block_unsigned(values, np.float32(1.0) / scale, linear, codes)
    else:
        flagged = np.uint32(0xFFFF)
    if flagged:
        for q in range(16):
            if (flagged >> np.uint32(q)) & np.uint32(1):
                for i in range(16 * q, 16 * q + 16):
                    codes[i] = encode8(values[i] / scale, thresholds, bucket)


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
    signed map, row 1 for the unsigned one (fp8 state needs no table: ``lowprec_fp8`` codes and
    decodes on the bits)."""
    from optimlab.optim.low_precision.quantize import dynamic_map

    signed, unsigned = code_tables(True), code_tables(False)
    maps = np.stack([dynamic_map(True).numpy(), dynamic_map(False).numpy()])
    return maps, np.stack([signed[0], unsigned[0]]), np.stack([signed[1], unsigned[1]])
