"""The typer application; each command lives in its own module and is registered here."""

from __future__ import annotations

import typer

from optimlab import __version__
from optimlab.cli import compare, demo, diagnose, export, list_optimizers, lr_find, serve
from optimlab.cli import landscape as landscape_command

app = typer.Typer(
    name="optimlab",
    help="optimlab: the optimizer lab for PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"optimlab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """optimlab: the optimizer lab for PyTorch."""


app.command("list")(list_optimizers.command)
app.command("demo")(demo.command)
app.command("compare")(compare.command)
app.command("export")(export.command)
app.command("landscape")(landscape_command.command)
app.command("diagnose")(diagnose.command)
app.command("lr-find")(lr_find.command)
app.command("serve")(serve.command)
