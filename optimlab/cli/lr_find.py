"""`optimlab lr-find`: the learning-rate range test on a problem.

    optimlab lr-find --problem P --optimizer SPEC [--start-lr 1e-7] [--end-lr 10]
                     [--num-iter 100] [--suggest valley|steepest|minimum]
                     [--json] [--plot FILE.png] [--seed N]

Prints the suggested learning rate and how far to trust it (the curve's verdict); with a flat or
non-finite curve, no number. ``--json`` prints ``{"suggestion": lr or null, "verdict", ...}``.

Nothing heavy is imported at module level (see `optimlab.cli.diagnose`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from optimlab.cli._integers import MAX_SEED, integer
from optimlab.cli.diagnose import check_optimizer, check_output_file, check_problem

#: optimlab.diagnose.lr_find.RULES, as a literal (this module must not import torch)
RULES = ("valley", "steepest", "minimum")


def _check_options(start_lr: float, end_lr: float, num_iter: int, suggest: str) -> None:
    """The ramp and the rule, checked before anything is computed (exit 2)."""
    import math

    for hint, value in (("--start-lr", start_lr), ("--end-lr", end_lr)):
        if not math.isfinite(value) or value <= 0:
            raise typer.BadParameter(f"{value!r}; allowed: a finite number > 0", param_hint=hint)
    if end_lr <= start_lr:
        raise typer.BadParameter(
            f"{end_lr!r} must be greater than --start-lr {start_lr!r}", param_hint="--end-lr"
        )
    if not 2 <= num_iter <= 1000:
        raise typer.BadParameter(
            f"{num_iter!r}; allowed: an integer in [2, 1000]", param_hint="--num-iter"
        )
    if suggest not in RULES:
        raise typer.BadParameter(
            f"{suggest!r}; allowed: {', '.join(RULES)}", param_hint="--suggest"
        )


def _check_takes_a_learning_rate(spec: str) -> None:
    """A learning-rate-free optimizer (Prodigy) sets its own step size: sweeping its lr says
    nothing about a rate to choose, so the test is refused rather than answered."""
    from optimlab.optim.registry import REGISTRY

    name = spec.split(":", 1)[0].strip()
    info = REGISTRY.get(name)
    if info is not None and info.learning_rate_free:
        raise typer.BadParameter(
            f"{spec!r} is learning-rate free ({info.title} estimates its own step size; its lr "
            f"only scales that estimate), so a learning-rate range test does not apply: run it "
            f"at its defaults, e.g. optimlab compare --optimizers {name}",
            param_hint="--optimizer",
        )


def command(
    problem: str = typer.Option(
        ...,
        "--problem",
        help="Problem spec, e.g. digits-mlp (an unknown name lists the valid ones).",
    ),
    optimizer: str = typer.Option(..., "--optimizer", help="One optimizer spec, e.g. adam."),
    start_lr: float = typer.Option(1e-7, "--start-lr", help="First learning rate of the ramp."),
    end_lr: float = typer.Option(10.0, "--end-lr", help="Last learning rate of the ramp."),
    num_iter: int = typer.Option(
        100,
        "--num-iter",
        help="Iterations (minibatches) of the ramp, 2-1000.",
        **integer("--num-iter", 2, 1000),
    ),
    suggest: str = typer.Option(
        "valley",
        "--suggest",
        help="Rule of the suggestion: valley (in the longest descent), steepest (fastest "
        "descent per decade) or minimum (a tenth of the rate of the lowest loss).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    plot: str | None = typer.Option(None, "--plot", help="Also save the curve as a PNG file."),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seed of the initial weights and minibatches.",
        **integer("--seed", 0, MAX_SEED),
    ),
) -> int:
    """Learning-rate range test: ramp the LR (1e-7 to 10 by default), suggest one, and say
    how far to trust it."""
    _check_options(start_lr, end_lr, num_iter, suggest)
    if plot is not None:
        if Path(plot).suffix.lower() != ".png":
            raise typer.BadParameter(
                f"{plot!r}; allowed: a file name ending in .png", param_hint="--plot"
            )
        check_output_file(plot, "--plot")
    check_problem(problem)
    check_optimizer(optimizer)
    _check_takes_a_learning_rate(optimizer)

    from optimlab.diagnose.lr_find import lr_find
    from optimlab.diagnose.run import json_safe, optimizer_factory, problem_loss
    from optimlab.problems import get_problem

    built = get_problem(problem)
    model = built.build_model(seed)
    _, make_optimizer = optimizer_factory(optimizer)
    result = lr_find(
        model,
        built.train,
        problem_loss(built, model),
        make_optimizer(model.parameters()),
        start_lr=start_lr,
        end_lr=end_lr,
        num_iter=num_iter,
        batch_size=built.batch_size,
        seed=seed,
        suggest=suggest,
    )
    if plot is not None:
        from optimlab.diagnose.plots import lr_find_figure, save_png

        save_png(lr_find_figure(result, f"{built.label} with {optimizer}"), plot)
    if as_json:
        typer.echo(json.dumps(json_safe(result.to_json()), allow_nan=False))
        return 0
    from rich.markup import escape

    from optimlab.cli.console import stdout_console

    s = result.suggestion
    verdict = s.verdict
    console = stdout_console()
    if s.lr is None:
        console.print(f"[bold red]no suggestion[/]: {escape(verdict.reason)}")
    elif verdict.reliable:
        console.print(f"suggested learning rate: [bold]{s.lr:.3g}[/] ({s.rule} rule)")
        console.print(f"verdict: {escape(verdict.reason)}")
    else:
        console.print(
            f"suggested learning rate: [bold]{s.lr:.3g}[/] ({s.rule} rule) — "
            f"[bold yellow]unreliable[/]: {escape(verdict.reason)}"
        )
    # without a suggestion the curve's landmarks are still printed (they say what the curve
    # did), but labelled so that no one takes one of them for the answer
    aside = " (a landmark of the curve, not a suggestion)" if s.lr is None else ""
    if s.valley_range is not None:
        console.print(f"valley: {s.valley_range[0]:.3g} – {s.valley_range[1]:.3g}{aside}")
    if s.steepest is not None:
        console.print(f"steepest descent at: {s.steepest:.3g}{aside}")
    if s.minimum is not None:
        console.print(f"lowest loss at: {s.minimum:.3g}{aside}")
        if result.stop_reason == "completed" and s.minimum >= result.lrs[-1] * (1 - 1e-9):
            # the loss was still falling at the last rate tested: the range ended too soon
            console.print(
                f"[yellow]the loss was lowest at the last rate tested ({result.lrs[-1]:.3g}): "
                f"the range may end too soon; try a larger --end-lr[/]"
            )
    console.print(f"stopped: {result.stop_reason} after {len(result.lrs)} iterations")
    return 0
