"""Fused NAdam (see ``optimlab.optim.nadam`` for the rule and the two momentum schedules).

Bytes per float32 parameter and step: read p, g, m, v, write p, m, v = 28.  The momentum schedule
and its running product (``mu_product``, per parameter, in torch.optim's scalar dtype as the
reference keeps it) are computed in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient, lerp
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    ScalarState,
    advance_steps,
    common_coefficients,
    common_flags,
    per_tensor_rows,
)

W1, ONE, BETA2, W2, EPS, LR, BIAS_CORRECTION2 = 2, 3, 4, 5, 6, 7, 8
GRAD_SCALE, AVG_SCALE, MU_NEXT, ONE_MINUS_PRODUCT_NEXT, ONE_MINUS_MU, ONE_MINUS_PRODUCT = (
    9,
    10,
    11,
    12,
    13,
    14,
)
KERAS = 3


def _nadam(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        m = state[0, offsets[t] + lo : offsets[t] + hi]
        v = state[1, offsets[t] + lo : offsets[t] + hi]
        maximize, l2, decoupled = flags[0], flags[1], flags[2]
        wd, decay, eps, lr = coef[t, WD], coef[t, DECAY], coef[t, EPS], coef[t, LR]
        w1, one, beta2, w2 = (
            coef[t, W1],
            coef[t, ONE],
            coef[t, BETA2],
            coef[t, W2],
        )
        bias_correction2 = coef[t, BIAS_CORRECTION2]
        if flags[KERAS]:
            mu_next, one_minus_product_next = coef[t, MU_NEXT], coef[t, ONE_MINUS_PRODUCT_NEXT]
            one_minus_mu, one_minus_product = coef[t, ONE_MINUS_MU], coef[t, ONE_MINUS_PRODUCT]
            # m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
            # p -= lr (mu' m / (1 - Pi') + (1 - mu) g / (1 - Pi)) / (sqrt(v / bc2) + eps)
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                mj = m[j] + (gj - m[j]) * w1
                vj = v[j] + (gj * gj - v[j]) * w2
                m[j] = mj
                v[j] = vj
                m_hat = (
                    mj * mu_next / one_minus_product_next + gj * one_minus_mu / one_minus_product
                )
                p[j] = pj - m_hat * lr / (np.sqrt(vj / bias_correction2) + eps)
        else:
            grad_scale, avg_scale = coef[t, GRAD_SCALE], coef[t, AVG_SCALE]
            # m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;  r = sqrt(v / bc2) + eps
            # p -= lr (1 - mu) / (1 - Pi) g / r;  p -= lr mu' / (1 - Pi') m / r
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                mj = lerp(m[j], gj, w1, one)
                vj = fma(w2 * gj, gj, v[j] * beta2)
                m[j] = mj
                v[j] = vj
                root = np.sqrt(vj / bias_correction2) + eps
                pj = pj + grad_scale * gj / root
                p[j] = pj + avg_scale * mj / root


KERNEL = jit_kernel(_nadam)


def make_spec(momentum_schedule: Callable[[float, float, int], float]) -> KernelSpec:
    """The kernel, given the algorithm's momentum schedule mu_t = schedule(beta1, psi, t).

    The schedule is the algorithm module's one pure function (``NAdam.momentum_schedule``), passed
    in so that this kernel never imports the algorithm module (layers point one way)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("exp_avg", "exp_avg_sq"),
        coefficients=partial(_coefficients, momentum_schedule),
        flags=lambda group: (*common_flags(group), int(group["convention"] == "keras")),
        scalar_state=(STEP, ScalarState("mu_product", None, 1.0)),
        bytes_per_param=lambda group: 28,
    )


def _coefficients(
    schedule: Callable[[float, float, int], float],
    group: dict[str, Any],
    scalars: dict[str, np.ndarray],
) -> Any:
    lr, eps, psi = group["lr"], group["eps"], group["momentum_decay"]
    beta1, beta2 = group["betas"]
    steps = advance_steps(scalars)
    products = scalars["mu_product"]
    # mu_product <- mu_product * mu_t, rounded to the product's dtype as the reference's mul_
    unique = np.unique(steps)
    if len(unique) == 1:
        products *= schedule(beta1, psi, int(unique[0]))
    else:
        mus = [schedule(beta1, psi, int(s)) for s in steps]
        products *= np.asarray(mus, dtype=products.dtype)

    def row(step: float, mu_product: float) -> tuple[float, ...]:
        step = int(step)
        mu = schedule(beta1, psi, step)
        mu_next = schedule(beta1, psi, step + 1)
        mu_product_next = mu_product * mu_next
        return (
            *common_coefficients(group),
            1 - beta1,
            1.0,  # lerp's one (see common.lerp)
            beta2,
            1 - beta2,
            eps,
            lr,
            1 - beta2**step,
            -(lr * (1.0 - mu) / (1.0 - mu_product)),
            -(lr * mu_next / (1.0 - mu_product_next)),
            mu_next,
            1 - mu_product_next,
            1 - mu,
            1 - mu_product,
        )

    return per_tensor_rows(row, steps, products)
