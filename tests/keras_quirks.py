"""Work-arounds for Keras 3 quirks that the modern parity tests must step around.

Each is documented with a minimal reproduction in docs/conventions.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def keras_float64_kept_float64() -> Iterator[None]:
    """Keras's type promotion (``keras.backend.result_type``) maps every 64-bit dtype to its
    32-bit one (to match JAX's default), so on the torch backend ``ops.minimum``,
    ``ops.maximum``, ``ops.mean`` (and every op that promotes) of float64 tensors compute in
    float32: Adafactor's ρ_t, α_t and RMS values, Muon's shape scale.  Within this context the
    promotion keeps float64."""
    from keras.src.backend.common import dtypes

    saved = dtypes.BIT64_TO_BIT32_DTYPE
    dtypes.BIT64_TO_BIT32_DTYPE = {}
    try:
        yield
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE = saved
