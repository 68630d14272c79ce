"""`optimlab demo`: the quick comparison suite (what `make demo` runs).

All nine optimizers on the quick suite's problems (quadratic-deep, digits-mlp, mnist1d-mlp and the
10-layer deep-mlp with sigmoid, then with ReLU and He initialization), tuned on an 8-point
learning-rate grid and repeated with 3 seeds; the report goes to ``results/demo/index.html``
(rerunning resumes; ``--fresh`` starts over). ``--steps``, ``--grid-points`` and ``--seeds``
shrink the budget as in `optimlab compare`.

It calls `optimlab.cli.compare.compare` with an `Options` value — a plain function with plain
defaults — never the typer command (whose unspecified parameters would be typer's option
objects, which is how the demo once failed with "unknown executor <typer.models.OptionInfo>").
"""

from __future__ import annotations

import typer

from optimlab.cli._integers import MAX_GRID_POINTS, MAX_SEEDS, MAX_STEPS, MAX_WORKERS, integer

DEMO_OUT = "results/demo"


def command(
    out: str = typer.Option(DEMO_OUT, "--out", help="Output directory."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes.", **integer("--workers", 1, MAX_WORKERS)
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete earlier results first."),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Step budget for every problem (default: the suite's).",
        **integer("--steps", 1, MAX_STEPS),
    ),
    grid_points: int | None = typer.Option(
        None,
        "--grid-points",
        help="Learning rates on the log grid (default: 8).",
        **integer("--grid-points", 1, MAX_GRID_POINTS),
    ),
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Seeds per optimizer at its best rate (default: 3).",
        **integer("--seeds", 1, MAX_SEEDS),
    ),
) -> int:
    """Run the quick comparison suite and write its report (see `optimlab compare`)."""
    from optimlab.cli.compare import Options, compare

    return compare(
        Options(
            suite="quick",
            out=out,
            workers=workers,
            fresh=fresh,
            steps=steps,
            grid_points=grid_points,
            seeds=seeds,
            program=("optimlab", "demo"),
        )
    )
