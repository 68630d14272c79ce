"""The one kernel skeleton, and the named coefficient and flag layouts every kernel reads.

A fused kernel is its element loop only::

    @numba.njit(inline="always")
    def _rule(p, g, state, start, stop, k, flags, first):
        ...  # p, g: this chunk's parameter and gradient; state[row, start:stop]: its state
             # k: the tensor's coefficient row; flags: the group's flags; first: fresh state

    KERNEL = fused_kernel(_rule, "adam")

:func:`fused_kernel` wraps it in the shared prologue (the parallel loop over chunks, the pointer
views of the user's tensors, the state offsets) and compiles it with :func:`jit_kernel`, twice:
the parallel kernel and, as its ``serial`` attribute, the same loop on the calling thread (the
dispatcher takes it for groups below ``dispatch.PARALLEL_FROM`` elements).

The coefficient row and the flags are declared by name, once, as namedtuple classes
(:func:`coefficient_layout`, :func:`flag_layout`): the Python side builds a row with keywords
(``Coefficients(wd=..., decay=..., beta2=...)``), the kernel indexes it through the layout's
indices (``k[C.beta2]``, a compile-time constant), so the two can never disagree on a position.
The common fields come first (``wd, decay``; ``maximize, l2, decoupled``), where
:mod:`.common` reads them.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Callable
from typing import Any

import numba
from numba import prange

from optimlab.optim.kernels.compile import jit_kernel, pointer_view

#: the coefficients every row starts with: weight_decay and 1 - lr * weight_decay
COMMON_COEFFICIENTS = ("wd", "decay")
#: the flags every kernel receives first (see spec.common_flags)
COMMON_FLAGS = ("maximize", "l2", "decoupled")


def coefficient_layout(algorithm: str, *names: str) -> type[tuple[float, ...]]:
    """A namedtuple class of one kernel's coefficient row: the common two, then `names`."""
    return collections.namedtuple(f"{algorithm}_coefficients", (*COMMON_COEFFICIENTS, *names))


def flag_layout(algorithm: str, *names: str) -> type[tuple[int, ...]]:
    """A namedtuple class of one kernel's flags: the common three, then `names`."""
    return collections.namedtuple(f"{algorithm}_flags", (*COMMON_FLAGS, *names))


def indices(layout: type[tuple[Any, ...]]) -> Any:
    """The layout's field positions as an instance of it (``indices(C).beta2 == 4``).

    Bound to a module global, numba freezes it: ``k[C.beta2]`` compiles to a constant index.
    """
    return layout(*range(len(layout._fields)))  # type: ignore[attr-defined]


@numba.njit(inline="always")
def prologue(k, flags):
    """(maximize, l2, decoupled, wd, decay), read once before an element loop.

    Loaded into locals so that the loop body holds no load the compiler must repeat (a store
    through p might alias flags as far as it knows, and would keep it from vectorizing).
    """
    return flags[0], flags[1], flags[2], k[0], k[1]


# The templates of the skeleton.  ``element_loop`` and ``chunk`` are globals that
# :func:`fused_kernel` binds per algorithm, in a copy of each function (see its docstring).
def _chunk(c, param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
    p = pointer_view(param_ptrs[t], lo, hi, coef)
    g = pointer_view(grad_ptrs[t], lo, hi, coef)
    element_loop(p, g, state, offsets[t] + lo, offsets[t] + hi, coef[t], flags, fresh[t])  # noqa: F821


def _kernel(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        chunk(c, param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags)  # noqa: F821


def _serial_kernel(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in range(chunks.shape[0]):
        chunk(c, param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags)  # noqa: F821


def _bind(template: Callable[..., Any], qualname: str, **bound: Any) -> Callable[..., Any]:
    """A copy of `template` whose globals include `bound`, named `qualname` (numba's cache
    file name)."""
    function = types.FunctionType(
        template.__code__, {**template.__globals__, **bound}, template.__name__
    )
    function.__qualname__ = qualname
    return function


def fused_kernel(element_loop: Callable[..., None], algorithm: str) -> Any:
    """The compiled kernel (calling convention: see :mod:`.spec`) around `element_loop`.

    `element_loop(p, g, state, start, stop, k, flags, first)` updates one chunk: ``p`` and
    ``g`` are views of the chunk of the parameter and its gradient, ``state[row, start:stop]``
    the chunk of each state row, ``k`` the tensor's coefficient row, ``first`` 1 when the
    tensor's state was just created.  It must be ``numba.njit(inline="always")``.

    The skeleton gets `element_loop` as a global of its own copy, not through a closure: numba's
    disk-cache key hashes a closure's cell contents, and a pickled dispatcher differs in every
    process, so a closure never found its cached code and every process compiled every kernel
    anew.  The cache name carries the package's source digest (``compile.SOURCES_DIGEST``), so
    a changed element loop still compiles anew.
    """
    chunk = numba.njit(inline="always")(
        _bind(_chunk, f"{algorithm}_chunk", element_loop=element_loop)
    )
    # numba names a cache file after the source file and the qualified name: one per algorithm
    kernel = _bind(_kernel, f"{algorithm}_kernel", chunk=chunk)
    serial_kernel = _bind(_serial_kernel, f"{algorithm}_serial_kernel", chunk=chunk)
    compiled = jit_kernel(kernel)
    # The same loop without the thread pool, for groups too small to split: launching a
    # parallel region costs ≈2.5 µs even on one thread (measured, numba's omp layer), more
    # than the element loop of a 1,000-element tensor.  Compiled on its first call only.
    compiled.serial = jit_kernel(serial_kernel, parallel=False, error_model="numpy")
    return compiled
