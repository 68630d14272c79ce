r"""NAdam: Adam with Nesterov momentum.

Dozat (2016), "Incorporating Nesterov Momentum into Adam", ICLR workshop.  The momentum
coefficient follows a warm-up schedule, and the update looks ahead by using the next step's
momentum on m_t:

.. math::

    \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{t \psi}\right), \qquad
    \Pi_t = \prod_{i \le t} \mu_i

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
    \hat v_t = v_t / (1 - \beta_2^t)

    \theta_t = \theta_{t-1} - \eta \left( \frac{(1 - \mu_t)\, g_t}{1 - \Pi_t}
             + \frac{\mu_{t+1}\, m_t}{1 - \Pi_t \mu_{t+1}} \right) \Big/ \left(\sqrt{\hat v_t} + \epsilon\right)

Conventions
-----------
Both torch.optim.NAdam and keras.optimizers.Nadam compute this rule with ε added to the
bias-corrected root.  They differ in the momentum schedule: torch uses the paper's
``psi = momentum_decay = 0.004`` (i.e. 0.96^(t/250)), Keras hard-codes 0.96^t, which is
``momentum_decay = 1`` here and is the default under ``convention="keras"``.  Defaults: torch
lr 2e-3, eps 1e-8; Keras lr 1e-3, eps 1e-7; betas (0.9, 0.999).

Why two bodies, though the rule and the scalars (:func:`step_scalars`, shared with the kernel)
are one: the operations that apply it differ.  torch updates the moments with ``lerp_`` and
``mul_`` + ``addcmul_`` (Keras: ``m += (g - m)(1 - beta1)``, ``v += (g^2 - v)(1 - beta2)``),
and takes the step as two ``addcdiv_`` calls, one for the gradient term and one for the
momentum term, each dividing by ``sqrt(v / (1 - beta2^t)) + eps``; Keras builds the combined
``m_hat`` as a tensor and takes one step ``m_hat * lr / (sqrt(v_hat) + eps)``.  Each sequence
rounds its own way, and each body matches its library bit for bit.

Precision of Π_t: torch.optim keeps ``mu_product`` in a 0-dim tensor of its scalar dtype (float32,
or float64 when the default dtype is float64) and rounds the running product to it every step.
optimlab does the same for float32 and half-precision parameters, in the reference rule and in the
fused kernel, so both reproduce torch.optim bit for bit under torch's default dtype; for float64
parameters it keeps Π_t in float64 whatever the default dtype (torch.optim would round it to
float32 unless the default dtype is float64: a relative 1e-7 in one factor of a float64 step).  A
state_dict restores the product in the dtype it was saved in (torch.optim casts it to the
parameter's dtype on load, so its resumed runs can drift from uninterrupted ones).

State: ``step``, ``mu_product``, ``exp_avg`` (m), ``exp_avg_sq`` (v).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Unpack

import torch

from optimlab.optim.base import (
    CommonOptions,
    Optimizer,
    Params,
    as_float,
    kernel_factory,
    scalar_dtype,
    scaled_addcdiv_,
    state_dtype,
)
from optimlab.optim.declaration import (
    COMMON_SAMPLES,
    KERAS_DECAY,
    Convergence,
    OptimizerInfo,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE


class StepScalars(NamedTuple):
    """The scalars of step t, given Π_t (the running product, as stored)."""

    mu: float  # μ_t
    mu_next: float  # μ_{t+1}
    mu_product_next: float  # Π_{t+1} = Π_t μ_{t+1}
    bias_correction2: float  # 1 − β₂ᵗ


def step_scalars(
    beta1: float, beta2: float, momentum_decay: float, step: int, mu_product: float
) -> StepScalars:
    """μ_t, μ_{t+1}, Π_{t+1} and 1 − β₂ᵗ: the one place the reference and the kernel get them."""
    mu_next = NAdam.momentum_schedule(beta1, momentum_decay, step + 1)
    return StepScalars(
        mu=NAdam.momentum_schedule(beta1, momentum_decay, step),
        mu_next=mu_next,
        mu_product_next=mu_product * mu_next,
        bias_correction2=1 - beta2**step,
    )


class NAdam(Optimizer):
    """NAdam, as torch.optim.NAdam (or keras.optimizers.Nadam with convention="keras")."""

    name = "nadam"
    DEFAULTS = {
        "torch": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "momentum_decay": 4e-3},
        "keras": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "momentum_decay": 1.0},
    }
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE, "momentum_decay": NON_NEGATIVE}
    STATE = ("step", "mu_product", "exp_avg", "exp_avg_sq")
    STATE_DTYPES = ("float32", "bf16", "int8", "fp8")  # optimlab.optim.low_precision
    low_precision_kernel = staticmethod(kernel_factory("lowprec_rules", lambda k: k.NADAM))
    kernel = staticmethod(
        kernel_factory(
            "nadam", lambda kernel: kernel.make_spec(NAdam.momentum_schedule, step_scalars)
        )
    )

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        momentum_decay: float | None = None,
        decoupled_weight_decay: bool = False,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps, "momentum_decay": momentum_decay},
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            **options,
        )

    @staticmethod
    def momentum_schedule(beta1: float, momentum_decay: float, step: int) -> float:
        """mu_t = beta1 (1 - 0.5 * 0.96^(t psi))."""
        return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        lr, eps, psi = group["lr"], group["eps"], group["momentum_decay"]
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            # torch.optim's scalar dtype, widened to float64 for float64 parameters (see above)
            dtype = torch.promote_types(scalar_dtype(), state_dtype(param))
            state["mu_product"] = torch.tensor(1.0, dtype=dtype)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        # Pi_t = Pi_{t-1} mu_t, rounded to the tensor's dtype as torch.optim's `mu_product *= mu`
        mu_product = as_float(state["mu_product"].mul_(NAdam.momentum_schedule(beta1, psi, step)))
        mu, mu_next, mu_product_next, bias_correction2 = step_scalars(
            beta1, beta2, psi, step, mu_product
        )

        if group["convention"] == "keras":
            exp_avg.add_((grad - exp_avg) * (1 - beta1))
            exp_avg_sq.add_((grad * grad - exp_avg_sq) * (1 - beta2))
            m_hat = exp_avg * mu_next / (1 - mu_product_next) + grad * (1 - mu) / (1 - mu_product)
            v_hat = exp_avg_sq / bias_correction2
            param.sub_(m_hat * lr / (v_hat.sqrt() + eps))
            return

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
        scaled_addcdiv_(param, grad, denom, lr * (1.0 - mu) / (1.0 - mu_product))
        scaled_addcdiv_(param, exp_avg, denom, lr * mu_next / (1.0 - mu_product_next))


NADAM_INFO = OptimizerInfo(
    name="nadam",
    preset="classic",
    cls=NAdam,
    title="NAdam",
    family="both",
    rule="Adam with Nesterov momentum: θ ← θ − η·(μₜ₊₁m̂ + (1−μₜ)ĝ) / (√v̂ + ε)",
    torch_twin=library_class("torch.optim", "NAdam"),
    keras_twin=library_class("keras.optimizers", "Nadam"),
    improves="both (Adam + Nesterov)",
    samples=(*COMMON_SAMPLES, {"momentum_decay": 0.1}, KERAS_DECAY),
    keras_samples=({"betas": (0.5, 0.9)}, KERAS_DECAY),
    convergence=Convergence(0.03, (0.01, 3000, 0.05)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (NADAM_INFO,)
