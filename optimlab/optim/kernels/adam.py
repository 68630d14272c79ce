"""Fused Adam / AdamW / AMSGrad (see ``optimlab.optim.adam`` for the rule and where ε goes).

Bytes per float32 parameter and step: read p, g, m, v, write p, m, v = 28; AMSGrad reads and
writes the running maximum as well (+8).

The per-step scalars (step size, √(1 − β₂ᵗ)) come from the algorithm module's one pure function
(``optimlab.optim.adam.step_scalars``), passed to :func:`make_spec` so that this module never
imports the algorithm module (layers point one way).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient, keras_moments, maximum, torch_moments
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
    "adam", "w1", "one", "beta2", "w2", "eps", "step_size", "root_bias_correction2"
)
Flags = flag_layout("adam", "keras", "amsgrad")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _torch_loop(p, g, m, v, vmax, k, flags, amsgrad):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, one, beta2, w2, eps = k[C.w1], k[C.one], k[C.beta2], k[C.w2], k[C.eps]
    step_size, root_bc2 = k[C.step_size], k[C.root_bias_correction2]
    # m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2
    # p += (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj, vj = torch_moments(m[j], v[j], gj, w1, one, beta2, w2)
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj + step_size * mj / (np.sqrt(vj) / root_bc2 + eps)


@numba.njit(inline="always")
def _keras_loop(p, g, m, v, vmax, k, flags, amsgrad):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    w1, w2, eps, step_size = k[C.w1], k[C.w2], k[C.eps], k[C.step_size]
    # m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);  p -= m alpha / (sqrt(v) + eps)
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj, vj = keras_moments(m[j], v[j], gj, w1, w2)
        m[j] = mj
        v[j] = vj
        if amsgrad:
            vj = maximum(vmax[j], vj)
            vmax[j] = vj
        p[j] = pj - mj * step_size / (np.sqrt(vj) + eps)


@numba.njit(inline="always")
def _adam(p, g, state, start, stop, k, flags, first):
    m, v = state[0, start:stop], state[1, start:stop]
    # One loop per variant, the flag a constant inside: a branch with a store in the loop
    # body would keep the compiler from vectorizing it.
    if flags[F.amsgrad]:
        vmax = state[2, start:stop]
        if flags[F.keras]:
            _keras_loop(p, g, m, v, vmax, k, flags, True)
        else:
            _torch_loop(p, g, m, v, vmax, k, flags, True)
    elif flags[F.keras]:
        _keras_loop(p, g, m, v, v, k, flags, False)
    else:
        _torch_loop(p, g, m, v, v, k, flags, False)


KERNEL = fused_kernel(_adam, "adam")


def _tensor_state(group: dict[str, Any]) -> tuple[str, ...]:
    return (
        ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        if group["amsgrad"]
        else ("exp_avg", "exp_avg_sq")
    )


def _coefficients(
    step_scalars: Callable[..., Any], group: dict[str, Any], scalars: dict[str, np.ndarray]
) -> Any:
    eps = group["eps"]
    beta1, beta2 = group["betas"]
    keras = group["convention"] == "keras"

    def row(step: float) -> tuple[float, ...]:
        step_size, root_bias_correction2 = step_scalars(group["lr"], beta1, beta2, int(step), keras)
        return Coefficients(
            *common_coefficients(group),
            **moment_coefficients(group["betas"]),
            eps=eps,
            # torch: p += (-lr / bc1) m / ...  (negation is exact); keras: p -= m alpha / ...
            step_size=step_size if keras else -step_size,
            root_bias_correction2=root_bias_correction2,
        )

    return per_tensor_rows(row, advance_steps(scalars))


def make_spec(step_scalars: Callable[..., Any]) -> KernelSpec:
    """Adam's kernel, given the algorithm's per-step scalars (``adam.step_scalars``)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=_tensor_state,
        coefficients=partial(_coefficients, step_scalars),
        flags=lambda group: Flags(
            *common_flags(group),
            keras=int(group["convention"] == "keras"),
            amsgrad=int(group["amsgrad"]),
        ),
        scalar_state=(STEP,),
        bytes_per_param=lambda group: 36 if group["amsgrad"] else 28,
    )
