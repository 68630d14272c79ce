"""`optimlab landscape`: the optimizers on 2D loss surfaces, in pictures and numbers.

    optimlab landscape FUNCTION [--optimizers SPEC] [--steps N] [--start=X,Y] [--noise S] [--tune]
                                [--out DIR]
    optimlab landscape --scenario NAME [--out DIR]
    optimlab landscape --list

FUNCTION may carry options in the spec syntax (``quadratic:condition=100:angle=45``).  Writes
DIR/trajectories.json, landscape.png, landscape.svg, loss.png and landscape.gif and prints a table.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from optimlab.landscapes.experiment import DEFAULT_OPTIMIZERS, DEFAULT_STEPS, LandscapeResult
from optimlab.landscapes.functions import get_function, list_functions
from optimlab.landscapes.output import write_outputs
from optimlab.landscapes.runner import MAX_STEPS
from optimlab.landscapes.scenarios import SCENARIOS, get_scenario, run_scenario
from optimlab.landscapes.tuning import GRID_HIGH, GRID_LOW, GRID_POINTS
from optimlab.spec import parse_optimizer_spec, parse_spec


def _parse_start(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise typer.BadParameter(
            f"{text!r} is not two finite numbers; expected X,Y, e.g. --start=-7,2",
            param_hint="'--start'",
        )
    return values[0], values[1]


def _parse_function(text: str) -> Any:
    try:
        ((name, options),) = parse_spec(text)
        return get_function(name, **options)
    except ValueError as error:
        message = str(error)
        if "valid" not in message:
            message += f"; valid functions: {', '.join(list_functions())}"
        raise typer.BadParameter(message, param_hint="'FUNCTION'") from None


def _number(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _mean(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def results_table(result: LandscapeResult, title: str) -> Table:
    """One row per configuration and start (averaged over noise seeds when there are several)."""
    table = Table(title=title)
    several_starts = len({run.start for run in result.runs}) > 1
    columns = ("optimizer", "lr", "start", "final loss", "distance", "steps to ε",
               "diverged", "zigzag", "ends in")  # fmt: skip
    if not several_starts:
        columns = tuple(c for c in columns if c != "start")
    for column in columns:
        table.add_column(column, justify="left" if column in ("optimizer", "ends in") else "right")
    groups: dict[tuple[str, tuple[float, float]], list] = {}
    for run in result.runs:
        groups.setdefault((run.label, run.start), []).append(run)
    for (label, start), runs in groups.items():
        metrics = [run.metrics for run in runs]
        n = len(runs)
        diverged = sum(m["diverged"] for m in metrics)
        ends = Counter(m["minimum"] or "—" for m in metrics).most_common(1)[0][0]
        steps = [m["steps_to_eps"] for m in metrics]
        cells = [
            label + (f" ×{n}" if n > 1 else ""),
            f"{runs[0].hyperparameters['lr']:.3g}",
            f"({start[0]:g}, {start[1]:g})",
            _number(_mean([m["final_loss"] for m in metrics]), ".2e"),
            _number(_mean([m["distance_to_min"] for m in metrics]), ".2e"),
            _number(_mean(steps), ".0f") if all(s is not None for s in steps) else "—",
            (f"step {metrics[0]['diverged_step']}" if n == 1 and diverged else
             f"{diverged}/{n}" if n > 1 else "no"),
            _number(_mean([m["zigzag"] for m in metrics]), ".2f"),
            ends,
        ]  # fmt: skip
        if not several_starts:
            del cells[2]
        table.add_row(*cells)
    return table


def _list(console: Console) -> int:
    functions = Table(title="functions")
    for column in ("name", "f(x, y)", "box", "minima"):
        functions.add_column(column)
    for name in list_functions():
        land = get_function(name)
        minima = "; ".join(f"{m.kind} ({m.point[0]:.3g}, {m.point[1]:.3g})" for m in land.minima)
        functions.add_row(name, land.formula, str(land.box), minima)
    console.print(functions)
    scenarios = Table(title="scenarios")
    for column in ("name", "shows"):
        scenarios.add_column(column)
    for scenario in SCENARIOS.values():
        scenarios.add_row(scenario.name, scenario.title)
    console.print(scenarios)
    return 0


def _write(console: Console, result: LandscapeResult, out: Path, **kwargs: Any) -> None:
    paths = write_outputs(result, out, **kwargs)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def command(
    function: str | None = typer.Argument(
        None,
        help=f"The surface: {', '.join(list_functions())} (quadratic:condition=K:angle=DEG).",
        show_default=False,
    ),
    optimizers: str = typer.Option(
        DEFAULT_OPTIMIZERS,
        "--optimizers",
        help="name[:key=value...] items, comma-separated, e.g. sgd:lr=0.95,momentum:lr=0.1.",
    ),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help=f"Steps, 1…{MAX_STEPS}."),
    start: str | None = typer.Option(
        None, "--start", help="Start point X,Y (write --start=-7,2). Default: the function's."
    ),
    noise: float = typer.Option(0.0, "--noise", help="Gradient noise σ (seeded), ≥ 0."),
    tune: bool = typer.Option(
        False,
        "--tune",
        help=f"Tune lr of items without one on a {GRID_POINTS}-point log grid "
        f"{GRID_LOW:g}…{GRID_HIGH:g}, by final loss (else the optimizer's default lr).",
    ),
    out: str | None = typer.Option(
        None, "--out", help="Output directory (default ./landscape-NAME)."
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help=f"Run a named scenario: {', '.join(SCENARIOS)}."
    ),
    list_: bool = typer.Option(False, "--list", help="List the functions and scenarios."),
) -> int:
    """Watch the optimizers move on a 2D loss surface (or run a named scenario)."""
    console = Console()
    if list_:
        return _list(console)
    if scenario is not None:
        if function is not None:
            raise typer.BadParameter(
                "give a FUNCTION or --scenario, not both", param_hint="'--scenario'"
            )
        try:
            get_scenario(scenario)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--scenario'") from None
        outcome = run_scenario(scenario)
        spec = outcome.scenario
        console.print(f"[bold]{spec.title}[/bold]")
        for line in spec.explanation:
            console.print(f"  {line}")
        console.print(results_table(outcome.result, f"scenario {spec.name}"))
        for claim, ok in outcome.checks:
            console.print(f"  {'[green]✓[/green]' if ok else '[red]✗[/red]'} {claim}")
        extra = {
            "scenario": {
                "name": spec.name,
                "title": spec.title,
                "explanation": list(spec.explanation),
                "checks": [{"claim": claim, "holds": ok} for claim, ok in outcome.checks],
            }
        }
        _write(console, outcome.result, Path(out or f"landscape-{spec.name}"),
               title=spec.title, extra=extra)  # fmt: skip
        return 0
    if function is None:
        raise typer.BadParameter(
            f"give a FUNCTION ({', '.join(list_functions())}), --scenario NAME or --list",
            param_hint="'FUNCTION'",
        )
    landscape = _parse_function(function)
    if not 1 <= steps <= MAX_STEPS:
        raise typer.BadParameter(f"{steps} is not in 1…{MAX_STEPS}", param_hint="'--steps'")
    if not (math.isfinite(noise) and noise >= 0):
        raise typer.BadParameter(f"{noise} is not a finite number ≥ 0", param_hint="'--noise'")
    starts = [_parse_start(start)] if start is not None else [landscape.default_start]
    try:
        parsed = parse_optimizer_spec(optimizers)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--optimizers'") from None
    from optimlab.landscapes.experiment import run_landscape

    try:
        result = run_landscape(
            landscape, parsed, steps=steps, starts=starts, noise=noise, tune=tune
        )
    except (ValueError, TypeError) as error:  # a bad hyperparameter value, e.g. lr=-1
        raise typer.BadParameter(str(error), param_hint="'--optimizers'") from None
    how = f"lr tuned on a {GRID_POINTS}-point log grid" if tune else "lr as given or default"
    title = f"{landscape.title} from {starts[0]}, {steps} steps, noise σ={noise:g}; {how}"
    console.print(results_table(result, title))
    _write(console, result, Path(out or f"landscape-{landscape.name}"))
    return 0
