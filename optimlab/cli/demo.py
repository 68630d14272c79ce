"""`optimlab demo`: the quick comparison suite (what `make demo` runs).

All nine optimizers on quadratic-deep, digits-mlp, mnist1d-mlp and a 10-layer sigmoid deep-mlp,
tuned on an 8-point learning-rate grid and repeated with 3 seeds; the report goes to
``results/demo/index.html`` (rerunning resumes; ``--fresh`` starts over).
"""

from __future__ import annotations

import typer

from optimlab.cli import compare

DEMO_OUT = "results/demo"


def command(
    out: str = typer.Option(DEMO_OUT, "--out", help="Output directory."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete earlier results first."),
) -> int:
    """Run the quick comparison suite and write its report (see `optimlab compare`)."""
    return compare.command(
        suite="quick",
        problems=None,
        optimizers=None,
        seeds=None,
        workers=workers,
        out=out,
        fresh=fresh,
        schedule="constant",
        steps=None,
        diagnose=False,
        grid_points=None,
    )
