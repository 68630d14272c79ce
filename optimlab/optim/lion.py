r"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le (2023), "Symbolic Discovery of
Optimization Algorithms", NeurIPS (Program 1 of the paper).

.. math::

    \theta_t = \theta_{t-1}(1 - \eta\lambda)
               - \eta\,\operatorname{sign}\big(\beta_1 m_{t-1} + (1 - \beta_1) g_t\big),
    \qquad
    m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

The update interpolates with β₁ and the momentum is kept with β₂ (0.9 and 0.99 by default): every
coordinate moves by exactly η (plus the decay), so Lion wants an η 3–10× smaller than AdamW's and
a λ 3–10× larger.  One state tensor (``exp_avg``, m): 12 bytes per float32 parameter against
Adam's 16.

Convention notes
----------------
The references — the ``lion-pytorch`` package (``lion_pytorch.Lion``) and ``keras.optimizers.Lion``
— agree exactly; optimlab follows them.  **Weight decay is decoupled and scaled by the learning
rate** in both (θ ← θ·(1 − η·λ) before the sign step), so ``decoupled_weight_decay`` defaults to
True here (as in AdamW), unlike optimlab's shared option, whose default False adds λθ to the
gradient (L2) — still available with ``decoupled_weight_decay=False``.  lion-pytorch's own
``decoupled_weight_decay=True`` (λ divided by the initial η, a decay independent of the schedule)
is not this flag's meaning and is not offered.  Defaults: lr 1e-4 (lion-pytorch,
``convention="torch"``) or 1e-3 (Keras), betas (0.9, 0.99) and weight_decay 0 in both.  torch's
``sign(0) = 0``: a coordinate whose interpolation is exactly 0 does not move (both references).
β ∈ [0, 1) as for Adam (lion-pytorch accepts 1, Keras's β₁ must be > 0).

State: ``exp_avg`` (m), as lion-pytorch names it, so its state_dicts load; no step count.

Fused kernel: ``optimlab.optim.kernels.lion`` (20 bytes per float32 parameter: read p, g, m,
write p, m); it keeps the reference's NaN (a non-finite gradient reaches the parameter at once).
"""

from __future__ import annotations

import functools
from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params
from optimlab.optim.declaration import Convergence, OptimizerInfo, library_class
from optimlab.optim.hyperparameters import NON_NEGATIVE

_COMMON = {"betas": (0.9, 0.99), "weight_decay": 0.0, "decoupled_weight_decay": True}


@functools.cache  # one dict lookup per step instead of an import statement
def _kernel() -> Any:
    """The fused kernel (optimlab.optim.kernels.lion), imported on first use."""
    from optimlab.optim.kernels import lion as kernel

    return kernel.make_spec()


class Lion(Optimizer):
    """Lion (EvoLved Sign Momentum), as lion_pytorch.Lion and keras.optimizers.Lion."""

    name = "lion"
    DEFAULTS = {"torch": {"lr": 1e-4, **_COMMON}, "keras": {"lr": 1e-3, **_COMMON}}
    RANGES = {"lr": NON_NEGATIVE}
    STATE = ("exp_avg",)
    COUNTS_STEPS = False
    kernel = staticmethod(_kernel)

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        weight_decay: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas}, weight_decay=weight_decay, **options)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param)
        exp_avg = state["exp_avg"]
        # lion-pytorch's operations, in its order
        interpolation = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1)
        # torch.sign(nan) is 0: keep the NaN, so a non-finite gradient reaches the parameter at
        # once (as in every torch.optim rule) instead of silently freezing it for one step as
        # lion-pytorch does (the NaN reaches it a step later there, through the momentum)
        update = torch.where(interpolation.isnan(), interpolation, interpolation.sign())
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            param.sub_(update * lr)
        else:
            param.add_(update, alpha=-lr)
        exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


LION_INFO = OptimizerInfo(
    name="lion",
    cls=Lion,
    title="Lion",
    family="direction",
    rule="θ ← θ(1 − ηλ) − η·sign(β₁m + (1−β₁)g); m ← β₂m + (1−β₂)g",
    # lion_pytorch.Lion is the torch-side reference (tests/test_modern_lion.py); it is not
    # declared as torch_twin because its own decoupled_weight_decay flag means λ/η₀
    torch_twin=None,
    keras_twin=library_class("keras.optimizers", "Lion"),
    improves="direction (sign of an interpolated momentum; every step is η per coordinate)",
    samples=({"weight_decay": 0.1}, {"maximize": True}, {"betas": (0.5, 0.9)}),
    keras_samples=({"weight_decay": 0.1}, {"betas": (0.5, 0.9)}),
    convergence=Convergence(3e-3, (1e-3, 5000, 0.05)),
)

#: what this module registers
DECLARATIONS = (LION_INFO,)
