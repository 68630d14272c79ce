"""Fused Schedule-Free AdamW and SGD steps (see ``optimlab.optim.schedulefree`` for the rule).

The kernels cover the training step only; ``train()`` / ``eval()`` (one ``lerp`` between y and z
per parameter, run rarely) stay the algorithm module's, working on the same state tensors: the
parameters hold y, ``state["z"]`` is a view of the group's flat buffer.

Bytes per float32 parameter and step: AdamW reads y, g, z, v and writes y, z, v = 28; SGD reads
y, g, z and writes y, z = 20.

The per-step scalars (γ_t, c_{t+1}, y's step γ_t(β(1 − c_{t+1}) − 1), 1 − β₂^{t+1}) come from the
algorithm module's one pure function (``schedulefree.step_scalars``), through the class's
``advance``, which also stores the group's bookkeeping (k, weight_sum, lr_max): it is passed to
:func:`make_adamw_spec` / :func:`make_sgd_spec` so that this module never imports the algorithm
module (layers point one way).  The coefficient function runs once per fused step, so the
bookkeeping advances once, as in the reference.

The weight decay is Schedule-Free's own (λ·y added to the direction), so the common prologue's
L2 and decoupled flags are always 0 here and the rule reads λ itself; z is created by the
algorithm module (a copy of the parameter) before the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient, lerp
from optimlab.optim.kernels.compile import fma
from optimlab.optim.kernels.skeleton import (
    coefficient_layout,
    flag_layout,
    fused_kernel,
    indices,
    prologue,
)
from optimlab.optim.kernels.spec import KernelSpec, common_coefficients

Coefficients = coefficient_layout(
    "schedulefree", "one", "ckp1", "y_scale", "minus_lr", "beta2", "w2", "bias_correction2", "eps"
)
Flags = flag_layout("schedulefree", "weight_decay")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _move(p, z, j, y, d, ckp1, y_scale, minus_lr, one):
    """y ← lerp(y, z, c) + γ(β(1 − c) − 1) d;  z ← z − γ d (each an fma, as torch rounds them)."""
    zj = z[j]
    p[j] = fma(y_scale, d, lerp(y, zj, ckp1, one))
    z[j] = fma(minus_lr, d, zj)


@numba.njit(inline="always")
def _adamw_loop(p, g, z, v, k, flags, decayed):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    one, ckp1, y_scale, minus_lr = k[C.one], k[C.ckp1], k[C.y_scale], k[C.minus_lr]
    beta2, w2, bias_correction2, eps = k[C.beta2], k[C.w2], k[C.bias_correction2], k[C.eps]
    # v = b2 v + (1 - b2) g^2;  d = g / (sqrt(v / bc2) + eps) (+ wd y)
    for j in range(p.shape[0]):
        y, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        vj = fma(w2 * gj, gj, v[j] * beta2)
        v[j] = vj
        d = gj / (np.sqrt(vj / bias_correction2) + eps)
        if decayed:
            d = fma(wd, y, d)
        _move(p, z, j, y, d, ckp1, y_scale, minus_lr, one)


@numba.njit(inline="always")
def _adamw(p, g, state, start, stop, k, flags, first):
    z, v = state[0, start:stop], state[1, start:stop]
    if flags[F.weight_decay]:  # one loop per variant: the flag a constant inside
        _adamw_loop(p, g, z, v, k, flags, True)
    else:
        _adamw_loop(p, g, z, v, k, flags, False)


@numba.njit(inline="always")
def _sgd_loop(p, g, z, k, flags, decayed):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    one, ckp1, y_scale, minus_lr = k[C.one], k[C.ckp1], k[C.y_scale], k[C.minus_lr]
    # d = g (+ wd y)
    for j in range(p.shape[0]):
        y, d = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        if decayed:
            d = fma(wd, y, d)
        _move(p, z, j, y, d, ckp1, y_scale, minus_lr, one)


@numba.njit(inline="always")
def _sgd(p, g, state, start, stop, k, flags, first):
    z = state[0, start:stop]
    if flags[F.weight_decay]:
        _sgd_loop(p, g, z, k, flags, True)
    else:
        _sgd_loop(p, g, z, k, flags, False)


ADAMW_KERNEL = fused_kernel(_adamw, "schedulefree_adamw")
SGD_KERNEL = fused_kernel(_sgd, "schedulefree_sgd")


def _coefficients(
    advance: Callable[[dict[str, Any]], Any],
    group: dict[str, Any],
    scalars: dict[str, np.ndarray],
) -> tuple[float, ...]:
    """One row for the whole group: Schedule-Free's step count is the group's, not a tensor's."""
    step = advance(group)  # advances the group's bookkeeping: called once per fused step
    beta2 = group["betas"][1] if "betas" in group else 0.0
    return Coefficients(
        *common_coefficients(group),
        one=1.0,
        ckp1=step.ckp1,
        y_scale=step.y_scale,
        minus_lr=-step.lr,
        beta2=beta2,
        w2=1 - beta2,
        bias_correction2=step.bias_correction2,
        eps=group.get("eps", 1.0),
    )


def _flags(group: dict[str, Any]) -> tuple[int, ...]:
    # L2 and decoupled stay 0: the rule applies its own weight decay (see the module docstring)
    return Flags(
        maximize=int(group["maximize"]),
        l2=0,
        decoupled=0,
        weight_decay=int(group["weight_decay"] != 0),
    )


def make_adamw_spec(advance: Callable[[dict[str, Any]], Any]) -> KernelSpec:
    """Schedule-Free AdamW's kernel, given the class's ``advance`` (the per-step scalars)."""
    return KernelSpec(
        kernel=ADAMW_KERNEL,
        tensor_state=lambda group: ("z", "exp_avg_sq"),
        coefficients=partial(_coefficients, advance),
        flags=_flags,
        bytes_per_param=lambda group: 28,
        member_rates=False,  # the averaging weights depend on lr (kept per group)
    )


def make_sgd_spec(advance: Callable[[dict[str, Any]], Any]) -> KernelSpec:
    """Schedule-Free SGD's kernel, given the class's ``advance`` (the per-step scalars)."""
    return KernelSpec(
        kernel=SGD_KERNEL,
        tensor_state=lambda group: ("z",),
        coefficients=partial(_coefficients, advance),
        flags=_flags,
        bytes_per_param=lambda group: 20,
        member_rates=False,  # the averaging weights depend on lr (kept per group)
    )
