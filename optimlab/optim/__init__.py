"""The optimizers: one module per algorithm, the registry, the conventions.

The optimizer classes are public here under their class names (``optimlab.optim.Adam``), taken
from the registry's declarations: a module added to ``registry.MODULES`` needs no line here.
"""

from typing import Any

from optimlab.optim.base import Optimizer
from optimlab.optim.muon import muon_for
from optimlab.optim.registry import REGISTRY, OptimizerInfo, create, get_info, list_optimizers


def optimizer_classes() -> dict[str, type[Optimizer]]:
    """Every registered optimizer class by its class name, in registry order
    (``{"SGD": SGD, "Momentum": Momentum, ...}``), optimizers registered later included."""
    return {info.cls.__name__: info.cls for info in REGISTRY.values()}


#: the helpers this package exports, then (below) every optimizer class
__all__ = [
    "REGISTRY",
    "Optimizer",
    "OptimizerInfo",
    "create",
    "get_info",
    "list_optimizers",
    "muon_for",
    "optimizer_classes",
]

# The built-in optimizers, bound at import (``from optimlab.optim import Adam``).
globals().update(optimizer_classes())
__all__ += list(optimizer_classes())


def __getattr__(name: str) -> Any:
    # An optimizer registered after this package was imported (a plugin, a test's own).
    classes = optimizer_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module 'optimlab.optim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *optimizer_classes()})
