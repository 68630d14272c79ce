"""The typer application; each command lives in its own module and is registered here.

Help is click's plain formatter (``rich_markup_mode=None``): boolean flags read as flags
(``--json``, not ``--json <bool>``), it wraps to any terminal width, and it needs no rich import.
Every command module keeps torch and the lab out of its top level, so ``optimlab --help`` and
``--version`` answer in a fraction of a second (benchmarks/cli_speed.py).
"""

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
    rich_markup_mode=None,
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


# One-line summaries for `optimlab --help`, written to fit 80 columns whole: click would cut each
# command's docstring to the width left after the longest name, mid-sentence ("…by...").
app.command("list", short_help="The optimizers, their defaults and update rules.")(
    list_optimizers.command
)
app.command("demo", short_help="The quick comparison suite and its report.")(demo.command)
app.command("compare", short_help="Tune, repeat and rank optimizers on problems.")(compare.command)
app.command("export", short_help="Every trial of a comparison as CSV or JSON.")(export.command)
app.command("landscape", short_help="Optimizers moving on a 2D loss surface.")(
    landscape_command.command
)
app.command("diagnose", short_help="Why training is slow or stuck: four checks.")(diagnose.command)
app.command("lr-find", short_help="The learning-rate range test, with a verdict.")(lr_find.command)
app.command("serve", short_help="The playground and live comparisons in the browser.")(
    serve.command
)
