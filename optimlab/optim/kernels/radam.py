"""Fused RAdam (see ``optimlab.optim.radam`` for the rule and the rectification switch).

Bytes per float32 parameter and step: read p, g, m, v, write p, m, v = 28, on both sides of the
switch (the momentum-SGD steps before ρ_t > 5 still update v).

The per-step scalars (1 − β₁ᵗ, √(1 − β₂ᵗ), the rectification r_t or None) come from the
algorithm module's one pure function (``optimlab.optim.radam.step_scalars``), passed to
:func:`make_spec` so that this module never imports the algorithm module (layers point one way).
Whether step t is rectified is a per-tensor coefficient (tensors of one group may be at different
steps), read once per chunk to pick one of two loops.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient, torch_moments
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
    moment_coefficients,
    per_tensor_rows,
)

Coefficients = coefficient_layout(
    "radam",
    "w1",
    "one",
    "beta2",
    "w2",
    "eps",
    "lr",
    "bias_correction1",
    "root_bias_correction2",
    "rectification",
    "rectified",
)
Flags = flag_layout("radam")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _loop(p, g, m, v, k, flags, rectified):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, one, beta2, w2, eps = k[C.w1], k[C.one], k[C.beta2], k[C.w2], k[C.eps]
    lr, bias_correction1 = k[C.lr], k[C.bias_correction1]
    root_bc2, rect = k[C.root_bias_correction2], k[C.rectification]
    # m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;  u = (m / bc1) lr
    # rectified: p -= u (sqrt(bc2) / (sqrt(v) + eps)) r, else p -= u.  A Python number over a
    # tensor is torch's reciprocal times the number (Tensor.__rtruediv__): so is the kernel's.
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj, vj = torch_moments(m[j], v[j], gj, w1, one, beta2, w2)
        m[j] = mj
        v[j] = vj
        update = mj / bias_correction1 * lr
        if rectified:
            update = update * ((one / (np.sqrt(vj) + eps)) * root_bc2) * rect
        p[j] = pj - update


@numba.njit(inline="always")
def _radam(p, g, state, start, stop, k, flags, first):
    m, v = state[0, start:stop], state[1, start:stop]
    # One loop per side of the switch, the choice a constant inside (keeps it vectorizable)
    if k[C.rectified] != 0:
        _loop(p, g, m, v, k, flags, True)
    else:
        _loop(p, g, m, v, k, flags, False)


KERNEL = fused_kernel(_radam, "radam")


def _coefficients(
    step_scalars: Callable[..., Any], group: dict[str, Any], scalars: dict[str, np.ndarray]
) -> Any:
    beta1, beta2 = group["betas"]

    def row(step: float) -> tuple[float, ...]:
        bias_correction1, root_bias_correction2, rect = step_scalars(beta1, beta2, int(step))
        return Coefficients(
            *common_coefficients(group),
            **moment_coefficients(group["betas"]),
            eps=group["eps"],
            lr=group["lr"],
            bias_correction1=bias_correction1,
            root_bias_correction2=root_bias_correction2,
            rectification=0.0 if rect is None else rect,
            rectified=float(rect is not None),
        )

    return per_tensor_rows(row, advance_steps(scalars))


def make_spec(step_scalars: Callable[..., Any]) -> KernelSpec:
    """RAdam's kernel, given the algorithm's per-step scalars (``radam.step_scalars``)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("exp_avg", "exp_avg_sq"),
        coefficients=partial(_coefficients, step_scalars),
        flags=lambda group: Flags(*common_flags(group)),
        scalar_state=(STEP,),
        bytes_per_param=lambda group: 28,
    )
