r"""f and ∇f of the built-in surfaces at once, without autograd, with autograd's very numbers.

The batched runner needs f and ∇f of a few rows once per step.  Through autograd that costs
≈120 µs a step on Rosenbrock (building the graph and walking it back); the closed forms here cost
a few µs in NumPy.  They are written to give **the same floating-point numbers** as
``torch.autograd.grad(fn(xy).sum(), xy)``, not merely close ones, so that no trajectory changes:
each gradient is computed with the operations autograd's backward formulas perform
(``pow(t, 2)`` → ``grad · (2·t)``, ``a·b`` → ``grad · b`` and ``grad · a``, ``cos`` →
``grad · −sin``, ``sqrt`` → ``grad / (2·result)``, a scalar factor → ``grad · c``), and the
contributions to a coordinate are added in the order autograd's engine adds them: it runs the
backward nodes latest-created first, and sums into an input in the order the contributions
arrive (float addition is not associative, so the order matters in the last bit).  The test
suite checks every function bit for bit against autograd on random points.

Values: the surfaces that are sums and products (every one but Rastrigin and Ackley) are
evaluated here in NumPy with the operations of the torch definition in
:mod:`optimlab.landscapes.functions` (elementwise + − × ÷ round the same in both; ``t ** 2`` is
``t·t`` and ``t ** 3`` is ``t·t·t`` in torch) — also tested bit for bit.  Rastrigin and Ackley
take cos and exp, whose last bit NumPy and torch do not share, so their values come from the torch
definition itself and their transcendental factors from torch too.

Each function takes ``xy`` of shape ``[N, 2]`` (float64) and returns ``(f, ∇f)``: ``[N]`` and
``[N, 2]``.  With ``linear`` (``[N, 2]``, the runner's gradient noise σ·ξ), the gradient is
that of f(xy) + Σ linear·xy, summed as autograd sums it; the value stays f.  In the comments,
``g_t`` is the gradient arriving at the intermediate ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

#: a linear term's coefficients, ``[N, 2]`` (the runner's gradient noise), or None
Linear = np.ndarray | None
ValueAndGrad = Callable[..., tuple[np.ndarray, np.ndarray]]


def _gradient(gx: np.ndarray, gy: np.ndarray, linear: Linear) -> np.ndarray:
    """[∂f/∂x, ∂f/∂y] (+ the linear term: autograd adds f's gradient of a coordinate, taken
    through its column, to the linear term's in one addition, whose order does not matter)."""
    grad = np.empty((len(gx), 2))  # a third of np.stack's cost on a few rows
    grad[:, 0] = gx
    grad[:, 1] = gy
    return grad if linear is None else linear + grad


def ravine(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """x·x/20 + y·y."""
    x, y = xy[:, 0], xy[:, 1]
    value = x * x / 20 + y * y
    g_xx = 1.0 / 20  # the division's backward: grad / 20
    return value, _gradient(g_xx * x + g_xx * x, y + y, linear)


def quadratic(cos: float, sin: float, condition: float) -> ValueAndGrad:
    """½ (u·u + (κ·v)·v), u = cos·x + sin·y, v = −sin·x + cos·y (the rotation of `quadratic`)."""

    def value_and_grad(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
        x, y = xy[:, 0], xy[:, 1]
        u = cos * x + sin * y
        v = -sin * x + cos * y
        kv = condition * v
        value = 0.5 * (u * u + kv * v)
        g = 0.5
        g_v = g * kv + (g * v) * condition  # from (κv)·v first, then from κ·v
        g_u = g * u + g * u
        gx = g_v * -sin + g_u * cos  # v's nodes were created after u's: they run first
        gy = g_v * cos + g_u * sin
        return value, _gradient(gx, gy, linear)

    return value_and_grad


def saddle(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """x·x − y·y."""
    x, y = xy[:, 0], xy[:, 1]
    return x * x - y * y, _gradient(x + x, -y + -y, linear)


def monkey_saddle(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """x³ − ((3x)·y)·y."""
    x, y = xy[:, 0], xy[:, 1]
    a = 3 * x
    b = a * y
    value = x * x * x - b * y
    g_b = -y  # −1 · y
    gy = -b + g_b * a
    gx = (g_b * y) * 3 + 3 * (x * x)  # through 3x first, then pow's 3·x²
    return value, _gradient(gx, gy, linear)


def rosenbrock(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """(1 − x)² + 100 (y − x·x)²."""
    x, y = xy[:, 0], xy[:, 1]
    a = 1 - x
    c = y - x * x
    value = a * a + 100 * (c * c)
    g_c = 100 * (2 * c)
    g_xx = -g_c
    return value, _gradient((g_xx * x + g_xx * x) + -(2 * a), g_c, linear)


def beale(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """(1.5 − x + x·y)² + (2.25 − x + x·y²)² + (2.625 − x + x·y³)²."""
    x, y = xy[:, 0], xy[:, 1]
    y2 = y * y
    y3 = y * y * y
    t1 = 1.5 - x + x * y
    t2 = 2.25 - x + x * y2
    t3 = 2.625 - x + x * y3
    value = t1 * t1 + t2 * t2 + t3 * t3
    g1, g2, g3 = 2 * t1, 2 * t2, 2 * t3
    # the third term's nodes run first, then the second's, then the first's
    gx = g3 * y3 + -g3 + g2 * y2 + -g2 + g1 * y + -g1
    gy = (g3 * x) * (3 * y2) + (g2 * x) * (2 * y) + g1 * x
    return value, _gradient(gx, gy, linear)


def himmelblau(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """(x·x + y − 11)² + (x + y·y − 7)²."""
    x, y = xy[:, 0], xy[:, 1]
    a = x * x + y - 11
    b = x + y * y - 7
    value = a * a + b * b
    g_a, g_b = 2 * a, 2 * b
    gx = (g_b + g_a * x) + g_a * x
    gy = (g_b * y + g_b * y) + g_a
    return value, _gradient(gx, gy, linear)


def goldstein_price(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
    """[1 + (x+y+1)²·Q]·[30 + (2x−3y)²·W], Q and W the two quadratics of the definition."""
    x, y = xy[:, 0], xy[:, 1]
    s = x + y + 1
    m2, m5, m7 = 3 * x, 6 * x, 3 * y
    q = 19 - 14 * x + m2 * x - 14 * y + m5 * y + m7 * y
    p2 = s * s
    a = 1 + p2 * q
    r = 2 * x - 3 * y
    k2, k5, k7 = 12 * x, 36 * x, 27 * y
    w = 18 - 32 * x + k2 * x + 48 * y - k5 * y + k7 * y
    r2 = r * r
    b = 30 + r2 * w
    value = a * b
    g_a, g_b = b, a
    # b's subtree was built last, so it runs first; inside each, the nodes latest-created first.
    g_w = g_b * r2
    g_r = (g_b * w) * (2 * r)
    gy = g_w * k7  # 27y·y
    gy = gy + (g_w * y) * 27
    gx = (-g_w * y) * 36  # −36x·y
    gy = gy + -g_w * k5
    gy = gy + g_w * 48
    gx = gx + g_w * k2  # 12x·x
    gx = gx + (g_w * x) * 12
    gx = gx + -g_w * 32
    gy = gy + -g_r * 3  # (2x − 3y)²
    gx = gx + g_r * 2
    g_q = g_a * p2
    g_s = (g_a * q) * (2 * s)
    gy = gy + g_q * m7  # 3y·y
    gy = gy + (g_q * y) * 3
    gy = gy + g_q * m5  # 6x·y
    gx = gx + (g_q * y) * 6
    gy = gy + -g_q * 14
    gx = gx + g_q * m2  # 3x·x
    gx = gx + (g_q * x) * 3
    gx = gx + -g_q * 14
    gx = gx + g_s  # (x + y + 1)²
    gy = gy + g_s
    return value, _gradient(gx, gy, linear)


def double_well(tilt: float) -> ValueAndGrad:
    """(x·x − 1)² + tilt·x + y·y."""

    def value_and_grad(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
        x, y = xy[:, 0], xy[:, 1]
        a = x * x - 1
        value = a * a + tilt * x + y * y
        g_a = 2 * a
        return value, _gradient((tilt + g_a * x) + g_a * x, y + y, linear)

    return value_and_grad


TorchFunction = Callable[[torch.Tensor], torch.Tensor]


def rastrigin(fn: TorchFunction) -> ValueAndGrad:
    """20 + Σ (z·z − 10 cos 2πz); f from `fn` (torch's cos), sin from torch too."""

    def value_and_grad(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
        p = torch.from_numpy(xy)
        value = fn(p).numpy()
        g_arg = (-10 * -torch.sin(2 * math.pi * p)).numpy()
        g_p = g_arg * (2 * math.pi)
        if linear is not None:  # f takes the whole point: the linear term's node runs first
            g_p = linear + g_p
        return value, (g_p + xy) + xy

    return value_and_grad


def ackley(fn: TorchFunction) -> ValueAndGrad:
    """−20 exp(−0.2 r) − exp(w) + e + 20, r = √(½(x·x + y·y) + 1e-32), w = ½(cos 2πx + cos 2πy);
    f from `fn`, the transcendental factors from torch."""

    def value_and_grad(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
        p = torch.from_numpy(xy)
        value = fn(p).numpy()
        x, y = p[:, 0], p[:, 1]
        radius = torch.sqrt(0.5 * (x * x + y * y) + 1e-32)
        waves = 0.5 * (torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y))
        g_waves = -torch.exp(waves)
        g_radius = (-20 * torch.exp(-0.2 * radius)) * -0.2
        g_sum = (g_radius / (2 * radius)) * 0.5
        g_cos = g_waves * 0.5
        gx_waves = (g_cos * -torch.sin(2 * math.pi * x)) * (2 * math.pi)
        gy_waves = (g_cos * -torch.sin(2 * math.pi * y)) * (2 * math.pi)
        gx = (gx_waves + g_sum * x) + g_sum * x
        gy = (gy_waves + g_sum * y) + g_sum * y
        return value, _gradient(gx.numpy(), gy.numpy(), linear)

    return value_and_grad


def through_autograd(fn: TorchFunction) -> ValueAndGrad:
    """f and ∇f of any torch-written surface, through autograd (the fallback)."""

    def value_and_grad(xy: np.ndarray, linear: Linear = None) -> tuple[np.ndarray, np.ndarray]:
        p = torch.from_numpy(xy).requires_grad_(True)
        with torch.enable_grad():
            value = fn(p)
            total = value.sum()
            if linear is not None:
                total = total + (torch.from_numpy(linear) * p).sum()
            (grad,) = torch.autograd.grad(total, p)
        return value.detach().numpy(), grad.numpy()

    return value_and_grad


__all__ = [
    "Linear",
    "ValueAndGrad",
    "ackley",
    "beale",
    "double_well",
    "goldstein_price",
    "himmelblau",
    "monkey_saddle",
    "quadratic",
    "rastrigin",
    "ravine",
    "rosenbrock",
    "saddle",
    "through_autograd",
]
