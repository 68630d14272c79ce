"""One parallel pass that tells whether every gradient of a group is finite (``nonfinite="skip"``).

A float is infinite or NaN exactly when its exponent bits are all ones, so the check reads each
gradient as integers and ORs one comparison per element: an integer reduction, which the
compiler vectorizes without reassociating floating-point sums.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from optimlab.optim.kernels.compile import jit_kernel, pointer_view

_EXPONENT = {4: np.uint32(0x7F800000), 8: np.uint64(0x7FF0000000000000)}
_BITS = {4: np.empty(0, np.uint32), 8: np.empty(0, np.uint64)}


def _count_nonfinite(grad_ptrs, chunks, like, exponent):
    bad = np.zeros(chunks.shape[0], dtype=np.uint8)
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        bits = pointer_view(grad_ptrs[t], lo, hi, like)
        found = 0
        for j in range(hi - lo):
            found |= (bits[j] & exponent) == exponent
        bad[c] = found
    return bad.sum()


_kernel = jit_kernel(_count_nonfinite)


def all_finite(grad_ptrs: np.ndarray, chunks: np.ndarray, itemsize: int) -> bool:
    """Whether the float32 (itemsize 4) or float64 (8) gradients at `grad_ptrs` are all finite."""
    return int(_kernel(grad_ptrs, chunks, _BITS[itemsize], _EXPONENT[itemsize])) == 0
