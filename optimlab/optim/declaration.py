"""What one algorithm module declares about each optimizer it defines (torch's ``OptimizerInfo``).

Generic code reads only this: the CLI and the docs tables (name, title, family, rule), the lab's
default sets (the registry's names), the tests (twins, option sets, convergence settings) and the
benchmarks (twins, the kernel's byte count).  The optimizer class itself carries the defaults,
ranges, flags, state, reference rule and optional fused kernel.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: a factory for a class of another library, imported only when called (keras is optional)
Twin = Callable[[], type]


def library_class(module: str, name: str) -> Twin:
    """A factory for ``module.name``, e.g. ``library_class("keras.optimizers", "Nadam")``."""

    def twin() -> type:
        return getattr(importlib.import_module(module), name)

    twin.__qualname__ = f"{module}.{name}"
    return twin


@dataclass(frozen=True)
class Convergence:
    """Settings at which the convergence tests run (picked once from a coarse log grid).

    ``quadratic_lr``: learning rate on a convex quadratic (condition number about 10);
    ``rosenbrock``: (lr, steps, distance to (1, 1) to reach).
    """

    quadratic_lr: float
    rosenbrock: tuple[float, int, float]


@dataclass(frozen=True)
class OptimizerInfo:
    """Everything generic code needs to know about one optimizer."""

    name: str
    cls: Any  # type[Optimizer]; Any keeps this module free of torch
    title: str
    #: how it improves on gradient descent: "none", "direction", "step size" or "both"
    family: str
    #: the update rule in one line (torch convention)
    rule: str
    #: the set it belongs to: "classic" (the textbook's nine, compare's default) or "modern"
    preset: str = "modern"
    #: the same algorithm in torch.optim and in Keras 3, as factories; None: no twin there
    torch_twin: Twin | None = None
    keras_twin: Twin | None = None
    #: for the docs table: what it improves on gradient descent ("per-parameter step size ...")
    improves: str = ""
    #: arguments that make the twin classes this optimizer (``"momentum=0.9"``)
    twin_arguments: str = ""
    #: option sets worth testing, beyond the defaults (torch convention, torch names)
    samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: option sets worth testing under convention="keras"
    keras_samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: where the convergence tests run it
    convergence: Convergence = Convergence(0.05, (0.03, 2000, 0.05))
    #: whether each element's update depends on that element alone (False: a tensor's norm,
    #: factored moment or matrix shape enters, so a tensor's rows cannot be separate runs)
    elementwise: bool = True
    #: learning-rate-free (Prodigy, D-Adaptation: it estimates its own step size): compare runs
    #: it at its defaults with no learning-rate grid, in the spirit of AlgoPerf's self-tuning
    #: track, and reports it apart. (Schedule-Free is not: it takes a tuned lr, and compare
    #: never schedules an optimizer with train()/eval() modes.)
    learning_rate_free: bool = False

    @property
    def torch_class(self) -> str | None:
        """The torch.optim class's name (for messages and tables), None without a twin."""
        return None if self.torch_twin is None else _twin_name(self.torch_twin)

    @property
    def keras_class(self) -> str | None:
        return None if self.keras_twin is None else _twin_name(self.keras_twin)


def _twin_name(twin: Twin) -> str:
    return twin.__qualname__.rsplit(".", 1)[-1]


#: option sets every algorithm is tested with
COMMON_SAMPLES: tuple[dict[str, Any], ...] = ({"weight_decay": 0.1}, {"maximize": True})
#: Keras's weight decay is the decoupled one
KERAS_DECAY: dict[str, Any] = {"weight_decay": 0.1, "decoupled_weight_decay": True}
