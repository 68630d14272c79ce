"""`optimlab export --out DIR --format json|csv`: print every trial of a comparison's database.

Each trial: ``key``, ``problem``, ``problem_spec``, ``optimizer``, ``hyperparameters``,
``schedule``, ``seed``, ``steps``, ``status`` (ok, diverged, failed), ``reason``, ``metrics``
(``final_train_loss``, ``final_val_loss``, ``final_test_loss``, ``test_accuracy`` where it
applies, ``seconds_per_step``, …; the JSON form also carries the loss ``curve``) and
``finished_at``. CSV has one column per scalar metric (``metrics.<name>``) and the
hyperparameters as JSON text.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import typer

from optimlab.lab.store import ResultStore, StoreError

FORMATS = ("json", "csv")


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: scalar metrics as ``metrics.<name>`` columns, hyperparameters as JSON."""
    row = {k: v for k, v in record.items() if k not in ("metrics", "hyperparameters")}
    row["hyperparameters"] = json.dumps(record["hyperparameters"], sort_keys=True)
    for name, value in record["metrics"].items():
        if not isinstance(value, dict | list):
            row[f"metrics.{name}"] = value
    return row


def command(
    out: str = typer.Option(..., "--out", help="The output directory of `optimlab compare`."),
    format_: str = typer.Option("json", "--format", help="json or csv."),
) -> int:
    """Print every trial of a comparison (problem, optimizer, hyperparameters, seed, status,
    metrics)."""
    if format_ not in FORMATS:
        raise typer.BadParameter(f"{format_!r}; valid: {', '.join(FORMATS)}", param_hint="--format")
    try:
        store = ResultStore(out, create=False)
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    records = [trial.as_record() for trial in store.iter()]
    if format_ == "json":
        json.dump(records, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    rows = [flatten(record) for record in records]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return 0
