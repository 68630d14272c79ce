"""Fused SGD, Momentum and NAG (one kernel; see ``optimlab.optim.sgd`` for the rules).

Bytes per float32 parameter and step: read p, g, write p (12) without momentum; read b and write
b as well (20) with it.
"""

from __future__ import annotations

from typing import Any

import numba
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    FROM_GRADIENT,
    KernelSpec,
    common_coefficients,
    common_flags,
)

# coef columns after the common two; flags after the common three
LR, MOMENTUM, KEEP, SCALE = 2, 3, 4, 5
KERAS, NESTEROV, HAS_MOMENTUM = 3, 4, 5


@numba.njit(inline="always")
def _loop(p, g, b, n, k, maximize, l2, decoupled, keras, nesterov, first):
    wd, decay, lr = k[WD], k[DECAY], k[LR]
    mu, keep, scale = k[MOMENTUM], k[KEEP], k[SCALE]
    minus_lr = -lr
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        if keras:
            # v = mu v - lr (1 - dampening) g;  p += v  or  p += mu v - lr g (nesterov)
            bj = b[j] * mu - gj * scale
            b[j] = bj
            if nesterov:
                p[j] = pj + (bj * mu - gj * lr)
            else:
                p[j] = pj + bj
        else:
            # b = g (first step) or mu b + (1 - dampening) g;  p -= lr (g + mu b  or  b)
            bj = gj if first else fma(gj, keep, b[j] * mu)
            b[j] = bj
            direction = fma(bj, mu, gj) if nesterov else bj
            p[j] = fma(direction, minus_lr, pj)


def _sgd(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        x, l2, dc, k, n = flags[0], flags[1], flags[2], coef[t], hi - lo
        if not flags[HAS_MOMENTUM]:
            minus_lr = -k[LR]
            for j in range(n):
                pj, gj = decayed_gradient(p[j], g[j], x, l2, dc, k[WD], k[DECAY])
                p[j] = fma(gj, minus_lr, pj)
            continue
        b = state[0, offsets[t] + lo : offsets[t] + hi]
        # One loop per variant, the flags constants inside: a branch in the loop body keeps
        # the compiler from vectorizing it (NAG ran at half of Momentum's speed).
        if flags[KERAS]:
            if flags[NESTEROV]:
                _loop(p, g, b, n, k, x, l2, dc, True, True, False)
            else:
                _loop(p, g, b, n, k, x, l2, dc, True, False, False)
        elif fresh[t]:
            if flags[NESTEROV]:
                _loop(p, g, b, n, k, x, l2, dc, False, True, True)
            else:
                _loop(p, g, b, n, k, x, l2, dc, False, False, True)
        elif flags[NESTEROV]:
            _loop(p, g, b, n, k, x, l2, dc, False, True, False)
        else:
            _loop(p, g, b, n, k, x, l2, dc, False, False, False)


def _tensor_state(group: dict[str, Any]) -> tuple[str, ...]:
    return ("momentum_buffer",) if group["momentum"] != 0 else ()


def _coefficients(group: dict[str, Any], scalars: dict) -> tuple[float, ...]:
    lr, dampening = group["lr"], group["dampening"]
    scale = lr if dampening == 0 else lr * (1 - dampening)
    return (*common_coefficients(group), lr, group["momentum"], 1 - dampening, scale)


def _flags(group: dict[str, Any]) -> tuple[int, ...]:
    keras = group["convention"] == "keras"
    return (*common_flags(group), int(keras), int(group["nesterov"]), int(group["momentum"] != 0))


SPEC = KernelSpec(
    kernel=jit_kernel(_sgd),
    tensor_state=_tensor_state,
    coefficients=_coefficients,
    flags=_flags,
    # torch's buffer starts as the first gradient, Keras's velocity at 0
    initial=lambda group: (
        {} if group["convention"] == "keras" else {"momentum_buffer": FROM_GRADIENT}
    ),
    bytes_per_param=lambda group: 20 if group["momentum"] != 0 else 12,
)
