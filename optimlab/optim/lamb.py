r"""LAMB: Adam's direction, rescaled per tensor by a trust ratio ‖θ‖ / ‖update‖.

You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer & Hsieh (2020), "Large Batch
Optimization for Deep Learning: Training BERT in 76 minutes", ICLR.

.. math::

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

    \text{keras:}\quad r_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon},
    \qquad \theta_t = \theta_{t-1} - \eta\,\frac{\lVert\theta_{t-1}\rVert}{\lVert r_t\rVert}\, r_t

    \text{torch:}\quad r_t = \frac{m_t}{\sqrt{v_t} + \epsilon}, \qquad
    \theta_t = \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\,
    \frac{\min(\lVert\theta_{t-1}\rVert, 10)}{\lVert r_t\rVert + \epsilon}\, r_t

(the trust ratio is 1 when ‖θ‖ or ‖r‖ is 0).  Every tensor moves by about η‖θ‖ per step
whatever its gradient's scale: a layer-wise learning rate for large batches.

Convention notes
----------------
torch.optim has no LAMB.  ``convention="torch"`` is the ``pytorch-optimizer`` package's
``Lamb`` (its defaults: ``rectify``, ``adam``, ``pre_norm``, ``adanorm`` off; ``grad_averaging``
on); ``convention="keras"`` is ``keras.optimizers.Lamb``.  They differ in exactly three places
(1.9e-2 apart after 100 steps at lr 1e-3, eps 1e-6; docs/conventions.md):

1. **Second-moment bias correction.**  Keras divides v by 1 − β₂ᵗ before the root;
   pytorch-optimizer does not (it divides the step by 1 − β₁ᵗ only).  The first-moment
   correction cancels in Keras's trust ratio but not in pytorch-optimizer's step size.
2. **Weight-norm cap.**  pytorch-optimizer clamps ‖θ‖ at 10 in the trust ratio; Keras does not.
3. **ε in the trust ratio.**  pytorch-optimizer divides by ‖r‖ + ε; Keras by ‖r‖.

Defaults: lr 1e-3, betas (0.9, 0.999), weight_decay 0 in both; eps 1e-6 (pytorch-optimizer) or
1e-7 (Keras).  Weight decay is decoupled in both (θ ← θ(1 − ηλ) before ‖θ‖ is measured), so
``decoupled_weight_decay`` defaults to True; False adds λθ to the gradient (optimlab's L2).
pytorch-optimizer's ``weight_decouple=False`` (λθ added to r, the paper's form) is not offered.

State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), the package's names (it keeps ``step``
per group, not per tensor; its per-tensor ``weight_norm``/``adam_norm``/``trust_ratio``
diagnostics are not kept).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, scaled_sub_
from optimlab.optim.declaration import KERAS_DECAY, Convergence, OptimizerInfo, library_class
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE
from optimlab.optim.scalar_lr import check_scalar_lr

#: pytorch-optimizer's cap on ‖θ‖ in the trust ratio
WEIGHT_NORM_CAP = 10.0

_COMMON = {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0, "decoupled_weight_decay": True}


def trust_ratio(weight_norm: torch.Tensor, update_norm: torch.Tensor) -> torch.Tensor:
    """weight_norm / update_norm, or 1 where either norm is 0 (both conventions)."""
    usable = (weight_norm > 0) & (update_norm > 0)
    return torch.where(usable, weight_norm / update_norm, torch.ones_like(weight_norm))


class Lamb(Optimizer):
    """LAMB, as pytorch_optimizer.Lamb (``convention="torch"``) or keras.optimizers.Lamb."""

    name = "lamb"
    DEFAULTS = {"torch": {**_COMMON, "eps": 1e-6}, "keras": {**_COMMON, "eps": 1e-7}}
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE}
    STATE = ("step", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps}, weight_decay=weight_decay, **options
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_scalar_lr(type(self).__name__, group)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        eps, lr = group["eps"], group["lr"]
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        weight_norm = torch.linalg.vector_norm(param)
        if group["convention"] == "keras":
            # Keras's operations: m += (g − m)(1 − β₁), both moments bias-corrected
            exp_avg.add_((grad - exp_avg) * (1 - beta1))
            exp_avg_sq.add_((grad.square() - exp_avg_sq) * (1 - beta2))
            corrected = exp_avg / (1 - beta1**step)
            update = corrected / ((exp_avg_sq / (1 - beta2**step)).sqrt() + eps)
            ratio = trust_ratio(weight_norm, torch.linalg.vector_norm(update))
            scaled_sub_(param, update * ratio, lr)
            return
        # pytorch-optimizer's operations: no correction of v, ‖θ‖ capped, ε on ‖r‖ too
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = exp_avg / exp_avg_sq.sqrt().add_(eps)
        update_norm = torch.linalg.vector_norm(update)
        ratio = trust_ratio(weight_norm.clamp(max=WEIGHT_NORM_CAP), update_norm + eps)
        ratio = torch.where(update_norm > 0, ratio, torch.ones_like(ratio))
        scaled_sub_(param, update * ratio, lr / (1 - beta1**step))


LAMB_INFO = OptimizerInfo(
    name="lamb",
    cls=Lamb,
    title="LAMB",
    family="both",
    rule="r ← Adam's m/(√v + ε); θ ← θ − η·(‖θ‖/‖r‖)·r (a trust ratio per tensor)",
    torch_twin=None,  # torch.optim has no LAMB: pytorch_optimizer.Lamb, tests/test_modern_lamb.py
    keras_twin=library_class("keras.optimizers", "Lamb"),
    improves="both (Adam with a per-tensor trust ratio: large-batch training)",
    samples=({"weight_decay": 0.1}, {"maximize": True}, {"betas": (0.5, 0.9)}),
    keras_samples=(KERAS_DECAY, {"betas": (0.5, 0.9)}),
    convergence=Convergence(3e-3, (0.01, 3000, 0.1)),
    elementwise=False,
)

#: what this module registers
DECLARATIONS = (LAMB_INFO,)
