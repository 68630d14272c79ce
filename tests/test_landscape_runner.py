"""The batched runner, its metrics and LR tuning, against independent references.

References: a NumPy recurrence per update rule (golden ravine test), torch.optim driving one
trajectory at a time, closed forms for SGD on quadratics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optimlab.landscapes import metrics as metrics_module
from optimlab.landscapes.experiment import build_configs, run_landscape
from optimlab.landscapes.functions import get_function, list_functions
from optimlab.landscapes.runner import Config, run_batch
from optimlab.landscapes.tuning import choose, lr_grid
from optimlab.optim.registry import preset_optimizers


# ------------------------------------------------------------------------------------------------
# golden: the classic comparison on the ravine (Deep Learning from Scratch, ch. 6)
def _numpy_ravine(rule: str, lr: float, steps: int = 30) -> np.ndarray:
    """The end point after `steps` steps from (−7, 2); ∇(x²/20 + y²) = (x/10, 2y)."""
    p = np.array([-7.0, 2.0])
    m = np.zeros(2)
    v = np.zeros(2)
    for t in range(1, steps + 1):
        g = np.array([p[0] / 10, 2 * p[1]])
        if rule == "sgd":
            p = p - lr * g
        elif rule == "momentum":  # torch: buffer starts at g, b = 0.9 b + g, p -= lr b
            m = g if t == 1 else 0.9 * m + g
            p = p - lr * m
        elif rule == "adagrad":  # s += g², p -= lr g / (√s + 1e-10)
            v = v + g * g
            p = p - lr * g / (np.sqrt(v) + 1e-10)
        elif rule == "adam":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return p


def test_golden_ravine_end_points_match_hand_computed_recurrences() -> None:
    result = run_landscape(
        "ravine", "sgd:lr=0.95,momentum:lr=0.1,adagrad:lr=1.5,adam:lr=0.3", steps=30,
        starts=[(-7, 2)],
    )  # fmt: skip
    ends = {run.optimizer: run.path[-1] for run in result.runs}
    for rule, lr in (("sgd", 0.95), ("momentum", 0.1), ("adagrad", 1.5), ("adam", 0.3)):
        np.testing.assert_allclose(ends[rule], _numpy_ravine(rule, lr), rtol=1e-9, atol=1e-12)
    # SGD in closed form: each coordinate shrinks by (1 − η·curvature) per step.
    assert ends["sgd"].tolist() == pytest.approx([-7 * (1 - 0.095) ** 30, 2 * (-0.9) ** 30])
    assert all(len(run.path) == 31 for run in result.runs)
    assert all(run.path[0].tolist() == [-7, 2] for run in result.runs)


# ------------------------------------------------------------------------------------------------
# the batch against torch.optim, one trajectory at a time
TORCH = {
    "sgd": lambda p, lr: torch.optim.SGD([p], lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
    "nag": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad([p], lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop([p], lr=lr),
    "adadelta": lambda p, lr: torch.optim.Adadelta([p], lr=lr),
    "adam": lambda p, lr: torch.optim.Adam([p], lr=lr),
    "adamax": lambda p, lr: torch.optim.Adamax([p], lr=lr),
    "nadam": lambda p, lr: torch.optim.NAdam([p], lr=lr),
}


def _torch_path(name: str, lr: float, start: tuple[float, float], steps: int) -> np.ndarray:
    land = get_function("rosenbrock")
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = TORCH[name](p, lr)
    path = [p.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        land.fn(p[None]).sum().backward()
        optimizer.step()
        path.append(p.detach().clone())
    return torch.stack(path).numpy()


def test_every_row_of_the_batch_matches_its_own_torch_optim_loop() -> None:
    land = get_function("rosenbrock")
    lrs = (1e-4, 3e-4, 1e-3)
    starts = [(-1.5, 2.5), (0.5, -0.5)]
    configs = [Config(name, {}, lrs, name) for name in TORCH]
    batch = run_batch(land, configs, starts, 40)
    assert batch.rows == len(TORCH) * len(lrs) * len(starts)
    checked = 0
    for row in range(batch.rows):
        name = configs[batch.row_config[row]].name
        expected = _torch_path(name, float(batch.row_lr[row]), starts[batch.row_start[row]], 40)
        np.testing.assert_allclose(batch.positions[row], expected, rtol=1e-10, atol=1e-12)
        checked += 1
    assert checked == 54
    assert (batch.diverged_at == -1).all()


def test_diverging_rows_are_frozen_and_do_not_touch_the_others() -> None:
    land = get_function("rosenbrock")
    starts = [(-1.5, 2.5)]
    calm = run_batch(land, [Config("adam", {}, (1e-3, 1e-2), "adam")], starts, 60)
    mixed = run_batch(land, [Config("adam", {}, (1e-3, 1e-2), "adam"),
                             Config("sgd", {}, (1e-3, 10.0), "sgd")], starts, 60)  # fmt: skip
    np.testing.assert_array_equal(mixed.positions[:2], calm.positions)
    sgd_big = 3  # rows: adam 1e-3, adam 1e-2, sgd 1e-3, sgd 10
    step = mixed.diverged_at[sgd_big]
    assert step > 0 and (mixed.diverged_at[:3] == -1).all()
    held = mixed.positions[sgd_big, step - 1]
    assert np.isfinite(mixed.positions[sgd_big]).all()
    assert (mixed.positions[sgd_big, step:] == held).all()
    values = metrics_module.compute(mixed)
    assert values["diverged"].tolist() == [False, False, False, True]
    assert math.isnan(values["final_loss"][sgd_big])
    run = run_landscape(land, "sgd:lr=10", steps=60, starts=starts).runs[0]
    assert run.metrics["diverged"] and run.metrics["final_loss"] is None
    assert run.metrics["diverged_step"] == step and len(run.path) == step


def test_leaving_the_box_while_descending_is_not_divergence() -> None:
    # SGD on the saddle: y grows by (1 + 2η) per step while f = −y² falls; the box is ±2.
    run = run_landscape("saddle", "sgd:lr=0.5", steps=20, starts=[(0.0, 1.0)]).runs[0]
    # y_t = 2^t: 2^1 = 2 is on the edge, 2^2 = 4 is outside the plotting box; 2^5 = 32 is past
    # the box enlarged 10× (±20), where the row is stopped, still descending
    assert run.metrics["status"] == "left" and not run.metrics["diverged"]
    assert run.metrics["left_step"] == 2
    assert run.metrics["stopped_step"] == 5
    assert run.path[-1].tolist() == [0.0, 32.0] and len(run.path) == 6


def test_noise_is_seeded_and_common_to_every_configuration() -> None:
    sigma, lr, steps = 0.5, 0.1, 25
    result = run_landscape(
        "ravine", f"sgd:lr={lr},momentum:lr=0.05", steps=steps, starts=[(-7, 2)], noise=sigma,
        seeds=(3, 11),
    )  # fmt: skip
    for run in result.runs:
        if run.optimizer != "sgd":
            continue
        xi = torch.randn(steps, 2, generator=torch.Generator().manual_seed(run.seed),
                         dtype=torch.float64).numpy()  # fmt: skip
        p = np.array([-7.0, 2.0])
        for t in range(steps):
            p = p - lr * (np.array([p[0] / 10, 2 * p[1]]) + sigma * xi[t])
        np.testing.assert_allclose(run.path[-1], p, rtol=1e-12)
    again = run_landscape("ravine", f"sgd:lr={lr},momentum:lr=0.05", steps=steps,
                          starts=[(-7, 2)], noise=sigma, seeds=(3, 11))  # fmt: skip
    for a, b in zip(result.runs, again.runs):
        np.testing.assert_array_equal(a.path, b.path)
    assert not np.array_equal(result.runs[0].path, result.runs[1].path)  # seeds differ


# ------------------------------------------------------------------------------------------------
# metrics in closed form
def test_zigzag_is_one_when_sgd_overshoots_the_steep_axis_and_zero_when_it_does_not() -> None:
    # On the ravine the y error is multiplied by (1 − 2η): −0.9 for η = 0.95 (reverses every
    # step), 0.2 for η = 0.4 (never reverses).
    result = run_landscape("ravine", "sgd:lr=0.95,sgd:lr=0.4", steps=40, starts=[(-7, 2)])
    assert [run.metrics["zigzag"] for run in result.runs] == [1.0, 0.0]


def test_steps_to_eps_distance_and_minimum_in_closed_form() -> None:
    # f = ½‖θ‖², SGD: θ_t = (1 − η)^t θ_0, f_t = f_0 (1 − η)^{2t}.
    eta, eps = 0.1, 1e-3
    land = get_function("quadratic", condition=1.0, angle=0.0)
    run = run_landscape(land, f"sgd:lr={eta}", steps=200, starts=[(-4, 3)], eps=eps).runs[0]
    f0 = 12.5
    expected = math.ceil(math.log(eps / f0) / (2 * math.log(1 - eta)))
    assert run.metrics["steps_to_eps"] == expected
    assert run.metrics["distance_to_min"] == pytest.approx(5 * 0.9**200, rel=1e-9)
    assert run.metrics["minimum"] == "minimum" and run.metrics["minimum_kind"] == "global"


def test_nearest_of_several_global_minima_and_local_minimum() -> None:
    result = run_landscape("himmelblau", "adam:lr=0.05", steps=800,
                           starts=[(4, 4), (-4, 4), (-4, -4), (4, -4)])  # fmt: skip
    labels = [run.metrics["minimum"] for run in result.runs]
    assert labels == ["(3, 2)", "(−2.81, 3.13)", "(−3.78, −3.28)", "(3.58, −1.85)"]
    assert all(run.metrics["distance_to_min"] < 1e-3 for run in result.runs)
    wells = run_landscape("double-well", "sgd:lr=0.05", steps=300, starts=[(1.5, 0.5), (-1.5, 0.5)])
    assert [r.metrics["minimum_kind"] for r in wells.runs] == ["local", "global"]
    # A surface without a minimum has no distance to it.
    saddle = run_landscape("saddle", "sgd:lr=0.01", steps=5).runs[0]
    assert saddle.metrics["distance_to_min"] is None and saddle.metrics["steps_to_eps"] is None


# ------------------------------------------------------------------------------------------------
# tuning
def test_tuning_picks_the_grid_rate_with_the_best_contraction_factor() -> None:
    # SGD on a quadratic with curvatures 1 and 10 shrinks the error by max|1 − ηλ| per step and
    # diverges for η > 2/10; after enough steps the best grid rate is the one minimizing it.
    land = get_function("quadratic", condition=10.0, angle=30.0)
    grid = lr_grid()
    result = run_landscape(land, "sgd", steps=300, starts=[(-4, 3), (4, 4)], tune=True)
    factor = [max(abs(1 - lr), abs(1 - 10 * lr)) for lr in grid]
    best = grid[int(np.argmin(factor))]
    assert result.tuning["sgd"].chosen == best
    assert {run.hyperparameters["lr"] for run in result.runs} == {best}
    assert len(result.runs) == 2
    scores = result.tuning["sgd"].scores
    assert all(math.isinf(s) for lr, s in zip(grid, scores) if lr > 0.2)  # diverged rates


def test_lr_grid_is_36_log_points_from_1e_5_to_1e2() -> None:
    grid = lr_grid()
    assert len(grid) == 36 and grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(100)
    ratios = np.diff(np.log10(grid))
    assert np.allclose(ratios, 7 / 35)


def test_given_lr_wins_over_tuning_and_default_lr_is_the_optimizers() -> None:
    configs = build_configs("sgd:lr=0.5,adam", tune=False)
    assert configs[0].lrs == (0.5,) and configs[1].lrs == (1e-3,)
    tuned = build_configs("sgd:lr=0.5,adam", tune=True)
    assert tuned[0].lrs == (0.5,) and len(tuned[1].lrs) == 36
    labels = [c.label for c in build_configs("sgd:lr=0.1,sgd:lr=0.2")]
    assert labels == ["sgd:lr=0.1", "sgd:lr=0.2"]


def test_choose_prefers_no_divergence() -> None:
    land = get_function("ravine")
    batch = run_batch(land, [Config("sgd", {}, (0.5, 2.0), "sgd")], [(-7, 2)], 30)
    values = metrics_module.compute(batch)
    tuned = choose(batch, values, 0)
    assert tuned.chosen == 0.5 and math.isinf(tuned.scores[1])


# ------------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize("steps", [0, -3, 1_000_001, 2.5, True, "10"])
def test_bad_steps(steps: object) -> None:
    with pytest.raises(
        ValueError, match=r"invalid steps=.*steps must be an integer in \[1, 1000000\]"
    ):
        run_landscape("ravine", "sgd:lr=0.1", steps=steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("start", [(math.nan, 1.0), (1.0, math.inf), (1.0,), ("a", 1), 3])
def test_bad_start(start: object) -> None:
    with pytest.raises(ValueError, match=r"invalid start=.*two finite numbers"):
        run_landscape("ravine", "sgd:lr=0.1", steps=3, starts=[start])  # type: ignore[list-item]


@pytest.mark.parametrize("noise", [-0.1, math.nan, math.inf, "a"])
def test_bad_noise(noise: object) -> None:
    with pytest.raises(ValueError, match=r"invalid noise=.*finite number ≥ 0"):
        run_landscape("ravine", "sgd:lr=0.1", steps=3, noise=noise)  # type: ignore[arg-type]


def test_bad_optimizer_and_option() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'; valid names: sgd, momentum"):
        run_landscape("ravine", "sgdd", steps=3)
    with pytest.raises(
        ValueError, match="unknown option 'beta' for optimizer 'adam'; valid options: lr, betas"
    ):
        run_landscape("ravine", "adam:beta=0.9", steps=3)
    with pytest.raises(ValueError, match=r"sgd: invalid lr=-1; lr must be a finite number ≥ 0"):
        run_landscape("ravine", "sgd:lr=-1", steps=3)
    with pytest.raises(ValueError, match="Momentum: invalid momentum=-1"):
        run_landscape("ravine", "momentum:lr=0.1:momentum=-1", steps=3)


@pytest.mark.parametrize("name", [n for n in list_functions() if n != "quadratic"])
def test_every_function_runs_every_optimizer_from_its_default_start(name: str) -> None:
    result = run_landscape(name, steps=20, tune=False)
    assert len(result.runs) == len(preset_optimizers("classic"))  # the default set
    for run in result.runs:
        assert run.path[0].tolist() == list(get_function(name).default_start)
        assert np.isfinite(run.path).all() and np.isfinite(run.losses).all()
        assert run.metrics["diverged"] or run.metrics["final_loss"] is not None
