r"""Adam: momentum on the direction and RMSProp on the step size, with bias correction.

Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", ICLR; AMSGrad from Reddi, Kale
& Kumar (2018), "On the Convergence of Adam and Beyond", ICLR; decoupled weight decay (AdamW) from
Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", ICLR.

.. math::

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \qquad
    (\text{AMSGrad: } v_t \leftarrow \max(\hat v_{t-1}, v_t))

Conventions (where ε goes)
--------------------------
``convention="torch"`` (torch.optim.Adam, Algorithm 1 of the paper), ε added to the
bias-corrected root::

    theta_t = theta_{t-1} - eta / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

``convention="keras"`` (keras.optimizers.Adam, the paper's "ε̂" form from section 2), the bias
correction folded into the step size and ε added to the raw root::

    theta_t = theta_{t-1} - eta sqrt(1 - beta2^t) / (1 - beta1^t) * m_t / (sqrt(v_t) + eps)

The two agree for ε → 0; with ε̂ = ε sqrt(1 - beta2^t) they are identical.  Defaults: lr 1e-3,
betas (0.9, 0.999) in both; eps 1e-8 (torch) or 1e-7 (Keras).

State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (AMSGrad).
"""

from __future__ import annotations

import math
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


def step_scalars(
    lr: float | torch.Tensor, beta1: float, beta2: float, step: int, keras: bool
) -> tuple[float | torch.Tensor, float]:
    """(step size, √(1 − β₂ᵗ)) of step t: the one place both the reference and the kernel get them.

    torch: η / (1 − β₁ᵗ) (ε then goes on √v / √(1 − β₂ᵗ)); Keras: η √(1 − β₂ᵗ) / (1 − β₁ᵗ), the
    bias correction folded into the step size (ε then goes on √v).  Computed in Python floats
    exactly as torch.optim and Keras do (`lr` may be a tensor in the reference rule).
    """
    bias_correction1 = 1 - beta1**step
    root_bias_correction2 = math.sqrt(1 - beta2**step)
    if keras:
        return lr * root_bias_correction2 / bias_correction1, root_bias_correction2
    return lr / bias_correction1, root_bias_correction2


class Adam(Optimizer):
    """Adam (AdamW with decoupled_weight_decay=True), as torch.optim.Adam or keras.optimizers.Adam."""

    name = "adam"
    DEFAULTS = {
        "torch": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False},
        "keras": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "amsgrad": False},
    }
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE}
    FLAGS = ("amsgrad",)
    STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    STATE_DTYPES = ("float32", "bf16", "int8", "fp8")  # optimlab.optim.low_precision
    kernel = staticmethod(kernel_factory("adam", lambda kernel: kernel.make_spec(step_scalars)))
    low_precision_kernel = staticmethod(kernel_factory("lowprec_adam", lambda kernel: kernel))

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        amsgrad: bool | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps, "amsgrad": amsgrad},
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
        eps = group["eps"]
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        keras = group["convention"] == "keras"
        step_size, root_bias_correction2 = step_scalars(group["lr"], beta1, beta2, step, keras)

        # Two bodies: the conventions differ in their operations, not only in a coefficient
        # (Keras: m += (g - m)(1 - β₁), torch: lerp; Keras: v += (g² - v)(1 - β₂), torch:
        # β₂v + (1 - β₂)g² as addcmul; each rounds differently, and parity is bit for bit).
        if keras:
            exp_avg.add_((grad - exp_avg) * (1 - beta1))
            exp_avg_sq.add_((grad * grad - exp_avg_sq) * (1 - beta2))
            second = exp_avg_sq
            if group["amsgrad"]:
                second = state["max_exp_avg_sq"]
                torch.maximum(second, exp_avg_sq, out=second)
            param.sub_(exp_avg * step_size / (second.sqrt() + eps))
            return

        exp_avg.lerp_(grad, 1 - beta1)
        if group.get("state_dtype", "float32") == "float32":
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:  # low-precision state: torchao's AdamW8bit op (lerp), so its codes match bit for bit
            exp_avg_sq.lerp_(grad * grad, 1 - beta2)
        second = exp_avg_sq
        if group["amsgrad"]:
            second = state["max_exp_avg_sq"]
            torch.maximum(second, exp_avg_sq, out=second)
        denom = (second.sqrt() / root_bias_correction2).add_(eps)
        scaled_addcdiv_(param, exp_avg, denom, step_size)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, as torch.optim.AdamW or keras.optimizers.AdamW.

    The rule is Adam's with ``decoupled_weight_decay=True`` (p <- p (1 - lr wd) before the Adam
    step); only the defaults differ: weight_decay 1e-2 (torch.optim.AdamW) or 4e-3
    (keras.optimizers.AdamW, whose eps is 1e-7).
    """

    name = "adamw"
    DEFAULTS = {
        "torch": {**Adam.DEFAULTS["torch"], "weight_decay": 1e-2, "decoupled_weight_decay": True},
        "keras": {**Adam.DEFAULTS["keras"], "weight_decay": 4e-3, "decoupled_weight_decay": True},
    }

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float | None = None,
        amsgrad: bool | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **options)  # type: ignore[arg-type]


ADAM_INFO = OptimizerInfo(
    name="adam",
    preset="classic",
    cls=Adam,
    title="Adam",
    family="both",
    rule="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − η·m̂ / (√v̂ + ε)",
    torch_twin=library_class("torch.optim", "Adam"),
    keras_twin=library_class("keras.optimizers", "Adam"),
    improves="both (momentum + RMSProp, bias-corrected)",
    samples=(*COMMON_SAMPLES, {"amsgrad": True}, KERAS_DECAY, {"betas": (0.5, 0.9)}),
    keras_samples=({"amsgrad": True}, KERAS_DECAY, {"betas": (0.5, 0.9)}),
    convergence=Convergence(0.05, (0.03, 2000, 0.05)),
)

ADAMW_INFO = OptimizerInfo(
    name="adamw",
    cls=AdamW,
    title="AdamW",
    family="both",
    rule="θ ← θ·(1 − η·λ), then Adam's step (decoupled weight decay λ)",
    torch_twin=library_class("torch.optim", "AdamW"),
    keras_twin=library_class("keras.optimizers", "AdamW"),
    improves="both (Adam + decoupled weight decay)",
    samples=({"maximize": True}, {"amsgrad": True}, {"weight_decay": 0.1}),
    keras_samples=({"amsgrad": True}, {"weight_decay": 0.1}),
    convergence=Convergence(0.05, (0.03, 2000, 0.1)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (ADAM_INFO, ADAMW_INFO)
