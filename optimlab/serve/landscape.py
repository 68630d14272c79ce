"""The playground's computations: a checked landscape request → the runs as JSON.

Every check raises :class:`RequestError` (the API answers HTTP 422) naming the field, the value and
what is allowed, with the message of the validator the CLI uses for the same input.  Requests are
capped so that one request cannot hold the server: at most ``MAX_STEPS`` steps,
``MAX_TRAJECTORIES`` trajectories (optimizers, plus the two theory runs) and ``MAX_GRID`` points a
side for the surface grid.  Only registered optimizers and built-in functions run; nothing here
reads a file.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from optimlab.landscapes.experiment import run_landscape
from optimlab.landscapes.functions import Landscape, get_function, list_functions
from optimlab.landscapes.results import json_safe
from optimlab.landscapes.runner import check_noise, check_start_on, check_steps
from optimlab.landscapes.scenarios import SCENARIOS, get_scenario, run_scenario
from optimlab.optim.registry import list_optimizers
from optimlab.spec import parse_optimizer_spec, parse_spec

MAX_STEPS = 5_000
MAX_TRAJECTORIES = 16
MAX_GRID = 200
DEFAULT_GRID = 80
MAX_SEED = 2**31 - 1
#: the runner's implementation for playground requests: a configuration with one learning rate
#: takes its optimizer's fused kernel (serial twin, per-call fast path), about a third of the
#: reference rule's cost on these one-row parameters; trajectories agree with the CLI's
#: (``impl="reference"``) within rounding.  The server is long-lived, so numba's load (a second
#: or two, on the first kernel call) is paid once, by `warm_up`, not by a request.
IMPL = "auto"


class RequestError(ValueError):
    """A bad request: ``field`` names the input, the message says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_function(text: Any) -> Landscape:
    """``"quadratic:condition=100:angle=30"`` → the landscape (as ``optimlab landscape FUNCTION``)."""
    if not isinstance(text, str):
        raise RequestError(
            "function", f"invalid function={text!r}; expected a name such as 'ravine'"
        )
    try:
        parsed = parse_spec(text)
        if len(parsed) != 1:
            raise RequestError(
                "function",
                f"invalid function={text!r}: {len(parsed)} functions given, one expected "
                f"(name[:key=value...]); valid functions: {', '.join(list_functions())}",
            )
        ((name, options),) = parsed
        return get_function(name, **options)
    except RequestError:
        raise
    except ValueError as error:
        message = str(error)
        if "valid" not in message:
            message += f"; valid functions: {', '.join(list_functions())}"
        raise RequestError("function", message) from None
    except TypeError as error:  # an option of the wrong type, e.g. condition=abc
        raise RequestError("function", f"invalid options in {text!r}: {error}") from None


def _steps(value: Any) -> int:
    try:
        steps = check_steps(value)
    except ValueError:
        # the server's own range, not the CLI's [1, 1e6]: a client must learn the cap here
        raise RequestError(
            "steps", f"invalid steps={value!r}; steps must be an integer in [1, {MAX_STEPS}]"
        ) from None
    if steps > MAX_STEPS:
        raise RequestError(
            "steps", f"invalid steps={steps}; the server runs at most {MAX_STEPS} steps a request"
        )
    return steps


def _optimizers(value: Any) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(value, str):
        raise RequestError("optimizers", f"invalid optimizers={value!r}; expected a spec string")
    try:
        parsed = parse_optimizer_spec(value)
    except ValueError as error:
        raise RequestError("optimizers", str(error)) from None
    return parsed


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise RequestError(
            "seed", f"invalid seed={value!r}; seed must be an integer in [0, {MAX_SEED}]"
        )
    return value


def landscape_info(landscape: Landscape) -> dict[str, Any]:
    """What the page draws around the runs: box, minima, formula, whether theory applies."""
    return json_safe(
        {
            "name": landscape.name,
            "title": landscape.title,
            "formula": landscape.formula,
            "options": landscape.options,
            "box": list(landscape.box),
            "default_start": list(landscape.default_start),
            "is_quadratic": landscape.is_quadratic,
            "minima": [
                {"label": m.label, "point": list(m.point), "value": m.value, "kind": m.kind}
                for m in landscape.minima
            ],
        }
    )


def run_request(body: Any) -> dict[str, Any]:
    """Check a landscape request and run it.

    ``{"function": "ravine", "optimizers": "sgd:lr=0.1,adam", "steps": 200, "start": [x, y],
    "noise": 0.0, "seed": 0, "theory": false}`` — every field but ``function`` and ``optimizers``
    optional.  Returns the function's info, the runs (path, losses, status, metrics) and, with
    ``theory``, the closed forms of the quadratic.
    """
    if not isinstance(body, dict):
        raise RequestError("body", "the request body must be a JSON object")
    unknown = sorted(
        set(body) - {"function", "optimizers", "steps", "start", "noise", "seed", "theory"}
    )
    if unknown:
        raise RequestError(
            unknown[0],
            f"unknown field {unknown[0]!r}; valid fields: function, optimizers, steps, start, "
            "noise, seed, theory",
        )
    landscape = parse_function(body.get("function"))
    steps = _steps(body.get("steps", 200))
    parsed = _optimizers(body.get("optimizers"))
    theory = body.get("theory", False)
    if not isinstance(theory, bool):
        raise RequestError("theory", f"invalid theory={theory!r}; theory must be true or false")
    if theory and not landscape.is_quadratic:
        raise RequestError(
            "theory",
            f"--theory needs a quadratic surface (ravine, quadratic); {landscape.name!r} is not",
        )
    trajectories = len(parsed) + (2 if theory else 0)
    if trajectories > MAX_TRAJECTORIES:
        raise RequestError(
            "optimizers",
            f"{trajectories} trajectories asked for; the server runs at most {MAX_TRAJECTORIES} "
            "a request (the theory overlay adds 2)",
        )
    start = body.get("start")
    try:
        start = landscape.default_start if start is None else check_start_on(landscape, start)
    except ValueError as error:
        raise RequestError("start", str(error)) from None
    try:
        noise = check_noise(body.get("noise", 0.0))
    except ValueError as error:
        raise RequestError("noise", str(error)) from None
    seed = _seed(body.get("seed", 0))
    try:
        result = run_landscape(
            landscape,
            parsed,
            steps=steps,
            starts=[start],
            noise=noise,
            seeds=(seed,),
            theory=theory,
            impl=IMPL,
        )
    except (ValueError, TypeError) as error:  # a bad hyperparameter value, e.g. lr=-1
        raise RequestError("optimizers", str(error)) from None
    runs = []
    for run in result.runs:
        runs.append(
            {
                "label": run.label,
                "legend": run.legend,
                "optimizer": run.optimizer,
                "hyperparameters": run.hyperparameters,
                "x": run.path[:, 0],
                "y": run.path[:, 1],
                "loss": run.losses,
                "status": run.metrics["status"],
                "metrics": run.metrics,
            }
        )
    answer: dict[str, Any] = {
        "function": landscape_info(landscape),
        "steps": steps,
        "start": list(start),
        "noise": noise,
        "seed": seed,
        "impl": IMPL,  # how the runs were computed (the CLI's `optimlab landscape`: "reference")
        "runs": runs,
    }
    if result.theory is not None:
        answer["theory"] = result.theory
    return plain(answer)


def warm_up() -> None:
    """Run every registered optimizer for two steps the way requests run them, so that numba
    and each fused kernel are loaded before the first request needs them (the server calls this
    in a background thread at startup)."""
    everything = ",".join(list_optimizers())
    run_landscape("ravine", everything, steps=2, impl=IMPL)


def plain(value: Any) -> Any:
    """:func:`json_safe` (NumPy → Python, non-finite → None), with whole arrays converted at once:
    ``ndarray.tolist()`` makes 4,500 floats in microseconds where a walk value by value takes
    milliseconds; only an array holding a non-finite value is walked."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        if value.dtype.kind != "f" or np.isfinite(value).all():
            return value.tolist()
        return json_safe(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return json_safe(value)


def surface(function: Any, points: Any = DEFAULT_GRID) -> dict[str, Any]:
    """f on a ``points × points`` grid over the plotting box, for the contour and the 3-D view."""
    parse_function(function)
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_GRID:
        raise RequestError(
            "points",
            f"invalid points={points!r}; the grid takes an integer in [2, {MAX_GRID}] points a side",
        )
    return _surface(function, points)


@lru_cache(maxsize=64)
def _surface(function: str, points: int) -> dict[str, Any]:
    """The grid of a checked request, kept: the playground asks for it on every page load and
    function change, and f never changes."""
    landscape = parse_function(function)
    xmin, xmax, ymin, ymax = landscape.box
    xs = np.linspace(xmin, xmax, points)
    ys = np.linspace(ymin, ymax, points)
    grid_x, grid_y = np.meshgrid(xs, ys)
    xy = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=torch.float64)
    with torch.no_grad():
        z = landscape(xy).numpy().reshape(points, points)
    return json_safe({"function": landscape_info(landscape), "x": xs, "y": ys, "z": z})


def _scenario_summary(name: str) -> dict[str, Any]:
    scenario = get_scenario(name)
    function = ":".join(
        [scenario.function, *(f"{k}={v}" for k, v in scenario.function_options.items())]
    )
    return {
        "name": scenario.name,
        "title": scenario.title,
        "explanation": list(scenario.explanation),
        "function": function,
        "optimizers": scenario.optimizers,
        "starts": [list(s) for s in scenario.starts],
        "steps": scenario.steps,
        "noise": scenario.noise,
        "seeds": len(scenario.seeds),
        "theory": scenario.theory,
    }


def scenarios() -> list[dict[str, Any]]:
    """Every scenario: what it shows and the settings it fixes."""
    return [_scenario_summary(name) for name in SCENARIOS]


@lru_cache(maxsize=len(SCENARIOS))
def scenario_outcome(name: str) -> dict[str, Any]:
    """A scenario run: its lesson, its measured checks and a table of its runs' metrics.

    Deterministic (fixed seeds), so the answer is cached per scenario."""
    try:
        get_scenario(name)
    except ValueError as error:
        raise RequestError("scenario", str(error)) from None
    outcome = run_scenario(name)
    rows = [
        {
            "label": run.label,
            "lr": run.hyperparameters.get("lr"),
            "start": list(run.start),
            "seed": run.seed,
            "status": run.metrics["status"],
            "final_loss": run.metrics["final_loss"],
            "distance_to_min": run.metrics["distance_to_min"],
            "steps_to_eps": run.metrics["steps_to_eps"],
        }
        for run in outcome.result.runs[:64]
    ]
    answer = {
        **_scenario_summary(name),
        "checks": [{"claim": claim, "holds": bool(ok)} for claim, ok in outcome.checks],
        "runs": rows,
    }
    if outcome.result.theory is not None:
        answer["theory"] = outcome.result.theory
    return json_safe(answer)


def functions() -> list[dict[str, Any]]:
    """Every built-in function with its info and the options it takes."""
    found = []
    for name in list_functions():
        info = landscape_info(get_function(name))
        info["takes_options"] = sorted(info["options"])
        found.append(info)
    return found


__all__ = [
    "MAX_GRID",
    "MAX_STEPS",
    "MAX_TRAJECTORIES",
    "RequestError",
    "functions",
    "plain",
    "run_request",
    "scenario_outcome",
    "scenarios",
    "surface",
    "warm_up",
]
