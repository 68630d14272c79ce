"""Fused AdaDelta (see ``optimlab.optim.adadelta``; torch and Keras compute the same rule).

Bytes per float32 parameter and step: read p, g, v, u, write p, v, u = 28.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient
from optimlab.optim.kernels.compile import fma
from optimlab.optim.kernels.skeleton import coefficient_layout, fused_kernel, indices, prologue
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
)

Coefficients = coefficient_layout("adadelta", "lr", "rho", "one_minus_rho", "eps")
C = indices(Coefficients)


@numba.njit(inline="always")
def _adadelta(p, g, state, start, stop, k, flags, first):
    v, u = state[0, start:stop], state[1, start:stop]
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    lr, eps, rho, w = k[C.lr], k[C.eps], k[C.rho], k[C.one_minus_rho]
    minus_lr = -lr
    # v = rho v + (1 - rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) g
    # u = rho u + (1 - rho) d^2;  p -= lr d
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        vj = fma(w * gj, gj, v[j] * rho)
        v[j] = vj
        delta = np.sqrt(u[j] + eps) / np.sqrt(vj + eps) * gj
        u[j] = fma(w * delta, delta, u[j] * rho)
        p[j] = fma(delta, minus_lr, pj)


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    advance_steps(scalars)  # AdaDelta's rule does not depend on the step; the count is kept
    rho = group["rho"]
    return Coefficients(
        *common_coefficients(group),
        lr=group["lr"],
        rho=rho,
        one_minus_rho=1 - rho,
        eps=group["eps"],
    )


SPEC = KernelSpec(
    kernel=fused_kernel(_adadelta, "adadelta"),
    tensor_state=lambda group: ("square_avg", "acc_delta"),
    coefficients=_coefficients,
    flags=common_flags,
    scalar_state=(STEP,),
    bytes_per_param=lambda group: 28,
)
