"""Fused AdaGrad (see ``optimlab.optim.adagrad`` for the rule and its two conventions).

Bytes per float32 parameter and step: read p, g, s, write p, s = 20.

The decayed learning rate comes from the algorithm module's one pure function
(``optimlab.optim.adagrad.decayed_lr``), passed to :func:`make_spec` (layers point one way).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numba
import numpy as np

from optimlab.optim.kernels.common import decayed_gradient
from optimlab.optim.kernels.compile import fma
from optimlab.optim.kernels.skeleton import (
    coefficient_layout,
    flag_layout,
    fused_kernel,
    indices,
    prologue,
)
from optimlab.optim.kernels.spec import (
    STEP,
    KernelSpec,
    advance_steps,
    common_coefficients,
    common_flags,
    per_tensor_rows,
)

Coefficients = coefficient_layout("adagrad", "clr", "eps")
Flags = flag_layout("adagrad", "keras")
C, F = indices(Coefficients), indices(Flags)


@numba.njit(inline="always")
def _adagrad(p, g, state, start, stop, k, flags, first):
    s = state[0, start:stop]
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    clr, eps = k[C.clr], k[C.eps]
    minus_clr = -clr
    if flags[F.keras]:
        # s += g^2;  p -= clr g / sqrt(s + eps)
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            sj = s[j] + gj * gj
            s[j] = sj
            p[j] = pj - gj * clr / np.sqrt(sj + eps)
    else:
        # s += g^2;  p -= clr g / (sqrt(s) + eps)
        for j in range(p.shape[0]):
            pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
            sj = fma(gj, gj, s[j])
            s[j] = sj
            p[j] = pj + minus_clr * gj / (np.sqrt(sj) + eps)


KERNEL = fused_kernel(_adagrad, "adagrad")


def _coefficients(
    decayed_lr: Callable[[float, float, int], float],
    group: dict[str, Any],
    scalars: dict[str, np.ndarray],
) -> Any:
    def row(step: float) -> tuple[float, ...]:
        return Coefficients(
            *common_coefficients(group),
            clr=decayed_lr(group["lr"], group["lr_decay"], int(step)),
            eps=group["eps"],
        )

    return per_tensor_rows(row, advance_steps(scalars))


def make_spec(decayed_lr: Callable[[float, float, int], float]) -> KernelSpec:
    """AdaGrad's kernel, given the algorithm's decayed learning rate (``adagrad.decayed_lr``)."""
    return KernelSpec(
        kernel=KERNEL,
        tensor_state=lambda group: ("sum",),
        coefficients=partial(_coefficients, decayed_lr),
        flags=lambda group: Flags(*common_flags(group), keras=int(group["convention"] == "keras")),
        scalar_state=(STEP,),
        initial=lambda group: {"sum": group["initial_accumulator_value"]},
        bytes_per_param=lambda group: 20,
    )
