"""Fused AdaGrad (see ``optimlab.optim.adagrad`` for the rule and its two conventions).

Bytes per float32 parameter and step: read p, g, s, write p, s = 20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from optimlab.optim.kernels.common import DECAY, WD, decayed_gradient
from optimlab.optim.kernels.compile import fma, jit_kernel, pointer_view
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
    per_tensor_rows,
)

CLR, EPS = 2, 3
KERAS = 3


def _adagrad(param_ptrs, grad_ptrs, chunks, offsets, fresh, state, coef, flags):
    for c in prange(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        p = pointer_view(param_ptrs[t], lo, hi, coef)
        g = pointer_view(grad_ptrs[t], lo, hi, coef)
        s = state[0, offsets[t] + lo : offsets[t] + hi]
        maximize, l2, decoupled = flags[0], flags[1], flags[2]
        wd, decay, clr, eps = coef[t, WD], coef[t, DECAY], coef[t, CLR], coef[t, EPS]
        minus_clr = -clr
        if flags[KERAS]:
            # s += g^2;  p -= clr g / sqrt(s + eps)
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                sj = s[j] + gj * gj
                s[j] = sj
                p[j] = pj - gj * clr / np.sqrt(sj + eps)
        else:
            # s += g^2;  p -= clr g / (sqrt(s) + eps)
            for j in range(hi - lo):
                pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
                sj = fma(gj, gj, s[j])
                s[j] = sj
                p[j] = pj + minus_clr * gj / (np.sqrt(sj) + eps)


def _coefficients(group: dict[str, Any], scalars: dict[str, np.ndarray]) -> Any:
    def row(step: float) -> tuple[float, ...]:
        clr = group["lr"] / (1 + (int(step) - 1) * group["lr_decay"])
        return (*common_coefficients(group), clr, group["eps"])

    return per_tensor_rows(row, advance_steps(scalars))


SPEC = KernelSpec(
    kernel=jit_kernel(_adagrad),
    tensor_state=lambda group: ("sum",),
    coefficients=_coefficients,
    flags=lambda group: (*common_flags(group), int(group["convention"] == "keras")),
    scalar_state=(STEP,),
    initial=lambda group: {"sum": group["initial_accumulator_value"]},
    bytes_per_param=lambda group: 20,
)
