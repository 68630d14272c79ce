"""Fused NAdam (see ``optimlab.optim.nadam`` for the rule and the two momentum schedules).

Bytes per float32 parameter and step: read p, g, m, v, write p, m, v = 28.  The momentum schedule
and its running product (``mu_product``, per parameter, in torch.optim's scalar dtype as the
reference keeps it) are computed in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient, keras_moments, torch_moments
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
    ScalarState,
    advance_steps,
    common_coefficients,
    common_flags,
    moment_coefficients,
    per_tensor_rows,
)

Coefficients = coefficient_layout(
    "nadam",
    "w1",
    "one",
    "beta2",
    "w2",
    "eps",
    "lr",
    "bias_correction2",
    "grad_scale",
    "avg_scale",
    "mu_next",
    "one_minus_product_next",
    "one_minus_mu",
    "one_minus_product",
)
Flags = flag_layout("nadam", "keras")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _nadam(p, g, state, start, stop, k, flags, first):
    m, v = state[0, start:stop], state[1, start:stop]
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    eps, lr = k[C.eps], k[C.lr]
    w1, one, beta2, w2 = k[C.w1], k[C.one], k[C.beta2], k[C.w2]
    bias_correction2 = k[C.bias_correction2]
    if flags[F.keras]:
        mu_next, one_minus_product_next = k[C.mu_next], k[C.one_minus_product_next]
        one_minus_mu, one_minus_product = k[C.one_minus_mu], k[C.one_minus_product]
        # m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
        # p -= lr (mu' m / (1 - Pi') + (1 - mu) g / (1 - Pi)) / (sqrt(v / bc2) + eps)
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            mj, vj = keras_moments(m[j], v[j], gj, w1, w2)
            m[j] = mj
            v[j] = vj
            m_hat = mj * mu_next / one_minus_product_next + gj * one_minus_mu / one_minus_product
            p[j] = pj - m_hat * lr / (np.sqrt(vj / bias_correction2) + eps)
    else:
        grad_scale, avg_scale = k[C.grad_scale], k[C.avg_scale]
        # m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;  r = sqrt(v / bc2) + eps
        # p -= lr (1 - mu) / (1 - Pi) g / r;  p -= lr mu' / (1 - Pi') m / r
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            mj, vj = torch_moments(m[j], v[j], gj, w1, one, beta2, w2)
            m[j] = mj
            v[j] = vj
            root = np.sqrt(vj / bias_correction2) + eps
            pj = pj + grad_scale * gj / root
            p[j] = pj + avg_scale * mj / root


KERNEL = fused_kernel(_nadam, "nadam")


def make_spec(
    momentum_schedule: Callable[[float, float, int], float],
    step_scalars: Callable[..., tuple[float, float, float, float]],
) -> KernelSpec:
    """The kernel, given the algorithm's momentum schedule mu_t = schedule(beta1, psi, t) and
    its per-step scalars (``nadam.step_scalars``: mu_t, mu_{t+1}, Pi_{t+1}, 1 - beta2^t).

    Both are the algorithm module's pure functions, passed in so that this kernel never imports
    the algorithm module (layers point one way)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("exp_avg", "exp_avg_sq"),
        coefficients=partial(_coefficients, momentum_schedule, step_scalars),
        flags=lambda group: Flags(*common_flags(group), keras=int(group["convention"] == "keras")),
        scalar_state=(STEP, ScalarState("mu_product", None, 1.0)),
        bytes_per_param=lambda group: 28,
    )


def _coefficients(
    schedule: Callable[[float, float, int], float],
    step_scalars: Callable[..., tuple[float, float, float, float]],
    group: dict[str, Any],
    scalars: dict[str, np.ndarray],
) -> Any:
    lr, eps, psi = group["lr"], group["eps"], group["momentum_decay"]
    beta1, beta2 = group["betas"]
    steps = advance_steps(scalars)
    products = scalars["mu_product"]
    # mu_product <- mu_product * mu_t, rounded to the product's dtype as the reference's mul_
    listed = steps.tolist()  # Python floats: cheaper than a NumPy comparison on a few values
    if listed.count(listed[0]) == len(listed):  # the usual case: the group's tensors in step
        products *= schedule(beta1, psi, int(listed[0]))
    else:
        mus = [schedule(beta1, psi, int(s)) for s in steps]
        products *= np.asarray(mus, dtype=products.dtype)

    def row(step: float, mu_product: float) -> tuple[float, ...]:
        mu, mu_next, mu_product_next, bias_correction2 = step_scalars(
            beta1, beta2, psi, int(step), mu_product
        )
        return Coefficients(
            *common_coefficients(group),
            **moment_coefficients(group["betas"]),
            eps=eps,
            lr=lr,
            bias_correction2=bias_correction2,
            grad_scale=-(lr * (1.0 - mu) / (1.0 - mu_product)),
            avg_scale=-(lr * mu_next / (1.0 - mu_product_next)),
            mu_next=mu_next,
            one_minus_product_next=1 - mu_product_next,
            one_minus_mu=1 - mu,
            one_minus_product=1 - mu_product,
        )

    return per_tensor_rows(row, steps, products)
