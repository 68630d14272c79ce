r"""AdEMAMix: Adam whose numerator mixes a fast and a very slow momentum.

Pagliardini, Ablin & Grangier (2025), "The AdEMAMix Optimizer: Better, Faster, Older", ICLR
(arXiv:2409.03137).  The rule is ``pytorch_optimizer.AdEMAMix``'s (the reference named by the
issue), operation for operation::

    m₁ ← β₁ m₁ + (1 − β₁) g                    (exp_avg, the fast momentum)
    v  ← β₂ v  + (1 − β₂) g²                   (exp_avg_sq)
    m₂ ← β₃(t) m₂ + (1 − β₃(t)) g              (exp_avg_slow, no bias correction)
    θ  ← θ − η · (m₁/(1 − β₁ᵗ) + α(t) m₂) / (√v / √(1 − β₂ᵗ) + ε)

With ``t_alpha_beta3 = T`` (the paper's T_{α,β₃}; None: no warm-up) α and β₃ warm up::

    α(t)  = min(t α / T, α)
    β₃(t) = min(exp(ln β₁ ln β₃ / ((1 − t/T) ln β₃ + (t/T) ln β₁)), β₃)

β₃(t) grows from β₁ to β₃ linearly in the *half-life* 1/ln β, as the paper prescribes.

Convention notes
----------------
* Weight decay: L2 added to the gradient by default (the reference's ``weight_decouple=False``,
  optimlab's ``decoupled_weight_decay=False``); ``weight_decouple=True`` (=
  ``decoupled_weight_decay=True``) shrinks θ ← θ(1 − ηλ) first, and with ``fixed_decay=True``
  θ ← θ(1 − λ) (not scaled by η).
* The paper's defaults are (β₁, β₂, β₃) = (0.9, 0.999, 0.9999), α = 5 — the reference's too,
  with ``t_alpha_beta3`` None (the paper recommends T = the training length).
* No Keras AdEMAMix: ``convention="keras"`` runs the same rule with the same defaults.
* pytorch-optimizer also negates (``maximize``) and decays (L2) the user's ``p.grad`` in place;
  optimlab leaves ``p.grad`` as it was.

State: ``step``, ``exp_avg``, ``exp_avg_sq``, ``exp_avg_slow`` — the reference's names, so its
state_dicts load (its group step count becomes each parameter's ``step``).
"""

from __future__ import annotations

import math
from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, scaled_addcdiv_
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.group_steps import (
    adopt_group_steps,
    check_three_betas,
    merge_weight_decouple,
    renamed_group_options,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE, _fail, check_number

_DEFAULTS = {
    "lr": 1e-3,
    "betas": (0.9, 0.999, 0.9999),
    "alpha": 5.0,
    "t_alpha_beta3": None,
    "eps": 1e-8,
    "fixed_decay": False,
}
#: pytorch-optimizer's group option names -> optimlab's
RENAMES = {"weight_decouple": "decoupled_weight_decay"}


def schedule_alpha(alpha: float, t_alpha_beta3: float | None, step: int) -> float:
    """α(t) = min(t α / T, α); α without warm-up (T None)."""
    return alpha if t_alpha_beta3 is None else min(step * alpha / t_alpha_beta3, alpha)


def schedule_beta3(beta1: float, beta3: float, t_alpha_beta3: float | None, step: int) -> float:
    """β₃(t), from β₁ to β₃ linearly in half-life over T steps; β₃ without warm-up."""
    if t_alpha_beta3 is None:
        return beta3
    log_beta1, log_beta3 = math.log(beta1), math.log(beta3)
    fraction = step / t_alpha_beta3
    mixed = (1.0 - fraction) * log_beta3 + fraction * log_beta1
    return min(math.exp(log_beta1 * log_beta3 / mixed), beta3)


def step_scalars(
    betas: tuple[float, float, float], alpha: float, t_alpha_beta3: float | None, step: int
) -> tuple[float, float, float, float]:
    """The per-step scalars at `step` (1-based): (1 − β₁ᵗ, √(1 − β₂ᵗ), α(t), β₃(t))."""
    beta1, beta2, beta3 = betas
    return (
        1.0 - math.pow(beta1, step),
        math.sqrt(1.0 - math.pow(beta2, step)),
        schedule_alpha(alpha, t_alpha_beta3, step),
        schedule_beta3(beta1, beta3, t_alpha_beta3, step),
    )


class AdEMAMix(Optimizer):
    """AdEMAMix (a mixture of two EMAs), as pytorch_optimizer.AdEMAMix."""

    name = "ademamix"
    DEFAULTS = {"torch": dict(_DEFAULTS), "keras": dict(_DEFAULTS)}
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE, "alpha": NON_NEGATIVE}
    FLAGS = ("fixed_decay",)
    STATE = ("step", "exp_avg", "exp_avg_sq", "exp_avg_slow")

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float, float] | None = None,
        weight_decay: float = 0.0,
        weight_decouple: bool | None = None,
        fixed_decay: bool | None = None,
        alpha: float | None = None,
        t_alpha_beta3: float | None = None,
        eps: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        merge_weight_decouple("AdEMAMix", weight_decouple, options)
        hyperparameters = {"lr": lr, "betas": betas, "alpha": alpha, "eps": eps}
        hyperparameters.update(fixed_decay=fixed_decay, t_alpha_beta3=t_alpha_beta3)
        super().__init__(params, hyperparameters, weight_decay=weight_decay, **options)

    def _validate_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_three_betas(owner, group["betas"])
        super()._validate_group({**group, "betas": tuple(group["betas"][:2])})
        horizon = group["t_alpha_beta3"]
        if horizon is not None:
            check_number(owner, "t_alpha_beta3", horizon, POSITIVE)
            if group["betas"][0] == 0:
                raise _fail(
                    owner,
                    "betas[0]",
                    0.0,
                    "in (0, 1) with t_alpha_beta3 (β₃'s warm-up starts from β₁ and takes its log)",
                )

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if group["fixed_decay"] and group["decoupled_weight_decay"] and group["weight_decay"]:
            # θ ← θ(1 − λ), not scaled by η: the rule applies it (first thing, as the base would)
            fixed = {**group, "weight_decay": 0.0, "fixed_decay_rate": group["weight_decay"]}
            super()._reference_step(param, grad, state, fixed)
        else:
            super()._reference_step(param, grad, state, group)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        fixed_decay_rate = group.get("fixed_decay_rate", 0.0)
        if fixed_decay_rate:
            param.mul_(1.0 - fixed_decay_rate)
        beta1, beta2, _ = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            state["exp_avg_slow"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq, exp_avg_slow = (
            state["exp_avg"],
            state["exp_avg_sq"],
            state["exp_avg_slow"],
        )
        bias_correction1, bias_correction2_sqrt, alpha, beta3 = step_scalars(
            group["betas"], group["alpha"], group["t_alpha_beta3"], step
        )
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        exp_avg_slow.lerp_(grad, 1.0 - beta3)
        denominator = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(group["eps"])
        update = exp_avg.div(bias_correction1).add_(exp_avg_slow, alpha=alpha)
        scaled_addcdiv_(param, update, denominator, group["lr"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an optimlab or a ``pytorch_optimizer.AdEMAMix`` state_dict (its group step
        count becomes each parameter's ``step``; ``weight_decouple`` is
        ``decoupled_weight_decay``)."""
        state_dict = renamed_group_options(state_dict, RENAMES)
        super().load_state_dict(state_dict)
        adopt_group_steps(self, state_dict)


ADEMAMIX_INFO = OptimizerInfo(
    name="ademamix",
    cls=AdEMAMix,
    title="AdEMAMix",
    family="both",
    rule="Adam's m̂, v plus a slow EMA m₂ (β₃); θ ← θ − η·(m̂ + α·m₂)/(√v̂ + ε)",
    improves="both (Adam whose numerator adds a very slow momentum that keeps old gradients)",
    samples=(
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"weight_decay": 0.01, "decoupled_weight_decay": True, "fixed_decay": True},
        {"maximize": True},
        {"t_alpha_beta3": 50.0},
    ),
    # coarse grid 1e-3..1: the slow EMA (β₃ 0.9999, α 5) wants large steps on the quadratic
    convergence=Convergence(0.1, (0.03, 5000, 0.05)),
)

#: what this module registers
DECLARATIONS = (ADEMAMIX_INFO,)
