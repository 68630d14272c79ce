r"""RAdam: Adam whose adaptive step is switched on only once its variance is tractable.

Liu, Jiang, He, Chen, Liu, Gao & Han (2020), "On the Variance of the Adaptive Learning Rate and
Beyond", ICLR.  Decoupled weight decay (``decoupled_weight_decay=True``, as torch.optim.RAdam) from
Loshchilov & Hutter (2019).

.. math::

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad
    \hat m_t = m_t / (1 - \beta_1^t)

    \rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}

    \theta_t = \theta_{t-1} - \eta\, \hat m_t \cdot
    \begin{cases}
      r_t \, \sqrt{1 - \beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
      1 & \text{otherwise (plain momentum SGD)}
    \end{cases}
    \qquad r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                             {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}

Convention notes
----------------
The rule is torch.optim.RAdam's, operation for operation: ε is added to the *raw* root
:math:`\sqrt{v_t}` and the bias correction :math:`\sqrt{1-\beta_2^t}` multiplies afterwards (the
paper's Algorithm 2 writes :math:`\sqrt{v_t/(1-\beta_2^t)}` without ε); the threshold is
:math:`\rho_t > 5` (the paper: 4).  With the default β₂ = 0.999 the first five steps are momentum
SGD steps of size η·m̂.  Weight decay is L2 (added to the gradient) unless
``decoupled_weight_decay=True`` (p ← p·(1 − η·λ) first, as AdamW).  Keras has no RAdam:
``convention="keras"`` runs the same rule with the same defaults (lr 1e-3, betas (0.9, 0.999),
eps 1e-8).

State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v) — torch.optim.RAdam's names, so its
state_dicts load.

Fused kernel: ``optimlab.optim.kernels.radam`` (28 bytes per float32 parameter); 1 − β₁ᵗ,
√(1 − β₂ᵗ) and r_t come from :func:`step_scalars`, shared with the reference rule.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params
from optimlab.optim.declaration import COMMON_SAMPLES, Convergence, OptimizerInfo, library_class
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE

_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}

#: the length of the approximated simple moving average above which the adaptive step is used
RHO_THRESHOLD = 5.0


def rectification(beta2: float, step: int) -> float | None:
    """The variance rectification r_t at `step`, or None while ρ_t ≤ 5 (no adaptive step yet)."""
    bias_correction2 = 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    if rho_t <= RHO_THRESHOLD:
        return None
    return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5


class StepScalars(NamedTuple):
    """The scalars of step t."""

    bias_correction1: float  # 1 − β₁ᵗ
    root_bias_correction2: float  # √(1 − β₂ᵗ)
    rectification: float | None  # r_t, or None while ρ_t ≤ 5 (a momentum SGD step)


def step_scalars(beta1: float, beta2: float, step: int) -> StepScalars:
    """1 − β₁ᵗ, √(1 − β₂ᵗ) and r_t: the one place the reference and the kernel get them."""
    return StepScalars(
        bias_correction1=1 - beta1**step,
        root_bias_correction2=(1 - beta2**step) ** 0.5,
        rectification=rectification(beta2, step),
    )


@functools.cache  # one dict lookup per step instead of an import statement
def _kernel() -> Any:
    """The fused kernel (optimlab.optim.kernels.radam), imported on first use; it takes the
    per-step scalars from here (the kernel never imports this module)."""
    from optimlab.optim.kernels import radam as kernel

    return kernel.make_spec(step_scalars)


class RAdam(Optimizer):
    """Rectified Adam, as torch.optim.RAdam (``decoupled_weight_decay`` included)."""

    name = "radam"
    DEFAULTS = {"torch": dict(_DEFAULTS), "keras": dict(_DEFAULTS)}
    RANGES = {
        "lr": NON_NEGATIVE,
        "eps": POSITIVE,
    }  # torch allows 0 (then 0/0 on a zero gradient); as Adam
    STATE = ("step", "exp_avg", "exp_avg_sq")
    kernel = staticmethod(_kernel)

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "betas": betas, "eps": eps},
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
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
            state["exp_avg_sq"] = torch.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1, root_bias_correction2, rect = step_scalars(beta1, beta2, step)
        # torch's order of operations (so float64 results agree bit for bit)
        bias_corrected_exp_avg = exp_avg / bias_correction1
        if rect is None:
            param.add_(bias_corrected_exp_avg * lr, alpha=-1.0)
            return
        adaptive_lr = root_bias_correction2 / exp_avg_sq.sqrt().add_(eps)
        param.add_(bias_corrected_exp_avg * lr * adaptive_lr * rect, alpha=-1.0)


RADAM_INFO = OptimizerInfo(
    name="radam",
    cls=RAdam,
    title="RAdam",
    family="both",
    rule="Adam's m̂, v; θ ← θ − η·m̂·r_t·√(1−β₂ᵗ)/(√v + ε) once ρ_t > 5, else θ ← θ − η·m̂",
    torch_twin=library_class("torch.optim", "RAdam"),
    improves="both (Adam with the early, high-variance adaptive steps rectified)",
    samples=(
        *COMMON_SAMPLES,
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"betas": (0.5, 0.9)},
    ),
    # Rosenbrock: the first five steps are momentum SGD steps of η·m̂ (gradient ≈ 155 at the
    # start), so η must be small: 0.015 diverges, 0.01 reaches the minimum in 6000 steps
    convergence=Convergence(0.05, (0.01, 6000, 0.05)),
)

#: what this module registers
DECLARATIONS = (RADAM_INFO,)
