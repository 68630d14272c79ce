"""Fused AdaMax (see ``optimlab.optim.adamax`` for the rule and where ε goes).

Bytes per float32 parameter and step: read p, g, m, u, write p, m, u = 28.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient, lerp, maximum
from optimlab.optim.kernels.compile import jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
    per_tensor_rows,
)

W1, ONE, BETA2, EPS, STEP_SIZE, BIAS_CORRECTION = 2, 3, 4, 5, 6, 7
KERAS = 3


def _adamax(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        m = state[0, offsets[t] + lo : offsets[t] + hi]
        u = state[1, offsets[t] + lo : offsets[t] + hi]
        maximize, l2, decoupled = flags[0], flags[1], flags[2]
        wd, decay, eps = coef[t, WD], coef[t, DECAY], coef[t, EPS]
        w1, one, beta2 = coef[t, W1], coef[t, ONE], coef[t, BETA2]
        step_size, bias_correction = coef[t, STEP_SIZE], coef[t, BIAS_CORRECTION]
        if flags[KERAS]:
            # m += (g - m)(1 - b1);  u = max(b2 u, |g|);  p -= m lr / ((u + eps) bc1)
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                mj = m[j] + (gj - m[j]) * w1
                uj = maximum(u[j] * beta2, np.abs(gj))
                m[j] = mj
                u[j] = uj
                p[j] = pj - mj * step_size / ((uj + eps) * bias_correction)
        else:
            # m = lerp(m, g, 1 - b1);  u = max(b2 u, |g| + eps);  p -= lr / bc1 * m / u
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                mj = lerp(m[j], gj, w1, one)
                uj = maximum(u[j] * beta2, np.abs(gj) + eps)
                m[j] = mj
                u[j] = uj
                p[j] = pj + step_size * mj / uj


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    lr, eps = group["lr"], group["eps"]
    beta1, beta2 = group["betas"]
    keras = group["convention"] == "keras"

    def row(step: float) -> tuple[float, ...]:
        bias_correction = 1 - beta1 ** int(step)
        step_size = lr if keras else -lr / bias_correction
        return (
            *common_coefficients(group),
            1 - beta1,
            1.0,  # lerp's one (see common.lerp)
            beta2,
            eps,
            step_size,
            bias_correction,
        )

    return per_tensor_rows(row, advance_steps(scalars))


SPEC = KernelSpec(
    kernel=jit_kernel(_adamax),
    tensor_state=lambda group: ("exp_avg", "exp_inf"),
    coefficients=_coefficients,
    flags=lambda group: (*common_flags(group), int(group["convention"] == "keras")),
    scalar_state=(STEP,),
    bytes_per_param=lambda group: 28,
)
