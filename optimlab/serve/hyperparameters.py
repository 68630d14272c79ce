"""Every optimizer's hyperparameters, with defaults, allowed ranges and slider bounds, read from the
registry — so a newly registered optimizer gets its controls in the playground with no front-end
edit.

Kinds: ``number`` (an interval from the class's ``RANGES``; weight decay is common to all),
``flag`` (booleans: ``FLAGS`` and the common flags), ``pair`` (``betas``: two numbers in [0, 1)),
``choice`` (``convention``).  A slider needs finite bounds where the interval has none: the
learning rate gets a log slider over 1e-5…10; another unbounded number spans
[low, max(1, 10·default)] linearly (ε spans 1e-12…1e-2 on a log scale).
"""

from __future__ import annotations

import math
from typing import Any

from optimlab.optim.hyperparameters import CONVENTIONS, NON_NEGATIVE, UNIT_HALF_OPEN, Interval
from optimlab.optim.registry import REGISTRY, OptimizerInfo

#: options the playground does not offer: how the step is computed (torch's switches too),
#: not what it computes
HIDDEN = ("nonfinite", "impl", "foreach", "fused", "capturable", "differentiable")
LR_SLIDER = (1e-5, 10.0)
EPS_SLIDER = (1e-12, 1e-2)


def _interval(interval: Interval) -> dict[str, Any]:
    return {
        "low": interval.low,
        "high": None if math.isinf(interval.high) else interval.high,
        "low_closed": interval.low_closed,
        "high_closed": interval.high_closed,
        "text": str(interval),
    }


def _slider(name: str, default: float, interval: Interval) -> dict[str, Any]:
    if name == "lr":
        return {"min": LR_SLIDER[0], "max": LR_SLIDER[1], "log": True}
    if name == "eps":
        return {"min": EPS_SLIDER[0], "max": EPS_SLIDER[1], "log": True}
    high = interval.high if math.isfinite(interval.high) else max(1.0, 10.0 * float(default))
    return {"min": interval.low, "max": high, "log": False}


def _is_number_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    )


def describe(info: OptimizerInfo) -> dict[str, Any]:
    """One optimizer: name, title, family, rule and its hyperparameters (torch convention)."""
    cls = info.cls
    ranges = {"weight_decay": NON_NEGATIVE, **cls.RANGES}
    controls = []
    for name, default in cls.default_hyperparameters("torch").items():
        if name in HIDDEN:
            continue
        if name in ranges:
            control = {
                "kind": "number",
                "range": _interval(ranges[name]),
                "slider": _slider(name, default, ranges[name]),
            }
        elif isinstance(default, bool):
            control = {"kind": "flag"}
        elif _is_number_pair(default):
            control = {"kind": "pair", "range": _interval(UNIT_HALF_OPEN)}
        elif name == "convention":
            control = {"kind": "choice", "choices": list(CONVENTIONS)}
        elif not isinstance(default, (int, float)):
            # a structured option (Muon's ns_coefficients, adjust_lr_fn, use_muon; Adafactor's
            # eps pair with None): not offered here, the class's default applies
            continue
        else:  # a number the class declares no interval for: shown, checked by the class
            control = {
                "kind": "number",
                "range": None,
                "slider": _slider(name, default, NON_NEGATIVE),
            }
        controls.append({"name": name, "default": default, **control})
    return {
        "name": info.name,
        "title": info.title,
        "family": info.family,
        "rule": info.rule,
        "hyperparameters": controls,
    }


def registry() -> list[dict[str, Any]]:
    """Every registered optimizer, in registry order."""
    return [describe(info) for info in REGISTRY.values()]


__all__ = ["describe", "registry"]
