"""`optimlab list [--json]`: every optimizer, its defaults under both conventions, its rule."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from optimlab.optim.registry import REGISTRY


def describe() -> list[dict[str, Any]]:
    """The registry as plain data: name, class, family, rule and defaults per convention."""
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
            "torch_equivalent": f"torch.optim.{info.torch_class}",
            "keras_equivalent": f"keras.optimizers.{info.keras_class}",
        }
        for info in REGISTRY.values()
    ]


def _short(defaults: dict[str, Any]) -> str:
    skip = {"weight_decay", "decoupled_weight_decay", "maximize", "nonfinite", "impl", "convention"}
    return ", ".join(f"{k}={v}" for k, v in defaults.items() if k not in skip)


def command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> int:
    """List the optimizers with their defaults under both conventions and their update rule."""
    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    table = Table(title="optimlab optimizers", show_lines=True)
    for column in ("name", "improves", "update rule", "torch defaults", "keras defaults"):
        table.add_column(column)
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
