"""Fused RMSProp (see ``optimlab.optim.rmsprop`` for the rule and its two conventions).

Bytes per float32 parameter and step: read p, g, v, write p, v = 20; momentum adds the buffer
(+8), centered adds the gradient average (+8).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import clamp_min_zero, decayed_gradient, lerp
from optimlab.optim.kernels.compile import fma
from optimlab.optim.kernels.skeleton import (
    coefficient_layout,
    flag_layout,
    fused_kernel,
    indices,
    prologue,
)
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
)

Coefficients = coefficient_layout(
    "rmsprop", "lr", "alpha", "one_minus_alpha", "one", "eps", "momentum", "zero"
)
Flags = flag_layout("rmsprop", "keras", "centered", "has_momentum")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _loop(p, g, v, b, a, k, flags, keras, centered, has_momentum):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    lr, eps, mu = k[C.lr], k[C.eps], k[C.momentum]
    alpha, w, one, zero = k[C.alpha], k[C.one_minus_alpha], k[C.one], k[C.zero]
    minus_lr = -lr
    for j in range(p.shape[0]):
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


@numba.njit(inline="always")
def _rmsprop(p, g, state, start, stop, k, flags, first):
    centered, has_momentum = flags[F.centered], flags[F.has_momentum]
    # Rows: square_avg, then momentum_buffer (momentum > 0), then grad_avg (centered).
    v = state[0, start:stop]
    b = state[1, start:stop] if has_momentum else v
    a = state[1 + has_momentum, start:stop] if centered else v
    # One loop per variant, the flags constants inside: a branch with a store in the loop
    # body would keep the compiler from vectorizing it.
    if flags[F.keras]:
        if centered and has_momentum:
            _loop(p, g, v, b, a, k, flags, True, True, True)
        elif centered:
            _loop(p, g, v, b, a, k, flags, True, True, False)
        elif has_momentum:
            _loop(p, g, v, b, a, k, flags, True, False, True)
        else:
            _loop(p, g, v, b, a, k, flags, True, False, False)
    elif centered and has_momentum:
        _loop(p, g, v, b, a, k, flags, False, True, True)
    elif centered:
        _loop(p, g, v, b, a, k, flags, False, True, False)
    elif has_momentum:
        _loop(p, g, v, b, a, k, flags, False, False, True)
    else:
        _loop(p, g, v, b, a, k, flags, False, False, False)


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
    return Coefficients(
        *common_coefficients(group),
        lr=group["lr"],
        alpha=alpha,
        one_minus_alpha=1 - alpha,
        one=1.0,  # lerp's one (see common.lerp)
        eps=group["eps"],
        momentum=group["momentum"],
        zero=0.0,
    )


def _bytes(group: dict[str, Any]) -> int:
    return 20 + 8 * (group["momentum"] > 0) + 8 * bool(group["centered"])


SPEC = KernelSpec(
    kernel=fused_kernel(_rmsprop, "rmsprop"),
    tensor_state=_tensor_state,
    coefficients=_coefficients,
    flags=lambda group: Flags(
        *common_flags(group),
        keras=int(group["convention"] == "keras"),
        centered=int(group["centered"]),
        has_momentum=int(group["momentum"] > 0),
    ),
    scalar_state=(STEP,),
    bytes_per_param=_bytes,
)
