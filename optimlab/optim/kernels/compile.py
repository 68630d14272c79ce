"""Compiling the kernels: numba options, the on-disk cache and its fallback, raw-pointer access.

Every kernel is compiled by :func:`jit_kernel` with ``parallel=True`` (a ``prange`` over chunks of
the group's elements), ``fastmath=False`` (IEEE results, so a kernel rounds like the reference)
and ``cache=True``: the machine code is stored next to the source (numba's ``__pycache__``) or in
numba's user-wide cache, so only the first process ever pays the compilation (the cache name
carries a digest of the whole kernels package: see `SOURCES_DIGEST`).  Where no cache
directory is writable numba refuses ``cache=True``; the kernel is then compiled in memory, once
per process, without a word.

A group's parameters and gradients are the user's tensors, scattered in memory.  Rather than
building a numba typed list every step (slow), a kernel receives their addresses in an int64
array and views each one as an array with :func:`pointer_view`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from llvmlite import ir
from numba import types
from numba.core import caching
from numba.extending import intrinsic

#: numba options shared by every kernel.
KERNEL_OPTIONS: dict[str, Any] = {"parallel": True, "fastmath": False, "nogil": True}


def sources_digest(directory: Path) -> str:
    """A digest of every ``.py`` file in `directory` (names and contents, in name order)."""
    digest = hashlib.sha1()
    for path in sorted(directory.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


#: numba keys a cached kernel on its own source file only, so a change to a helper it inlines
#: (``common.py``, this file) would reuse stale machine code. The digest of the whole kernels
#: package goes into each kernel's cache name instead: any change there compiles anew.
SOURCES_DIGEST = sources_digest(Path(__file__).parent)


def jit_kernel(py_func: Callable[..., Any], **options: Any) -> Any:
    """Compile `py_func` with numba, cached on disk when a cache directory is writable.

    The cache falls back quietly to in-memory compilation in both places numba can fail: when no
    cache location accepts a test file (numba raises at decoration) and when writing the compiled
    code fails later (the directory became unwritable: the cache is switched off, the call
    compiles again in memory).
    """
    options = {**KERNEL_OPTIONS, **options}
    if not py_func.__qualname__.endswith(SOURCES_DIGEST):
        py_func.__qualname__ = f"{py_func.__qualname__}_{SOURCES_DIGEST}"
    try:
        dispatcher = numba.njit(cache=True, **options)(py_func)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(py_func)
    return _CacheGuard(dispatcher)


class _CacheGuard:
    """Calls a cached dispatcher; on a cache write error, disables the cache and calls again."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher
        self.py_func = dispatcher.py_func
        functools.update_wrapper(self, self.py_func)

    def __call__(self, *args: Any) -> Any:
        try:
            return self.dispatcher(*args)
        except OSError:
            # Compilation succeeded but saving it did not: compile without the cache from now on.
            self.dispatcher._cache = caching.NullCache()
            return self.dispatcher(*args)

    @property
    def cached(self) -> bool:
        """Whether compiled code is stored on disk."""
        return not isinstance(self.dispatcher._cache, caching.NullCache)


def is_cached(kernel: Any) -> bool:
    """Whether `kernel` (from :func:`jit_kernel`) stores its compiled code on disk."""
    return isinstance(kernel, _CacheGuard) and kernel.cached


@intrinsic
def pointer_view_address(typingctx: Any, address: Any, like: Any) -> Any:
    """The int64 `address` as a pointer to elements of `like`'s dtype (an LLVM ``inttoptr``)."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    signature = types.CPointer(like.dtype)(address, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


@numba.njit(inline="always")
def pointer_view(address: int, start: int, stop: int, like: Any) -> Any:
    """Elements ``[start, stop)`` of the contiguous array at `address`, of `like`'s dtype."""
    return numba.carray(
        pointer_view_address(address + start * like.itemsize, like), (stop - start,)
    )


@intrinsic
def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once (LLVM ``llvm.fma``), as torch's vectorized CPU kernels compute it."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    signature = a(a, b, c)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        llvm_type = context.get_value_type(sig.return_type)
        function_type = ir.FunctionType(llvm_type, [llvm_type] * 3)
        name = "llvm.fma.f32" if llvm_type == ir.FloatType() else "llvm.fma.f64"
        function = builder.module.declare_intrinsic(name, fnty=function_type)
        return builder.call(function, args)

    return signature, codegen
