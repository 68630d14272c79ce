"""`optimlab list [--json | --markdown]`: every optimizer, its defaults under both conventions,
its rule.  Nothing heavy at module top: the registry (and torch) load when the command runs."""

from __future__ import annotations

import json
from typing import Any

import typer


def describe() -> list[dict[str, Any]]:
    """The registry as plain data: name, class, family, rule and defaults per convention."""
    from optimlab.optim.registry import REGISTRY

    return [
        {
            "name": info.name,
            "class": info.cls.__name__,
            "title": info.title,
            "family": info.family,
            "rule": info.rule,
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


def command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print the docs' markdown tables (README.md, docs/optimizers.md)."
    ),
) -> int:
    """List the optimizers with their defaults under both conventions and their update rule."""
    if markdown:
        from optimlab.optim import doc_tables

        for table, relative in doc_tables.FILES.items():
            typer.echo(f"<!-- {relative} -->\n{doc_tables.block(table)}\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    table = Table(title="optimlab optimizers", show_lines=True)
    # the name is what users type: never truncated (schedulefree-adamw was, at 80 columns)
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    for column in ("improves", "update rule", "torch defaults", "keras defaults"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            row["family"],
            row["rule"],
            _short(row["defaults"]["torch"]),
            _short(row["defaults"]["keras"]),
        )
    Console().print(table)
    return 0
