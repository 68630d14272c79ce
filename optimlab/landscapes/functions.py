r"""Two-dimensional loss surfaces: the classic test functions of optimization.

Each :class:`Landscape` is a function of a batch of points ``xy`` of shape ``[N, 2]`` that returns
the ``N`` values, written with torch operations so that gradients come from autograd.  It carries
a plotting box, its known global minima (and the local minima worth naming) and, for surfaces
without a minimum, the saddle point it is built around.

=================  ===============================================  ==========================
name               f(x, y)                                          global minimum
=================  ===============================================  ==========================
ravine             x²/20 + y²                                       (0, 0), f = 0
quadratic          ½ (u² + κ v²), (u, v) = (x, y) rotated by −θ     (0, 0), f = 0
saddle             x² − y²                                          none (saddle at 0)
monkey-saddle      x³ − 3xy²                                        none (saddle at 0)
rosenbrock         (1 − x)² + 100 (y − x²)²                         (1, 1), f = 0
beale              (1.5 − x + xy)² + (2.25 − x + xy²)²              (3, 0.5), f = 0
                   + (2.625 − x + xy³)²
himmelblau         (x² + y − 11)² + (x + y² − 7)²                   four, f = 0
goldstein-price    [1 + (x+y+1)²(19 − 14x + 3x² − 14y + 6xy + 3y²)]  (0, −1), f = 3
                   · [30 + (2x−3y)²(18 − 32x + 12x² + 48y − 36xy
                   + 27y²)]
rastrigin          20 + Σ (z² − 10 cos 2πz)                         (0, 0), f = 0
ackley             −20 exp(−0.2 √(½(x²+y²)))                        (0, 0), f = 0
                   − exp(½(cos 2πx + cos 2πy)) + e + 20
double-well        (x² − 1)² + 0.3 x + y²                           (−1.0375, 0), one local
=================  ===============================================  ==========================

The ravine is the example of Saito, *Deep Learning from Scratch* (2016), ch. 6; the others are the
standard benchmark functions (Rosenbrock 1960; Himmelblau 1972; Goldstein & Price 1971; Rastrigin
1974; Ackley 1987).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from optimlab.landscapes import gradients
from optimlab.landscapes.gradients import ValueAndGrad

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Minimum:
    """A named minimum (or, for surfaces without one, the saddle point) of a landscape."""

    label: str
    point: Point
    value: float
    kind: str  # "global", "local" or "saddle"


@dataclass(frozen=True)
class Landscape:
    """A 2D loss surface: ``fn(xy) -> values`` for ``xy`` of shape ``[N, 2]``."""

    name: str
    title: str
    formula: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    #: plotting box (xmin, xmax, ymin, ymax); trajectories 10× outside it count as diverged
    box: Box
    #: where a trajectory starts when no start is given
    default_start: Point
    minima: tuple[Minimum, ...]
    #: the options the function was built with (quadratic's condition number and angle)
    options: dict[str, Any] = field(default_factory=dict)
    #: f is a quadratic form (constant Hessian): the closed forms of
    #: :mod:`~optimlab.landscapes.theory` apply
    is_quadratic: bool = False
    #: f and ∇f at once without autograd, with autograd's numbers (:mod:`gradients`); None:
    #: :meth:`value_and_grad` goes through autograd
    closed_form: ValueAndGrad | None = None

    def __call__(self, xy: torch.Tensor) -> torch.Tensor:
        return self.fn(xy)

    @property
    def global_minima(self) -> tuple[Minimum, ...]:
        return tuple(m for m in self.minima if m.kind == "global")

    @property
    def min_value(self) -> float:
        """The global minimum value, or -inf for a surface unbounded below."""
        found = self.global_minima
        return found[0].value if found else -math.inf

    @property
    def reference_point(self) -> Point:
        """The first global minimum, else the saddle point: where curvature axes are measured."""
        return (self.global_minima or self.minima)[0].point

    def value(self, x: float, y: float) -> float:
        """f(x, y) for one point, in float64."""
        return float(self.fn(torch.tensor([[x, y]], dtype=torch.float64))[0])

    def gradient(self, xy: torch.Tensor) -> torch.Tensor:
        """∇f at each row of `xy`, through autograd."""
        xy = xy.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.fn(xy).sum(), xy)
        return grad

    def value_and_grad(
        self, xy: np.ndarray, linear: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """f and ∇f at each row of `xy` (float64 ``[N, 2]``), as NumPy arrays: the closed form
        where the function has one (bit for bit autograd's numbers, a fraction of the cost),
        else through autograd.  With `linear` (``[N, 2]``), the gradient is that of
        f(xy) + Σ linear·xy (the runner's gradient noise); the value stays f."""
        closed_form = self.closed_form or gradients.through_autograd(self.fn)
        return closed_form(xy, linear)

    def hessian(self, point: Point | None = None) -> torch.Tensor:
        """The 2×2 Hessian at `point` (default: the reference point), through autograd."""
        x0 = torch.tensor(point or self.reference_point, dtype=torch.float64)
        return torch.autograd.functional.hessian(lambda p: self.fn(p[None])[0], x0)

    def curvature_axis(self) -> tuple[float, float] | None:
        """Unit eigenvector of the Hessian's largest eigenvalue at the reference point.

        None when the Hessian vanishes there (the monkey saddle): no axis has higher curvature.
        """
        values, vectors = torch.linalg.eigh(self.hessian())
        if float(values.abs().max()) < 1e-12:
            return None
        axis = vectors[:, int(values.argmax())]
        return float(axis[0]), float(axis[1])


def _xy(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return p[:, 0], p[:, 1]


def _ravine(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return x * x / 20 + y * y


def _saddle(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return x * x - y * y


def _monkey_saddle(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return x**3 - 3 * x * y * y


def _rosenbrock(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _beale(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def _goldstein_price(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    a = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x * x - 14 * y + 6 * x * y + 3 * y * y)
    b = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x * x + 48 * y - 36 * x * y + 27 * y * y)
    return a * b


def _rastrigin(p: torch.Tensor) -> torch.Tensor:
    return 20 + (p * p - 10 * torch.cos(2 * math.pi * p)).sum(dim=1)


def _ackley(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    # The tiny constant keeps √ differentiable at the minimum itself (autograd gives 0·∞ = NaN
    # there otherwise); it moves f(0, 0) by about 1e-16.
    radius = torch.sqrt(0.5 * (x * x + y * y) + 1e-32)
    waves = 0.5 * (torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y))
    return -20 * torch.exp(-0.2 * radius) - torch.exp(waves) + math.e + 20


DOUBLE_WELL_TILT = 0.3


def _double_well(p: torch.Tensor) -> torch.Tensor:
    x, y = _xy(p)
    return (x * x - 1) ** 2 + DOUBLE_WELL_TILT * x + y * y


def _double_well_roots() -> tuple[float, float]:
    """The two minima of (x² − 1)² + t·x along y = 0: roots of 4x³ − 4x + t, by Newton."""
    roots = []
    for x in (-1.0, 1.0):
        for _ in range(50):
            x -= (4 * x**3 - 4 * x + DOUBLE_WELL_TILT) / (12 * x * x - 4)
        roots.append(x)
    return roots[0], roots[1]


def _minimum(label: str, point: Point, fn: Callable, kind: str = "global") -> Minimum:
    value = float(fn(torch.tensor([point], dtype=torch.float64))[0])
    return Minimum(label, point, value, kind)


def quadratic(condition: float = 10.0, angle: float = 30.0) -> Landscape:
    """½ (u² + κ v²) with (u, v) the point rotated by −θ: curvatures 1 and κ, axes turned by θ.

    `condition` is κ ≥ 1 (the Hessian's condition number); `angle` θ is in degrees.
    """
    if isinstance(condition, bool) or not isinstance(condition, (int, float)):
        raise ValueError(f"quadratic: invalid condition={condition!r}; must be a number ≥ 1")
    if not math.isfinite(condition) or condition < 1:
        raise ValueError(f"quadratic: invalid condition={condition!r}; must be a number ≥ 1")
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle):
        raise ValueError(f"quadratic: invalid angle={angle!r}; must be a finite number (degrees)")
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def fn(p: torch.Tensor) -> torch.Tensor:
        x, y = _xy(p)
        u = cos * x + sin * y
        v = -sin * x + cos * y
        return 0.5 * (u * u + condition * v * v)

    return Landscape(
        "quadratic",
        f"Quadratic, condition number {condition:g}, axes at {angle:g}°",
        "½(u² + κv²), (u, v) = R(−θ)(x, y)",
        fn,
        (-5.0, 5.0, -5.0, 5.0),
        (-4.0, 3.0),
        (_minimum("minimum", (0.0, 0.0), fn),),
        {"condition": condition, "angle": angle},
        is_quadratic=True,
        closed_form=gradients.quadratic(cos, sin, condition),
    )


def _build_fixed() -> dict[str, Callable[[], Landscape]]:
    left, right = _double_well_roots()
    himmelblau_minima = (
        ("(3, 2)", (3.0, 2.0)),
        ("(−2.81, 3.13)", (-2.805118086952745, 3.131312518250573)),
        ("(−3.78, −3.28)", (-3.779310253377747, -3.283185991286170)),
        ("(3.58, −1.85)", (3.584428340330492, -1.848126526964404)),
    )
    table = [
        ("ravine", "Ravine", "x²/20 + y²", _ravine, (-10, 10, -5, 5), (-7.0, 2.0),
         [("minimum", (0.0, 0.0), "global")]),
        ("saddle", "Saddle", "x² − y²", _saddle, (-2, 2, -2, 2), (-1.5, 1e-3),
         [("saddle point", (0.0, 0.0), "saddle")]),
        ("monkey-saddle", "Monkey saddle", "x³ − 3xy²", _monkey_saddle, (-2, 2, -2, 2),
         (1.5, 1e-3), [("saddle point", (0.0, 0.0), "saddle")]),
        ("rosenbrock", "Rosenbrock", "(1 − x)² + 100(y − x²)²", _rosenbrock, (-2, 2, -1, 3),
         (-1.5, 2.5), [("minimum", (1.0, 1.0), "global")]),
        ("beale", "Beale", "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", _beale,
         (-4.5, 4.5, -4.5, 4.5), (1.0, 1.5), [("minimum", (3.0, 0.5), "global")]),
        ("himmelblau", "Himmelblau", "(x² + y − 11)² + (x + y² − 7)²", _himmelblau,
         (-5, 5, -5, 5), (0.0, 0.0), [(lbl, pt, "global") for lbl, pt in himmelblau_minima]),
        ("goldstein-price", "Goldstein–Price", "[1 + (x+y+1)²(…)]·[30 + (2x−3y)²(…)]",
         _goldstein_price, (-2, 2, -2, 2), (1.5, 1.5),
         [("minimum", (0.0, -1.0), "global"), ("local (−0.6, −0.4)", (-0.6, -0.4), "local"),
          ("local (1.8, 0.2)", (1.8, 0.2), "local"), ("local (1.2, 0.8)", (1.2, 0.8), "local")]),
        ("rastrigin", "Rastrigin", "20 + x² − 10cos 2πx + y² − 10cos 2πy", _rastrigin,
         (-5.12, 5.12, -5.12, 5.12), (3.1, 2.2), [("minimum", (0.0, 0.0), "global")]),
        ("ackley", "Ackley", "−20e^(−0.2√(½(x²+y²))) − e^(½(cos 2πx + cos 2πy)) + e + 20",
         _ackley, (-5, 5, -5, 5), (3.2, 2.6), [("minimum", (0.0, 0.0), "global")]),
        ("double-well", "Double well", f"(x² − 1)² + {DOUBLE_WELL_TILT}x + y²", _double_well,
         (-2, 2, -1.5, 1.5), (1.8, 1.0),
         [("global (left well)", (left, 0.0), "global"),
          ("local (right well)", (right, 0.0), "local")]),
    ]  # fmt: skip
    return {row[0]: partial(_fixed_landscape, *row) for row in table}


def _fixed_landscape(
    name: str,
    title: str,
    formula: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    box: tuple[float, ...],
    start: Point,
    minima: list[tuple[str, Point, str]],
) -> Landscape:
    found = tuple(_minimum(label, point, fn, kind) for label, point, kind in minima)
    box4 = tuple(map(float, box))
    quadratic_form = name == "ravine"  # x²/20 + y²: Hessian diag(0.1, 2) everywhere
    closed_form = _CLOSED_FORMS[name]
    return Landscape(
        name,
        title,
        formula,
        fn,
        box4,
        start,
        found,
        is_quadratic=quadratic_form,
        closed_form=closed_form,
    )


#: each fixed function's f and ∇f without autograd (tested bit for bit against autograd)
_CLOSED_FORMS: dict[str, ValueAndGrad] = {
    "ravine": gradients.ravine,
    "saddle": gradients.saddle,
    "monkey-saddle": gradients.monkey_saddle,
    "rosenbrock": gradients.rosenbrock,
    "beale": gradients.beale,
    "himmelblau": gradients.himmelblau,
    "goldstein-price": gradients.goldstein_price,
    "rastrigin": gradients.rastrigin(_rastrigin),
    "ackley": gradients.ackley(_ackley),
    "double-well": gradients.double_well(DOUBLE_WELL_TILT),
}


_FIXED = _build_fixed()
#: the function names, in the order of the table above
FUNCTION_NAMES: tuple[str, ...] = (
    "ravine",
    "quadratic",
    *[name for name in _FIXED if name != "ravine"],
)
_OPTIONS = {"quadratic": ("condition", "angle")}


def list_functions() -> list[str]:
    """Names of every landscape."""
    return list(FUNCTION_NAMES)


def get_function(name: str, **options: Any) -> Landscape:
    """The landscape called `name`; ``quadratic`` takes ``condition`` and ``angle`` options.

    Raises ValueError naming the valid functions (or options) when `name` (or an option) is
    unknown.
    """
    if name not in FUNCTION_NAMES:
        raise ValueError(f"unknown function {name!r}; valid functions: {', '.join(FUNCTION_NAMES)}")
    valid = _OPTIONS.get(name, ())
    for key in options:
        if key not in valid:
            allowed = ", ".join(valid) if valid else "none"
            raise ValueError(
                f"unknown option {key!r} for function {name!r}; valid options: {allowed}"
            )
    if name == "quadratic":
        return quadratic(**options)
    return _FIXED[name]()


__all__ = [
    "FUNCTION_NAMES",
    "Landscape",
    "Minimum",
    "get_function",
    "list_functions",
    "quadratic",
]
