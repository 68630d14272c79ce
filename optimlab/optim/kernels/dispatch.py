"""Choosing and running the fused kernel for one parameter group.

``impl="auto"`` runs the kernel when it applies: a CPU group whose parameters are contiguous
float32 or float64 tensors of one dtype, with a Python-number learning rate.  Anything else (CUDA
tensors, a tensor ``lr``, float16/bfloat16 parameters, non-contiguous parameters, mixed dtypes)
takes the reference rule.  ``impl="fused"`` on such a group raises an error that says why.
"""

from __future__ import annotations

import threading
from typing import Any

import numba
import numpy as np
import torch

from optimlab.optim.kernels.finite import all_finite
from optimlab.optim.kernels.layout import CHUNK, FlatState
from optimlab.optim.kernels.spec import KernelSpec

FUSED_DTYPES = (torch.float32, torch.float64)


def unfusable_reason(
    spec: KernelSpec | None,
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
) -> tuple[type[Exception], str] | None:
    """(error type, reason) why the fused kernel cannot update this group, or None if it can."""
    if spec is None:
        return ValueError, "this optimizer declares no fused kernel"
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
    spec: KernelSpec | None,
    group: dict[str, Any],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    *,
    required: bool = False,
) -> bool:
    """Update the group with its fused kernel; False (nothing done) when it does not apply.

    `spec` is the kernel the optimizer's class declares (None: it has none).  When it is `required` (``impl="fused"`` or ``fused=True``) a group the kernel cannot
    take raises instead of returning False.
    """
    reason = unfusable_reason(spec, group, params, grads)
    if reason is not None:
        if required:
            error, why = reason
            chosen = "fused=True" if group.get("fused") else "impl='fused'"
            raise error(
                f"{type(optimizer).__name__}({chosen}): {why}; use impl='auto' (and fused=None) "
                f"to fall back to the reference rule where the fused kernel does not apply"
            )
        return False
    assert spec is not None
    layout, indices = _layout(optimizer, spec, group, params)
    chunks, offsets, elements = layout.work(indices)
    call = _call_arrays(layout, indices)
    param_ptrs, grad_ptrs = call.param_ptrs, call.grad_ptrs
    for i, (p, g) in enumerate(zip(params, grads)):
        if not g.is_contiguous():
            g = grads[i] = g.contiguous()  # kept alive by `grads` until the kernel returns
        param_ptrs[i] = p.data_ptr()
        grad_ptrs[i] = g.data_ptr()
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
    coef = call.coefficients(len(rows[0]) if isinstance(rows, list) else len(rows))
    coef[:] = rows  # Python floats rounded once to the layout's dtype
    flags = call.flags(spec.flags(group))
    fresh = layout.fresh if everything else layout.fresh[list(indices)]
    follow_torch_threads(elements)
    spec.kernel(param_ptrs, grad_ptrs, chunks, offsets, fresh, layout.buffer_numpy, coef, flags)
    if layout.any_fresh:  # SGD's first-step buffers are no longer fresh
        if everything:
            fresh[:] = 0
        else:
            layout.fresh[list(indices)] = 0
        layout.any_fresh = bool(layout.fresh.any())
    return True


class _CallArrays:
    """The numpy arrays one kernel call takes, kept between steps of one (layout, subset).

    Building them afresh cost more than the whole step of a small tensor; they are refilled in
    place instead (pointers every step: a gradient is often a new tensor; coefficients every step;
    flags only when the group's options change).
    """

    def __init__(self, count: int, dtype: torch.dtype) -> None:
        self.param_ptrs = np.empty(count, dtype=np.int64)
        self.grad_ptrs = np.empty(count, dtype=np.int64)
        self._count = count
        self._dtype = _NUMPY[dtype]
        self._coef = np.empty((count, 0), dtype=self._dtype)
        self._flags_key: tuple[int, ...] | None = None
        self._flags = np.empty(0, dtype=np.int64)

    def coefficients(self, width: int) -> np.ndarray:
        if self._coef.shape[1] != width:
            self._coef = np.empty((self._count, width), dtype=self._dtype)
        return self._coef

    def flags(self, values: tuple[int, ...]) -> np.ndarray:
        if values != self._flags_key:
            self._flags = np.array(values, dtype=np.int64)
            self._flags_key = tuple(values)
        return self._flags


def _call_arrays(layout: FlatState, indices: tuple[int, ...]) -> _CallArrays:
    arrays = layout.call_arrays.get(indices)
    if arrays is None:
        if len(layout.call_arrays) > 16:  # alternating subsets: a bounded cache
            layout.call_arrays.clear()
        arrays = layout.call_arrays[indices] = _CallArrays(len(indices), layout.dtype)
    return arrays


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _layout(
    optimizer: Any, spec: KernelSpec, group: dict[str, Any], params: list[torch.Tensor]
) -> tuple[FlatState, tuple[int, ...]]:
    """The group's flat state, rebuilt when it no longer holds the state of `params`."""
    layouts = optimizer.fused_layouts
    layout = layouts.get(id(group))  # `describes` checks that it is this group's
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
        live = {id(g) for g in optimizer.param_groups}  # forget groups that were replaced
        for key in [key for key in layouts if key not in live]:
            del layouts[key]
        layout = layouts[id(group)] = FlatState(spec, group, members, optimizer.state)
        indices = layout.describes(spec, group, params, optimizer.state)
        assert indices is not None
    return layout, indices


#: below this many elements a step runs on the calling thread: waking the pool costs more than
#: it saves, and far more when other processes keep the cores busy.
PARALLEL_FROM = 2 * CHUNK


def follow_torch_threads(elements: int) -> None:
    """Use as many threads as torch does (``torch.set_num_threads``), one for small work.

    numba's thread count is per calling thread and costs a few microseconds to read, so the count
    this module last set is remembered per thread; only a change calls numba.
    """
    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if elements < PARALLEL_FROM:
        wanted = 1
    if getattr(_THREADS, "count", None) != wanted:
        if numba.get_num_threads() != wanted:
            numba.set_num_threads(wanted)
        _THREADS.count = wanted


_THREADS = threading.local()


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
