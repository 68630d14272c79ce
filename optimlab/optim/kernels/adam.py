"""Fused Adam / AdamW / AMSGrad (see ``optimlab.optim.adam`` for the rule and where ε goes).

Bytes per float32 parameter and step: read p, g, m, v, write p, m, v = 28; AMSGrad reads and
writes the running maximum as well (+8).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient, lerp, maximum
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
    per_tensor_rows,
)

W1, ONE, BETA2, W2, EPS, STEP_SIZE, ROOT_BC2 = 2, 3, 4, 5, 6, 7, 8
KERAS, AMSGRAD = 3, 4


@numba.njit(inline="always")
def _torch_loop(p, g, m, v, vmax, n, k, maximize, l2, decoupled, amsgrad):
    wd, decay, eps = k[WD], k[DECAY], k[EPS]
    w1, one, beta2, w2 = k[W1], k[ONE], k[BETA2], k[W2]
    step_size, root_bc2 = k[STEP_SIZE], k[ROOT_BC2]
    # m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
    # p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj = lerp(m[j], gj, w1, one)
        vj = fma(w2 * gj, gj, v[j] * beta2)
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj + step_size * mj / (np.sqrt(vj) / root_bc2 + eps)


@numba.njit(inline="always")
def _keras_loop(p, g, m, v, vmax, n, k, maximize, l2, decoupled, amsgrad):
    wd, decay, eps = k[WD], k[DECAY], k[EPS]
    w1, w2, step_size = k[W1], k[W2], k[STEP_SIZE]
    # m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);  p -= m alpha / (sqrt(v) + eps)
    for j in range(n):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj = m[j] + (gj - m[j]) * w1
        vj = v[j] + (gj * gj - v[j]) * w2
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj - mj * step_size / (np.sqrt(vj) + eps)


def _adam(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        start = offsets[t] + lo
        stop = offsets[t] + hi
        m = state[0, start:stop]
        v = state[1, start:stop]
        maximize, l2, decoupled = flags[0], flags[1], flags[2]
        k = coef[t]
        # One loop per variant, the flag a constant inside: a branch with a store in the loop
        # body would keep the compiler from vectorizing it.
        if flags[AMSGRAD]:
            vmax = state[2, start:stop]
            if flags[KERAS]:
                _keras_loop(p, g, m, v, vmax, hi - lo, k, maximize, l2, decoupled, True)
            else:
                _torch_loop(p, g, m, v, vmax, hi - lo, k, maximize, l2, decoupled, True)
        elif flags[KERAS]:
            _keras_loop(p, g, m, v, v, hi - lo, k, maximize, l2, decoupled, False)
        else:
            _torch_loop(p, g, m, v, v, hi - lo, k, maximize, l2, decoupled, False)


def _tensor_state(group: dict[str, Any]) -> tuple[str, ...]:
    return (
        ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        if group["amsgrad"]
        else ("exp_avg", "exp_avg_sq")
    )


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    lr, eps = group["lr"], group["eps"]
    beta1, beta2 = group["betas"]
    keras = group["convention"] == "keras"

    def row(step: float) -> tuple[float, ...]:
        bias_correction1 = 1 - beta1 ** int(step)
        bias_correction2 = 1 - beta2 ** int(step)
        if keras:
            step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        else:
            step_size = -lr / bias_correction1
        return (
            *common_coefficients(group),
            1 - beta1,
            1.0,  # lerp's one (see common.lerp)
            beta2,
            1 - beta2,
            eps,
            step_size,
            math.sqrt(bias_correction2),
        )

    return per_tensor_rows(row, advance_steps(scalars))


SPEC = KernelSpec(
    kernel=jit_kernel(_adam),
    tensor_state=_tensor_state,
    coefficients=_coefficients,
    flags=lambda group: (
        *common_flags(group),
        int(group["convention"] == "keras"),
        int(group["amsgrad"]),
    ),
    scalar_state=(STEP,),
    bytes_per_param=lambda group: 36 if group["amsgrad"] else 28,
)
