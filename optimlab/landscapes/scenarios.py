r"""Named, reproducible experiments that each show one phenomenon of the optimization chapter.

A :class:`Scenario` fixes everything (surface, optimizers and learning rates, starts, steps, noise
and seeds) and carries a two-line explanation plus the checks that state its phenomenon in
numbers.  ``run_scenario(name)`` runs it and evaluates the checks; the tests assert they hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimlab.landscapes.experiment import run_landscape
from optimlab.landscapes.functions import Point, get_function
from optimlab.landscapes.results import LandscapeResult, Run
from optimlab.landscapes.theory import THEORY_ROLES

Check = tuple[str, bool]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    #: two lines: what happens, and why
    explanation: tuple[str, str]
    function: str
    optimizers: str
    starts: tuple[Point, ...]
    steps: int
    checks: Callable[[LandscapeResult], list[Check]]
    function_options: dict[str, Any] = field(default_factory=dict)
    noise: float = 0.0
    seeds: tuple[int, ...] = (0,)
    #: run gradient descent and heavy ball at their closed-form optimal settings beside the
    #: optimizers (quadratic surfaces), and report predicted vs achieved rates
    theory: bool = False
    #: run the trajectories on bfloat16 weights with the real optimizer classes
    #: (``landscapes.bfloat16``) instead of the float64 batched runner
    bfloat16: bool = False


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    result: LandscapeResult
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)


def _by_label(result: LandscapeResult) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {}
    for run in result.runs:
        runs.setdefault(run.label, []).append(run)
    return runs


def _one(result: LandscapeResult) -> dict[str, Run]:
    """The first run of each label, also under its optimizer's name when that is unambiguous."""
    found = {label: runs[0] for label, runs in _by_label(result).items()}
    names = [run.optimizer for run in found.values()]
    for run in list(found.values()):
        if names.count(run.optimizer) == 1:
            found.setdefault(run.optimizer, run)
    return found


def _dist(run: Run) -> float:
    d = run.metrics["distance_to_min"]
    return math.inf if d is None else d


def _start_distance(run: Run) -> float:
    return float(np.linalg.norm(np.asarray(run.start)))


# ------------------------------------------------------------------------------------------------
# the checks of each scenario: each returns (claim with the measured numbers, whether it holds)
def _ravine(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    sgd = r["sgd"].metrics["zigzag"]
    others = {k: r[k].metrics["zigzag"] for k in ("momentum", "adagrad", "adam")}
    shown = ", ".join(f"{k} {v:.2f}" for k, v in others.items())
    return [
        (f"SGD reverses across the ravine at most steps: zigzag {sgd:.2f} ≥ 0.9", sgd >= 0.9),
        (f"Momentum, AdaGrad and Adam do not zigzag: {shown} (all ≤ 0.2)",
         all(v <= 0.2 for v in others.values())),
    ]  # fmt: skip


def _escape_step(run: Run, height: float = 1.0) -> int:
    """First step with |y| > height (leaving the saddle); the step count if never."""
    above = np.abs(run.path[:, 1]) > height
    return int(above.argmax()) if above.any() else len(run.path)


def _saddle(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    escape = {k: _escape_step(v) for k, v in r.items()}
    near_sgd = int((np.linalg.norm(r["sgd"].path, axis=1) < 0.5).sum())
    momentum = r["momentum"].metrics
    return [
        (f"Momentum escapes (|y| > 1 at step {escape['momentum']}, before SGD's "
         f"{escape['sgd']}) and is not called diverged: it left the plot at step "
         f"{momentum['left_step']}, still descending (status {momentum['status']})",
         escape["momentum"] < escape["sgd"] and momentum["status"] == "left"
         and not momentum["diverged"]),
        (f"SGD lingers near the saddle: {near_sgd} steps within 0.5 of it (≥ 30)", near_sgd >= 30),
        (f"SGD escapes (|y| > 1) at step {escape['sgd']}, ≥ 3× later than Adam "
         f"({escape['adam']}) and RMSProp ({escape['rmsprop']})",
         escape["sgd"] >= 3 * max(escape["adam"], escape["rmsprop"])),
    ]  # fmt: skip


def _local_minimum(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    ends = {k: v.metrics["minimum_kind"] for k, v in r.items()}
    return [
        (f"SGD settles in the local minimum (ends: {ends['sgd']})", ends["sgd"] == "local"),
        (f"Momentum's speed carries it over the barrier into the global minimum "
         f"(ends: {ends['momentum']})", ends["momentum"] == "global"),
    ]  # fmt: skip


def _lr_too_small(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    tiny, good = r["sgd:lr=0.0001"], r["sgd:lr=0.1"]
    share = _dist(tiny) / _start_distance(tiny)
    return [
        (f"lr 1e-4 is still {share:.0%} of the way from the minimum after {result.steps} steps "
         f"(≥ 90%)", share >= 0.9),
        (f"lr 0.1 arrives: distance {_dist(good):.1e} ≤ 1e-3", _dist(good) <= 1e-3),
    ]  # fmt: skip


def _lr_too_large(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    landscape = result.landscape
    top = float(np.linalg.eigvalsh(landscape.hessian().numpy()).max())
    limit = 2 / top
    checks = []
    for label, run in r.items():
        lr = run.hyperparameters["lr"]
        diverged = run.metrics["diverged"]
        expected = lr > limit
        checks.append(
            (f"{label}: {'diverges' if diverged else 'converges'} "
             f"({'above' if expected else 'below'} the limit 2/λmax = {limit:.3g})",
             diverged == expected)
        )  # fmt: skip
    zz = r["sgd:lr=0.19"].metrics["zigzag"]
    checks.append(
        (f"just below the limit it converges while zigzagging: {zz:.2f} ≥ 0.9", zz >= 0.9)
    )
    return checks


def _adagrad_stall(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    adagrad, rmsprop = r["adagrad"], r["rmsprop"]
    share = _dist(adagrad) / _start_distance(adagrad)
    last = float(np.linalg.norm(np.diff(adagrad.path[-11:], axis=0), axis=1).mean())
    first = float(np.linalg.norm(np.diff(adagrad.path[:11], axis=0), axis=1).mean())
    return [
        (f"AdaGrad stalls {share:.0%} of the way from the minimum (≥ 50%)", share >= 0.5),
        (f"its steps died out: last 10 average {last:.1e}, first 10 {first:.1e} (< 1/10)",
         last < first / 10),
        (f"RMSProp, same lr, arrives: distance {_dist(rmsprop):.1e} ≤ 1e-3", _dist(rmsprop) <= 1e-3),
    ]  # fmt: skip


def _momentum_overshoot(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    past = {k: float(v.path[:, 0].max()) for k, v in r.items()}  # the minimum is at x = 0
    return [
        (f"Momentum overshoots the minimum: reaches x = {past['momentum']:.2f} (> 0.5)",
         past["momentum"] > 0.5),
        (f"NAG overshoots less: x = {past['nag']:.2f} < {past['momentum']:.2f}",
         past["nag"] < past["momentum"]),
        (f"SGD never crosses: largest x = {past['sgd']:.2f} < 0", past["sgd"] < 0),
        (f"Momentum settles closer than SGD: {_dist(r['momentum']):.1e} vs "
         f"{_dist(r['sgd']):.1e}", _dist(r["momentum"]) < _dist(r["sgd"]) / 10),
    ]  # fmt: skip


#: measured rates must be within this relative distance of the closed forms
RATE_TOLERANCE = 0.05


def _optimal_momentum(result: LandscapeResult) -> list[Check]:
    theory = result.theory
    assert theory is not None, "the optimal-momentum scenario runs with theory=True"
    rows = {row["role"]: row for row in theory["runs"]}
    gd, hb = rows[THEORY_ROLES[0]], rows[THEORY_ROLES[1]]
    kappa = theory["condition"]
    checks = []
    for name, row, formula, rate in (
        ("gradient descent at 2/(λmin+λmax)", gd, "(κ−1)/(κ+1)", theory["gd_rate"]),
        ("heavy ball at (α*, β*)", hb, "(√κ−1)/(√κ+1)", theory["heavy_ball_rate"]),
    ):
        achieved = row["achieved_rate"]
        close = achieved is not None and abs(achieved - rate) <= RATE_TOLERANCE * rate
        checks.append(
            (f"{name}: contraction {achieved:.4f} per step vs {formula} = {rate:.4f} "
             f"(κ = {kappa:g}; within {RATE_TOLERANCE:.0%})", close)
        )  # fmt: skip
    n_gd, n_hb = gd["steps_to_1e-6"], hb["steps_to_1e-6"]
    checks.append(
        (f"to shrink the distance 1e6×: gradient descent {n_gd} steps (formula "
         f"{gd['predicted_steps_to_1e-6']:.0f}), heavy ball {n_hb} (formula "
         f"{hb['predicted_steps_to_1e-6']:.0f}); ≥ 3× fewer",
         n_gd is not None and n_hb is not None and 3 * n_hb <= n_gd)
    )  # fmt: skip
    return checks


NOISE_TAIL = 200


def noise_ball(lr: float, sigma: float, curvature: float = 1.0) -> float:
    r"""Stationary E[f] of SGD on f = ½λ‖θ‖² (2D) with gradient noise σ·ξ, ξ ~ N(0, I).

    Per coordinate θ ← (1 − ηλ)θ − ησξ has variance η²σ² / (1 − (1 − ηλ)²), so
    E[f] = λ·η²σ² / (1 − (1 − ηλ)²) = ησ² / (2 − ηλ).
    """
    return curvature * (lr * sigma) ** 2 / (1 - (1 - lr * curvature) ** 2)


def _noise(result: LandscapeResult) -> list[Check]:
    by = _by_label(result)
    checks = []
    for label in ("sgd:lr=0.1", "sgd:lr=0.01"):
        runs = by[label]
        lr = runs[0].hyperparameters["lr"]
        tail = float(np.mean([run.losses[-NOISE_TAIL:].mean() for run in runs]))
        expected = noise_ball(lr, result.noise)
        checks.append(
            (f"{label}: hovers at mean loss {tail:.4f} over the last {NOISE_TAIL} steps and "
             f"{len(runs)} seeds; closed form ησ²/(2−η) = {expected:.4f} (±25%)",
             abs(tail - expected) <= 0.25 * expected)
        )  # fmt: skip
    return checks


#: bf16-stagnation: SGD at lr 1e-3 on ½‖θ‖² from (0.5, 0.5), whose gradient there is 0.5
BF16_LR, BF16_STEPS, BF16_START = 1e-3, 500, 0.5


def _bf16_stagnation(result: LandscapeResult) -> list[Check]:
    r = _one(result)
    nearest, stochastic = r["sgd:lr=0.001"], r["sgd:lr=0.001:stochastic_rounding=True"]
    moved = float(np.abs(nearest.path - nearest.path[0]).max())
    # float64 SGD on ½‖θ‖²: θ_t = (1 − η)^t θ₀ per coordinate
    exact = BF16_START * (1 - BF16_LR) ** result.steps
    final = stochastic.path[-1]
    # each stochastic rounding adds noise of variance ≤ ulp·η|g| around the exact update: after
    # hundreds of steps a few hundredths, so the claim is the distance covered, to 10 %
    way = BF16_START - exact
    error = float(np.abs(final - exact).max())
    # the bfloat16 value below 0.5 is 0.5 − 2⁻⁹ (its binade's ulp): half that gap, 2⁻¹⁰ =
    # 0.00098, exceeds every update (5e-4, downwards)
    half_ulp = 2.0**-10
    return [
        (f"round to nearest: each update η·g = {BF16_LR * BF16_START:.0e} is below half the "
         f"gap to the next value down ({half_ulp:.5f}); after {result.steps} steps it has moved "
         f"{moved:g} (= 0)", moved == 0.0),
        (f"stochastic rounding moves it as float64 SGD does: to ({final[0]:.4f}, "
         f"{final[1]:.4f}), float64 (1 − η)^{result.steps}·0.5 = {exact:.4f}: off by "
         f"{error:.4f}, ≤ 10 % of the way ({way:.4f})", error <= 0.1 * way),
    ]  # fmt: skip


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "ravine",
            "Ravine: gradient descent zigzags, Momentum / AdaGrad / Adam do not",
            (
                "On x²/20 + y² the gradient points mostly across the ravine (curvature 2 vs 0.1), "
                "so SGD bounces from wall to wall.",
                "Momentum averages the bounces away, AdaGrad and Adam rescale each coordinate "
                "so both move straight down the valley.",
            ),
            "ravine",
            "sgd:lr=0.95,momentum:lr=0.1,adagrad:lr=1.5,adam:lr=0.3",
            ((-7.0, 2.0),),
            30,
            _ravine,
        ),
        Scenario(
            "saddle",
            "Saddle point: gradient descent stalls where the gradient vanishes",
            (
                "Started almost on the ridge of x² − y², SGD slides to the saddle point and "
                "waits there until the tiny y-component grows.",
                "Adaptive methods divide by the gradient's size, so they leave along y "
                "at full speed.",
            ),
            "saddle",
            "sgd:lr=0.05,momentum:lr=0.05,rmsprop:lr=0.05,adam:lr=0.05",
            ((-1.5, 1e-3),),
            90,
            _saddle,
        ),
        Scenario(
            "local-minimum",
            "Local minimum: gradient descent is trapped, Momentum rolls through",
            (
                "The double well has a shallow right well (local) and a deeper left well "
                "(global); starting on the right, SGD stops in the nearest one.",
                "Momentum keeps the speed gained on the slope and crosses the barrier.",
            ),
            "double-well",
            "sgd:lr=0.02,momentum:lr=0.02,adam:lr=0.05",
            ((1.8, 1.0),),
            300,
            _local_minimum,
        ),
        Scenario(
            "lr-too-small",
            "Learning rate too small: no progress in the step budget",
            (
                "Each step moves θ by η·∇f; with η = 1e-4 a hundred steps cover under 10% of the "
                "way on a quadratic with curvatures 1 and 10.",
                "A 1000× larger rate arrives in the same budget.",
            ),
            "quadratic",
            "sgd:lr=0.0001,sgd:lr=0.01,sgd:lr=0.1",
            ((-4.0, 3.0),),
            100,
            _lr_too_small,
            {"condition": 10.0, "angle": 30.0},
        ),
        Scenario(
            "lr-too-large",
            "Learning rate too large: oscillation, then divergence past 2/λmax",
            (
                "Along the Hessian's top axis SGD multiplies the error by (1 − ηλmax) each step: "
                "for η > 2/λmax = 0.2 it grows and the run diverges.",
                "Just below the limit the factor is near −1: the run zigzags but converges.",
            ),
            "quadratic",
            "sgd:lr=0.05,sgd:lr=0.19,sgd:lr=0.21",
            ((-4.0, 3.0),),
            100,
            _lr_too_large,
            {"condition": 10.0, "angle": 30.0},
        ),
        Scenario(
            "adagrad-stall",
            "AdaGrad's steps die out; RMSProp keeps going",
            (
                "AdaGrad divides by the root of the sum of all past squared gradients, which only "
                "grows, so its steps shrink towards zero before the minimum.",
                "RMSProp divides by a moving average instead: the step size stays alive.",
            ),
            "ravine",
            "adagrad:lr=0.1,rmsprop:lr=0.1",
            ((-7.0, 2.0),),
            200,
            _adagrad_stall,
        ),
        Scenario(
            "momentum-overshoot",
            "Momentum overshoots and settles; NAG overshoots less",
            (
                "Momentum's velocity carries it past the minimum of the ravine's slow axis, then "
                "it swings back and settles far sooner than plain SGD.",
                "NAG evaluates the gradient a step ahead and brakes earlier.",
            ),
            "ravine",
            "sgd:lr=0.1,momentum:lr=0.1,nag:lr=0.1",
            ((-7.0, 2.0),),
            150,
            _momentum_overshoot,
        ),
        Scenario(
            "optimal-momentum",
            "The theory beside the practice: gradient descent and heavy ball at their best",
            (
                "On the ravine (λ = 0.1 and 2, κ = 20) gradient descent at η = 2/(λmin+λmax) "
                "shrinks the error by (κ−1)/(κ+1) = 0.905 per step: ≈138 steps per 1e-6.",
                "Heavy-ball momentum at α* = (2/(√λmin+√λmax))², β* = ((√κ−1)/(√κ+1))² "
                "shrinks it by (√κ−1)/(√κ+1) = 0.634: ≈30 steps.",
            ),
            "ravine",
            "",
            ((-7.0, 2.0),),
            200,
            _optimal_momentum,
            theory=True,
        ),
        Scenario(
            "noise",
            "Gradient noise: constant-lr SGD hovers in a noise ball",
            (
                "With noisy (minibatch-like) gradients SGD never settles: it hovers at a loss "
                "ησ²/(2 − η) on ½‖θ‖², 64 seeds.",
                "A smaller learning rate shrinks the ball (and slows the approach).",
            ),
            "quadratic",
            "sgd:lr=0.1,sgd:lr=0.01",
            ((-4.0, 3.0),),
            700,
            _noise,
            {"condition": 1.0, "angle": 0.0},
            noise=1.0,
            seeds=tuple(range(64)),
        ),
        Scenario(
            "bf16-stagnation",
            "bfloat16 weights: round-to-nearest drops small updates, stochastic rounding keeps them",
            (
                "A bfloat16 weight of 0.5 has its next value down 2⁻⁹ away (2⁻⁸ up): SGD's "
                "update η·g = 5e-4, downwards, is below half of that gap (2⁻¹⁰ ≈ 0.00098), so "
                "rounding to nearest returns 0.5 at every step.",
                "Stochastic rounding rounds up or down with probability ∝ the distance: each "
                "update counts in expectation and the weight follows float64 SGD.",
            ),
            "quadratic",
            "sgd:lr=0.001,sgd:lr=0.001:stochastic_rounding=True",
            ((BF16_START, BF16_START),),
            BF16_STEPS,
            _bf16_stagnation,
            {"condition": 1.0, "angle": 0.0},
            bfloat16=True,
        ),
    ]
}


def list_scenarios() -> list[str]:
    return list(SCENARIOS)


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; ValueError listing the valid ones if there is none."""
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}"
        ) from None


def run_scenario(name: str) -> ScenarioOutcome:
    """Run the scenario `name` and evaluate the checks that state its phenomenon."""
    scenario = get_scenario(name)
    landscape = get_function(scenario.function, **scenario.function_options)
    if scenario.bfloat16:
        from optimlab.landscapes.bfloat16 import run_bfloat16

        result = run_bfloat16(landscape, scenario.optimizers, scenario.starts, scenario.steps)
        return ScenarioOutcome(scenario, result, scenario.checks(result))
    result = run_landscape(
        landscape,
        scenario.optimizers,
        steps=scenario.steps,
        starts=scenario.starts,
        noise=scenario.noise,
        seeds=scenario.seeds,
        theory=scenario.theory,
    )
    return ScenarioOutcome(scenario, result, scenario.checks(result))


__all__ = [
    "SCENARIOS",
    "Scenario",
    "ScenarioOutcome",
    "get_scenario",
    "list_scenarios",
    "noise_ball",
    "run_scenario",
]
