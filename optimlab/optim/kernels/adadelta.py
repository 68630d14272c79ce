"""Fused AdaDelta (see ``optimlab.optim.adadelta``; torch and Keras compute the same rule).

Bytes per float32 parameter and step: read p, g, v, u, write p, v, u = 28.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
)

LR, RHO, ONE_MINUS_RHO, EPS = 2, 3, 4, 5


def _adadelta(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        v = state[0, offsets[t] + lo : offsets[t] + hi]
        u = state[1, offsets[t] + lo : offsets[t] + hi]
        maximize, l2, decoupled = flags[0], flags[1], flags[2]
        wd, decay, lr, eps = coef[t, WD], coef[t, DECAY], coef[t, LR], coef[t, EPS]
        rho, w = coef[t, RHO], coef[t, ONE_MINUS_RHO]
        minus_lr = -lr
        # v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) g
        # u = rho u + (1 - rho) d^2;  p -= lr d
        for j in range(hi - lo):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            vj = fma(w * gj, gj, v[j] * rho)
            v[j] = vj
            delta = np.sqrt(u[j] + eps) / np.sqrt(vj + eps) * gj
            u[j] = fma(w * delta, delta, u[j] * rho)
            p[j] = fma(delta, minus_lr, pj)


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    advance_steps(scalars)  # AdaDelta's rule does not depend on the step; the count is kept
    rho = group["rho"]
    return (*common_coefficients(group), group["lr"], rho, 1 - rho, group["eps"])


SPEC = KernelSpec(
    kernel=jit_kernel(_adadelta),
    tensor_state=lambda group: ("square_avg", "acc_delta"),
    coefficients=_coefficients,
    flags=common_flags,
    scalar_state=(STEP,),
    bytes_per_param=lambda group: 28,
)
