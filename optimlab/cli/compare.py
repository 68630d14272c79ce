"""`optimlab compare`: a fair, tuned, repeated comparison of optimizers, resumable, with a report.

    optimlab compare [--suite quick|full] [--problems P,...] [--optimizers SPEC] [--seeds N]
                     [--workers N] [--out DIR] [--fresh] [--schedule S] [--steps N]
                     [--grid-points N] [--diagnose]
                     [--executor local|ray] [--ray-address HOST:PORT] [--ray-retries N]
                     [--tuner grid|optuna] [--trials N] [--search lr,betas,momentum,...]

``--executor ray`` runs the trials as Ray tasks (on the cluster at ``--ray-address``, else on a
local Ray instance with ``--workers`` CPUs); this process still writes every result into
``DIR/results.sqlite``. ``--tuner optuna`` replaces the learning-rate grid by ``--trials`` points
of Optuna's TPE per (problem, optimizer), over the learning rate and the ``--search``
dimensions; the studies live in ``DIR/optuna.journal`` and resume with the command.

Parses and checks the options (bad input → exit code 2 and a message naming the option, the
value and what is allowed), then calls the lab (`run_comparison`, `summarize_store`) and the
report (`write_report`); only this module prints.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimlab.lab.executor import BaseExecutor, Executor, default_workers
from optimlab.lab.protocol import SUITES, Comparison, contenders, lr_grid, run_comparison
from optimlab.lab.schedules import SCHEDULES, parse_schedule
from optimlab.lab.store import ResultStore, StoreError, check_writable
from optimlab.lab.summary import summarize_store
from optimlab.lab.tuner import SEARCH_NAMES, TUNERS, OptunaTuner, parse_search, remove_studies
from optimlab.problems import get_problem, list_problems
from optimlab.report import write_report

DEFAULT_OUT = "results/compare"
EXECUTORS = ("local", "ray")


def check_scale_options(
    executor: str,
    ray_address: str | None,
    ray_retries: int,
    tuner: str,
    trials: int | None,
    search: str | None,
) -> None:
    """The executor and tuner options, checked before any work (typer.BadParameter if not);
    a missing extra (ray, optuna) says how to install it."""
    if executor not in EXECUTORS:
        raise typer.BadParameter(
            f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}",
            param_hint="--executor",
        )
    if ray_retries < 0:
        raise typer.BadParameter(
            f"{ray_retries}; allowed: an integer >= 0", param_hint="--ray-retries"
        )
    if executor != "ray" and ray_address is not None:
        raise typer.BadParameter(
            f"{ray_address!r} needs --executor ray (the executor is {executor!r})",
            param_hint="--ray-address",
        )
    if executor == "ray":
        from optimlab.lab.ray_executor import RayUnavailable, check_reachable, import_ray

        try:
            import_ray()
        except RayUnavailable as error:
            raise typer.BadParameter(str(error), param_hint="--executor") from None
        if ray_address is not None:
            try:
                check_reachable(ray_address)
            except ConnectionError as error:
                raise typer.BadParameter(str(error), param_hint="--ray-address") from None
    if tuner not in TUNERS:
        raise typer.BadParameter(
            f"unknown tuner {tuner!r}; valid: {', '.join(TUNERS)}", param_hint="--tuner"
        )
    if trials is not None and trials < 1:
        raise typer.BadParameter(f"{trials}; allowed: an integer >= 1", param_hint="--trials")
    if search is not None:
        try:
            parse_search(search)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--search") from None
    if tuner != "optuna":
        for option, value in (("--trials", trials), ("--search", search)):
            if value is not None:
                raise typer.BadParameter(
                    f"{value!r} needs --tuner optuna (the tuner is {tuner!r})", param_hint=option
                )


def build_comparison(
    suite: str,
    problems: str | None,
    optimizers: str | None,
    seeds: int | None,
    schedule: str,
    steps: int | None,
    grid_points: int | None = None,
    tuner: str = "grid",
    trials: int | None = None,
    search: str | None = None,
    out: str = DEFAULT_OUT,
) -> Comparison:
    """Turn the command-line options into a checked `Comparison` (typer.BadParameter if not).
    ``tuner="optuna"``: `trials` points per pair (default: as many as the grid's), studies in
    `out`."""
    if suite not in SUITES:
        raise typer.BadParameter(
            f"unknown suite {suite!r}; valid: {', '.join(SUITES)}", param_hint="--suite"
        )
    chosen = SUITES[suite]
    if steps is not None and steps < 1:
        raise typer.BadParameter(f"{steps}; allowed: an integer >= 1", param_hint="--steps")
    if seeds is not None and seeds < 1:
        raise typer.BadParameter(f"{seeds}; allowed: an integer >= 1", param_hint="--seeds")
    if grid_points is not None and grid_points < 1:
        raise typer.BadParameter(
            f"{grid_points}; allowed: an integer >= 1", param_hint="--grid-points"
        )
    budgets = dict(chosen.problems)
    if problems is None:
        selected = [(spec, steps or budget) for spec, budget in chosen.problems]
    else:
        selected = []
        for spec in (part.strip() for part in problems.split(",")):
            if not spec:
                continue
            try:
                problem = get_problem(spec)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="--problems") from None
            selected.append((spec, steps or budgets.get(spec, problem.default_steps)))
        if not selected:
            raise typer.BadParameter(
                f"no problem in {problems!r}; valid: {', '.join(list_problems())}",
                param_hint="--problems",
            )
    try:
        entries = contenders(optimizers)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--optimizers") from None
    try:
        parse_schedule(schedule)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--schedule") from None
    optuna_tuner = None
    if tuner == "optuna":
        from optimlab.lab.tuner import OptunaUnavailable

        try:
            optuna_tuner = OptunaTuner(
                out,
                trials or grid_points or chosen.grid_points,
                search or "lr",
                chosen.lr_range,
            )
        except OptunaUnavailable as error:
            raise typer.BadParameter(str(error), param_hint="--tuner") from None
        try:
            optuna_tuner.check(entries)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--search") from None
    comparison = Comparison(
        problems=selected,
        optimizers=entries,
        grid=lr_grid(grid_points or chosen.grid_points, *chosen.lr_range),
        seeds=seeds or chosen.seeds,
        schedule=schedule,
        evals=chosen.evals,
        suite=suite,
        default_seeds=None if seeds else chosen.default_seeds,
        tuner=optuna_tuner,
    )
    comparison.resolve()
    return comparison


def ranking_table(summary: dict) -> Table:
    tolerance = summary.get("target_tolerance")
    target = f", target tol {tolerance:g}" if tolerance is not None else ""
    table = Table(title=f"overall ranking (performance profile, τ from 1 to 4{target})")
    problems = list(summary["problems"])
    table.add_column("rank", justify="right")
    table.add_column("optimizer")
    table.add_column("score", justify="right")
    for problem in problems:
        table.add_column(problem, justify="right", overflow="fold")
    for row in summary["ranking"]:
        cells = []
        for problem in problems:
            entry = summary["problems"][problem][row["optimizer"]]
            accuracy = entry.get("test_accuracy_mean")
            loss = entry.get("final_test_loss_mean")
            if accuracy is not None:
                cell = f"{100 * accuracy:.1f}% (#{entry['rank']})"
            elif loss is not None:
                cell = f"{loss:.4g} (#{entry['rank']})"
            else:
                cell = "diverged"
            cells.append(cell)
        table.add_row(str(row["rank"]), row["optimizer"], f"{row['profile_score']:.3f}", *cells)
    return table


def command(
    suite: str = typer.Option("quick", "--suite", help=f"Preset: {', '.join(SUITES)}."),
    problems: str | None = typer.Option(
        None,
        "--problems",
        "--problem",
        help="Comma-separated problem specs (name[:key=value...] or path.py:factory); "
        f"default: the suite's. Names: {', '.join(list_problems())}.",
    ),
    optimizers: str | None = typer.Option(
        None, "--optimizers", help="Optimizer spec, e.g. sgd,adam:amsgrad=true (default: all nine)."
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds per optimizer at its best rate."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (default: one per core)."
    ),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output directory (results, report)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete earlier results in --out first."),
    schedule: str = typer.Option(
        "constant", "--schedule", help=f"Learning-rate schedule: {', '.join(SCHEDULES)}."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Step budget for every problem."),
    diagnose: bool = typer.Option(
        False, "--diagnose", help="Also diagnose each problem (optimlab diagnose), linked."
    ),
    grid_points: int | None = typer.Option(
        None, "--grid-points", help="Learning rates on the log grid (default: the suite's)."
    ),
    executor_name: str = typer.Option(
        "local",
        "--executor",
        help="Where trials run: local (process pool) or ray (Ray tasks; pip install "
        "'optimlab\\[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster to use, HOST:6379 of `ray start --head` (default: a local Ray "
        "instance with --workers CPUs).",
    ),
    ray_retries: int = typer.Option(
        2, "--ray-retries", help="Reruns of a trial whose Ray worker died, then it is 'failed'."
    ),
    tuner: str = typer.Option(
        "grid",
        "--tuner",
        help="grid (the log learning-rate grid) or optuna (TPE; pip install 'optimlab\\[optuna]').",
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        help="Optuna trials per problem and optimizer (default: the grid's point count).",
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        help=f"What Optuna tunes besides lr: comma-separated from {', '.join(SEARCH_NAMES)} "
        "(only those an optimizer has; default: lr).",
    ),
) -> int:
    """Tune, repeat and rank optimizers on training problems; write DIR/index.html."""
    console = Console(stderr=True)
    if workers is not None and workers < 1:
        raise typer.BadParameter(f"{workers}; allowed: an integer >= 1", param_hint="--workers")
    check_scale_options(executor_name, ray_address, ray_retries, tuner, trials, search)
    try:
        check_writable(out)  # before any work, even building the problems
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    comparison = build_comparison(
        suite, problems, optimizers, seeds, schedule, steps, grid_points, tuner, trials, search, out
    )
    try:
        store = ResultStore(out, fresh=fresh)
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    if fresh:
        remove_studies(out)
    if comparison.tuner is not None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    workers = workers or default_workers()
    executor: BaseExecutor
    if executor_name == "ray":
        from optimlab.lab.ray_executor import RayExecutor

        executor = RayExecutor(store, workers, address=ray_address, retries=ray_retries)
        try:
            executor.start()
        except ConnectionError as error:
            raise typer.BadParameter(
                f"cannot connect to Ray at {ray_address!r}: {error}", param_hint="--ray-address"
            ) from None
        where = f"Ray ({executor.slots} CPUs)"
    else:
        executor = Executor(store, workers)
        where = f"{workers} worker(s)"
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]compare[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=None)

        def on_progress(event: dict) -> None:
            if event["event"] == "finished":
                spec = event["spec"]
                description = (
                    f"{spec.problem_label} {spec.optimizer} lr={spec.lr:g}: {event['status']}"
                )
                progress.update(task, description=description)
            progress.update(task, completed=event["done"], total=event["total"])

        try:
            counts = run_comparison(
                comparison, store, workers, progress=on_progress, executor=executor
            )
        finally:
            executor.close()
    seconds = time.perf_counter() - started
    summary = summarize_store(comparison, store, seconds)
    if diagnose:
        from optimlab.diagnose.run import diagnose_problems

        specs = [spec for spec, _ in comparison.problems]
        for label, link in diagnose_problems(specs, out, progress=console.log).items():
            summary["problem_info"][label]["diagnosis"] = link
    index = write_report(out, summary)
    output = Console()
    output.print(ranking_table(summary))
    output.print(
        f"{counts['run']} trials run, {counts['reused']} reused from {store.path} "
        f"in {seconds:.1f} s with {where}"
    )
    output.print(f"report: {index.resolve()}")
    output.print(f"summary: {(Path(out) / 'summary.json').resolve()}")
    return 0
