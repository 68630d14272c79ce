r"""AdaMax: Adam with the infinity norm in place of the root mean square.

Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR, section 7.1.  The second
moment becomes an exponentially weighted maximum of gradient magnitudes, which needs no bias
correction:

.. math::  m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
           \theta_t = \theta_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{u_t}

Conventions (where ε goes)
--------------------------
``convention="torch"`` (torch.optim.Adamax), ε inside the maximum::

    u_t = max(beta2 u_{t-1}, |g_t| + eps)
    theta_t = theta_{t-1} - eta / (1 - beta1^t) * m_t / u_t

``convention="keras"`` (keras.optimizers.Adamax), ε added to the maximum::

    u_t = max(beta2 u_{t-1}, |g_t|)
    theta_t = theta_{t-1} - eta m_t / ((1 - beta1^t) (u_t + eps))

Defaults: torch lr 2e-3 (the paper's), eps 1e-8; Keras lr 1e-3, eps 1e-7; betas (0.9, 0.999).

Why two bodies: ε is not a coefficient at the step here, it changes the *state*.  torch puts ε
inside the maximum, so u stores ``max(beta2 u, |g| + eps)`` (ε is carried from step to step),
Keras keeps ``u = max(beta2 u, |g|)`` and adds ε only in the denominator of the step; the two
``exp_inf`` differ and so do their state_dicts.  The first moment is also computed by other
operations (torch's ``lerp_``, Keras's ``m += (g - m)(1 - beta1)``), and the step divides by
``u`` with the bias correction folded into the lr (torch) or multiplies it into the
denominator (Keras).

State: ``step``, ``exp_avg`` (m), ``exp_inf`` (u).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, kernel_factory, scaled_addcdiv_
from optimlab.optim.declaration import (
    COMMON_SAMPLES,
    KERAS_DECAY,
    Convergence,
    OptimizerInfo,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE


def bias_correction(beta1: float, step: int) -> float:
    """1 − β₁ᵗ: the first moment's bias correction, for the reference and the kernel."""
    return 1 - beta1**step


class Adamax(Optimizer):
    """AdaMax, as torch.optim.Adamax (or keras.optimizers.Adamax with convention="keras")."""

    name = "adamax"
    DEFAULTS = {
        "torch": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8},
        "keras": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7},
    }
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE}
    STATE = ("step", "exp_avg", "exp_inf")
    STATE_DTYPES = ("float32", "bf16", "int8", "fp8")  # optimlab.optim.low_precision
    low_precision_kernel = staticmethod(kernel_factory("lowprec_rules", lambda k: k.ADAMAX))
    kernel = staticmethod(
        kernel_factory("adamax", lambda kernel: kernel.make_spec(bias_correction))
    )

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps},
            weight_decay=weight_decay,
            **options,
        )

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_inf"] = torch.zeros_like(param)
        exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
        correction = bias_correction(beta1, step)

        if group["convention"] == "keras":
            exp_avg.add_((grad - exp_avg) * (1 - beta1))
            torch.maximum(exp_inf.mul_(beta2), grad.abs(), out=exp_inf)
            param.sub_(exp_avg * lr / ((exp_inf + eps) * correction))
            return

        exp_avg.lerp_(grad, 1 - beta1)
        torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)
        scaled_addcdiv_(param, exp_avg, exp_inf, lr / correction)


ADAMAX_INFO = OptimizerInfo(
    name="adamax",
    preset="classic",
    cls=Adamax,
    title="AdaMax",
    family="both",
    rule="m ← β₁m + (1−β₁)g; u ← max(β₂u, |g| + ε); θ ← θ − η/(1−β₁ᵗ)·m / u",
    torch_twin=library_class("torch.optim", "Adamax"),
    keras_twin=library_class("keras.optimizers", "Adamax"),
    improves="both (infinity norm)",
    samples=(*COMMON_SAMPLES, {"betas": (0.5, 0.9)}),
    keras_samples=({"betas": (0.5, 0.9)}, KERAS_DECAY),
    convergence=Convergence(0.05, (0.1, 2000, 0.1)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (ADAMAX_INFO,)
