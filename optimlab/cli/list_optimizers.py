"""`optimlab list [NAME ...] [--preset P] [--json | --markdown]`: the optimizers.

Without names: one line per optimizer (name, preset, what it improves, its rule), so the whole
registry fits a terminal.  With names: each one's defaults under both conventions and its twins in
torch.optim and Keras.  Nothing heavy at module top: the registry (and torch) load when the command
runs.
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer

PRESET_CHOICES = ("classic", "modern", "all")


def describe() -> list[dict[str, Any]]:
    """The registry as plain data: name, class, family, rule and defaults per convention."""
    from optimlab.optim.registry import REGISTRY

    return [
        {
            "name": info.name,
            "class": info.cls.__name__,
            "title": info.title,
            "preset": info.preset,
            "family": info.family,
            "rule": info.rule,
            "learning_rate_free": bool(getattr(info, "learning_rate_free", False)),
            "defaults": {
                convention: info.cls.default_hyperparameters(convention)
                for convention in ("torch", "keras")
            },
            "torch_equivalent": info.torch_class and f"torch.optim.{info.torch_class}",
            "keras_equivalent": info.keras_class and f"keras.optimizers.{info.keras_class}",
        }
        for info in REGISTRY.values()
    ]


def _short(defaults: dict[str, Any]) -> str:
    """The algorithm's own defaults; the options common to all are left out where they keep
    their common value (AdamW's weight_decay=0.01 stays)."""
    from optimlab.optim.base import COMMON_DEFAULTS

    common = {**COMMON_DEFAULTS, "convention": defaults.get("convention")}
    return ", ".join(f"{k}={v}" for k, v in defaults.items() if k not in common or common[k] != v)


def _select(rows: list[dict[str, Any]], names: list[str], preset: str) -> list[dict[str, Any]]:
    """The rows asked for: by name (in the order given), else by preset."""
    if preset not in PRESET_CHOICES:
        raise typer.BadParameter(
            f"{preset!r} is not a preset; choose one of {', '.join(PRESET_CHOICES)}",
            param_hint="'--preset'",
        )
    by_name = {row["name"]: row for row in rows}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise typer.BadParameter(
            f"unknown optimizer {unknown[0]!r}; known: {', '.join(by_name)}", param_hint="'NAME'"
        )
    if names:
        return [by_name[name] for name in names]
    return [row for row in rows if preset == "all" or row["preset"] == preset]


def _print_summary(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from optimlab.cli.console import stdout_console

    table = Table(title="optimlab optimizers", caption="optimlab list NAME: its defaults")
    # the name is what users type: never truncated (schedulefree-adamw was, at 80 columns)
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    table.add_column("preset", no_wrap=True)
    table.add_column("improves", no_wrap=True)
    table.add_column("update rule", overflow="fold")
    for row in rows:
        # Text, not markup: a rule like "L = E[g gᵀ]" would lose its brackets to rich's markup
        table.add_row(*(Text(row[k]) for k in ("name", "preset", "family", "rule")))
    stdout_console().print(table)


def _print_details(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from optimlab.cli.console import stdout_console

    console = stdout_console()
    for row in rows:
        table = Table(title=f"{row['name']} ({row['class']}, {row['preset']})", show_header=False)
        table.add_column("field", no_wrap=True, style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("improves", Text(row["family"]))
        table.add_row("update rule", Text(row["rule"]))
        table.add_row("torch defaults", Text(_short(row["defaults"]["torch"])))
        table.add_row("keras defaults", Text(_short(row["defaults"]["keras"])))
        table.add_row("torch.optim twin", Text(row["torch_equivalent"] or "none"))
        table.add_row("keras twin", Text(row["keras_equivalent"] or "none"))
        if row["learning_rate_free"]:
            table.add_row("learning rate", "learning-rate free: compare runs it at its defaults")
        console.print(table)


def _strict_json(value: Any) -> Any:
    """Non-finite floats as the strings Python's float() reads back ("inf"): Prodigy's
    growth_rate default printed as the bare Infinity that strict JSON parsers reject."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def command(
    names: list[str] = typer.Argument(  # noqa: B008 (typer reads its parameters here)
        None, metavar="[NAME]...", help="Optimizers to show in detail, with their defaults."
    ),
    preset: str = typer.Option(
        "all", "--preset", help="Which set to list: classic, modern or all.", show_default=True
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print the docs' markdown tables (README.md, docs/optimizers.md)."
    ),
) -> int:
    """List the optimizers and their update rules; with names, their defaults under both
    conventions."""
    if markdown:
        from optimlab.optim import doc_tables

        for table, relative in doc_tables.FILES.items():
            typer.echo(f"<!-- {relative} -->\n{doc_tables.block(table)}\n")
        return 0
    rows = _select(describe(), list(names or []), preset)
    if as_json:
        typer.echo(json.dumps(_strict_json(rows), indent=2, allow_nan=False))
    elif names:
        _print_details(rows)
    else:
        _print_summary(rows)
    return 0
