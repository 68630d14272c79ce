"""`optimlab export --out DIR --format json|csv`: print every trial of a comparison's database.

Each trial: ``key``, ``problem``, ``problem_spec``, ``optimizer``, ``hyperparameters``,
``schedule``, ``seed``, ``steps``, ``status`` (ok, diverged, failed), ``reason``, ``metrics``
(``final_train_loss``, ``final_val_loss``, ``final_test_loss``, ``test_accuracy`` where it
applies, ``seconds_per_step``, …; the JSON form also carries the loss ``curve``) and
``finished_at``. CSV has one column per scalar metric (``metrics.<name>``) and the
hyperparameters as JSON text.

``--curves`` prints the curves instead, one row (CSV) or object (JSON) per evaluation point of
every trial: the trial's ``key``, ``problem``, ``problem_spec``, ``optimizer``,
``hyperparameters``, ``schedule``, ``seed``, ``steps``, ``status``, then ``step``,
``train_loss``, ``val_loss``, ``val_accuracy`` (empty / null where not finite or not a
classification). A trial that failed before its first evaluation has no points.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import typer

from optimlab.lab.store import ResultStore, StoreError

FORMATS = ("json", "csv")
#: the trial fields repeated on every curve point
POINT_FIELDS = (
    "key",
    "problem",
    "problem_spec",
    "optimizer",
    "hyperparameters",
    "schedule",
    "seed",
    "steps",
    "status",
)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: scalar metrics as ``metrics.<name>`` columns, hyperparameters as JSON."""
    row = {k: v for k, v in record.items() if k not in ("metrics", "hyperparameters")}
    row["hyperparameters"] = json.dumps(record["hyperparameters"], sort_keys=True)
    for name, value in record["metrics"].items():
        if not isinstance(value, dict | list):
            row[f"metrics.{name}"] = value
    return row


def curve_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per evaluation point of a trial's curve, with the trial's identifying fields."""
    curve = record["metrics"].get("curve") or {}
    trial = {name: record[name] for name in POINT_FIELDS}
    columns = list(curve)
    return [{**trial, **dict(zip(columns, values))} for values in zip(*(curve[c] for c in columns))]


def command(
    out: str = typer.Option(..., "--out", help="The output directory of `optimlab compare`."),
    format_: str = typer.Option("json", "--format", help="json or csv."),
    curves: bool = typer.Option(
        False, "--curves", help="Every curve point of every trial (step, losses, accuracy)."
    ),
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
    if curves:
        records = [point for record in records for point in curve_points(record)]
    if format_ == "json":
        json.dump(records, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    if curves:
        rows = [
            {**r, "hyperparameters": json.dumps(r["hyperparameters"], sort_keys=True)}
            for r in records
        ]
    else:
        rows = [flatten(record) for record in records]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return 0
