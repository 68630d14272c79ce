"""The surfaces' closed-form f and ∇f are autograd's numbers, bit for bit.

The runner takes f and ∇f from `Landscape.value_and_grad` (optimlab.landscapes.gradients)
instead of autograd; no trajectory may change.  Reference: the torch definition of each function
(`Landscape.fn`) and `torch.autograd.grad` of its sum — with the runner's gradient-noise term
σ·ξ·x added to the loss as the runner used to add it — on random points of each function's box
(and a few beyond it), in batches of several sizes (torch's vectorized loops treat the tail of a
batch apart), compared with ``array_equal``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optimlab.landscapes.functions import Landscape, get_function, list_functions

SURFACES = [
    *[(name, {}) for name in list_functions()],
    ("quadratic", {"condition": 100.0, "angle": 17.0}),
    ("quadratic", {"condition": 3.3, "angle": -71.0}),
]


def _points(landscape: Landscape, rows: int, seed: int) -> np.ndarray:
    """Uniform points on the box enlarged 3× about its centre, plus the named minima."""
    rng = np.random.default_rng(seed)
    xmin, xmax, ymin, ymax = landscape.box
    cx, cy, hx, hy = (xmin + xmax) / 2, (ymin + ymax) / 2, 1.5 * (xmax - xmin), 1.5 * (ymax - ymin)
    points = np.stack([rng.uniform(cx - hx, cx + hx, rows), rng.uniform(cy - hy, cy + hy, rows)], 1)
    minima = np.array([m.point for m in landscape.minima])
    return np.concatenate([minima, points])[:rows]


def _autograd(
    landscape: Landscape, xy: np.ndarray, linear: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """What the runner computed before: f, and autograd's ∇ of f.sum() (+ (σξ·x).sum())."""
    p = torch.from_numpy(xy.copy()).requires_grad_(True)
    values = landscape.fn(p)
    loss = values.sum()
    if linear is not None:
        loss = loss + (torch.from_numpy(linear) * p).sum()
    (grad,) = torch.autograd.grad(loss, p)
    return values.detach().numpy(), grad.numpy()


@pytest.mark.parametrize(("name", "options"), SURFACES, ids=lambda v: str(v or ""))
def test_closed_form_value_and_gradient_are_autograds_bit_for_bit(name: str, options: dict) -> None:
    landscape = get_function(name, **options)
    assert landscape.closed_form is not None  # every built-in function has one
    for seed, rows in enumerate((1, 3, 4, 9, 17, 250)):
        xy = _points(landscape, rows, seed)
        noise = np.random.default_rng(100 + seed).normal(0.0, 0.7, xy.shape)
        for linear in (None, noise):
            value, grad = landscape.value_and_grad(xy, linear)
            expected_value, expected_grad = _autograd(landscape, xy, linear)
            assert value.shape == (rows,) and grad.shape == (rows, 2)
            np.testing.assert_array_equal(value, expected_value)
            np.testing.assert_array_equal(grad, expected_grad)


def test_a_landscape_without_closed_form_goes_through_autograd() -> None:
    def bowl(p: torch.Tensor) -> torch.Tensor:
        return torch.cosh(p[:, 0]) + p[:, 1] ** 4

    custom = Landscape("bowl", "Bowl", "cosh x + y⁴", bowl, (-2, 2, -2, 2), (1.0, 1.0), ())
    xy = np.array([[0.5, -1.0], [1.5, 2.0]])
    linear = np.array([[0.1, 0.2], [-0.3, 0.4]])
    value, grad = custom.value_and_grad(xy, linear)
    np.testing.assert_allclose(value, np.cosh(xy[:, 0]) + xy[:, 1] ** 4, rtol=1e-15)
    closed = np.stack([np.sinh(xy[:, 0]), 4 * xy[:, 1] ** 3], 1) + linear
    np.testing.assert_allclose(grad, closed, rtol=1e-15)


def test_ackleys_gradient_is_finite_at_its_minimum() -> None:
    # the 1e-32 inside √ keeps autograd's 0·∞ away; the closed form divides by the same 2r
    value, grad = get_function("ackley").value_and_grad(np.zeros((1, 2)))
    assert value[0] == pytest.approx(0.0, abs=1e-14)
    assert np.isfinite(grad).all() and not math.isnan(grad.sum())
