r"""RMSProp: a per-parameter step size from a moving average of squared gradients.

Tieleman & Hinton (2012), Coursera "Neural Networks for Machine Learning", lecture 6.5; the
centered variant is from Graves (2013), "Generating Sequences With Recurrent Neural Networks".
Unlike AdaGrad's ever-growing sum, the moving average forgets old gradients, so the step size
does not die out.

.. math::  v_t = \alpha v_{t-1} + (1 - \alpha) g_t^2, \qquad
           \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \ \text{(centered)}

Conventions
-----------
``convention="torch"`` (torch.optim.RMSprop), ε outside the root, momentum before the lr::

    d_t = g_t / (sqrt(v_t - [bar g_t^2]) + eps)
    b_t = mu b_{t-1} + d_t;   theta_t = theta_{t-1} - eta b_t      (momentum > 0)
    theta_t = theta_{t-1} - eta d_t                                (momentum = 0)

``convention="keras"`` (keras.optimizers.RMSprop, whose ``rho`` is this ``alpha``), ε inside the
root, momentum after the lr::

    d_t = eta g_t / sqrt(v_t - [bar g_t^2] + eps)
    b_t = mu b_{t-1} + d_t;   theta_t = theta_{t-1} - b_t

Defaults: torch lr 1e-2, alpha 0.99, eps 1e-8; Keras lr 1e-3, alpha 0.9, eps 1e-7.

Why two bodies: where ε goes would be a coefficient (optax's ``eps_root``), but the operations
around it differ too.  torch divides the raw gradient (``addcdiv_``) and applies η at the very
end, so its momentum buffer holds ``g / (sqrt(v) + eps)`` without η; Keras multiplies η into
the increment *before* the division and accumulates that, so its buffer is in parameter units
(η inside the velocity, as in Keras's SGD).  The averages round differently as well: torch's
``mul_`` + ``addcmul_`` (an fma) for v and ``lerp_`` for the centered mean, Keras's ``mul`` +
``add`` of ``(1 - alpha) g^2``.  One body with coefficients would give up bit-for-bit parity
with one of the two libraries.

Centered: the variance estimate v_t - bar g_t^2 is never negative in exact arithmetic, but
rounding can make it a tiny negative number (alpha = 0 makes it exactly g^2 - g^2), whose root
torch.optim and Keras turn into NaN parameters.  optimlab clamps it at 0 first; wherever torch
and Keras are finite the results are unchanged.

State: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from optimlab.optim.base import (
    CommonOptions,
    Optimizer,
    Params,
    kernel_factory,
    scaled_addcdiv_,
    scaled_sub_,
)
from optimlab.optim.declaration import (
    COMMON_SAMPLES,
    KERAS_DECAY,
    Convergence,
    OptimizerInfo,
    SampleRange,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE, UNIT_CLOSED


class RMSprop(Optimizer):
    """RMSProp, as torch.optim.RMSprop (or keras.optimizers.RMSprop with convention="keras")."""

    name = "rmsprop"
    DEFAULTS = {
        "torch": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False},
        "keras": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False},
    }
    RANGES = {"lr": NON_NEGATIVE, "alpha": UNIT_CLOSED, "eps": POSITIVE, "momentum": NON_NEGATIVE}
    FLAGS = ("centered",)
    STATE = ("step", "square_avg", "momentum_buffer", "grad_avg")
    STATE_DTYPES = ("float32", "bf16", "int8", "fp8")  # optimlab.optim.low_precision
    low_precision_kernel = staticmethod(kernel_factory("lowprec_rules", lambda k: k.RMSPROP))
    kernel = staticmethod(kernel_factory("rmsprop"))

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        alpha: float | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        momentum: float | None = None,
        centered: bool | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum, "centered": centered},
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
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(param)
        if momentum > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = torch.zeros_like(param)
        square_avg = state["square_avg"]

        if group["convention"] == "keras":
            square_avg.mul_(alpha).add_(grad * grad * (1 - alpha))
            if group["centered"]:
                grad_avg = state["grad_avg"]
                grad_avg.mul_(alpha).add_(grad * (1 - alpha))
                denominator = (square_avg - grad_avg * grad_avg).clamp_min_(0) + eps
            else:
                denominator = square_avg + eps
            increment = grad * lr / denominator.sqrt()
            if momentum > 0:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(increment)
                param.sub_(buf)
            else:
                param.sub_(increment)
            return

        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).clamp_min_(0).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg.add_(eps)
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf.mul_(momentum).addcdiv_(grad, avg)
            scaled_sub_(param, buf, lr)
        else:
            scaled_addcdiv_(param, grad, avg, lr)


RMSPROP_INFO = OptimizerInfo(
    name="rmsprop",
    preset="classic",
    cls=RMSprop,
    title="RMSProp",
    family="step size",
    rule="v ← α·v + (1−α)·g²; θ ← θ − η·g / (√v + ε)",
    torch_twin=library_class("torch.optim", "RMSprop"),
    keras_twin=library_class("keras.optimizers", "RMSprop"),
    improves="per-parameter step size (moving average of g²)",
    samples=(
        *COMMON_SAMPLES,
        {"centered": True},
        {"momentum": 0.9},
        {"momentum": 0.5, "centered": True},
    ),
    keras_samples=(
        {"centered": True},
        {"momentum": 0.9},
        {"momentum": 0.5, "centered": True},
        KERAS_DECAY,
    ),
    sample_ranges={"momentum": SampleRange(0.05, 0.99)},
    convergence=Convergence(0.003, (0.003, 3000, 0.1)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (RMSPROP_INFO,)
