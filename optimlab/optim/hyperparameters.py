"""Valid ranges of hyperparameters and the checks that enforce them.

Every optimizer declares, for each hyperparameter, the interval of values it accepts. The check
runs when the optimizer is built and again for every parameter group that is added, so a bad value
fails early with a message that names the optimizer, the argument, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch

CONVENTIONS = ("torch", "keras")
NONFINITE_POLICIES = ("propagate", "skip")
IMPLEMENTATIONS = ("auto", "fused", "reference")


@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open interval of real numbers; `high=inf` means unbounded."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value >= self.low if self.low_closed else value > self.low
        if math.isinf(self.high):
            below = value < math.inf
        else:
            below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        left = "[" if self.low_closed else "("
        if math.isinf(self.high):
            return f"{left}{self.low:g}, inf) (finite)"
        right = "]" if self.high_closed else ")"
        return f"{left}{self.low:g}, {self.high:g}{right}"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_closed=False)
UNIT_CLOSED = Interval(0.0, 1.0)
UNIT_HALF_OPEN = Interval(0.0, 1.0, high_closed=False)


def _fail(owner: str, name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{owner}: invalid {name}={value!r}; {name} must be {allowed}")


def check_number(owner: str, name: str, value: Any, interval: Interval) -> None:
    """Raise ValueError unless `value` is a real number (or, for `lr`, a tensor) inside `interval`."""
    if isinstance(value, torch.Tensor):
        if name != "lr":
            raise _fail(owner, name, value, "a Python number, not a tensor")
        if not value.is_floating_point():
            raise _fail(owner, name, value, f"a floating-point tensor with values in {interval}")
        if value.numel() and not all(float(v) in interval for v in (value.min(), value.max())):
            raise _fail(owner, name, value, f"a tensor with every value in {interval}")
        if value.numel() and not bool(torch.isfinite(value).all()):
            raise _fail(owner, name, value, f"a tensor with every value in {interval}")
        return
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _fail(owner, name, value, f"a real number in {interval}")
    if float(value) not in interval:
        raise _fail(owner, name, value, f"in {interval}")


def check_betas(owner: str, value: Any) -> None:
    """betas = (beta1, beta2), each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _fail(owner, "betas", value, f"a pair (beta1, beta2), each in {UNIT_HALF_OPEN}")
    for index, beta in enumerate(value):
        check_number(owner, f"betas[{index}]", beta, UNIT_HALF_OPEN)


def check_flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(owner, name, value, "True or False")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(owner, name, value, "one of " + ", ".join(repr(c) for c in choices))


def check_torch_implementation_options(owner: str, group: dict[str, Any]) -> None:
    """torch.optim's foreach/fused/capturable/differentiable: the values optimlab can honour.

    ``foreach`` and ``fused`` are None, True or False (not both True, and not against an
    explicit ``impl``); ``capturable`` and ``differentiable`` must be False: optimlab's steps
    are not CUDA-graph capturable and do not record autograd history.
    """
    for name in ("foreach", "fused"):
        if group.get(name) not in (None, True, False):
            raise _fail(owner, name, group[name], "None, True or False")
    if group.get("fused") and group.get("foreach"):
        raise _fail(
            owner, "fused", True, "False or None when foreach=True (torch.optim refuses both too)"
        )
    impl = group.get("impl")
    if group.get("fused") and impl == "reference":
        raise _fail(owner, "fused", True, "False or None with impl='reference'")
    if group.get("foreach") and impl == "fused":
        raise _fail(owner, "foreach", True, "False or None with impl='fused'")
    if group.get("capturable", False) is not False:
        raise _fail(
            owner,
            "capturable",
            group["capturable"],
            "False: optimlab's steps are not CUDA-graph capturable; its fast path is the fused "
            "CPU kernel (impl='fused' or fused=True); for CUDA graphs use torch.optim's own "
            "class with capturable=True",
        )
    if group.get("differentiable", False) is not False:
        raise _fail(
            owner,
            "differentiable",
            group["differentiable"],
            "False: optimlab's steps run under torch.no_grad() and record no autograd history; "
            "to differentiate through an update use torch.optim's own class with "
            "differentiable=True",
        )
