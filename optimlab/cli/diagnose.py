"""`optimlab diagnose`: why is training slow or stuck on a problem?

    optimlab diagnose --problem P [--optimizer SPEC] [--checks lr,gradflow,hessian,landscape]
                      [--out DIR] [--json] [--seed N]

Writes DIR/index.html (self-contained, figures embedded) and DIR/diagnosis.json; prints a
summary, or with ``--json`` the JSON object keyed by check. Progress goes to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from optimlab.diagnose.run import CHECKS, DEFAULT_OPTIMIZER, optimizer_factory, parse_checks
from optimlab.problems import get_problem, list_problems

DEFAULT_OUT = "results/diagnose"


def check_problem(spec: str, hint: str = "--problem") -> None:
    try:
        get_problem(spec)
    except ValueError as error:
        message = str(error)
        if "valid" not in message:
            message += f"; valid problems: {', '.join(list_problems())}"
        raise typer.BadParameter(message, param_hint=hint) from None


def check_optimizer(spec: str, hint: str = "--optimizer") -> None:
    try:
        _, make = optimizer_factory(spec)
        # Hyperparameter ranges are checked by the optimizer's constructor: build one.
        make([torch.zeros(1, requires_grad=True)])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=hint) from None


def command(
    problem: str = typer.Option(
        ...,
        "--problem",
        help=f"Problem spec, e.g. deep-mlp:depth=10:activation=sigmoid. "
        f"Names: {', '.join(list_problems())}.",
    ),
    optimizer: str = typer.Option(
        DEFAULT_OPTIMIZER, "--optimizer", help="One optimizer spec, e.g. adam:lr=0.001."
    ),
    checks: str = typer.Option(
        ",".join(CHECKS), "--checks", help=f"Comma-separated checks: {', '.join(CHECKS)}."
    ),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output directory (index.html, JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    seed: int = typer.Option(0, "--seed", help="Seed of the model's initial weights."),
) -> int:
    """Diagnose a problem: LR range test, gradient flow, Hessian, loss landscape."""
    from optimlab.diagnose.run import run_diagnosis

    try:
        names = parse_checks(checks)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--checks") from None
    check_problem(problem)
    check_optimizer(optimizer)
    if Path(out).exists() and not Path(out).is_dir():
        raise typer.BadParameter(f"{out!r} exists and is not a directory", param_hint="--out")
    errors = Console(stderr=True)
    results = run_diagnosis(
        problem, optimizer, names, out, seed=seed, progress=lambda m: errors.log(m)
    )
    index = (Path(out) / "index.html").resolve()
    if as_json:
        typer.echo(json.dumps(results, allow_nan=False))
        errors.print(f"page: {index}")
        return 0
    from optimlab.diagnose.page import findings

    table = Table(title=f"diagnosis of {results['meta']['problem_label']} with {optimizer}")
    table.add_column("check")
    table.add_column("finding")
    for check, text, _level in findings(results):
        table.add_row(check, text)
    console = Console()
    console.print(table)
    for line in results.get("gradflow", {}).get("advice", []):
        console.print(f"• {line}")
    console.print(f"page: {index}")
    return 0
