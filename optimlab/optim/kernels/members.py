"""A learning rate per member: one fused step of a population's stacked parameters.

A population (``optimlab.lab.population``) stacks M models' parameters along a leading member
axis: each parameter is a tensor of shape (M, …) whose row r is member r's tensor, and the
group's ``lr`` is a tensor of shape (M, 1, …, 1), one rate per row (the reference rule
broadcasts it over the rows).  The kernels run such a group unchanged, by seeing each row as a
tensor of its own:

* row r of parameter t is the contiguous range ``[r·n, (r+1)·n)`` of t's n·M elements, so its
  address is t's plus ``r·n`` elements, and its state starts at t's offset plus ``r·n``;
* its coefficient row is the scalar path's row with ``lr`` replaced by rate r.  The kernels'
  coefficient functions are arithmetic on ``lr`` (``lr / (1 − β₁ᵗ)``, ``1 − lr·wd``), so they
  are called once with the M rates as a float64 numpy array: numpy's float64 ``+ − × ÷`` round
  exactly as Python's floats do, so every member's coefficients are the very numbers its
  single run computes (one vectorised call, no Python loop over members).

The element loop, its compiled code and the calling convention (:mod:`.spec`) are those of the
scalar path: a population steps each member's row exactly as the kernel steps that row alone
with the member's Python-number rate, bit for bit, provided the rates are the single runs'
Python floats (a float64 rate tensor holds them exactly; a float32 one has rounded them).  The
rate vector adds M floats per step to the bytes moved, nothing per element.

A kernel whose coefficients are not a function of the group's options and step alone (Schedule-
Free advances the group's averaging weights, which depend on ``lr``, in its coefficient function)
declares ``member_rates=False`` and leaves per-member rates to its reference rule.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from optimlab.optim.kernels.layout import CHUNK, FlatState
from optimlab.optim.kernels.spec import KernelSpec


def member_rates_reason(
    spec: KernelSpec, lr: torch.Tensor, params: list[torch.Tensor]
) -> str | None:
    """Why the kernel cannot take the tensor `lr` as one rate per member, or None if it can."""
    if not spec.member_rates:
        return (
            "lr is a tensor and this optimizer's kernel takes a Python-number lr only (its "
            "coefficients depend on the rate through state kept per group)"
        )
    shape = tuple(lr.shape)
    members = shape[0] if shape else 0
    if not shape or lr.numel() != members or lr.is_complex() or not lr.is_floating_point():
        return (
            f"lr is a tensor of shape {shape} and dtype {lr.dtype}; the fused kernels take a "
            f"Python-number lr or a real rate per member, of shape (M, 1, …, 1)"
        )
    for i, p in enumerate(params):
        if p.dim() != lr.dim() or p.shape[0] != members:
            return (
                f"lr is a tensor of shape {shape} and parameter {i} has shape "
                f"{tuple(p.shape)}; the fused kernels take a Python-number lr or a rate per "
                f"member: lr of shape (M, 1, …, 1) over parameters of shape (M, …), as many "
                f"dimensions each"
            )
    return None


def member_rates(lr: torch.Tensor) -> np.ndarray:
    """The M rates as float64 numbers (exact: float64 holds every float32 and float64 rate)."""
    return lr.detach().to("cpu", torch.float64).reshape(-1).numpy()


class MemberWork:
    """A kernel call's arrays for a set of stacked tensors seen as their rows (M each), kept
    between steps and refilled in place: building them afresh each step cost more than the
    kernel on a population of small models."""

    def __init__(self, layout: FlatState, indices: tuple[int, ...], members: int) -> None:
        count = len(indices)
        sizes = np.array([layout.params[i].numel() for i in indices], dtype=np.int64)
        row_sizes = sizes // members
        self.count, self.members = count, members
        steps = np.arange(members, dtype=np.int64)
        #: element offset of each row inside its tensor, tensor-major: (count·M,)
        row_starts = (row_sizes[:, None] * steps[None, :]).reshape(-1)
        self.row_bytes = row_starts * layout.buffer.element_size()
        self.offsets = np.repeat(layout.offsets[list(indices)], members) + row_starts
        chunk_rows = []
        for t, size in enumerate(np.repeat(row_sizes, members).tolist()):
            pieces = max(1, -(-size // CHUNK))
            bounds = np.linspace(0, size, pieces + 1).astype(np.int64)
            chunk_rows.extend((t, int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds))
        self.chunks = np.array(chunk_rows, dtype=np.int64).reshape(-1, 3)
        self.elements = int(sizes.sum())
        self.param_ptrs = np.empty(count * members, dtype=np.int64)
        self.grad_ptrs = np.empty(count * members, dtype=np.int64)
        self.dtype = layout.buffer_numpy.dtype
        self.coef = np.empty((count * members, 0), dtype=self.dtype)
        self.no_fresh = np.zeros(count * members, dtype=np.uint8)
        self._flags_key: tuple[int, ...] | None = None
        self._flags = np.empty(0, dtype=np.int64)

    def pointers(self, tensors: list[torch.Tensor], out: np.ndarray) -> np.ndarray:
        """Each row's address into `out`: its tensor's plus the row's start (contiguous
        tensors)."""
        bases = np.fromiter((t.data_ptr() for t in tensors), np.int64, self.count)
        return np.add(np.repeat(bases, self.members), self.row_bytes, out=out)

    def coefficients(
        self,
        spec: KernelSpec,
        group: dict[str, Any],
        scalars: dict[str, np.ndarray],
        rates: np.ndarray,
    ) -> np.ndarray:
        """The coefficient rows of the count tensors × M members, tensor-major, in the layout's
        dtype: (count·M, m).

        One call of the spec's coefficient function with ``lr`` the rate array (it advances the
        per-tensor scalar state once, as a scalar step does); each field is a number shared by
        the members or an array of one value per member, rounded once to the layout's dtype as
        the scalar path's ``coef[:] = row`` rounds it.
        """
        rows = spec.coefficients({**group, "lr": rates}, scalars)
        single = not isinstance(rows, list)  # one row for every tensor of the group
        width = len(rows if single else rows[0])
        if self.coef.shape[1] != width:
            self.coef = np.empty((self.count * self.members, width), dtype=self.dtype)
        blocks = self.coef.reshape(self.count, self.members, width)
        for t, row in enumerate([rows] if single else rows):
            block = blocks if single else blocks[t]
            for j, field in enumerate(row):
                block[..., j] = field
        return self.coef

    def flags(self, values: tuple[int, ...]) -> np.ndarray:
        if values != self._flags_key:
            self._flags = np.array(values, dtype=np.int64)
            self._flags_key = tuple(values)
        return self._flags


def member_work(layout: FlatState, indices: tuple[int, ...], members: int) -> MemberWork:
    """The layout's cached :class:`MemberWork` for these tensors and M."""
    cache = layout.member_work
    work = cache.get((indices, members))
    if work is None:
        if len(cache) > 16:  # alternating subsets: a bounded cache
            cache.clear()
        work = cache[(indices, members)] = MemberWork(layout, indices, members)
    return work
