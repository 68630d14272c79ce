r"""Fused Adam / AdamW / AMSGrad on low-precision state and bfloat16 weights, in one pass.

What the reference path (``optimlab.optim.low_precision.reference_step``) does with a dozen
whole-tensor torch operations — decode the state, run the rule in float32, encode the state,
round the weight — happens here per block of 256 elements, in L1: the block's codes are decoded
into float32 registers/scratch, updated, and coded again before the next block is read. Every
tensor of the group is read and written once.

Bytes per parameter and step (float32 weights, int8 state): read p (4), g (4), two codes (2),
write p (4), two codes (2), plus two block maxima per 256 elements read and written (0.06):
≈ 16 B against float32 Adam's 28 (the floor is 1.75× lower). bfloat16 state: 20 B. bfloat16
weights save another 4 B (2 read, 2 written, and a bfloat16 gradient).

Each tensor is stored in one of four forms (``modes``): float32 state (tensors too small to
quantize, or ``state_dtype="float32"`` with bfloat16 weights), bfloat16 state, 8-bit codes with
one float32 absolute maximum per block (``low_precision.quantize``), or float8_e4m3fn codes with
one float32 scale per block (``low_precision.fp8``, coded and decoded on the bits by ``lowprec_fp8``; 16 B as for int8). The weights are float32 or
bfloat16, the latter rounded to nearest or stochastically (``lowprec_codec``).

Kernel arguments (one call per group; see ``lowprec_dispatch``)::

    kernel(param_ptrs, grad_ptrs, state_ptrs, modes, chunks, coef, flags, keys, tables)

``state_ptrs[t] = (m, m maxima, v, v maxima, vmax, vmax maxima)`` addresses (0 where unused),
``chunks`` (tensor, start, stop) with starts on block boundaries, ``coef``/``flags`` Adam's
(``kernels.adam``; the flags followed by the weights' kind), ``keys`` each tensor's
stochastic-rounding stream key, ``tables`` the (maps, thresholds, buckets) of the 8-bit code
(``lowprec_codec.codec_tables``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from optimlab.optim.kernels.adam import C, F, Flags, _keras_loop
from optimlab.optim.kernels.common import decayed_gradient, lerp, maximum
from optimlab.optim.kernels.compile import jit_kernel, pointer_view
from optimlab.optim.kernels.lowprec_codec import (
    bf16_to_float,
    bits_float,
    decode8_block,
    encode8_block_exact,
    encode8_many,
    float_bits,
    float_to_bf16,
    float_to_bf16_stochastic,
    largest_magnitude_bits,
    linear_code_tables,
    random16,
)
from optimlab.optim.kernels.lowprec_fp8 import decode_fp8_block, encode_fp8_block
from optimlab.optim.kernels.skeleton import prologue

#: elements per block (``low_precision.quantize.BLOCK_SIZE``; the dispatcher checks they agree)
BLOCK = 256
#: the state forms a tensor's moments are stored in (``MODE_FP8``: ``low_precision.fp8``)
MODE_FLOAT32, MODE_BF16, MODE_INT8, MODE_FP8 = 0, 1, 2, 3
#: the weights' kind, the flag after Adam's own
WEIGHTS_FLOAT32, WEIGHTS_BF16, WEIGHTS_BF16_STOCHASTIC = 0, 1, 2
KIND = len(Flags._fields)
#: the smallest block maximum (``quantize.MIN_ABSMAX``) as float32, as torch's clamp rounds it
MIN_ABSMAX = np.float32(1e-12)
#: the largest finite e4m3fn value: an fp8 block's scale is its maximum over this
FP8_LARGEST = np.float32(448.0)
_ABS = np.uint32(0x7FFFFFFF)

#: `encode8_vector16`'s parameters of the signed and the unsigned map (numba freezes them into
#: the kernel as constants; the kernel's `thresholds` argument says which map: the signed one's
#: first threshold is negative)
_LINEAR_SIGNED = linear_code_tables(True)
_LINEAR_UNSIGNED = linear_code_tables(False)

_F32 = np.empty(0, np.float32)
_U16 = np.empty(0, np.uint16)
_U8 = np.empty(0, np.uint8)


@numba.njit(inline="always")
def _torch_update(p, g, m, v, vmax, n, k, flags, amsgrad):
    """torch.optim's Adam on the decoded state, the second moment as torchao updates it:
    m = lerp(m, g, 1 − β₁); v = lerp(v, g², 1 − β₂); p += (−lr / bc1) m / (√v · r + ε) with
    r = fl(1 / √bc2) (torch and torchao divide, √v / √bc2: one float32 division per element
    saved, the denominator within an ulp of theirs, the weights within float32 rounding)."""
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, one, w2, eps = k[C.w1], k[C.one], k[C.w2], k[C.eps]
    step_size = k[C.step_size]
    inverse_root_bc2 = one / k[C.root_bias_correction2]
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj = lerp(m[j], gj, w1, one)
        vj = lerp(v[j], gj * gj, w2, one)
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj + step_size * mj / (np.sqrt(vj) * inverse_root_bc2 + eps)


@numba.njit(inline="always")
def _update(p, g, m, v, vmax, n, k, flags):
    # one loop per variant, the flags constants inside (a branch in the body blocks vectorizing)
    # Keras's rule is kernels.adam's own loop, on the block's first n scratch elements; torch's
    # differs from kernels.adam's in its second moment (torchao's lerp), hence _torch_update
    if flags[F.keras]:
        if flags[F.amsgrad]:
            _keras_loop(p, g, m[:n], v[:n], vmax[:n], k, flags, True)
        else:
            _keras_loop(p, g, m[:n], v[:n], vmax[:n], k, flags, False)
    elif flags[F.amsgrad]:
        _torch_update(p, g, m, v, vmax, n, k, flags, True)
    else:
        _torch_update(p, g, m, v, vmax, n, k, flags, False)


# ---- state: one block in, one block out -------------------------------------------------------
@numba.njit(inline="always")
def _load(address, maxima, start, n, mode, table, out):
    """Decode n elements of one state from `start` into the float32 scratch `out`
    (`table`: the 8-bit map; `maxima`: the blocks' maxima or fp8 scales)."""
    if mode == MODE_FP8:  # float(code) · scale, the code's value computed from its bits
        codes = pointer_view(address, start, start + n, _U8)
        scale = pointer_view(maxima, start // BLOCK, start // BLOCK + 1, _F32)[0]
        decode_fp8_block(codes, scale, out, n)
    elif mode == MODE_INT8:
        codes = pointer_view(address, start, start + n, _U8)
        scale = pointer_view(maxima, start // BLOCK, start // BLOCK + 1, _F32)[0]
        if n == BLOCK:  # (8-bit state is whole blocks; the loop is the same rule, element-wise)
            decode8_block(table, codes, scale, out)
        else:
            for j in range(n):
                out[j] = table[codes[j]] * scale
    elif mode == MODE_BF16:
        halves = pointer_view(address, start, start + n, _U16)
        for j in range(n):
            out[j] = bf16_to_float(halves[j])
    else:
        values = pointer_view(address, start, start + n, _F32)
        for j in range(n):
            out[j] = values[j]


@numba.njit(inline="always")
def _block_absmax(values, n):
    """max(max |values[:n]|, MIN_ABSMAX) (NaN if any is NaN, as torch.amax), found on the bit
    patterns: for non-negative floats the integer order is the numeric order, and NaN's
    pattern exceeds every other."""
    if n == BLOCK:  # (LLVM leaves the scalar loop below unvectorized: 10× slower)
        largest = largest_magnitude_bits(values)
    else:
        largest = np.uint32(0)
        for j in range(n):
            bits = np.uint32(float_bits(values[j]) & _ABS)
            largest = bits if bits > largest else largest
    amax = bits_float(np.uint32(largest))
    return MIN_ABSMAX if amax < MIN_ABSMAX else amax


@numba.njit(inline="always")
def _store(address, maxima, start, n, mode, thresholds, bucket, values):
    """Encode n float32 `values` into one state from `start` (a whole block when 8-bit);
    `values` is scratch, overwritten."""
    if mode == MODE_FP8:
        # torchao's AdamWFp8: scale = max(amax, 1e-12) / 448, code = fl8(x / scale)
        # (the codes of x / scale, computed as x · fl(1/scale) with flagged lanes divided)
        scale = _block_absmax(values, n) / FP8_LARGEST
        encode_fp8_block(values, scale, pointer_view(address, start, start + n, _U8), n)
        pointer_view(maxima, start // BLOCK, start // BLOCK + 1, _F32)[0] = scale
    elif mode == MODE_INT8:
        scale = _block_absmax(values, n)
        codes = pointer_view(address, start, start + n, _U8)
        signed = thresholds[0] < 0  # (the signed map's first threshold is negative)
        linear = _LINEAR_SIGNED if signed else _LINEAR_UNSIGNED
        if n == BLOCK:
            # x · fl(1/max) coded 16 at a time (AVX-512) without a division pass; the flagged
            # 16 (and all of a block whose maximum is NaN or huge) divided and looked up
            if signed:
                encode8_block_exact(values, scale, codes, thresholds, bucket, linear, True)
            else:
                encode8_block_exact(values, scale, codes, thresholds, bucket, linear, False)
        else:
            for j in range(n):  # the scratch is dead after this: scaled in place
                values[j] = values[j] / scale
            encode8_many(values[:n], codes, thresholds, bucket, linear)
        pointer_view(maxima, start // BLOCK, start // BLOCK + 1, _F32)[0] = scale
    elif mode == MODE_BF16:
        halves = pointer_view(address, start, start + n, _U16)
        for j in range(n):
            halves[j] = float_to_bf16(values[j])
    else:
        out = pointer_view(address, start, start + n, _F32)
        for j in range(n):
            out[j] = values[j]


# ---- one chunk ----------------------------------------------------------------------------------
@numba.njit(inline="always")
def _chunk(c, param_ptrs, grad_ptrs, state_ptrs, modes, chunks, coef, flags, keys, tables):
    t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    k = coef[t]
    mode = modes[t]
    ptrs = state_ptrs[t]
    amsgrad = flags[F.amsgrad]
    kind = flags[KIND]
    key = keys[t]
    maps, thresholds, buckets = tables
    # the states' scratch rows: m, v and (amsgrad) vmax. One loop over the states rather than
    # one call per state: _load and _store are inlined with every mode's coding, and three
    # copies of each made the first (uncached) compile take 105 s instead of 32
    states = 3 if amsgrad else 2
    scratch = np.empty((3, BLOCK), np.float32)
    m, v, vmax = scratch[0], scratch[1], scratch[2]
    p = np.empty(BLOCK, np.float32)
    g = np.empty(BLOCK, np.float32)
    for start in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - start)
        for s in range(states):  # exp_avg with the signed map, the others with the unsigned one
            u = min(s, 1)
            _load(ptrs[2 * s], ptrs[2 * s + 1], start, n, mode, maps[u], scratch[s])
        if kind == WEIGHTS_FLOAT32:
            weights = pointer_view(param_ptrs[t], start, start + n, _F32)
            _update(
                weights, pointer_view(grad_ptrs[t], start, start + n, _F32), m, v, vmax, n, k, flags
            )
        else:
            weights16 = pointer_view(param_ptrs[t], start, start + n, _U16)
            grads16 = pointer_view(grad_ptrs[t], start, start + n, _U16)
            for j in range(n):
                p[j] = bf16_to_float(weights16[j])
                g[j] = bf16_to_float(grads16[j])
            _update(p, g, m, v, vmax, n, k, flags)
            if kind == WEIGHTS_BF16_STOCHASTIC:
                for j in range(n):
                    weights16[j] = float_to_bf16_stochastic(p[j], random16(key, start + j))
            else:
                for j in range(n):
                    weights16[j] = float_to_bf16(p[j])
        for s in range(states):
            u = min(s, 1)
            _store(
                ptrs[2 * s], ptrs[2 * s + 1], start, n, mode, thresholds[u], buckets[u], scratch[s]
            )


def _kernel(param_ptrs, grad_ptrs, state_ptrs, modes, chunks, coef, flags, keys, tables):
    for c in prange(chunks.shape[0]):
        _chunk(c, param_ptrs, grad_ptrs, state_ptrs, modes, chunks, coef, flags, keys, tables)


KERNEL = jit_kernel(_kernel)

#: (state key, signed map) in the kernel's state order; the third only with amsgrad
STATES = (("exp_avg", True), ("exp_avg_sq", False), ("max_exp_avg_sq", False))
