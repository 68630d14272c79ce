"""Fused CPU kernels: each optimizer's whole step in one parallel pass over memory.

An optimizer step is memory-bound: its floor is the bytes each element needs once (float32 Adam
reads p, g, m, v and writes p, m, v: 28 bytes per parameter).  The reference rules are sequences
of torch operations that each walk memory again; a kernel here reads and writes every element
once, in parallel over chunks of the group's elements, for every option and both conventions.
It differs from the reference by rounding only (``tests/test_kernels.py``).

Layout: ``compile`` (numba options, disk cache, raw-pointer views), ``spec`` (what a kernel
declares and its calling convention), ``layout`` (one flat state buffer per group), ``common``
(element-wise pieces rounding as torch's ops), one module per algorithm, ``finite`` (the
``nonfinite="skip"`` check), ``dispatch`` (when the kernel applies, and running it).  An
algorithm's class points to its kernel (``Optimizer.kernel``); nothing here names an algorithm.
"""

from optimlab.optim.kernels.dispatch import fused_step, grads_all_finite, unfusable_reason

__all__ = ["fused_step", "grads_all_finite", "unfusable_reason"]
