"""`optimlab lr-find`: the learning-rate range test on a problem.

    optimlab lr-find --problem P --optimizer SPEC [--json] [--plot FILE.png] [--seed N]

Prints the suggested learning rate (``{"suggestion": ..., ...}`` with ``--json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from optimlab.cli.diagnose import check_optimizer, check_problem
from optimlab.diagnose.run import optimizer_factory, problem_loss
from optimlab.problems import get_problem, list_problems


def command(
    problem: str = typer.Option(
        ..., "--problem", help=f"Problem spec. Names: {', '.join(list_problems())}."
    ),
    optimizer: str = typer.Option(..., "--optimizer", help="One optimizer spec, e.g. adam."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    plot: str | None = typer.Option(None, "--plot", help="Also save the curve as a PNG file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and minibatches."),
) -> int:
    """Learning-rate range test: ramp the LR from 1e-7 to 10 and suggest one."""
    from optimlab.diagnose.lr_find import lr_find

    check_problem(problem)
    check_optimizer(optimizer)
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise typer.BadParameter(
            f"{plot!r}; allowed: a file name ending in .png", param_hint="--plot"
        )
    built = get_problem(problem)
    model = built.build_model(seed)
    _, make_optimizer = optimizer_factory(optimizer)
    result = lr_find(
        model,
        built.train,
        problem_loss(built, model),
        make_optimizer(model.parameters()),
        batch_size=built.batch_size,
        seed=seed,
    )
    if plot is not None:
        from optimlab.diagnose.plots import lr_find_figure, save_png

        save_png(lr_find_figure(result, f"{built.label} with {optimizer}"), plot)
    if as_json:
        from optimlab.diagnose.run import json_safe

        typer.echo(json.dumps(json_safe(result.to_json()), allow_nan=False))
        return 0
    s = result.suggestion
    console = Console()
    console.print(f"suggested learning rate: [bold]{s.lr:.3g}[/] ({s.rule} rule)")
    if s.valley_range is not None:
        console.print(f"valley: {s.valley_range[0]:.3g} – {s.valley_range[1]:.3g}")
    if s.steepest is not None:
        console.print(f"steepest descent at: {s.steepest:.3g}")
    console.print(f"stopped: {result.stop_reason} after {len(result.lrs)} iterations")
    return 0
