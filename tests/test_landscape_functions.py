"""The 2D surfaces: minima are critical points and lowest, gradients match closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optimlab.landscapes.functions import get_function, list_functions, quadratic

NAMES = list_functions()


def test_the_issue_functions_are_all_there() -> None:
    assert set(NAMES) == {
        "ravine", "quadratic", "saddle", "monkey-saddle", "rosenbrock", "beale", "himmelblau",
        "goldstein-price", "rastrigin", "ackley", "double-well",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_minima_are_critical_points_with_the_right_curvature(name: str) -> None:
    land = get_function(name)
    assert land.minima
    for minimum in land.minima:
        grad = land.gradient(torch.tensor([minimum.point], dtype=torch.float64))
        assert grad.abs().max() < 1e-8, (minimum, grad)
        assert land.value(*minimum.point) == pytest.approx(minimum.value, abs=1e-12)
        if name == "ackley":
            continue  # a cone at its minimum: the Hessian is not defined there
        eigenvalues = torch.linalg.eigvalsh(land.hessian(minimum.point))
        if minimum.kind == "saddle":
            assert eigenvalues.min() <= 1e-12 <= 1e-12 + eigenvalues.max()
        else:
            assert eigenvalues.min() > 0, (minimum, eigenvalues)


@pytest.mark.parametrize("name", [n for n in NAMES if math.isfinite(get_function(n).min_value)])
@settings(max_examples=60, deadline=None)
@given(u=st.floats(0, 1), v=st.floats(0, 1))
def test_no_point_of_the_box_is_below_the_global_minimum(name: str, u: float, v: float) -> None:
    land = get_function(name)
    xmin, xmax, ymin, ymax = land.box
    value = land.value(xmin + u * (xmax - xmin), ymin + v * (ymax - ymin))
    assert value >= land.min_value - 1e-9


@settings(max_examples=50, deadline=None)
@given(x=st.floats(-10, 10), y=st.floats(-5, 5))
def test_gradients_match_closed_forms(x: float, y: float) -> None:
    point = torch.tensor([[x, y]], dtype=torch.float64)
    ravine = get_function("ravine").gradient(point)[0]
    assert ravine.tolist() == pytest.approx([x / 10, 2 * y], rel=1e-12, abs=1e-12)
    rosen = get_function("rosenbrock").gradient(point)[0]
    expected = [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)]
    assert rosen.tolist() == pytest.approx(expected, rel=1e-10, abs=1e-9)
    saddle = get_function("saddle").gradient(point)[0]
    assert saddle.tolist() == pytest.approx([2 * x, -2 * y], abs=1e-12)


@pytest.mark.parametrize(("condition", "angle"), [(1.0, 0.0), (10.0, 30.0), (100.0, -60.0)])
def test_quadratic_has_the_chosen_condition_number_and_rotation(
    condition: float, angle: float
) -> None:
    land = get_function("quadratic", condition=condition, angle=angle)
    eigenvalues = torch.linalg.eigvalsh(land.hessian()).tolist()
    assert eigenvalues == pytest.approx([1.0, condition])
    if condition > 1:
        axis = np.array(land.curvature_axis())
        expected = np.array([-math.sin(math.radians(angle)), math.cos(math.radians(angle))])
        assert abs(axis @ expected) == pytest.approx(1.0)


def test_double_well_has_one_local_and_one_global_minimum() -> None:
    land = get_function("double-well")
    kinds = sorted(m.kind for m in land.minima)
    assert kinds == ["global", "local"]
    glob, loc = land.global_minima[0], next(m for m in land.minima if m.kind == "local")
    assert glob.value < loc.value
    # both roots of 4x³ − 4x + 0.3 = 0 near ±1
    for m in (glob, loc):
        x = m.point[0]
        assert 4 * x**3 - 4 * x + 0.3 == pytest.approx(0, abs=1e-12)


def test_curvature_axis_of_the_ravine_is_y_and_the_monkey_saddle_has_none() -> None:
    assert np.abs(get_function("ravine").curvature_axis()).tolist() == [0.0, 1.0]
    assert get_function("monkey-saddle").curvature_axis() is None


def test_unknown_function_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown function 'nope'; valid functions: ravine, quadratic"
    ):
        get_function("nope")


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match="unknown option 'kappa' for function 'quadratic'; valid options: condition, angle",
    ):
        get_function("quadratic", kappa=3)
    with pytest.raises(
        ValueError, match="option 'condition' for function 'ravine'; valid options: none"
    ):
        get_function("ravine", condition=3)


@pytest.mark.parametrize("condition", [0.5, -1, math.inf, "ten", True])
def test_bad_condition_number(condition: object) -> None:
    with pytest.raises(ValueError, match=r"quadratic: invalid condition=.*must be a number ≥ 1"):
        quadratic(condition=condition)  # type: ignore[arg-type]


def test_bad_angle() -> None:
    with pytest.raises(ValueError, match=r"quadratic: invalid angle=nan; must be a finite number"):
        quadratic(angle=math.nan)
