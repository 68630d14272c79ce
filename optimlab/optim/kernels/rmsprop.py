"""Fused RMSProp (see ``optimlab.optim.rmsprop`` for the rule and its two conventions).

Bytes per float32 parameter and step: read p, g, v, write p, v = 20; momentum adds the buffer
(+8), centered adds the gradient average (+8).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, clamp_min_zero, decayed_gradient, lerp
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
)

LR, ALPHA, ONE_MINUS_ALPHA, ONE, EPS, MOMENTUM, ZERO = 2, 3, 4, 5, 6, 7, 8
KERAS, CENTERED, HAS_MOMENTUM = 3, 4, 5


@numba.njit(inline="always")
def _loop(p, g, v, b, a, n, k, maximize, l2, decoupled, keras, centered, has_momentum):
    wd, decay, lr, eps, mu = k[WD], k[DECAY], k[LR], k[EPS], k[MOMENTUM]
    alpha, w, one, zero = k[ALPHA], k[ONE_MINUS_ALPHA], k[ONE], k[ZERO]
    minus_lr = -lr
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        if keras:
            # v = alpha v + g^2 (1 - alpha); [a = alpha a + g (1 - alpha)]
            # d = lr g / sqrt(v - [a^2] + eps);  b = mu b + d, p -= b  (or p -= d)
            vj = v[j] * alpha + gj * gj * w
            v[j] = vj
            if centered:
                aj = a[j] * alpha + gj * w
                a[j] = aj
                denominator = clamp_min_zero(vj - aj * aj, zero) + eps
            else:
                denominator = vj + eps
            increment = gj * lr / np.sqrt(denominator)
            if has_momentum:
                bj = b[j] * mu + increment
                b[j] = bj
                p[j] = pj - bj
            else:
                p[j] = pj - increment
        else:
            # v = alpha v + (1 - alpha) g^2; [a = lerp(a, g, 1 - alpha)]
            # r = sqrt(v - [a^2]) + eps;  b = mu b + g / r, p -= lr b  (or p -= lr g / r)
            vj = fma(w * gj, gj, v[j] * alpha)
            v[j] = vj
            if centered:
                aj = lerp(a[j], gj, w, one)
                a[j] = aj
                root = np.sqrt(clamp_min_zero(fma(-aj, aj, vj), zero)) + eps
            else:
                root = np.sqrt(vj) + eps
            if has_momentum:
                bj = b[j] * mu + gj / root
                b[j] = bj
                p[j] = fma(bj, minus_lr, pj)
            else:
                p[j] = pj + minus_lr * gj / root


def _rmsprop(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        start = offsets[t] + lo
        stop = offsets[t] + hi
        centered, has_momentum = flags[CENTERED], flags[HAS_MOMENTUM]
        # Rows: square_avg, then momentum_buffer (momentum > 0), then grad_avg (centered).
        v = state[0, start:stop]
        b = state[1, start:stop] if has_momentum else v
        a = state[1 + has_momentum, start:stop] if centered else v
        x, l2, dc, k, n = flags[0], flags[1], flags[2], coef[t], hi - lo
        # One loop per variant, the flags constants inside: a branch with a store in the loop
        # body would keep the compiler from vectorizing it.
        if flags[KERAS]:
            if centered and has_momentum:
                _loop(p, g, v, b, a, n, k, x, l2, dc, True, True, True)
            elif centered:
                _loop(p, g, v, b, a, n, k, x, l2, dc, True, True, False)
            elif has_momentum:
                _loop(p, g, v, b, a, n, k, x, l2, dc, True, False, True)
            else:
                _loop(p, g, v, b, a, n, k, x, l2, dc, True, False, False)
        elif centered and has_momentum:
            _loop(p, g, v, b, a, n, k, x, l2, dc, False, True, True)
        elif centered:
            _loop(p, g, v, b, a, n, k, x, l2, dc, False, True, False)
        elif has_momentum:
            _loop(p, g, v, b, a, n, k, x, l2, dc, False, False, True)
        else:
            _loop(p, g, v, b, a, n, k, x, l2, dc, False, False, False)


def _tensor_state(group: dict[str, Any]) -> tuple[str, ...]:
    keys = ("square_avg",)
    if group["momentum"] > 0:
        keys += ("momentum_buffer",)
    if group["centered"]:
        keys += ("grad_avg",)
    return keys


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    alpha = group["alpha"]
    advance_steps(scalars)  # RMSProp's rule does not depend on the step; the count is kept
    return (
        *common_coefficients(group),
        group["lr"],
        alpha,
        1 - alpha,
        1.0,  # lerp's one (see common.lerp)
        group["eps"],
        group["momentum"],
        0.0,
    )


def _bytes(group: dict[str, Any]) -> int:
    return 20 + 8 * (group["momentum"] > 0) + 8 * bool(group["centered"])


SPEC = KernelSpec(
    kernel=jit_kernel(_rmsprop),
    tensor_state=_tensor_state,
    coefficients=_coefficients,
    flags=lambda group: (
        *common_flags(group),
        int(group["convention"] == "keras"),
        int(group["centered"]),
        int(group["momentum"] > 0),
    ),
    scalar_state=(STEP,),
    bytes_per_param=_bytes,
)
