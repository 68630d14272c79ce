r"""Adan: Adam-style steps with a Nesterov momentum estimated from gradient differences.

Xie, Zhou, Li, Lin & Yan (2024), "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models", IEEE TPAMI (arXiv:2208.06677).  The rule is ``pytorch_optimizer.Adan``'s (the
reference named by the issue), operation for operation.

With the gradient difference :math:`\Delta_k = g_k - g_{k-1}` (:math:`\Delta_1 = 0`)::

    m_k = β₁ m_{k−1} + (1 − β₁) g_k                              (exp_avg)
    d_k = β₂ d_{k−1} + (1 − β₂) Δ_k                              (exp_avg_diff)
    n_k = β₃ n_{k−1} + (1 − β₃) (g_k + β₂ Δ_k)²                  (exp_avg_sq)
    u   = √n_k / √(1 − β₃ᵏ) + ε
    θ   ← θ − η/(1 − β₁ᵏ) · m_k / u − η β₂/(1 − β₂ᵏ) · d_k / u
    θ   ← θ / (1 + η λ)                                           (weight decay, the paper's)

Convention notes
----------------
* **Weight decay is Adan's proximal step** θ ← θ/(1 + ηλ) *after* the update (the paper's
  Algorithm 1), not L2 added to the gradient: optimlab's shared ``decoupled_weight_decay=False``
  means this here.  ``weight_decouple=True`` (pytorch-optimizer's name; the same as optimlab's
  ``decoupled_weight_decay=True``) shrinks θ ← θ(1 − ηλ) *before* the update, as AdamW.
* ``max_grad_norm > 0`` scales every gradient by min(1, max_grad_norm / (‖g‖ + ε)), ‖g‖ the
  norm over *all* groups (one clip per step; the constructor's ``max_grad_norm`` and ``eps``, as
  the reference).  pytorch-optimizer computes that norm in float32 even for float64 gradients;
  optimlab in the gradients' dtype (a relative difference of about 1e-8 in the clip factor).
* ``maximize``: pytorch-optimizer records the previous gradient *before* negating it, so with
  ``maximize=True`` its first gradient difference is −2g₁ instead of 0 (docs/conventions.md has a
  reproduction); optimlab's first difference is always 0.  Both also negate and scale the
  user's ``p.grad`` in place; optimlab leaves ``p.grad`` as it was.
* No Keras Adan: ``convention="keras"`` runs the same rule with the same defaults (lr 1e-3, betas
  (0.98, 0.92, 0.99), eps 1e-8, weight_decay 0).

State: ``step``, ``exp_avg``, ``exp_avg_diff``, ``exp_avg_sq`` and ``previous_grad`` (holding
−g_{k−1}, as pytorch-optimizer stores it), so the reference's state_dicts load (its group step count
becomes each parameter's ``step``).
"""

from __future__ import annotations

import math
from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, _all_finite, scaled_addcdiv_
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.group_steps import (
    adopt_group_steps,
    check_three_betas,
    merge_weight_decouple,
    renamed_group_options,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE

_DEFAULTS = {"lr": 1e-3, "betas": (0.98, 0.92, 0.99), "eps": 1e-8, "max_grad_norm": 0.0}
#: pytorch-optimizer's group option names -> optimlab's
RENAMES = {"weight_decouple": "decoupled_weight_decay"}


def step_scalars(
    lr: float | torch.Tensor, betas: tuple[float, float, float], step: int
) -> tuple[Any, Any, float]:
    """The per-step scalars at `step` (1-based): (η/(1 − β₁ᵏ), η β₂/(1 − β₂ᵏ), √(1 − β₃ᵏ))."""
    beta1, beta2, beta3 = betas
    step_size = lr / (1.0 - math.pow(beta1, step))
    diff_step_size = lr * beta2 / (1.0 - math.pow(beta2, step))
    return step_size, diff_step_size, math.sqrt(1.0 - math.pow(beta3, step))


class Adan(Optimizer):
    """Adan (adaptive Nesterov momentum), as pytorch_optimizer.Adan."""

    name = "adan"
    DEFAULTS = {"torch": dict(_DEFAULTS), "keras": dict(_DEFAULTS)}
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE, "max_grad_norm": NON_NEGATIVE}
    STATE = ("step", "exp_avg", "exp_avg_diff", "exp_avg_sq", "previous_grad")

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float, float] | None = None,
        weight_decay: float = 0.0,
        weight_decouple: bool | None = None,
        max_grad_norm: float | None = None,
        eps: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        merge_weight_decouple("Adan", weight_decouple, options)
        #: the clip factor of the step in progress (1: no clipping)
        self._clip: float | torch.Tensor = 1.0
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps, "max_grad_norm": max_grad_norm},
            weight_decay=weight_decay,
            **options,
        )

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_three_betas(type(self).__name__, group["betas"])
        super()._validate_group({**group, "betas": tuple(group["betas"][:2])})

    @torch.no_grad()
    def step(self, closure: Any = None) -> float | None:  # type: ignore[override]
        """One Adan step; with ``max_grad_norm > 0``, every gradient is first clipped by the
        global norm over all groups."""
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            closure = None
        else:
            loss = None
        self._clip = self._global_clip()
        try:
            super().step()
        finally:
            self._clip = 1.0
        return loss

    def _global_clip(self) -> float | torch.Tensor:
        max_grad_norm = self.defaults["max_grad_norm"]
        if max_grad_norm == 0:
            return 1.0
        grads = []
        for group in self.param_groups:
            mine = [p.grad for p in group["params"] if p.grad is not None]
            # a group that nonfinite="skip" will skip must not turn the others' clip into NaN
            if mine and (group["nonfinite"] != "skip" or _all_finite(mine)):
                grads.extend(mine)
        if not grads:
            return 1.0
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return torch.clamp(max_grad_norm / (norm + self.defaults["eps"]), max=1.0)

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        if isinstance(self._clip, torch.Tensor) or self._clip != 1.0:
            grad = grad * self._clip
        if group["decoupled_weight_decay"] or group["weight_decay"] == 0:
            super()._reference_step(param, grad, state, group)
        else:  # Adan's proximal decay, applied by the rule after the update (not L2)
            proximal = {**group, "weight_decay": 0.0, "proximal_decay": group["weight_decay"]}
            super()._reference_step(param, grad, state, proximal)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        beta1, beta2, beta3 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            state["exp_avg_diff"] = torch.zeros_like(param)
            state["previous_grad"] = grad.neg()  # so that the first difference is 0
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg_diff, previous_grad = state["exp_avg_diff"], state["previous_grad"]
        step_size, diff_step_size, bias_correction3_sqrt = step_scalars(
            group["lr"], group["betas"], step
        )
        grad_diff = previous_grad.add(grad)  # Δ = g − g_prev (previous_grad holds −g_prev)
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_diff.lerp_(grad_diff, 1.0 - beta2)
        grad_diff.mul_(beta2).add_(grad)  # g + β₂Δ
        exp_avg_sq.mul_(beta3).addcmul_(grad_diff, grad_diff, value=1.0 - beta3)
        denominator = exp_avg_sq.sqrt().div_(bias_correction3_sqrt).add_(group["eps"])
        scaled_addcdiv_(param, exp_avg, denominator, step_size)
        scaled_addcdiv_(param, exp_avg_diff, denominator, diff_step_size)
        proximal = group.get("proximal_decay", 0.0)
        if proximal:
            lr = group["lr"]
            param.div_(1.0 + lr * proximal)
        torch.neg(grad, out=previous_grad)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an optimlab or a ``pytorch_optimizer.Adan`` state_dict (its group step count
        becomes each parameter's ``step``; its ``weight_decouple`` is ``decoupled_weight_decay``)."""
        state_dict = renamed_group_options(state_dict, RENAMES)
        super().load_state_dict(state_dict)
        adopt_group_steps(self, state_dict)


ADAN_INFO = OptimizerInfo(
    name="adan",
    cls=Adan,
    title="Adan",
    family="both",
    rule="m, d (of Δg), n (of (g+β₂Δg)²); θ ← θ − η·(m̂ + β₂d̂)/(√n̂ + ε); θ ← θ/(1+ηλ)",
    improves="both (Nesterov momentum from gradient differences, Adam-style step size)",
    samples=(
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"maximize": True},
        {"max_grad_norm": 0.5},
    ),
    convergence=Convergence(0.01, (0.01, 2000, 0.05)),  # from a coarse grid 1e-3..1
)

#: what this module registers
DECLARATIONS = (ADAN_INFO,)
