"""Fused Lion (see ``optimlab.optim.lion`` for the rule and its weight-decay convention).

Bytes per float32 parameter and step: read p, g, m, write p, m = 20 (torch's fused Adam: 28).

Lion has no per-step scalar: the coefficients are the hyperparameters themselves (β₁, 1 − β₁, η,
β₂, 1 − β₂), rounded once to the parameter's dtype as torch rounds a Python-number operand.
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
from optimlab.optim.kernels.spec import KernelSpec, common_coefficients, common_flags

Coefficients = coefficient_layout("lion", "beta1", "w1", "minus_lr", "beta2", "w2", "one")
Flags = flag_layout("lion")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def sign_keeping_nan(x, one):
    """torch.sign, except that NaN stays NaN (the reference's ``where(isnan, x, sign(x))``)."""
    if x > 0:
        return one
    if x < 0:
        return -one
    return x  # 0 (a coordinate that does not move) or NaN


@numba.njit(inline="always")
def _lion(p, g, state, start, stop, k, flags, first):
    m = state[0, start:stop]
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    beta1, w1, minus_lr = k[C.beta1], k[C.w1], k[C.minus_lr]
    beta2, w2, one = k[C.beta2], k[C.w2], k[C.one]
    # c = b1 m + (1 - b1) g;  p += -lr sign(c);  m = b2 m + (1 - b2) g  (lion-pytorch's order;
    # each `add_(x, alpha=a)` is one fma, as torch's CPU kernel computes it)
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        mj = m[j]
        interpolation = fma(w1, gj, mj * beta1)
        p[j] = fma(minus_lr, sign_keeping_nan(interpolation, one), pj)
        m[j] = fma(w2, gj, mj * beta2)


KERNEL = fused_kernel(_lion, "lion")


def _coefficients(group: dict[str, Any], scalars: dict[str, Any]) -> tuple[float, ...]:
    beta1, beta2 = group["betas"]
    return Coefficients(
        *common_coefficients(group),
        beta1=beta1,
        w1=1 - beta1,
        minus_lr=-group["lr"],
        beta2=beta2,
        w2=1 - beta2,
        one=1.0,
    )


def make_spec() -> KernelSpec:
    """Lion's kernel (no per-step scalars, so nothing to take from the algorithm module)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("exp_avg",),
        coefficients=_coefficients,
        flags=lambda group: Flags(*common_flags(group)),
        bytes_per_param=lambda group: 20,
    )
