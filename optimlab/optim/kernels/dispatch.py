"""Choosing and running the fused kernel for one parameter group.

``impl="auto"`` runs the kernel when it applies: a CPU group whose parameters are contiguous
float32 or float64 tensors of one dtype, with a Python-number learning rate.  Anything else (CUDA
tensors, a tensor ``lr``, float16/bfloat16 parameters, non-contiguous parameters, mixed dtypes)
takes the reference rule.  ``impl="fused"`` on such a group raises an error that says why.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch

from optimlab.optim.kernels import adadelta, adagrad, adam, adamax, nadam, rmsprop, sgd
from optimlab.optim.kernels.finite import all_finite
from optimlab.optim.kernels.layout import CHUNK, FlatState
from optimlab.optim.kernels.spec import KernelSpec

#: the fused kernel of each registered optimizer, by registry name
KERNELS: dict[str, KernelSpec] = {
    "sgd": sgd.SPEC,
    "momentum": sgd.SPEC,
    "nag": sgd.SPEC,
    "adagrad": adagrad.SPEC,
    "rmsprop": rmsprop.SPEC,
    "adadelta": adadelta.SPEC,
    "adam": adam.SPEC,
    "adamw": adam.SPEC,
    "adamax": adamax.SPEC,
    "nadam": nadam.SPEC,
}

FUSED_DTYPES = (torch.float32, torch.float64)


def unfusable_reason(
    name: str, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
) -> tuple[type[Exception], str] | None:
    """(error type, reason) why the fused kernel cannot update this group, or None if it can."""
    if name not in KERNELS:
        return ValueError, f"there is no fused kernel for {name!r}"
    if isinstance(group["lr"], torch.Tensor):
        return ValueError, "lr is a tensor; the fused kernels take a Python-number lr"
    dtype = params[0].dtype
    if dtype not in FUSED_DTYPES:
        return TypeError, (
            f"parameter 0 has dtype {dtype}; the fused kernels take float32 or float64 parameters"
        )
    for i, (p, g) in enumerate(zip(params, grads)):
        if p.dtype is not dtype or g.dtype is not dtype:
            return TypeError, (
                f"parameter {i} or its gradient has dtype {p.dtype}/{g.dtype} but parameter 0 "
                f"has {dtype}; the fused kernels take one dtype per parameter group"
            )
        if not p.is_cpu:
            return ValueError, (f"parameter {i} is on {p.device}; the fused kernels run on the CPU")
        if not p.is_contiguous():
            return ValueError, (
                f"parameter {i} (shape {tuple(p.shape)}, strides {p.stride()}) is not contiguous"
            )
    return None


def fused_step(
    optimizer: Any,
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    required: bool = False,
) -> bool:
    """Update the group with its fused kernel; False (nothing done) when it does not apply.

    When the kernel is `required` (``impl="fused"`` or ``fused=True``) a group the kernel cannot
    take raises instead of returning False.
    """
    reason = unfusable_reason(optimizer.name, group, params, grads)
    if reason is not None:
        if required:
            error, why = reason
            chosen = "fused=True" if group.get("fused") else "impl='fused'"
            raise error(
                f"{type(optimizer).__name__}({chosen}): {why}; use impl='auto' (and fused=None) "
                f"to fall back to the reference rule where the fused kernel does not apply"
            )
        return False
    spec = KERNELS[optimizer.name]
    layout, indices = _layout(optimizer, spec, group, params)
    chunks, offsets, elements = layout.work(indices)
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    param_ptrs = np.array([p.data_ptr() for p in params], dtype=np.int64)
    grad_ptrs = np.array([g.data_ptr() for g in grads], dtype=np.int64)
    # The common case (every parameter of the layout steps, in order) works on the layout's own
    # arrays; a subset works on copies that are written back.
    everything = indices == layout.all_indices
    if everything:
        scalars = layout.scalars
    else:
        scalars = {name: values[list(indices)] for name, values in layout.scalars.items()}
    rows = spec.coefficients(group, scalars)
    if not everything:
        for name, values in scalars.items():
            layout.scalars[name][list(indices)] = values
    coef = np.empty((len(params), len(rows[0]) if isinstance(rows, list) else len(rows)))
    coef[:] = rows
    coef = coef.astype(_NUMPY[layout.dtype], copy=False)
    flags = np.array(spec.flags(group), dtype=np.int64)
    fresh = layout.fresh if everything else layout.fresh[list(indices)]
    follow_torch_threads(elements)
    spec.kernel(param_ptrs, grad_ptrs, chunks, offsets, fresh, layout.buffer_numpy, coef, flags)
    if everything:
        fresh[:] = 0
    else:
        layout.fresh[list(indices)] = 0
    return True


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _layout(
    optimizer: Any, spec: KernelSpec, group: dict[str, Any], params: list[torch.Tensor]
) -> tuple[FlatState, tuple[int, ...]]:
    """The group's flat state, rebuilt when it no longer holds the state of `params`."""
    layouts = optimizer.__dict__.setdefault("_flat_states", {})
    position = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
    layout = layouts.get(position)
    indices = None if layout is None else layout.describes(spec, group, params, optimizer.state)
    if indices is None:
        # Members: the parameters stepping now and every other one of the group that already
        # has state of this dtype (so that alternating subsets do not rebuild every step).
        stepping = {id(p) for p in params}
        dtype = params[0].dtype
        members = [
            p
            for p in group["params"]
            if id(p) in stepping
            or (
                p.dtype is dtype
                and any(k in optimizer.state.get(p, ()) for k in spec.tensor_state(group))
            )
        ]
        layout = layouts[position] = FlatState(spec, group, members, optimizer.state)
        indices = layout.describes(spec, group, params, optimizer.state)
        assert indices is not None
    return layout, indices


#: below this many elements a step runs on the calling thread: waking the pool costs more than
#: it saves, and far more when other processes keep the cores busy.
PARALLEL_FROM = 2 * CHUNK


def follow_torch_threads(elements: int) -> None:
    """Use as many threads as torch does (``torch.set_num_threads``), one for small work."""
    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if elements < PARALLEL_FROM:
        wanted = 1
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


_FINITE_CHUNKS: dict[tuple[int, ...], np.ndarray] = {}


def grads_all_finite(grads: list[torch.Tensor]) -> bool | None:
    """Whether every gradient is finite, in one parallel pass; None if the check does not apply."""
    dtype = grads[0].dtype
    if dtype not in FUSED_DTYPES or not all(
        g.dtype is dtype and g.is_cpu and g.is_contiguous() for g in grads
    ):
        return None
    sizes = tuple(g.numel() for g in grads)
    chunks = _FINITE_CHUNKS.get(sizes)
    if chunks is None:
        rows = [
            (t, lo, min(size, lo + CHUNK))
            for t, size in enumerate(sizes)
            for lo in range(0, size, CHUNK)
        ]
        chunks = np.array(rows, dtype=np.int64).reshape(-1, 3)
        if len(_FINITE_CHUNKS) > 64:  # a bounded cache: a few models' shapes
            _FINITE_CHUNKS.clear()
        _FINITE_CHUNKS[sizes] = chunks
    grad_ptrs = np.array([g.data_ptr() for g in grads], dtype=np.int64)
    follow_torch_threads(sum(sizes))
    return all_finite(grad_ptrs, chunks, grads[0].element_size())
