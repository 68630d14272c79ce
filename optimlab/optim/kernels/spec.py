"""What a fused kernel declares, and the one calling convention every kernel shares.

A kernel is a numba function with this signature, whatever the algorithm::

    kernel(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags)

* ``param_ptrs``, ``grad_ptrs`` (int64[n]): addresses of the n contiguous parameters and gradients
  being updated (the group's parameters that have a gradient);
* ``chunks`` (int64[c, 3]): ``(tensor, start, stop)`` element ranges, the unit of parallel work;
* ``offsets`` (int64[n]): where each tensor's state starts in the flat state rows;
* ``fresh`` (uint8[n]): 1 for a tensor whose state was just created (SGD's first-step buffer);
* ``state`` ([k, total]): the group's flat state, one row per state tensor (``tensor_state``);
* ``coef`` ([n, m]): per-tensor coefficients in the parameter's dtype, computed in Python from the
  hyperparameters and the step (runtime arguments: changing them never recompiles);
* ``flags`` (int64[f]): the group's boolean options.

Per-parameter scalar state (``step``, NAdam's ``mu_product``) stays in Python/numpy: the
``coefficients`` function reads it and updates it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: a tensor state that starts as the first step's gradient itself (torch's SGD momentum buffer)
FROM_GRADIENT = "from-gradient"


@dataclass(frozen=True)
class ScalarState:
    """A per-parameter 0-dim state tensor: its name, dtype and initial value.

    ``dtype=None``: the dtype of the state it takes over, else torch.optim's scalar dtype
    (float64 when the default dtype is float64, else float32) widened to the parameters' dtype,
    as the reference rule creates it.
    """

    name: str
    dtype: torch.dtype | None
    initial: float

    def dtype_for(self, existing: list[Any], param_dtype: torch.dtype) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        for value in existing:
            if isinstance(value, torch.Tensor):
                return value.dtype
        default = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        return torch.promote_types(default, param_dtype)


@dataclass(frozen=True)
class KernelSpec:
    """One algorithm's fused kernel and what the dispatcher needs to call it."""

    #: the compiled kernel (see the module docstring for its signature)
    kernel: Any
    #: the tensor states the group needs, in row order, given its options
    tensor_state: Callable[[dict[str, Any]], tuple[str, ...]]
    #: the coefficient rows: (group, scalar state of the n tensors, updated in place) -> [n, m]
    coefficients: Callable[[dict[str, Any], dict[str, np.ndarray]], np.ndarray]
    #: the group's flags after the common three (maximize, l2, decoupled)
    flags: Callable[[dict[str, Any]], tuple[int, ...]]
    #: per-parameter scalar states, ``step`` first when the algorithm counts steps
    scalar_state: tuple[ScalarState, ...] = ()
    #: initial value of each tensor state that does not start at 0: a number or FROM_GRADIENT
    initial: Callable[[dict[str, Any]], dict[str, Any]] = lambda group: {}
    #: bytes read and written per float32 parameter by one step (the floor, for the benchmark)
    bytes_per_param: Callable[[dict[str, Any]], int] = lambda group: 0
    #: whether the kernel takes a rate per member (a population's tensor lr, see .members):
    #: True when the coefficients are a function of the group's options and step alone
    member_rates: bool = True


STEP = ScalarState("step", torch.float32, 0.0)


def common_flags(group: dict[str, Any]) -> tuple[int, int, int]:
    """(maximize, L2 weight decay, decoupled weight decay) as 0/1."""
    decay = group["weight_decay"] != 0
    decoupled = bool(group["decoupled_weight_decay"])
    return int(group["maximize"]), int(decay and not decoupled), int(decay and decoupled)


def common_coefficients(group: dict[str, Any]) -> tuple[float, float]:
    """(weight_decay, 1 - lr * weight_decay): the prologue's coefficients, as the base computes."""
    return group["weight_decay"], 1 - group["lr"] * group["weight_decay"]


def moment_coefficients(betas: tuple[float, float]) -> dict[str, float]:
    """The coefficients of Adam's two moments (see common.torch_moments / keras_moments)."""
    beta1, beta2 = betas
    return {"w1": 1 - beta1, "one": 1.0, "beta2": beta2, "w2": 1 - beta2}  # one: see common.lerp


def advance_steps(scalars: dict[str, np.ndarray]) -> np.ndarray:
    """step += 1 for every tensor (in place, as the reference's ``state["step"] += 1``)."""
    steps = scalars["step"]
    steps += 1
    return steps


def per_tensor_rows(
    row: Callable[..., tuple[float, ...]], *columns: np.ndarray
) -> list[tuple[float, ...]] | tuple[float, ...]:
    """``row(*values)`` for each tensor; one call when every tensor has the same values.

    Tensors of one group almost always share their step, so the common case computes the
    coefficients once, in Python floats exactly as the reference does.
    """
    values = [column.tolist() for column in columns]  # Python floats, exactly the stored values
    if all(v.count(v[0]) == len(v) for v in values):
        return row(*(v[0] for v in values))
    return [row(*(v[i] for v in values)) for i in range(len(values[0]))]
