"""Element-wise pieces shared by the kernels, each rounding as the torch op the reference uses.

The reference rules are sequences of torch operations; a kernel reproduces each operation's
rounding so that it differs from the reference by rounding only.  torch's CPU kernels (measured on
this build, vectorized body and scalar tail alike) compute ``add(x, alpha=a)`` as ``fma(a, x,
self)``, ``lerp`` as an fma, ``addcmul`` as ``fma(value * t1, t2, self)`` and ``addcdiv`` as
``self + (value * t1) / t2``, and keep every intermediate in the parameter's dtype.  The kernels
follow the same order, with every coefficient pre-rounded to the parameter's dtype (never a
float64 literal, which would promote float32 arithmetic).
"""

from __future__ import annotations

import numba

from optimlab.optim.kernels.compile import fma

#: The common positions, for a kernel not (yet) on the skeleton (skeleton.COMMON_FLAGS and
#: COMMON_COEFFICIENTS name them; a skeleton kernel reads them through skeleton.prologue).
MAXIMIZE, L2, DECOUPLED = 0, 1, 2
WD, DECAY = 0, 1


@numba.njit(inline="always")
def decayed_gradient(p, g, maximize, l2, decoupled, wd, decay):
    """The base class's prologue: maximize negates g; weight decay is L2 (g + wd p) or decoupled.

    Returns the (possibly shrunk) parameter and the gradient the rule sees.
    """
    if maximize:
        g = -g
    if decoupled:
        p = p * decay
    elif l2:
        g = fma(p, wd, g)
    return p, g


@numba.njit(inline="always")
def lerp(start, end, weight, one):
    """torch.lerp's vectorized formula: the form that keeps the small factor small.

    For weight >= 1/2 torch computes ``end - (end - start)(1 - weight)`` with 1 - weight taken
    from the weight as rounded to the dtype (fl(1 - 0.1) - 1 is not -0.1). `one` is 1 in that
    dtype: a literal 1 would promote float32 arithmetic to float64.
    """
    if weight < 0.5:
        return fma(weight, end - start, start)
    return fma(weight - one, end - start, end)


@numba.njit(inline="always")
def maximum(a, b):
    """torch.maximum: NaN if either is NaN."""
    if a != a or a > b:
        return a
    return b


@numba.njit(inline="always")
def clamp_min_zero(x, zero):
    """torch.clamp_min(x, 0): NaN stays NaN."""
    if x < zero:
        return zero
    return x


@numba.njit(inline="always")
def torch_moments(m, v, g, w1, one, beta2, w2):
    """Adam's two moments as torch.optim rounds them: m = lerp(m, g, 1 - b1) and
    v = b2 v + (1 - b2) g^2 (``mul_`` then ``addcmul_``, an fma)."""
    return lerp(m, g, w1, one), fma(w2 * g, g, v * beta2)


@numba.njit(inline="always")
def keras_moments(m, v, g, w1, w2):
    """Adam's two moments as Keras rounds them: m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2)."""
    return m + (g - m) * w1, v + (g * g - v) * w2
