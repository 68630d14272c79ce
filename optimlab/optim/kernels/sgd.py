"""Fused SGD, Momentum and NAG (one kernel; see ``optimlab.optim.sgd`` for the rules).

Bytes per float32 parameter and step: read p, g, write p (12) without momentum; read b and write
b as well (20) with it.
"""

from __future__ import annotations

from typing import Any

import numba

from optimlab.optim.kernels.common import decayed_gradient
from optimlab.optim.kernels.compile import fma
from optimlab.optim.kernels.skeleton import (
    coefficient_layout,
    flag_layout,
    fused_kernel,
    indices,
    prologue,
)
from optimlab.optim.kernels.spec import (
    FROM_GRADIENT,
    KernelSpec,
    common_coefficients,
    common_flags,
)

Coefficients = coefficient_layout("sgd", "lr", "momentum", "keep", "scale")
Flags = flag_layout("sgd", "keras", "nesterov", "has_momentum")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _loop(p, g, b, k, flags, keras, nesterov, first):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    lr, mu, keep, scale = k[C.lr], k[C.momentum], k[C.keep], k[C.scale]
    minus_lr = -lr
    for j in range(p.shape[0]):
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


@numba.njit(inline="always")
def _plain_loop(p, g, k, flags):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    minus_lr = -k[C.lr]
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        p[j] = fma(gj, minus_lr, pj)


@numba.njit(inline="always")
def _sgd(p, g, state, start, stop, k, flags, first):
    if not flags[F.has_momentum]:
        _plain_loop(p, g, k, flags)
        return
    b = state[0, start:stop]
    # One loop per variant, the flags constants inside: a branch in the loop body keeps
    # the compiler from vectorizing it (NAG ran at half of Momentum's speed).
    if flags[F.keras]:
        if flags[F.nesterov]:
            _loop(p, g, b, k, flags, True, True, False)
        else:
            _loop(p, g, b, k, flags, True, False, False)
    elif first:
        if flags[F.nesterov]:
            _loop(p, g, b, k, flags, False, True, True)
        else:
            _loop(p, g, b, k, flags, False, False, True)
    elif flags[F.nesterov]:
        _loop(p, g, b, k, flags, False, True, False)
    else:
        _loop(p, g, b, k, flags, False, False, False)


def _tensor_state(group: dict[str, Any]) -> tuple[str, ...]:
    return ("momentum_buffer",) if group["momentum"] != 0 else ()


def _coefficients(group: dict[str, Any], scalars: dict) -> tuple[float, ...]:
    lr, dampening = group["lr"], group["dampening"]
    scale = lr if dampening == 0 else lr * (1 - dampening)
    return Coefficients(
        *common_coefficients(group),
        lr=lr,
        momentum=group["momentum"],
        keep=1 - dampening,
        scale=scale,
    )


def _flags(group: dict[str, Any]) -> tuple[int, ...]:
    keras = group["convention"] == "keras"
    return Flags(
        *common_flags(group),
        keras=int(keras),
        nesterov=int(group["nesterov"]),
        has_momentum=int(group["momentum"] != 0),
    )


SPEC = KernelSpec(
    kernel=fused_kernel(_sgd, "sgd"),
    tensor_state=_tensor_state,
    coefficients=_coefficients,
    flags=_flags,
    # torch's buffer starts as the first gradient, Keras's velocity at 0
    initial=lambda group: (
        {} if group["convention"] == "keras" else {"momentum_buffer": FROM_GRADIENT}
    ),
    bytes_per_param=lambda group: 20 if group["momentum"] != 0 else 12,
)
