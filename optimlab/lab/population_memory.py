"""Keep freed memory in the process for the next step instead of handing it back to the OS.

A population's step allocates and frees the same large tensors every step (a 36-member CNN:
activations and window copies of 3–11 MB each). With glibc's defaults, a freed block at the
top of the heap beyond the trim threshold is returned to the kernel, and blocks above the mmap
threshold are mapped afresh, so the next step touches new pages: ≈ 1,000 page faults a step,
measured, and elementwise copies running at a fraction of their speed while the kernel zeroes
pages. Raising the thresholds once (``mallopt``) keeps those pages in the process:
measured 8 % less CPU time per member-step on mnist1d-cnn (docs/compare.md, "Speed").

The cost: the process keeps up to `TRIM_THRESHOLD` bytes of freed heap mapped. Only on glibc
(elsewhere nothing happens).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: blocks up to this size come from the heap, not from a fresh mapping (glibc's largest)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: freed memory at the top of the heap is kept up to this size
TRIM_THRESHOLD = 1024 * 1024 * 1024
#: the heap grows by this much more than asked, in one system call
TOP_PAD = 64 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True where glibc took all three."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
