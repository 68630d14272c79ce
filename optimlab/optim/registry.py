"""The one list of optimizers. Tests, the CLI, the runner and the report iterate over it.

Adding an optimizer = one new algorithm module + one entry here; the common tests (parity with
torch.optim and Keras, state_dict, bad input, convergence) then cover it with no other edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optimlab.optim.adadelta import Adadelta
from optimlab.optim.adagrad import Adagrad
from optimlab.optim.adam import Adam, AdamW
from optimlab.optim.adamax import Adamax
from optimlab.optim.base import Optimizer, Params
from optimlab.optim.nadam import NAdam
from optimlab.optim.rmsprop import RMSprop
from optimlab.optim.sgd import NAG, SGD, Momentum


@dataclass(frozen=True)
class OptimizerInfo:
    """Everything generic code needs to know about one optimizer."""

    name: str
    cls: type[Optimizer]
    title: str
    #: how it improves on gradient descent: "none", "direction", "step size" or "both"
    family: str
    #: the update rule in one line (torch convention)
    rule: str
    #: the class of the same algorithm in torch.optim and in keras.optimizers
    torch_class: str
    keras_class: str
    #: what it improves on gradient descent, for the docs table ("per-parameter step size ...")
    improves: str = ""
    #: arguments that make the torch.optim / Keras class this optimizer (``"momentum=0.9"``)
    twin_arguments: str = ""
    #: option sets worth testing, beyond the defaults (torch convention, torch names)
    samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: option sets worth testing under convention="keras" (Keras 3 has a counterpart for each)
    keras_samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)


_COMMON = ({"weight_decay": 0.1}, {"maximize": True})

REGISTRY: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        OptimizerInfo(
            "sgd",
            SGD,
            "Gradient descent",
            "none",
            "θ ← θ − η·g",
            "SGD",
            "SGD",
            improves="— (plain / minibatch gradient descent)",
            samples=_COMMON,
            keras_samples=({"weight_decay": 0.1, "decoupled_weight_decay": True},),
        ),
        OptimizerInfo(
            "momentum",
            Momentum,
            "Momentum",
            "direction",
            "b ← μ·b + (1−τ)·g; θ ← θ − η·b",
            "SGD",
            "SGD",
            improves="direction (velocity, μ = 0.9)",
            twin_arguments="momentum=0.9",
            samples=(*_COMMON, {"momentum": 0.5, "dampening": 0.3}),
            keras_samples=(
                {"momentum": 0.5},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
        OptimizerInfo(
            "nag",
            NAG,
            "Nesterov accelerated gradient",
            "direction",
            "b ← μ·b + g; θ ← θ − η·(g + μ·b)",
            "SGD",
            "SGD",
            improves="direction (look-ahead velocity)",
            twin_arguments="momentum=0.9, nesterov=True",
            samples=(*_COMMON, {"momentum": 0.5}),
            keras_samples=(
                {"momentum": 0.5},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
        OptimizerInfo(
            "adagrad",
            Adagrad,
            "AdaGrad",
            "step size",
            "s ← s + g²; θ ← θ − η·g / (√s + ε)",
            "Adagrad",
            "Adagrad",
            improves="per-parameter step size (sum of g²)",
            samples=(*_COMMON, {"lr_decay": 0.01}, {"initial_accumulator_value": 0.5}),
            keras_samples=(
                {"initial_accumulator_value": 0.5},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
        OptimizerInfo(
            "rmsprop",
            RMSprop,
            "RMSProp",
            "step size",
            "v ← α·v + (1−α)·g²; θ ← θ − η·g / (√v + ε)",
            "RMSprop",
            "RMSprop",
            improves="per-parameter step size (moving average of g²)",
            samples=(
                *_COMMON,
                {"centered": True},
                {"momentum": 0.9},
                {"momentum": 0.5, "centered": True},
            ),
            keras_samples=(
                {"centered": True},
                {"momentum": 0.9},
                {"momentum": 0.5, "centered": True},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
        OptimizerInfo(
            "adadelta",
            Adadelta,
            "AdaDelta",
            "step size",
            "v ← ρv + (1−ρ)g²; Δ ← √(u+ε)/√(v+ε)·g; u ← ρu + (1−ρ)Δ²; θ ← θ − η·Δ",
            "Adadelta",
            "Adadelta",
            improves="per-parameter step size in parameter units",
            samples=(*_COMMON, {"rho": 0.5}),
            keras_samples=({"rho": 0.5}, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        ),
        OptimizerInfo(
            "adam",
            Adam,
            "Adam",
            "both",
            "m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − η·m̂ / (√v̂ + ε)",
            "Adam",
            "Adam",
            improves="both (momentum + RMSProp, bias-corrected)",
            samples=(
                *_COMMON,
                {"amsgrad": True},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
                {"betas": (0.5, 0.9)},
            ),
            keras_samples=(
                {"amsgrad": True},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
                {"betas": (0.5, 0.9)},
            ),
        ),
        OptimizerInfo(
            "adamw",
            AdamW,
            "AdamW",
            "both",
            "θ ← θ·(1 − η·λ), then Adam's step (decoupled weight decay λ)",
            "AdamW",
            "AdamW",
            improves="both (Adam + decoupled weight decay)",
            samples=({"maximize": True}, {"amsgrad": True}, {"weight_decay": 0.1}),
            keras_samples=({"amsgrad": True}, {"weight_decay": 0.1}),
        ),
        OptimizerInfo(
            "adamax",
            Adamax,
            "AdaMax",
            "both",
            "m ← β₁m + (1−β₁)g; u ← max(β₂u, |g| + ε); θ ← θ − η/(1−β₁ᵗ)·m / u",
            "Adamax",
            "Adamax",
            improves="both (infinity norm)",
            samples=(*_COMMON, {"betas": (0.5, 0.9)}),
            keras_samples=(
                {"betas": (0.5, 0.9)},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
        OptimizerInfo(
            "nadam",
            NAdam,
            "NAdam",
            "both",
            "Adam with Nesterov momentum: θ ← θ − η·(μₜ₊₁m̂ + (1−μₜ)ĝ) / (√v̂ + ε)",
            "NAdam",
            "Nadam",
            improves="both (Adam + Nesterov)",
            samples=(
                *_COMMON,
                {"momentum_decay": 0.1},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
            keras_samples=(
                {"betas": (0.5, 0.9)},
                {"weight_decay": 0.1, "decoupled_weight_decay": True},
            ),
        ),
    ]
}


def list_optimizers() -> list[str]:
    """The registry names of every optimizer, in the order of the chapter."""
    return list(REGISTRY)


def get_info(name: str) -> OptimizerInfo:
    """The registry entry for `name`; ValueError listing the valid names if there is none."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown optimizer {name!r}; valid names: {', '.join(REGISTRY)}"
        ) from None


def create(name: str, params: Params, **hyperparameters: Any) -> Optimizer:
    """Build the optimizer called `name` on `params`, e.g. ``create("adam", model.parameters(), lr=0.01)``."""
    return get_info(name).cls(params, **hyperparameters)


__all__ = ["REGISTRY", "OptimizerInfo", "create", "get_info", "list_optimizers"]
