"""The one list of optimizers: a list of algorithm modules, each declaring its optimizers.

Tests, the CLI, the lab's default sets, the benchmarks and the generated docs tables iterate over
it.  Adding an optimizer = its module (``DECLARATIONS``: one ``OptimizerInfo`` per optimizer it
defines; + an optional kernel module the class points to) + one line in ``MODULES``.  See
docs/contributing.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from optimlab.optim import (
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamax,
    adan,
    ademamix,
    lamb,
    lion,
    muon,
    nadam,
    prodigy,
    radam,
    rmsprop,
    schedulefree,
    sgd,
    soap,
)
from optimlab.optim.base import Optimizer, Params
from optimlab.optim.declaration import Convergence, OptimizerInfo

#: the algorithm modules, in the order of the chapter
MODULES: list[ModuleType] = [
    sgd,
    adagrad,
    rmsprop,
    adadelta,
    adam,
    adamax,
    nadam,
    radam,
    lion,
    schedulefree,
    adafactor,
    lamb,
    muon,
    adan,
    ademamix,
    prodigy,
    soap,
]

REGISTRY: dict[str, OptimizerInfo] = {
    info.name: info for module in MODULES for info in module.DECLARATIONS
}


def register(info: OptimizerInfo) -> None:
    """Add an optimizer declared outside the built-in modules (a plugin, or a test's)."""
    if info.name in REGISTRY:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    if info.cls.name != info.name:
        raise ValueError(
            f"OptimizerInfo name {info.name!r} differs from {info.cls.__name__}.name "
            f"{info.cls.name!r}"
        )
    REGISTRY[info.name] = info


def unregister(name: str) -> None:
    get_info(name)
    del REGISTRY[name]


@contextlib.contextmanager
def registered(info: OptimizerInfo) -> Iterator[OptimizerInfo]:
    """Register `info` for the duration of a ``with`` block."""
    register(info)
    try:
        yield info
    finally:
        unregister(info.name)


def list_optimizers() -> list[str]:
    """The registry names of every optimizer, in the order of the chapter."""
    return list(REGISTRY)


#: the named sets of `--optimizers` (compare's default is "classic")
PRESETS = ("classic", "modern", "all")


def preset_optimizers(preset: str) -> list[str]:
    """The names in a preset: "classic" (the textbook's nine), "modern" or "all", in registry
    order; ValueError naming the presets otherwise."""
    if preset not in PRESETS:
        raise ValueError(f"unknown optimizer preset {preset!r}; valid: {', '.join(PRESETS)}")
    return [name for name, info in REGISTRY.items() if preset in ("all", info.preset)]


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


def kernel_specs() -> dict[str, Any]:
    """The fused kernel of each registered optimizer that has one, by name (imports numba)."""
    return {
        name: info.cls.kernel() for name, info in REGISTRY.items() if info.cls.kernel is not None
    }


__all__ = [
    "MODULES",
    "PRESETS",
    "REGISTRY",
    "Convergence",
    "OptimizerInfo",
    "create",
    "get_info",
    "kernel_specs",
    "list_optimizers",
    "preset_optimizers",
    "register",
    "registered",
    "unregister",
]
