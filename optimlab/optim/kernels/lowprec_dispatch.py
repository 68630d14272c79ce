"""Running a low-precision fused kernel (``lowprec_adam``, ``lowprec_rules``) on one parameter group.

The state stays where the reference path keeps it (``optimizer.state[p]``: uint8 codes and
``<key>_absmax`` maxima, float8_e4m3fn codes and ``<key>_scale`` scales, bfloat16 tensors, or
float32 for small tensors), created the same way
(``low_precision.state.store`` of zeros), so state_dicts, ``impl="reference"`` and the kernel
read and write one format and can take turns. The kernel gets the addresses of those tensors.

A group the kernel takes: CPU, contiguous, one dtype per group (float32 weights with bf16/int8/fp8
state; bfloat16 weights with any state, rounded to nearest or stochastically), a Python-number
learning rate. A tensor whose state is stored in another form than the group now asks for
(``state_dtype`` changed between steps) steps through the reference once, which converts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from optimlab.optim import low_precision
from optimlab.optim.kernels import lowprec_adam, lowprec_codec
from optimlab.optim.kernels.dispatch import follow_torch_threads, refusal
from optimlab.optim.kernels.layout import CHUNK
from optimlab.optim.kernels.spec import FROM_GRADIENT, KernelSpec
from optimlab.optim.low_precision import quantize as quantization
from optimlab.optim.low_precision import rounding
from optimlab.optim.low_precision import state as storage

assert lowprec_adam.BLOCK == quantization.BLOCK_SIZE and CHUNK % quantization.BLOCK_SIZE == 0

_MODES = {"float32": lowprec_adam.MODE_FLOAT32, "bf16": lowprec_adam.MODE_BF16}
_STORED = {torch.float32: lowprec_adam.MODE_FLOAT32, torch.bfloat16: lowprec_adam.MODE_BF16}
_TABLES: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def unfusable_reason(
    group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
) -> tuple[type[Exception], str] | None:
    """(error type, reason) why the low-precision kernel cannot update this group, or None."""
    if isinstance(group["lr"], torch.Tensor):
        return ValueError, "lr is a tensor; the fused kernels take a Python-number lr"
    dtype = params[0].dtype
    if dtype == torch.float32 and group.get("stochastic_rounding"):
        dtype = None  # (refused when the group was built; kept for a parameter changed since)
    if dtype not in (torch.float32, torch.bfloat16):
        return TypeError, (
            f"parameter 0 has dtype {params[0].dtype}; the low-precision kernels take float32 "
            f"parameters (int8, fp8 or bf16 state) or bfloat16 parameters"
        )
    if dtype == torch.float32 and group.get("state_dtype", "float32") == "float32":
        return ValueError, "float32 parameters with float32 state are the ordinary kernel's"
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.dtype is not dtype or g.dtype is not dtype:
            return TypeError, (
                f"parameter {i} or its gradient has dtype {p.dtype}/{g.dtype} but parameter 0 "
                f"has {dtype}; the fused kernels take one dtype per parameter group"
            )
        if not p.is_cpu:
            return ValueError, f"parameter {i} is on {p.device}; the fused kernels run on the CPU"
        if not p.is_contiguous():
            return ValueError, (
                f"parameter {i} (shape {tuple(p.shape)}, strides {p.stride()}) is not contiguous"
            )
    return None


def _mode(state_dtype: str, param: torch.Tensor, min_size: int) -> int:
    """The form the group asks for this tensor's state (small tensors stay float32)."""
    if state_dtype == "int8" and quantization.quantizable(param, min_size):
        return lowprec_adam.MODE_INT8
    if state_dtype == "fp8" and quantization.quantizable(param, min_size):
        return lowprec_adam.MODE_FP8
    if state_dtype == "bf16" and quantization.quantizable(param, min_size):
        return lowprec_adam.MODE_BF16
    return lowprec_adam.MODE_FLOAT32


def _stored_mode(state: dict[str, Any], key: str, param: torch.Tensor) -> int | None:
    """The form `state[key]` is stored in, or None if the kernel cannot address it."""
    value = state.get(key)
    if not isinstance(value, torch.Tensor) or value.shape != param.shape:
        return None
    if not value.is_contiguous() or not value.is_cpu:
        return None
    # 8-bit codes with one float32 per block: int8's block maxima or fp8's scales
    for suffix, dtype, mode in (
        (storage.ABSMAX_SUFFIX, torch.uint8, lowprec_adam.MODE_INT8),
        (storage.SCALE_SUFFIX, torch.float8_e4m3fn, lowprec_adam.MODE_FP8),
    ):
        per_block = state.get(key + suffix)
        if per_block is not None:
            ok = (
                value.dtype == dtype
                and per_block.dtype == torch.float32
                and per_block.is_contiguous()
                and per_block.numel() * quantization.BLOCK_SIZE == value.numel()
            )
            return mode if ok else None
    return _STORED.get(value.dtype)


def fused_step(
    optimizer: Any,
    kernel: Any,
    spec: KernelSpec,
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    required: bool,
) -> list[int] | None:
    """Update the group with the low-precision `kernel` (the module ``lowprec_adam``, or a
    compiled kernel of ``lowprec_rules`` whose element loop is `spec`'s float32 kernel's).

    Returns the indices of the parameters the kernel did *not* update (their state is stored in
    another form: the caller runs the reference on them), or None when the kernel does not apply
    (nothing done; raises instead when `required`). `spec` is the algorithm's ordinary kernel
    spec: its coefficients and flags are the ones this kernel reads.
    """
    reason = unfusable_reason(group, params, grads)
    if reason is not None:
        if required:
            raise refusal(optimizer, group, reason)
        return None
    owner = type(optimizer).__name__
    state_dtype = group.get("state_dtype", "float32")
    min_size = group.get("min_quantized_size", quantization.MIN_ELEMENTS)
    keys = spec.tensor_state(group)
    initial = spec.initial(group)
    adam_layout = hasattr(kernel, "STATES")  # lowprec_adam: (m, v, vmax) columns, no fresh
    stochastic = bool(group.get("stochastic_rounding")) and params[0].dtype == torch.bfloat16
    count = len(params)
    state_ptrs = np.zeros((count, 6 if adam_layout else 2 * len(keys)), dtype=np.int64)
    modes = np.zeros(count, dtype=np.int64)
    fresh = np.zeros(count, dtype=np.uint8)
    scalar_values: dict[str, list[torch.Tensor]] = {s.name: [] for s in spec.scalar_state}
    stream_keys = np.zeros(count, dtype=np.uint64)
    chunks: list[tuple[int, int, int]] = []
    taken: list[int] = []
    skipped: list[int] = []
    for i, p in enumerate(params):
        state = optimizer.state[p]
        mode = _mode(state_dtype, p, min_size)
        present = [key for key in keys if key in state]
        if any(_stored_mode(state, key, p) != mode for key in present):
            skipped.append(i)  # stored in another form: the reference converts it
            continue
        missing = [key for key in keys if key not in state]
        if missing:  # first step, or an option switched on (amsgrad, momentum): zeros
            kept = dict(state)  # (store drops every block maximum it is not given)
            new = {key: torch.zeros_like(p, dtype=torch.float32) for key in missing}
            storage.store(owner, new, state, p, state_dtype, min_size)
            state.update({k: v for k, v in kept.items() if k not in state})
            if any(initial.get(key) == FROM_GRADIENT for key in missing):
                fresh[len(taken)] = 1  # SGD's buffer starts as the gradient: the rule writes it
        t = len(taken)
        taken.append(i)
        modes[t] = mode
        for row, key in enumerate(keys):
            state_ptrs[t, 2 * row] = state[key].data_ptr()
            if mode == lowprec_adam.MODE_INT8:
                state_ptrs[t, 2 * row + 1] = state[key + storage.ABSMAX_SUFFIX].data_ptr()
            elif mode == lowprec_adam.MODE_FP8:
                state_ptrs[t, 2 * row + 1] = state[key + storage.SCALE_SUFFIX].data_ptr()
        for scalar in spec.scalar_state:  # step (and NAdam's mu_product), as the reference's
            if scalar.name not in state:
                dtype = scalar.dtype_for([], torch.float32)
                state[scalar.name] = torch.tensor(scalar.initial, dtype=dtype)
            scalar_values[scalar.name].append(state[scalar.name])
        if stochastic:
            updates = state.get(low_precision.ROUNDING_COUNT, 0) + 1
            state[low_precision.ROUNDING_COUNT] = updates
            stream_keys[t] = rounding.stream_key(
                group.get("rounding_seed", 0), low_precision.position(optimizer, p), updates
            )
        size = p.numel()
        chunks.extend((t, lo, min(size, lo + CHUNK)) for lo in range(0, size, CHUNK))
    if not taken:
        return skipped
    n = len(taken)
    param_ptrs = np.array([params[i].data_ptr() for i in taken], dtype=np.int64)
    # contiguous copies where needed, alive in `dense` until the kernel returns
    dense = [grads[i] if grads[i].is_contiguous() else grads[i].contiguous() for i in taken]
    grad_ptrs = np.array([g.data_ptr() for g in dense], dtype=np.int64)
    # in each scalar's stored dtype (NAdam's running product rounds as the reference's mul_)
    scalars = {name: torch.stack(values).numpy().copy() for name, values in scalar_values.items()}
    rows = spec.coefficients(group, scalars)  # advances the steps, as the reference's += 1
    coef = np.empty((n, len(rows[0]) if isinstance(rows, list) else len(rows)), np.float32)
    coef[:] = rows
    kind = lowprec_adam.WEIGHTS_FLOAT32
    if params[0].dtype == torch.bfloat16:
        kind = lowprec_adam.WEIGHTS_BF16_STOCHASTIC if stochastic else lowprec_adam.WEIGHTS_BF16
    flags = np.array([*spec.flags(group), kind], dtype=np.int64)
    global _TABLES
    if _TABLES is None:
        _TABLES = lowprec_codec.codec_tables()
    elements = sum(params[i].numel() for i in taken)
    follow_torch_threads(elements)  # one thread below dispatch.PARALLEL_FROM elements
    work = np.array(chunks, dtype=np.int64).reshape(-1, 3)
    if adam_layout:
        arguments = (state_ptrs[:n], modes[:n], work, coef, flags, stream_keys[:n], _TABLES)
    else:
        maps = np.array([0 if storage.SIGNED_STATE[key] else 1 for key in keys], dtype=np.int64)
        arguments = (state_ptrs[:n], modes[:n], maps, work, coef, flags, fresh[:n])
        arguments += (stream_keys[:n], _TABLES)
    getattr(kernel, "KERNEL", kernel)(param_ptrs, grad_ptrs, *arguments)
    for t, i in enumerate(taken):
        entry = optimizer.state[params[i]]
        for name, values in scalars.items():
            entry[name].fill_(float(values[t]))
    del dense
    return skipped
