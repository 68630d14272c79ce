"""`optimlab landscape`: the optimizers on 2D loss surfaces, in pictures and numbers.

    optimlab landscape FUNCTION [--optimizers SPEC] [--steps N] [--start=X,Y] [--noise S] [--tune]
                                [--theory] [--out DIR]
    optimlab landscape --scenario NAME [--out DIR]
    optimlab landscape --list

FUNCTION may carry options in the spec syntax (``quadratic:condition=100:angle=45``).  Writes
DIR/trajectories.json, landscape.png, landscape.svg, loss.png and landscape.gif and prints a table.

Nothing heavy is imported at module level (torch, numpy, matplotlib, optimlab.landscapes): `--help`
must stay fast, so the option help texts are plain literals (a test keeps them equal to the
registries) and the command imports what it needs when it runs.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from optimlab.cli._integers import integer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from optimlab.landscapes.results import LandscapeResult

#: the help texts' lists, kept equal to list_functions() / list_scenarios() by a test
FUNCTIONS_HELP = (
    "ravine, quadratic, saddle, monkey-saddle, rosenbrock, beale, himmelblau, goldstein-price, "
    "rastrigin, ackley, double-well"
)
SCENARIOS_HELP = (
    "ravine, saddle, local-minimum, lr-too-small, lr-too-large, adagrad-stall, "
    "momentum-overshoot, optimal-momentum, noise, bf16-stagnation"
)
MAX_STEPS = 1_000_000  # = optimlab.landscapes.runner.MAX_STEPS (a test checks)


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
    from optimlab.landscapes.functions import get_function, list_functions
    from optimlab.spec import parse_spec

    try:
        items = parse_spec(text)
        if len(items) != 1:
            raise ValueError(
                f"{text!r} names {len(items)} functions; one function at a time "
                "(run the command once per function)"
            )
        ((name, options),) = items
        return get_function(name, **options)
    except ValueError as error:
        message = str(error)
        if "valid" not in message:
            message += f"; valid functions: {', '.join(list_functions())}"
        raise typer.BadParameter(message, param_hint="'FUNCTION'") from None


def check_out(out: str) -> Path:
    """Fail fast, before any import or computation, if results could not be written to `out`.

    Finds the nearest existing ancestor: `out` itself must be a directory if it exists, no
    ancestor may be a file, and the nearest existing directory must take a file (a probe is
    written and removed: ``os.access`` would lie to root, who still cannot write into
    ``/proc``).  Nothing is created; exit 2 names the path and why.
    """
    import os
    import tempfile

    path = Path(out)

    def fail(why: str) -> typer.BadParameter:
        return typer.BadParameter(f"cannot write to {out!r}: {why}", param_hint="'--out'")

    if path.exists() and not path.is_dir():
        raise fail("it exists and is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise fail(f"{str(existing)!r} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise fail(f"{str(existing)!r} is not writable ({error.strerror or error})") from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"{str(existing)!r} is not writable")
    return path


def _number(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _mean(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def _table(title: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)


def _add_column(table: Table, header: str, text: bool) -> None:
    """Text columns wrap (labels fold); numbers never do: a cut or folded number reads wrong,
    so their headers are short or on two lines and the table fits 80 columns."""
    table.add_column(
        header,
        justify="left" if text else "right",
        overflow="fold",
        no_wrap=not text,
        min_width=8 if text else None,
    )


def results_table(result: LandscapeResult, title: str) -> Table:
    """One row per configuration and start (averaged over noise seeds when there are several)."""

    table = _table(title)
    several_starts = len({run.start for run in result.runs}) > 1
    columns = ("optimizer", "lr", "start", "final\nloss", "distance", "steps\nto ε",
               "status (step)", "zigzag", "ends in")  # fmt: skip
    if not several_starts:
        columns = tuple(c for c in columns if c != "start")
    for column in columns:
        _add_column(table, column, text=column in ("optimizer", "status (step)", "ends in"))
    groups: dict[tuple[str, tuple[float, float]], list] = {}
    for run in result.runs:
        groups.setdefault((run.label, run.start), []).append(run)
    for (label, start), runs in groups.items():
        metrics = [run.metrics for run in runs]
        n = len(runs)
        ends = Counter(m["minimum"] or "—" for m in metrics).most_common(1)[0][0]
        steps = [m["steps_to_eps"] for m in metrics]
        cells = [
            label + (f" ×{n}" if n > 1 else ""),
            f"{runs[0].hyperparameters['lr']:.3g}",
            f"({start[0]:g}, {start[1]:g})",
            _number(_mean([m["final_loss"] for m in metrics]), ".2e"),
            _number(_mean([m["distance_to_min"] for m in metrics]), ".2e"),
            _number(_mean(steps), ".0f") if all(s is not None for s in steps) else "—",
            _status(metrics),
            _number(_mean([m["zigzag"] for m in metrics]), ".2f"),
            ends,
        ]  # fmt: skip
        if not several_starts:
            del cells[2]
        table.add_row(*cells)
    return table


def _status(metrics: list[dict[str, Any]]) -> str:
    """ "diverged at step 73", "left the plot at step 30", "inside" — or counts over seeds."""
    if len(metrics) > 1:
        counts = Counter(m["status"] for m in metrics)
        return ", ".join(f"{n}/{len(metrics)} {status}" for status, n in counts.items())
    m = metrics[0]
    if m["status"] == "diverged":
        return f"diverged ({m['diverged_step']})"
    if m["status"] == "left":
        return f"left the plot ({m['left_step']})"
    return "inside"


ROLES = {
    "theory: gradient descent at 2/(λmin+λmax)": "GD at 2/(λmin+λmax)",
    "theory: heavy ball at (α*, β*)": "heavy ball (α*, β*)",
}


def theory_table(result: LandscapeResult) -> Table:
    """Predicted (closed form) vs achieved contraction per step, and steps to shrink 1e6×."""

    theory = result.theory or {}
    table = _table(
        f"theory: λmin={theory['lambda_min']:.4g}, λmax={theory['lambda_max']:.4g}, "
        f"κ={theory['condition']:.4g}; GD best lr 2/(λmin+λmax)={theory['gd_lr']:.4g}, "
        f"stability limit 2/λmax={theory['stability_limit']:.4g}; heavy ball "
        f"α*={theory['heavy_ball_lr']:.4g}, β*={theory['heavy_ball_momentum']:.4g}"
    )
    for column in ("optimizer", "role", "ρ\ntheory", "ρ\nachieved", "steps\ntheory",
                   "steps\nachieved"):  # fmt: skip
        _add_column(table, column, text=column in ("optimizer", "role"))
    table.caption = (
        "ρ: contraction of the distance to the minimum per step; steps: to shrink it 1e6×"
    )
    for row in theory["runs"]:
        predicted = row["predicted_steps_to_1e-6"]
        table.add_row(
            row["label"],
            ROLES.get(row["role"], row["role"]),
            _number(row["predicted_rate"], ".4f"),
            _number(row["achieved_rate"], ".4f"),
            "—" if predicted is None else "∞" if math.isinf(predicted) else f"{predicted:.0f}",
            _number(row["steps_to_1e-6"], "d"),
        )
    return table


def _list(console: Console) -> int:
    from rich.table import Table

    from optimlab.landscapes.functions import get_function, list_functions
    from optimlab.landscapes.scenarios import SCENARIOS

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
    from optimlab.landscapes.output import write_outputs

    paths = write_outputs(result, out, **kwargs)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")


def command(
    function: str | None = typer.Argument(
        None,
        help="The surface: " + FUNCTIONS_HELP + " (quadratic:condition=K:angle=DEG).",
        show_default=False,
    ),
    optimizers: str | None = typer.Option(
        None,
        "--optimizers",
        help="name[:key=value...] items, comma-separated, e.g. sgd:lr=0.95,momentum:lr=0.1. "
        "Default: every optimizer (optimlab list).",
    ),
    steps: int = typer.Option(
        200, "--steps", help="Steps, 1…1000000.", **integer("--steps", 1, MAX_STEPS)
    ),
    start: str | None = typer.Option(
        None, "--start", help="Start point X,Y (write --start=-7,2). Default: the function's."
    ),
    noise: float = typer.Option(0.0, "--noise", help="Gradient noise σ (seeded), ≥ 0."),
    tune: bool = typer.Option(
        False,
        "--tune",
        metavar="",
        help="Tune lr of items without one on a 36-point log grid 1e-05…100, by final loss "
        "(else the optimizer's default lr).",
    ),
    theory: bool = typer.Option(
        False,
        "--theory",
        metavar="",
        help="Quadratic surfaces (ravine, quadratic): also run gradient descent at its best lr "
        "2/(λmin+λmax) and heavy-ball momentum at its optimal (α*, β*), and print predicted vs "
        "achieved contraction per step.",
    ),
    out: str | None = typer.Option(
        None,
        "--out",
        help="Output directory (default ./landscape-NAME, with the function's options, e.g. "
        "landscape-quadratic-condition=100-angle=30). Checked before the run.",
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help="Run a named scenario: " + SCENARIOS_HELP + "."
    ),
    list_: bool = typer.Option(
        False, "--list", metavar="", help="List the functions and scenarios."
    ),
) -> int:
    """Watch the optimizers move on a 2D loss surface (or run a named scenario)."""
    from optimlab.cli.console import stdout_console

    console = stdout_console()
    if list_:
        return _list(console)
    if scenario is not None:
        return _scenario(console, function, scenario, out)
    if function is None:
        raise typer.BadParameter(
            f"give a FUNCTION ({FUNCTIONS_HELP}), --scenario NAME or --list",
            param_hint="'FUNCTION'",
        )
    if out is not None:
        check_out(out)
    landscape = _parse_function(function)
    if not 1 <= steps <= MAX_STEPS:
        raise typer.BadParameter(f"{steps} is not in 1…{MAX_STEPS}", param_hint="'--steps'")
    if not (math.isfinite(noise) and noise >= 0):
        raise typer.BadParameter(f"{noise} is not a finite number ≥ 0", param_hint="'--noise'")
    from optimlab.landscapes.experiment import default_optimizers, run_landscape
    from optimlab.landscapes.output import default_directory
    from optimlab.landscapes.runner import box_text, check_start_on, inside
    from optimlab.spec import parse_optimizer_spec

    starts = [_parse_start(start)] if start is not None else [landscape.default_start]
    try:
        starts = [check_start_on(landscape, s) for s in starts]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--start'") from None
    if theory and not landscape.is_quadratic:
        raise typer.BadParameter(
            f"--theory needs a quadratic surface (ravine, quadratic); {landscape.name!r} is not",
            param_hint="'--theory'",
        )
    try:
        parsed = parse_optimizer_spec(optimizers or default_optimizers())
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--optimizers'") from None
    directory = check_out(out or default_directory(landscape))
    for point in starts:
        if not inside(landscape.box, point):
            console.print(
                f"[yellow]warning:[/yellow] the start {point} lies outside the plotting box "
                f"{box_text(landscape.box)}; the pictures widen to show it"
            )
    try:
        result = run_landscape(
            landscape, parsed, steps=steps, starts=starts, noise=noise, tune=tune, theory=theory
        )
    except (ValueError, TypeError) as error:  # a bad hyperparameter value, e.g. lr=-1
        raise typer.BadParameter(str(error), param_hint="'--optimizers'") from None
    how = "lr tuned on a 36-point log grid" if tune else "lr as given or default"
    title = f"{landscape.title} from {starts[0]}, {steps} steps, noise σ={noise:g}; {how}"
    console.print(results_table(result, title))
    if result.theory is not None:
        console.print(theory_table(result))
    _write(console, result, directory)
    return 0


def _scenario(console: Console, function: str | None, name: str, out: str | None) -> int:
    if out is not None:
        check_out(out)
    from optimlab.landscapes.scenarios import get_scenario, run_scenario

    if function is not None:
        raise typer.BadParameter(
            "give a FUNCTION or --scenario, not both", param_hint="'--scenario'"
        )
    try:
        get_scenario(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--scenario'") from None
    directory = check_out(out or f"landscape-{name}")
    outcome = run_scenario(name)
    spec = outcome.scenario
    console.print(f"[bold]{spec.title}[/bold]")
    for line in spec.explanation:
        console.print(f"  {line}")
    console.print(results_table(outcome.result, f"scenario {spec.name}"))
    if outcome.result.theory is not None:
        console.print(theory_table(outcome.result))
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
    _write(console, outcome.result, directory, title=spec.title, extra=extra)
    return 0
