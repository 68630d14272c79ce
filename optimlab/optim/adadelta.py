r"""AdaDelta: RMSProp with the units fixed, so that no learning rate is needed in principle.

Zeiler (2012), "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701.  The step is the
ratio of two running RMS values, of past updates and of past gradients, which gives it the units
of the parameter:

.. math::

    v_t = \rho v_{t-1} + (1 - \rho) g_t^2, \qquad
    \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t, \qquad
    u_t = \rho u_{t-1} + (1 - \rho) \Delta_t^2, \qquad
    \theta_t = \theta_{t-1} - \eta \Delta_t

Conventions
-----------
torch.optim.Adadelta and keras.optimizers.Adadelta compute the same rule (ε inside both roots);
only the defaults differ: torch lr 1.0, rho 0.9, eps 1e-6; Keras lr 1e-3, rho 0.95, eps 1e-7.
The paper's rule is lr = 1.

State: ``step``, ``square_avg`` (v), ``acc_delta`` (u).
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, kernel_factory, scaled_sub_
from optimlab.optim.declaration import (
    COMMON_SAMPLES,
    KERAS_DECAY,
    Convergence,
    OptimizerInfo,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE, UNIT_CLOSED


class Adadelta(Optimizer):
    """AdaDelta, as torch.optim.Adadelta (or keras.optimizers.Adadelta with convention="keras")."""

    name = "adadelta"
    DEFAULTS = {
        "torch": {"lr": 1.0, "rho": 0.9, "eps": 1e-6},
        "keras": {"lr": 1e-3, "rho": 0.95, "eps": 1e-7},
    }
    RANGES = {"lr": NON_NEGATIVE, "rho": UNIT_CLOSED, "eps": POSITIVE}
    STATE = ("step", "square_avg", "acc_delta")
    kernel = staticmethod(kernel_factory("adadelta"))

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        rho: float | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "rho": rho, "eps": eps},
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
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(param)
            state["acc_delta"] = torch.zeros_like(param)
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
        scaled_sub_(param, delta, lr)


ADADELTA_INFO = OptimizerInfo(
    name="adadelta",
    preset="classic",
    cls=Adadelta,
    title="AdaDelta",
    family="step size",
    rule="v ← ρv + (1−ρ)g²; Δ ← √(u+ε)/√(v+ε)·g; u ← ρu + (1−ρ)Δ²; θ ← θ − η·Δ",
    torch_twin=library_class("torch.optim", "Adadelta"),
    keras_twin=library_class("keras.optimizers", "Adadelta"),
    improves="per-parameter step size in parameter units",
    samples=(*COMMON_SAMPLES, {"rho": 0.5}),
    keras_samples=({"rho": 0.5}, KERAS_DECAY),
    convergence=Convergence(0.3, (0.3, 10000, 0.5)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (ADADELTA_INFO,)
