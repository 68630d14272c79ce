"""`optimlab diagnose`: why is training slow or stuck on a problem?

    optimlab diagnose --problem P [--optimizer SPEC] [--checks lr,gradflow,hessian,landscape]
                      [--out DIR] [--json] [--seed N]

Writes DIR/index.html (self-contained, figures embedded) and DIR/diagnosis.json; prints a
summary, or with ``--json`` the JSON object keyed by check. Progress goes to stderr.

Nothing heavy is imported at module level (torch, optimlab.diagnose, optimlab.problems): the
command's ``--help`` must answer in well under a second, and bad input is refused before torch
loads. Option defaults and help texts are therefore literals.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

from optimlab.cli._integers import MAX_SEED, integer

DEFAULT_OUT = "results/diagnose"
#: optimlab.diagnose.run.CHECKS and DEFAULT_OPTIMIZER, repeated as literals so that this module
#: does not import torch (a test checks they agree)
CHECKS_TEXT = "lr,gradflow,hessian,landscape"
DEFAULT_OPTIMIZER = "adam"


def _probe_writable(directory: Path, path: str, hint: str) -> None:
    """Create and delete a file in `directory`: the only check that also holds for root, for
    read-only file systems and for /proc (os.access says yes to root for almost everything)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".optimlab-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise typer.BadParameter(
            f"{path!r}: cannot write in {str(directory)!r} ({reason})", param_hint=hint
        ) from None


def check_output_file(path: str, hint: str) -> None:
    """Refuse an output file that cannot be written, before any work: its directory must exist
    and be writable, and the path must not be a directory."""
    target = Path(path)
    if target.is_dir():
        raise typer.BadParameter(f"{path!r} is a directory; give a file name", param_hint=hint)
    parent = target.parent
    if not parent.exists():
        raise typer.BadParameter(
            f"{path!r}: directory {str(parent)!r} does not exist", param_hint=hint
        )
    if not parent.is_dir():
        raise typer.BadParameter(f"{path!r}: {str(parent)!r} is not a directory", param_hint=hint)
    _probe_writable(parent, path, hint)


def check_output_dir(path: str, hint: str) -> None:
    """Refuse an output directory that cannot be created or written, before any work: the
    directory, or its nearest existing ancestor (where it would be created), must be a
    writable directory. Nothing is created here."""
    target = Path(path)
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        where = "exists and is not a directory" if existing == target else (
            f"{str(existing)!r} is a file, not a directory"
        )  # fmt: skip
        raise typer.BadParameter(f"{path!r}: {where}", param_hint=hint)
    _probe_writable(existing, path, hint)


def check_problem(spec: str, hint: str = "--problem") -> None:
    from optimlab.problems import get_problem, list_problems

    try:
        get_problem(spec)
    except ValueError as error:
        message = str(error)
        # the list of problems helps with an unknown name, not with a bad option of a known one
        if "valid" not in message and "option" not in message:
            message += f"; valid problems: {', '.join(list_problems())}"
        raise typer.BadParameter(message, param_hint=hint) from None


def check_optimizer(spec: str, hint: str = "--optimizer") -> None:
    import torch

    from optimlab.diagnose.run import optimizer_factory

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
        help="Problem spec, e.g. deep-mlp:depth=10:activation=sigmoid (names: `optimlab "
        "compare --help`; an unknown name lists them).",
    ),
    optimizer: str = typer.Option(
        DEFAULT_OPTIMIZER, "--optimizer", help="One optimizer spec, e.g. adam:lr=0.001."
    ),
    checks: str = typer.Option(
        CHECKS_TEXT, "--checks", help="Comma-separated checks: lr, gradflow, hessian, landscape."
    ),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output directory (index.html, JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the model's initial weights.", **integer("--seed", 0, MAX_SEED)
    ),
) -> int:
    """Diagnose a problem: LR range test, gradient flow, Hessian, loss landscape."""
    check_output_dir(out, "--out")
    from optimlab.diagnose.run import parse_checks, run_diagnosis

    try:
        names = parse_checks(checks)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--checks") from None
    check_problem(problem)
    check_optimizer(optimizer)
    from rich.console import Console

    errors = Console(stderr=True, log_path=False)  # a log file read "diagnose.py:128"
    results = run_diagnosis(
        problem, optimizer, names, out, seed=seed, progress=lambda m: errors.log(m)
    )
    index = (Path(out) / "index.html").resolve()
    if as_json:
        typer.echo(json.dumps(results, allow_nan=False))
        errors.print(f"page: {index}")
        return 0
    print_findings(results, optimizer)
    typer.echo(f"page: {index}")
    return 0


def print_findings(results: dict, optimizer: str) -> None:
    """The findings as a table that wraps (never cuts) its cells, then the advice."""
    from rich.table import Table

    from optimlab.cli.console import stdout_console
    from optimlab.diagnose.page import findings

    console = stdout_console()
    table = Table(title=f"diagnosis of {results['meta']['problem_label']} with {optimizer}")
    table.add_column("check", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for check, text, _level in findings(results):
        table.add_row(check, text)
    console.print(table)
    for line in results.get("gradflow", {}).get("advice", []):
        console.print(f"• {line}")
