r"""Gradient descent, Momentum and Nesterov accelerated gradient (NAG).

Plain (stochastic, minibatch) gradient descent moves each parameter against its gradient:

.. math::  \theta_t = \theta_{t-1} - \eta\, g_t

Momentum (Polyak, 1964, "Some methods of speeding up the convergence of iteration methods")
accumulates a velocity so that steps along a consistent direction grow and oscillating components
cancel.  Nesterov's accelerated gradient (Nesterov, 1983; in this form Sutskever et al., 2013, "On
the importance of initialization and momentum in deep learning") looks one step ahead along the
velocity.  NAG is Momentum with a flag, so the three share one rule.

Conventions
-----------
``convention="torch"`` (torch.optim.SGD): the buffer holds a sum of gradients and the learning rate
multiplies it at the step; the first step initialises the buffer to the gradient itself::

    b_1 = g_1,   b_t = mu b_{t-1} + (1 - dampening) g_t
    d_t = g_t + mu b_t  (nesterov)   or   d_t = b_t
    theta_t = theta_{t-1} - eta d_t

``convention="keras"`` (keras.optimizers.SGD): the velocity is kept in parameter units, starts at 0
and absorbs the learning rate at each step (``v = mu v - eta g``)::

    v_t = mu v_{t-1} - eta (1 - dampening) g_t
    theta_t = theta_{t-1} + v_t                       (momentum)
    theta_t = theta_{t-1} + mu v_t - eta g_t          (nesterov)

With a constant learning rate and no dampening the two are the same trajectory; they differ when
the learning rate changes during training (a schedule rescales the whole torch buffer at once, but
only the new contribution of the Keras velocity).  Defaults: torch lr 1e-3, Keras lr 1e-2.

Why two bodies (with momentum): the conventions differ in their operations, not in a
coefficient.  torch keeps a buffer of gradients, copies the first gradient into it and applies
η at the step (``b.mul_(mu).add_(g, alpha=1-tau)`` then ``p.add_(b, alpha=-lr)``); Keras
multiplies η into the velocity before accumulating it (``v.mul_(mu).sub_(g * lr)``), starts it
at 0 and adds it to the parameter.  The stored state therefore differs by a factor η (a
state_dict of one is not the other's), the first step differs (a copy against ``0·μ − ηg``),
Nesterov's look-ahead is built from other terms (``g + μb`` scaled by η, against ``μv − ηg``),
and each sequence rounds differently.  Plain gradient descent (momentum 0) has one body.
``Momentum`` and ``NAG`` default to momentum 0.9 under both conventions.

State: ``momentum_buffer`` (only when momentum > 0).
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
    SampleRange,
    library_class,
)
from optimlab.optim.hyperparameters import NON_NEGATIVE, UNIT_CLOSED

#: property tests draw momentum below 1 (its valid range is unbounded: torch allows more)
MOMENTUM_SAMPLES = {"momentum": SampleRange(0.05, 0.99)}


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum, as torch.optim.SGD."""

    name = "sgd"
    DEFAULTS = {
        "torch": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False},
        "keras": {"lr": 1e-2, "momentum": 0.0, "dampening": 0.0, "nesterov": False},
    }
    RANGES = {"lr": NON_NEGATIVE, "momentum": NON_NEGATIVE, "dampening": UNIT_CLOSED}
    FLAGS = ("nesterov",)
    STATE = ("momentum_buffer",)
    STATE_DTYPES = ("float32", "bf16", "int8", "fp8")  # optimlab.optim.low_precision
    low_precision_kernel = staticmethod(kernel_factory("lowprec_rules", lambda k: k.SGD))
    kernel = staticmethod(kernel_factory("sgd"))
    COUNTS_STEPS = False

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        momentum: float | None = None,
        dampening: float | None = None,
        weight_decay: float = 0.0,
        nesterov: bool | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "momentum": momentum, "dampening": dampening, "nesterov": nesterov},
            weight_decay=weight_decay,
            **options,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{type(self).__name__}: nesterov=True requires momentum > 0 and dampening = 0, "
                f"got momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        if momentum == 0:
            scaled_sub_(param, grad, lr)
            return
        buf = state.get("momentum_buffer")
        if group["convention"] == "keras":
            if buf is None:
                buf = state["momentum_buffer"] = torch.zeros_like(param)
            scale = lr if dampening == 0 else lr * (1 - dampening)
            buf.mul_(momentum).sub_(grad * scale)
            if group["nesterov"]:
                param.add_(buf * momentum - grad * lr)
            else:
                param.add_(buf)
            return
        if buf is None:
            buf = state["momentum_buffer"] = grad.clone()
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        direction = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        scaled_sub_(param, direction, lr)


class Momentum(SGD):
    """Gradient descent with (heavy-ball) momentum; SGD with momentum 0.9 by default."""

    name = "momentum"
    DEFAULTS = {
        "torch": {**SGD.DEFAULTS["torch"], "momentum": 0.9},
        "keras": {**SGD.DEFAULTS["keras"], "momentum": 0.9},
    }


class NAG(SGD):
    """Nesterov accelerated gradient; SGD with momentum 0.9 and nesterov=True by default."""

    name = "nag"
    DEFAULTS = {
        "torch": {**SGD.DEFAULTS["torch"], "momentum": 0.9, "nesterov": True},
        "keras": {**SGD.DEFAULTS["keras"], "momentum": 0.9, "nesterov": True},
    }


SGD_INFO = OptimizerInfo(
    name="sgd",
    preset="classic",
    cls=SGD,
    title="Gradient descent",
    family="none",
    rule="θ ← θ − η·g",
    torch_twin=library_class("torch.optim", "SGD"),
    keras_twin=library_class("keras.optimizers", "SGD"),
    improves="— (plain / minibatch gradient descent)",
    samples=COMMON_SAMPLES,
    keras_samples=(KERAS_DECAY,),
    convergence=Convergence(0.1, (0.001, 10000, 0.1)),
)

MOMENTUM_INFO = OptimizerInfo(
    name="momentum",
    preset="classic",
    cls=Momentum,
    title="Momentum",
    family="direction",
    rule="b ← μ·b + (1−τ)·g; θ ← θ − η·b",
    torch_twin=library_class("torch.optim", "SGD"),
    keras_twin=library_class("keras.optimizers", "SGD"),
    improves="direction (velocity, μ = 0.9)",
    twin_arguments="momentum=0.9",
    samples=(*COMMON_SAMPLES, {"momentum": 0.5, "dampening": 0.3}),
    keras_samples=({"momentum": 0.5}, KERAS_DECAY),
    sample_ranges=MOMENTUM_SAMPLES,
    convergence=Convergence(0.05, (0.001, 3000, 0.05)),
)

NAG_INFO = OptimizerInfo(
    name="nag",
    preset="classic",
    cls=NAG,
    title="Nesterov accelerated gradient",
    family="direction",
    rule="b ← μ·b + g; θ ← θ − η·(g + μ·b)",
    torch_twin=library_class("torch.optim", "SGD"),
    keras_twin=library_class("keras.optimizers", "SGD"),
    improves="direction (look-ahead velocity)",
    twin_arguments="momentum=0.9, nesterov=True",
    samples=(*COMMON_SAMPLES, {"momentum": 0.5}),
    keras_samples=({"momentum": 0.5}, KERAS_DECAY),
    sample_ranges=MOMENTUM_SAMPLES,
    convergence=Convergence(0.05, (0.001, 3000, 0.05)),
)

#: what this module registers, in the order of the chapter
DECLARATIONS = (SGD_INFO, MOMENTUM_INFO, NAG_INFO)
