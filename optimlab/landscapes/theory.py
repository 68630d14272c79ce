r"""The theory beside the practice: closed forms for gradient descent and heavy-ball momentum on
a quadratic f(θ) = ½(θ − θ*)ᵀH(θ − θ*), with H's eigenvalues 0 < λmin ≤ λmax, κ = λmax/λmin.

Gradient descent θ ← θ − η∇f multiplies the error's component along each eigenvector by
(1 − ηλ), so

* it is stable iff η < 2/λmax (the **stability limit**);
* its rate max(|1 − ηλmin|, |1 − ηλmax|) is smallest at η* = 2/(λmin + λmax), where it is
  (κ − 1)/(κ + 1) (both ends contract equally fast, in opposite directions).

Heavy-ball momentum (Polyak 1964) θ_{t+1} = θ_t − α∇f(θ_t) + β(θ_t − θ_{t−1}) has, per eigenvalue,
the companion matrix [[1 + β − αλ, −β], [1, 0]]; its spectral radius over [λmin, λmax] is smallest
at α* = (2/(√λmin + √λmax))², β* = ((√κ − 1)/(√κ + 1))², where it is (√κ − 1)/(√κ + 1): a
condition number κ costs gradient descent about κ/2 steps per factor e, heavy ball about √κ/2.

optimlab's Momentum follows torch's convention b ← μb + g, θ ← θ − η·b.  Then
θ_{t+1} − θ_t = −η(μb_t + g_t) = μ(θ_t − θ_{t−1}) − η·g_t, which is heavy ball with α = η and
β = μ (and the same first step, b_1 = g_0, as heavy ball from θ_{−1} = θ_0).  So heavy-ball
(α*, β*) is ``momentum:lr=α*:momentum=β*`` — no rescaling (Keras' convention, v ← μv − ηg, is the
same recursion too).  NAG (torch: θ ← θ − η(g + μb)) gives per eigenvalue, in (error, buffer)
coordinates, [[1 − ηλ(1 + μ), −ημ²], [λ, μ]].

The achieved rate of a run is measured on its distance to the minimum e_t = ‖θ_t − θ*‖ as
(e_b / e_a)^(1/(b − a)) over the second half [a, b] of the steps with e_t ≥ 1e-9·e_0 (below that,
float64 rounding takes over).  At heavy ball's optimum the two roots coincide, so e_t ∝ t·ρ^t and
the estimate exceeds ρ by the factor 2^(1/(b − a)) (≈ 3 % over 25 steps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from optimlab.landscapes.functions import Landscape
from optimlab.landscapes.results import Run

#: e_t below this share of e_0 is float64 rounding, not convergence
ROUND_OFF = 1e-9
#: "steps to converge" counts steps until e_t ≤ TARGET·e_0
TARGET = 1e-6


@dataclass(frozen=True)
class QuadraticTheory:
    """The closed forms of one quadratic surface (see the module docstring)."""

    lambda_min: float
    lambda_max: float
    condition: float
    gd_lr: float
    gd_rate: float
    stability_limit: float
    heavy_ball_lr: float
    heavy_ball_momentum: float
    heavy_ball_rate: float

    def steps_to(self, rate: float, target: float = TARGET) -> float:
        """Steps for a linear rate to shrink the error by `target`: ln(target)/ln(rate)."""
        return math.log(target) / math.log(rate) if 0 < rate < 1 else math.inf

    def specs(self) -> list[tuple[str, dict[str, float]]]:
        """Gradient descent at its best rate and heavy ball at (α*, β*), as optimizer specs."""
        return [
            ("sgd", {"lr": self.gd_lr}),
            ("momentum", {"lr": self.heavy_ball_lr, "momentum": self.heavy_ball_momentum}),
        ]


def quadratic_theory(landscape: Landscape) -> QuadraticTheory:
    """The closed forms for `landscape`, which must be a quadratic with H positive definite."""
    if not landscape.is_quadratic:
        raise ValueError(
            f"the theory needs a quadratic surface (ravine, quadratic); {landscape.name!r} is not"
        )
    values = np.linalg.eigvalsh(landscape.hessian().numpy())
    low, high = float(values.min()), float(values.max())
    if low <= 0:
        raise ValueError(f"the theory needs a positive definite Hessian; eigenvalues {values}")
    kappa = high / low
    root = math.sqrt(kappa)
    return QuadraticTheory(
        lambda_min=low,
        lambda_max=high,
        condition=kappa,
        gd_lr=2 / (low + high),
        gd_rate=(kappa - 1) / (kappa + 1),
        stability_limit=2 / high,
        heavy_ball_lr=(2 / (math.sqrt(low) + math.sqrt(high))) ** 2,
        heavy_ball_momentum=((root - 1) / (root + 1)) ** 2,
        heavy_ball_rate=(root - 1) / (root + 1),
    )


def predicted_rate(theory: QuadraticTheory, optimizer: str, hyperparameters: dict[str, Any]):
    """The asymptotic contraction per step of sgd / momentum / nag with these settings on the
    quadratic: the largest spectral radius of the per-eigenvalue iteration matrix.  None for
    other optimizers or options the closed form does not cover."""
    if optimizer not in ("sgd", "momentum", "nag"):
        return None
    h = hyperparameters
    if h.get("dampening", 0) or h.get("weight_decay", 0) or h.get("maximize", False):
        return None
    if h.get("convention", "torch") != "torch":
        return None
    defaults = {"sgd": 0.0, "momentum": 0.9, "nag": 0.9}
    eta = float(h["lr"])
    mu = float(h.get("momentum", defaults[optimizer]))
    nesterov = bool(h.get("nesterov", optimizer == "nag"))
    radius = 0.0
    for lam in (theory.lambda_min, theory.lambda_max):
        if nesterov:
            matrix = [[1 - eta * lam * (1 + mu), -eta * mu * mu], [lam, mu]]
        else:
            matrix = [[1 - eta * lam, -eta * mu], [lam, mu]]
        radius = max(radius, float(np.abs(np.linalg.eigvals(np.array(matrix))).max()))
    return radius


def errors(run: Run, minimum: tuple[float, float]) -> np.ndarray:
    return np.linalg.norm(run.path - np.asarray(minimum), axis=1)


def achieved_rate(run: Run, minimum: tuple[float, float]) -> float | None:
    """The measured contraction per step (see the module docstring); None when too few steps
    stay above rounding."""
    e = errors(run, minimum)
    if not len(e) or e[0] == 0:
        return None
    usable = np.flatnonzero(np.isfinite(e) & (e >= ROUND_OFF * e[0]))
    b = int(usable.max()) if len(usable) else 0
    a = b // 2
    if b - a < 4 or e[a] == 0:
        return None
    return float((e[b] / e[a]) ** (1 / (b - a)))


def steps_to_target(run: Run, minimum: tuple[float, float], target: float = TARGET) -> int | None:
    """The first step with e_t ≤ target·e_0, or None."""
    e = errors(run, minimum)
    reached = np.flatnonzero(e <= target * e[0])
    return int(reached[0]) if len(reached) else None


THEORY_ROLES = ("theory: gradient descent at 2/(λmin+λmax)", "theory: heavy ball at (α*, β*)")


def report(
    theory: QuadraticTheory,
    runs: list[Run],
    roles: dict[str, str],
    minimum: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """The closed forms and, per run, predicted vs achieved contraction and steps to 1e-6."""
    rows = []
    for run in runs:
        predicted = predicted_rate(theory, run.optimizer, run.hyperparameters)
        rows.append(
            {
                "label": run.label,
                "role": roles.get(run.label, "yours"),
                "predicted_rate": predicted,
                "achieved_rate": achieved_rate(run, minimum),
                "predicted_steps_to_1e-6": None if predicted is None
                else theory.steps_to(predicted),
                "steps_to_1e-6": steps_to_target(run, minimum),
            }
        )  # fmt: skip
    return {**asdict(theory), "target": TARGET, "runs": rows}


__all__ = [
    "THEORY_ROLES",
    "QuadraticTheory",
    "achieved_rate",
    "predicted_rate",
    "quadratic_theory",
    "report",
    "steps_to_target",
]
