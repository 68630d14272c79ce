"""Fused AdaMax (see ``optimlab.optim.adamax`` for the rule and where ε goes).

Bytes per float32 parameter and step: read p, g, m, u, write p, m, u = 28.

The bias correction comes from the algorithm module's one pure function
(``optimlab.optim.adamax.bias_correction``), passed to :func:`make_spec` (layers point one way).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient, lerp, maximum
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
    per_tensor_rows,
)

Coefficients = coefficient_layout(
    "adamax", "w1", "one", "beta2", "eps", "step_size", "bias_correction"
)
Flags = flag_layout("adamax", "keras")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _adamax(p, g, state, start, stop, k, flags, first):
    m, u = state[0, start:stop], state[1, start:stop]
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, one, beta2, eps = k[C.w1], k[C.one], k[C.beta2], k[C.eps]
    step_size, bias_correction = k[C.step_size], k[C.bias_correction]
    if flags[F.keras]:
        # m += (g - m)(1 - b1);  u = max(b2 u, |g|);  p -= m lr / ((u + eps) bc1)
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            mj = m[j] + (gj - m[j]) * w1
            uj = maximum(u[j] * beta2, np.abs(gj))
            m[j] = mj
            u[j] = uj
            p[j] = pj - mj * step_size / ((uj + eps) * bias_correction)
    else:
        # m = lerp(m, g, 1 - b1);  u = max(b2 u, |g| + eps);  p -= lr / bc1 * m / u
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            mj = lerp(m[j], gj, w1, one)
            uj = maximum(u[j] * beta2, np.abs(gj) + eps)
            m[j] = mj
            u[j] = uj
            p[j] = pj + step_size * mj / uj


KERNEL = fused_kernel(_adamax, "adamax")


def _coefficients(
    bias_correction: Callable[[float, int], float],
    group: dict[str, Any],
    scalars: dict[str, np.ndarray],
) -> Any:
    lr, eps = group["lr"], group["eps"]
    beta1, beta2 = group["betas"]
    keras = group["convention"] == "keras"

    def row(step: float) -> tuple[float, ...]:
        correction = bias_correction(beta1, int(step))
        return Coefficients(
            *common_coefficients(group),
            w1=1 - beta1,
            one=1.0,  # lerp's one (see common.lerp)
            beta2=beta2,
            eps=eps,
            step_size=lr if keras else -lr / correction,
            bias_correction=correction,
        )

    return per_tensor_rows(row, advance_steps(scalars))


def make_spec(bias_correction: Callable[[float, int], float]) -> KernelSpec:
    """AdaMax's kernel, given the algorithm's bias correction (``adamax.bias_correction``)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("exp_avg", "exp_inf"),
        coefficients=partial(_coefficients, bias_correction),
        flags=lambda group: Flags(*common_flags(group), keras=int(group["convention"] == "keras")),
        scalar_state=(STEP,),
        bytes_per_param=lambda group: 28,
    )
