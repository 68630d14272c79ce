r"""AdaGrad: a per-parameter step size from the sum of all past squared gradients.

Duchi, Hazan & Singer (2011), "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization", JMLR 12.  Parameters with large past gradients get small steps; rarely-updated
ones keep large steps.  Because the sum only grows, the effective step decays towards zero, which
is why AdaGrad can stall before the minimum (RMSProp fixes this with a moving average).

.. math::

    \eta_t = \frac{\eta}{1 + (t - 1)\,\text{lr\_decay}}, \qquad s_t = s_{t-1} + g_t^2

Conventions
-----------
``convention="torch"`` (torch.optim.Adagrad), ε outside the root, accumulator starts at 0::

    theta_t = theta_{t-1} - eta_t * g_t / (sqrt(s_t) + eps)

``convention="keras"`` (keras.optimizers.Adagrad), ε inside the root, accumulator starts at 0.1::

    theta_t = theta_{t-1} - eta_t * g_t / sqrt(s_t + eps)

Defaults: torch lr 1e-2, eps 1e-10, initial_accumulator_value 0; Keras lr 1e-3, eps 1e-7,
initial_accumulator_value 0.1.  ``lr_decay`` (torch's) applies under both conventions.

Why two bodies: the initial accumulator is a coefficient (a hyperparameter), ε's place nearly
is, but the order of operations is not: torch takes the root of the sum, adds ε and lets
``addcdiv_`` compute ``p + (-lr * g) / std`` with ``std = sqrt(s) + eps``; Keras forms
``g * lr`` first and divides it by ``sqrt(s + eps)``, rounding the sum before the root.  The two sequences
round differently in float32, and each body reproduces its library bit for bit.

State: ``step``, ``sum``.
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
    state_dtype,
)
from optimlab.optim.declaration import (
    COMMON_SAMPLES,
    KERAS_DECAY,
    Convergence,
    OptimizerInfo,
    SampleRange,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE


def decayed_lr(lr: float | torch.Tensor, lr_decay: float, step: int) -> float | torch.Tensor:
    """η_t = η / (1 + (t − 1) λ): the step's learning rate, for the reference and the kernel."""
    return lr / (1 + (step - 1) * lr_decay)


class Adagrad(Optimizer):
    """AdaGrad, as torch.optim.Adagrad (or keras.optimizers.Adagrad with convention="keras")."""

    name = "adagrad"
    DEFAULTS = {
        "torch": {"lr": 1e-2, "lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
        "keras": {"lr": 1e-3, "lr_decay": 0.0, "initial_accumulator_value": 0.1, "eps": 1e-7},
    }
    RANGES = {
        "lr": NON_NEGATIVE,
        "lr_decay": NON_NEGATIVE,
        "initial_accumulator_value": NON_NEGATIVE,
        "eps": POSITIVE,
    }
    STATE = ("step", "sum")
    kernel = staticmethod(kernel_factory("adagrad", lambda kernel: kernel.make_spec(decayed_lr)))

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        lr_decay: float | None = None,
        weight_decay: float = 0.0,
        initial_accumulator_value: float | None = None,
        eps: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "lr_decay": lr_decay,
                "initial_accumulator_value": initial_accumulator_value,
                "eps": eps,
            },
            weight_decay=weight_decay,
            **options,
        )

    def _init_state(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if "sum" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["sum"] = torch.full_like(
                param,
                group["initial_accumulator_value"],
                dtype=state_dtype(param),
                memory_format=torch.preserve_format,
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # torch.optim.Adagrad creates its state eagerly; so do we, so that state_dicts match.
        super().add_param_group(param_group)
        for param in self.param_groups[-1]["params"]:
            self._init_state(param, self.param_groups[-1])

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        lr, eps = group["lr"], group["eps"]
        if "sum" not in state:
            state["sum"] = torch.full_like(param, group["initial_accumulator_value"])
        total = state["sum"]
        clr = decayed_lr(lr, group["lr_decay"], step)
        if group["convention"] == "keras":
            total.add_(grad * grad)
            param.sub_(grad * clr / (total + eps).sqrt())
            return
        total.addcmul_(grad, grad, value=1)
        std = total.sqrt().add_(eps)
        scaled_addcdiv_(param, grad, std, clr)


ADAGRAD_INFO = OptimizerInfo(
    name="adagrad",
    preset="classic",
    cls=Adagrad,
    title="AdaGrad",
    family="step size",
    rule="s ← s + g²; θ ← θ − η·g / (√s + ε)",
    torch_twin=library_class("torch.optim", "Adagrad"),
    keras_twin=library_class("keras.optimizers", "Adagrad"),
    improves="per-parameter step size (sum of g²)",
    samples=(*COMMON_SAMPLES, {"lr_decay": 0.01}, {"initial_accumulator_value": 0.5}),
    keras_samples=({"initial_accumulator_value": 0.5}, KERAS_DECAY),
    sample_ranges={"lr_decay": SampleRange(0.0, 0.1)},
    convergence=Convergence(0.5, (1.0, 10000, 0.05)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (ADAGRAD_INFO,)
