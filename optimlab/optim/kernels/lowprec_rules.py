r"""Low-precision fused kernels of AdaMax, NAdam, RMSprop and SGD (Momentum / NAG), in one pass.

One block skeleton serves them all; each algorithm contributes the element loop of its ordinary
float32 kernel (``kernels.adamax._adamax``, ``kernels.nadam._nadam``, ``kernels.rmsprop._rmsprop``,
``kernels.sgd._sgd``) unchanged. Per block of 256 elements the skeleton

1. decodes every state row of the block into a float32 scratch ``state[row, 0:n]`` (8-bit codes
   times the block maximum, bfloat16 shifted up, or float32 copied: ``lowprec_adam._load``);
2. runs the algorithm's element loop on the weights (float32 in place, or bfloat16 widened into
   scratch) and the scratch state, exactly as the float32 kernel runs it on its flat state: same
   coefficient row, same flags, same ``first`` (SGD's buffer that starts as the gradient);
3. encodes every state row again (``lowprec_adam._store``: block maximum, 8-bit code by the
   codec's tables, or bfloat16 round to nearest) and rounds bfloat16 weights to nearest or
   stochastically (``lowprec_codec``).

So the update rule is written once per algorithm (the float32 kernel's, itself checked against
torch.optim and the reference rule), the storage once for all (Adam's kernel's), and the codec
once (``lowprec_codec``): a faster codec or block load/store speeds every kernel up.

Bytes per parameter and step with float32 weights: read p, g, write p (12) plus 2 B per 8-bit
state (4 B bfloat16) read and written, and 4 B per 256 elements and state for the maxima:
AdaMax / NAdam / Adam ≈ 16 B (28 in float32), RMSprop ≈ 14 B (20), Momentum ≈ 14 B (20).

Kernel arguments (one call per group, see ``lowprec_dispatch``)::

    kernel(param_ptrs, grad_ptrs, state_ptrs, modes, maps, chunks, coef, flags, fresh, keys,
           tables)

``state_ptrs[t] = (row 0, row 0 maxima, row 1, row 1 maxima, ...)`` in the order of the
algorithm's ``KernelSpec.tensor_state``; ``modes[t]`` the form tensor t's state is stored in
(``lowprec_adam.MODE_*``); ``maps[row]`` 0 for a signed state (momenta), 1 for a non-negative one
(``low_precision.state.SIGNED_STATE``); ``flags`` the float32 kernel's flags followed by the
weights' kind; ``fresh[t]`` 1 when a state that starts as the gradient was just created; ``keys``
and ``tables`` as for ``lowprec_adam``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import prange

from optimlab.optim.kernels import adamax, nadam, rmsprop, sgd
from optimlab.optim.kernels.compile import jit_kernel, pointer_view
from optimlab.optim.kernels.lowprec_adam import (
    BLOCK,
    WEIGHTS_BF16_STOCHASTIC,
    WEIGHTS_FLOAT32,
    _load,
    _store,
)
from optimlab.optim.kernels.lowprec_codec import (
    bf16_to_float,
    float_to_bf16,
    float_to_bf16_stochastic,
    random16,
)

_F32 = np.empty(0, np.float32)
_U16 = np.empty(0, np.uint16)


# The template of the block skeleton. ``element_loop`` is a global that `lowprec_kernel` binds
# per algorithm in a copy of the function (as ``skeleton.fused_kernel`` does, for numba's cache).
def _chunk(
    c, param_ptrs, grad_ptrs, state_ptrs, modes, maps, chunks, coef, flags, fresh, keys, tables
):
    t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    k = coef[t]
    mode = modes[t]
    ptrs = state_ptrs[t]
    rows = maps.shape[0]
    kind = flags[flags.shape[0] - 1]
    first = fresh[t]
    key = keys[t]
    values, thresholds, buckets = tables
    state = np.empty((max(rows, 1), BLOCK), np.float32)
    p = np.empty(BLOCK, np.float32)
    g = np.empty(BLOCK, np.float32)
    for start in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - start)
        for row in range(rows):
            table = values[maps[row]]
            _load(ptrs[2 * row], ptrs[2 * row + 1], start, n, mode, table, state[row])
        # the weights in float32 scratch whatever their kind: one inlined copy of the element
        # loop (its variants compile once, not once per kind) for a copy that stays in L1
        if kind == WEIGHTS_FLOAT32:
            weights = pointer_view(param_ptrs[t], start, start + n, _F32)
            grads = pointer_view(grad_ptrs[t], start, start + n, _F32)
            for j in range(n):
                p[j] = weights[j]
                g[j] = grads[j]
        else:
            weights16 = pointer_view(param_ptrs[t], start, start + n, _U16)
            grads16 = pointer_view(grad_ptrs[t], start, start + n, _U16)
            for j in range(n):
                p[j] = bf16_to_float(weights16[j])
                g[j] = bf16_to_float(grads16[j])
        element_loop(p[:n], g[:n], state, 0, n, k, flags, first)  # noqa: F821
        if kind == WEIGHTS_FLOAT32:
            for j in range(n):
                weights[j] = p[j]
        elif kind == WEIGHTS_BF16_STOCHASTIC:
            for j in range(n):
                weights16[j] = float_to_bf16_stochastic(p[j], random16(key, start + j))
        else:
            for j in range(n):
                weights16[j] = float_to_bf16(p[j])
        for row in range(rows):
            which = maps[row]
            _store(
                ptrs[2 * row],
                ptrs[2 * row + 1],
                start,
                n,
                mode,
                thresholds[which],
                buckets[which],
                state[row],
            )


def _kernel(
    param_ptrs, grad_ptrs, state_ptrs, modes, maps, chunks, coef, flags, fresh, keys, tables
):
    for c in prange(chunks.shape[0]):
        chunk(  # noqa: F821
            c,
            param_ptrs,
            grad_ptrs,
            state_ptrs,
            modes,
            maps,
            chunks,
            coef,
            flags,
            fresh,
            keys,
            tables,
        )


def _bind(template: Callable[..., Any], qualname: str, **bound: Any) -> Callable[..., Any]:
    """A copy of `template` whose globals include `bound`, named `qualname` (numba's cache
    file name: one per algorithm)."""
    function = types.FunctionType(
        template.__code__, {**template.__globals__, **bound}, template.__name__
    )
    function.__qualname__ = qualname
    return function


def lowprec_kernel(element_loop: Callable[..., None], algorithm: str) -> Any:
    """The compiled low-precision kernel around a float32 kernel's `element_loop`.

    `element_loop(p, g, state, start, stop, k, flags, first)` is the ordinary kernel's
    (``skeleton.fused_kernel``'s contract); here ``state`` is the block's decoded scratch and
    ``start, stop = 0, n``.
    """
    chunk = numba.njit(inline="always")(
        _bind(_chunk, f"lowprec_{algorithm}_chunk", element_loop=element_loop)
    )
    return jit_kernel(_bind(_kernel, f"lowprec_{algorithm}_kernel", chunk=chunk))


ADAMAX = lowprec_kernel(adamax._adamax, "adamax")
NADAM = lowprec_kernel(nadam._nadam, "nadam")
RMSPROP = lowprec_kernel(rmsprop._rmsprop, "rmsprop")
SGD = lowprec_kernel(sgd._sgd, "sgd")
