"""Below float32: 8-bit / bfloat16 optimizer state and stochastic rounding of bfloat16 weights.

Two options every optimlab optimizer accepts (besides the seed of the second):

* ``state_dtype``: ``"float32"`` (default), ``"bf16"``, ``"int8"`` or ``"fp8"`` for the
  optimizers that declare it in ``STATE_DTYPES`` (see ``state`` for the storage, ``quantize``
  for the 8-bit scheme, torchao's AdamW8bit, and ``fp8`` for torchao's AdamWFp8). The update rule itself is unchanged: it runs on the decoded float
  state, and the new state is encoded again after it.
* ``stochastic_rounding`` (bfloat16 parameters only) with ``rounding_seed``: the float32 result
  of each update is rounded to bfloat16 up or down at random, unbiased (see ``rounding``).

Every optimizer with low-precision state has a fused kernel for them, one pass that decodes,
updates and encodes each block of 256 elements: ``kernels.lowprec_adam`` for Adam and AdamW,
``kernels.lowprec_rules`` (the float32 kernel's element loop on decoded blocks) for AdaMax,
NAdam, RMSprop and SGD/Momentum/NAG. ``impl="auto"`` takes it where it applies (CPU,
contiguous, float32 weights with bf16/int8/fp8 state or bfloat16 weights) and the reference rule
elsewhere; ``impl="fused"`` on a class without one (``low_precision_kernel = None``) is an error.

``min_quantized_size`` (default 4,096, torchao's rule) is the fewest elements a tensor needs for
bf16/int8/fp8 state; smaller tensors (and sizes not a multiple of 256) keep float32 state.
"""

from __future__ import annotations

from typing import Any

import torch

from optimlab.optim.low_precision import quantize, rounding
from optimlab.optim.low_precision import state as storage

#: the options, with their defaults; groups carry them only when given
DEFAULTS: dict[str, Any] = {
    "state_dtype": "float32",
    "stochastic_rounding": False,
    "rounding_seed": 0,
    # tensors with fewer elements keep float32 state (torchao's 4,096; quantize.MIN_ELEMENTS)
    "min_quantized_size": quantize.MIN_ELEMENTS,
}
STATE_DTYPES = storage.STATE_DTYPES
#: per-parameter state key counting the stochastically rounded updates (part of the seed)
ROUNDING_COUNT = "rounding_count"


def _fail(owner: str, name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{owner}: invalid {name}={value!r}; {name} must be {allowed}")


def option(group: dict[str, Any], name: str) -> Any:
    return group.get(name, DEFAULTS[name])


def uses_low_precision(group: dict[str, Any]) -> bool:
    """Whether the group uses low-precision state or stochastic rounding (see `fused_step`)."""
    return option(group, "state_dtype") != "float32" or bool(option(group, "stochastic_rounding"))


def check_group(
    owner: str,
    allowed_state_dtypes: tuple[str, ...],
    group: dict[str, Any],
    fused_kernel: bool = False,
) -> None:
    """Validate the low-precision options of one group (and its parameters, once it has them).

    `fused_kernel`: whether the class has a low-precision fused kernel (``impl="fused"`` is
    then allowed; whether a given group suits it is decided at the step, as for float32).
    """
    state_dtype = option(group, "state_dtype")
    if state_dtype not in allowed_state_dtypes:
        allowed = " or ".join(repr(d) for d in allowed_state_dtypes)
        why = "" if len(allowed_state_dtypes) > 1 else f" ({owner} has no low-precision state yet)"
        raise _fail(owner, "state_dtype", state_dtype, allowed + why)
    stochastic = option(group, "stochastic_rounding")
    if not isinstance(stochastic, bool):
        raise _fail(owner, "stochastic_rounding", stochastic, "True or False")
    size = option(group, "min_quantized_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _fail(
            owner,
            "min_quantized_size",
            size,
            f"an integer >= 1 (the fewest elements a tensor needs for bf16/int8/fp8 state; its size "
            f"must also be a multiple of {quantize.BLOCK_SIZE}; default {quantize.MIN_ELEMENTS})",
        )
    seed = option(group, "rounding_seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(owner, "rounding_seed", seed, "an integer >= 0")
    fused = group.get("fused") or group.get("impl") == "fused"
    if uses_low_precision(group) and fused and not fused_kernel:
        chosen = "fused=True" if group.get("fused") else "impl='fused'"
        used = "stochastic_rounding=True" if stochastic else f"state_dtype={state_dtype!r}"
        raise ValueError(
            f"{owner}: invalid {chosen} with {used}; {owner} has no fused kernel for "
            f"low-precision state or stochastic rounding (its low_precision_kernel is None): "
            f"use impl='auto' or 'reference'"
        )
    if stochastic:
        for index, param in enumerate(group.get("params", ())):
            if param.dtype != torch.bfloat16:
                raise _fail(
                    owner,
                    "stochastic_rounding",
                    True,
                    f"False for parameter {index} of dtype {param.dtype}; stochastic rounding "
                    f"applies to torch.bfloat16 parameters only",
                )


def reference_step(
    optimizer: Any,
    rule: Any,
    param: torch.Tensor,
    work: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, Any],
    group: dict[str, Any],
    step: int,
) -> None:
    """Run `rule` on the float `work` copy of `param` with decoded state, then store both back."""
    owner = type(optimizer).__name__
    state_dtype = option(group, "state_dtype")
    if state_dtype == "float32":
        rule(work, grad, state, group, step)
    else:
        decoded = storage.decoded(owner, state, param, work.dtype)
        rule(work, grad, decoded, group, step)
        size = option(group, "min_quantized_size")
        storage.store(owner, decoded, state, param, state_dtype, size)
    if option(group, "stochastic_rounding") and param.dtype == torch.bfloat16:
        count = state.get(ROUNDING_COUNT, 0) + 1
        state[ROUNDING_COUNT] = count
        generator = rounding.generator_for(
            option(group, "rounding_seed"), position(optimizer, param), count
        )
        param.copy_(rounding.stochastic_round_to_bf16(work, generator))
    elif work is not param:
        param.copy_(work)


def position(optimizer: Any, param: torch.Tensor) -> int:
    """The parameter's index over all groups: part of its random stream, stable across resumes."""
    positions: dict[int, int] = optimizer.__dict__.setdefault("_rounding_positions", {})
    if id(param) not in positions:  # first use, or groups added since: number them again
        positions.clear()
        every = (p for g in optimizer.param_groups for p in g["params"])
        positions.update((id(p), index) for index, p in enumerate(every))
    return positions[id(param)]


def options_of(optimizer: Any) -> list[dict[str, Any]]:
    """Each group's low-precision options, to keep across ``load_state_dict``.

    How the state is stored is the loading optimizer's choice: an 8-bit state_dict loaded into a
    float32 optimizer is dequantized (and vice versa), not switched to the saved form.
    """
    return [{k: g[k] for k in DEFAULTS if k in g} for g in optimizer.param_groups]


def restore_options(optimizer: Any, options: list[dict[str, Any]]) -> None:
    for group, chosen in zip(optimizer.param_groups, options):
        for key in DEFAULTS:
            group.pop(key, None)
        group.update(chosen)


def convert_loaded_state(optimizer: Any) -> None:
    """After ``load_state_dict``: every state in the form its group's ``state_dtype`` asks for."""
    owner = type(optimizer).__name__
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state:
                work_dtype = (
                    torch.float32 if param.dtype in (torch.float16, torch.bfloat16) else param.dtype
                )
                storage.convert_loaded(
                    owner,
                    state,
                    param,
                    option(group, "state_dtype"),
                    work_dtype,
                    option(group, "min_quantized_size"),
                )


def decode_left_state(optimizer: Any, params: list[torch.Tensor]) -> None:
    """Before a float32-state step: decode any state still stored as 8-bit codes or bfloat16.

    A group switched from ``state_dtype="int8"`` (or ``"bf16"``) to ``"float32"`` mid-run keeps
    its encoded state until something converts it; the float32 kernels and rules read state as
    floats and would take the codes (0..255) for values. Dequantizing is what loading an 8-bit
    state_dict into a float32 optimizer does, so a switch and a save/load agree; every 8-bit
    state is defined (code × block maximum), so there is nothing to refuse.
    """
    owner = type(optimizer).__name__
    for param in params:
        state = optimizer.state.get(param)
        if state and storage.stored_below_float32(state):
            work_dtype = (
                torch.float32 if param.dtype in (torch.float16, torch.bfloat16) else param.dtype
            )
            storage.convert_loaded(owner, state, param, "float32", work_dtype)
