"""The flat state of one parameter group: one buffer per group, the per-parameter state as views.

A fused step touches every state tensor of a group in one kernel call.  The group's tensor states
live in one ``[k, total]`` buffer (row r is state key r, each parameter a slice of every row) and
``optimizer.state[p][key]`` is a *view* of its slice reshaped like ``p``, so everything that reads
or writes the state through torch's API (state_dict, load_state_dict, a user inspecting
``exp_avg``) sees the same numbers the kernel updates.  Per-parameter scalar states (``step``,
``mu_product``) are 0-dim views of one 1-d buffer per key, whose numpy view the coefficient
functions update.

The layout is checked before every fused step and rebuilt ("re-flattened", copying the current
values) when it no longer describes the state: a parameter steps for the first time, a state
tensor was replaced (load_state_dict, a user assignment), the group's options now need other
state (amsgrad switched on), or a parameter changed dtype.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from optimlab.optim.kernels.spec import FROM_GRADIENT, KernelSpec

#: the unit of parallel work, in elements: large enough to amortise the per-chunk setup, small
#: enough to balance a few large tensors over the threads.
CHUNK = 1 << 16


class FlatState:
    """The flat state buffers of one parameter group, for one kernel and one dtype."""

    def __init__(
        self,
        spec: KernelSpec,
        group: dict[str, Any],
        params: list[torch.Tensor],
        state: dict[torch.Tensor, dict[str, Any]],
    ) -> None:
        self.group_id = id(group)
        self.keys = spec.tensor_state(group)
        self.dtype = params[0].dtype
        self.params = params
        self.index = {id(p): i for i, p in enumerate(params)}
        self.all_indices = tuple(range(len(params)))
        sizes = np.array([p.numel() for p in params], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        total = int(sizes.sum())
        self.buffer = torch.empty((len(self.keys), total), dtype=self.dtype)
        self.buffer_numpy = self.buffer.numpy()
        self.fresh = np.zeros(len(params), dtype=np.uint8)
        self.views: list[list[torch.Tensor]] = []
        initial_values = spec.initial(group)
        for row, key in enumerate(self.keys):
            views = []
            initial = initial_values.get(key, 0.0)
            for i, p in enumerate(params):
                start = int(self.offsets[i])
                view = self.buffer[row, start : start + p.numel()].view(p.shape)
                old = state[p].get(key)
                if isinstance(old, torch.Tensor):
                    view.copy_(old)  # a wrong shape fails here, as it would in the reference
                elif initial == FROM_GRADIENT:
                    self.fresh[i] = 1
                else:
                    view.fill_(initial)
                views.append(view)
            self.views.append(views)
        self.any_fresh = bool(self.fresh.any())
        self.scalars: dict[str, np.ndarray] = {}
        self.scalar_views: list[tuple[str, list[torch.Tensor]]] = []
        for scalar in spec.scalar_state:
            dtype = scalar.dtype_for([state[p].get(scalar.name) for p in params], self.dtype)
            flat = torch.empty(len(params), dtype=dtype)
            for i, p in enumerate(params):
                old = state[p].get(scalar.name)
                flat[i] = float(old) if isinstance(old, torch.Tensor) else scalar.initial
            self.scalars[scalar.name] = flat.numpy()
            self.scalar_views.append((scalar.name, [flat[i] for i in range(len(params))]))
        # Publish the views, scalar state first (the reference creates `step` before the rest).
        for name, views in self.scalar_views:
            for p, view in zip(params, views):
                state[p][name] = view
        for key, views in zip(self.keys, self.views):
            for p, view in zip(params, views):
                state[p][key] = view
        self._chunks: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, int]] = {}
        #: the kernel call's argument arrays per subset of parameters (see dispatch._CallArrays)
        self.call_arrays: dict[tuple[int, ...], Any] = {}
        #: the work arrays of a step with a rate per member, per (subset, M) (see .members)
        self.member_work: dict[tuple[tuple[int, ...], int], Any] = {}
        #: the group's repeat step while nothing changes (see dispatch.FastStep); None: none yet
        self.fast: Any = None

    def describes(
        self,
        spec: KernelSpec,
        group: dict[str, Any],
        params: list[torch.Tensor],
        state: dict[torch.Tensor, dict[str, Any]],
    ) -> tuple[int, ...] | None:
        """The layout index of each of `params` if this layout still holds their state, else None."""
        if id(group) != self.group_id or spec.tensor_state(group) != self.keys:
            return None
        index = self.index
        indices = []
        for p in params:
            i = index.get(id(p))
            if i is None or p.dtype != self.dtype:
                return None
            entry = state[p]
            for key, views in zip(self.keys, self.views):
                if entry.get(key) is not views[i]:
                    return None
            for name, views in self.scalar_views:
                if entry.get(name) is not views[i]:
                    return None
            indices.append(i)
        return tuple(indices)

    def work(self, indices: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
        """(chunks, offsets, elements) for the tensors `indices`; chunks hold <= CHUNK elements."""
        cached = self._chunks.get(indices)
        if cached is None:
            rows = []
            for t, i in enumerate(indices):
                size = self.params[i].numel()
                pieces = max(1, -(-size // CHUNK))
                bounds = np.linspace(0, size, pieces + 1).astype(np.int64)
                rows.extend((t, int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds))
            chunks = np.array(rows, dtype=np.int64).reshape(-1, 3)
            offsets = self.offsets[list(indices)]
            elements = sum(self.params[i].numel() for i in indices)
            cached = self._chunks[indices] = (chunks, offsets, elements)
        return cached
