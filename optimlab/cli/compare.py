"""`optimlab compare`: a fair, tuned, repeated comparison of optimizers, resumable, with a report.

    optimlab compare [--suite quick|full] [--problems P,...] [--optimizers SPEC] [--seeds N]
                     [--workers N] [--out DIR] [--fresh] [--schedule S] [--steps N]
                     [--grid-points N] [--diagnose] [--log-dir DIR]
                     [--executor local|ray] [--ray-address HOST:PORT] [--ray-retries N]
                     [--tuner grid|optuna|halving] [--trials N] [--search lr,betas,momentum,...]

``--executor ray`` runs the trials as Ray tasks (on the cluster at ``--ray-address``, else on a
local Ray instance with ``--workers`` CPUs); this process still writes every result into
``DIR/results.sqlite``. ``--tuner optuna`` replaces the learning-rate grid by ``--trials`` points
of Optuna's TPE per (problem, optimizer), over the learning rate and the ``--search``
dimensions; the studies live in ``DIR/optuna.journal`` and resume with the command.
``--tuner halving`` trains the grid but stops its losing points at rungs (Optuna's
SuccessiveHalvingPruner; stored ``pruned``).

Three steps, each a plain function: `build` parses and checks every option — every optimizer is
built once on a dummy parameter, so a value its class rejects exits 2 before any training —
`run` drives the lab (`run_comparison`, with progress and a Ctrl-C that says what is stored and
how to resume) and `render` prints the answer (one line per problem and overall, then the
tables) after `write_report`. `compare` chains them; the typer `command` and `optimlab demo`
call `compare`, never each other's typer signatures. Only this module prints.

No heavy import at module level (torch, the lab, the problems): ``--help`` stays fast.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from optimlab.cli._integers import (
    MAX_EVALS,
    MAX_GRID_POINTS,
    MAX_RETRIES,
    MAX_SEEDS,
    MAX_STEPS,
    MAX_TRIALS,
    MAX_WORKERS,
    integer,
)

DEFAULT_OUT = "results/compare"
EXECUTORS = ("local", "ray")
#: exit code of a run interrupted by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130
#: the files compare writes into --out (the store, its WAL, the progress file, Optuna's studies)
OWN_FILES = (
    "results.sqlite",
    "results.sqlite-wal",
    "results.sqlite-shm",
    "progress.json",
    "optuna.journal",
    "optuna.journal.lock",
)


def new_directories(out: str) -> list[Path]:
    """The directories that making `out` creates: `out` and its missing parents, deepest
    first (empty when `out` exists)."""
    path = Path(out).absolute()
    created = []
    while not path.exists() and path.parent != path:
        created.append(path)
        path = path.parent
    return created


def removed_text(out: str, created: list[Path]) -> str:
    """What `remove_unused` removed, as said after Ctrl-C: --out, or the outermost directory it
    created on the way to it (a parent made for --out goes too, and is named)."""
    if len(created) > 1:
        return f"{created[-1]}, which this command created for {out}, is removed"
    return f"{out}, which this command created, is removed"


def remove_unused(created: list[Path]) -> bool:
    """After Ctrl-C: remove the directories compare created for --out (`new_directories`,
    taken before it made them) when no trial is stored in them; True if removed. Never a
    directory that existed before, nor one holding a stored trial or any file compare does
    not write itself."""
    from optimlab.lab.store import DB_NAME, ResultStore, StoreError

    if not created or not created[0].is_dir():
        return False
    out = created[0]
    if (out / DB_NAME).exists():
        try:
            if ResultStore(out, create=False).count():
                return False
        except StoreError:
            return False
    entries = list(out.iterdir())
    # the progress file's atomic write leaves ".progress.json.*" only if killed mid-write
    if any(e.name not in OWN_FILES and not e.name.startswith(".progress.json.") for e in entries):
        return False
    for entry in entries:
        entry.unlink(missing_ok=True)
    for directory in created:  # deepest first; stop at one that is not empty
        try:
            directory.rmdir()
        except OSError:
            break
    return True


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
    from optimlab.lab.tuner import TUNERS, parse_search

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
    evals: int | None = None,
) -> Any:
    """Turn the command-line options into a checked `Comparison` (typer.BadParameter if not).
    ``tuner="optuna"``: `trials` points per pair (default: as many as the grid's), studies in
    `out`."""
    from optimlab.lab.protocol import SUITES, Comparison, contenders, lr_grid
    from optimlab.lab.schedules import parse_schedule
    from optimlab.lab.tuner import OptunaTuner
    from optimlab.problems import get_problem, list_problems
    from optimlab.spec import split_items

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
    if evals is not None and evals < 1:
        raise typer.BadParameter(f"{evals}; allowed: an integer >= 1", param_hint="--evals")
    budgets = dict(chosen.problems)
    if problems is None:
        selected = [(spec, steps or budget) for spec, budget in chosen.problems]
    else:
        selected = []
        try:
            split_items(problems)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--problems") from None
        for spec in (part.strip() for part in problems.split(",")):
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
    halving = None
    if tuner == "halving":
        from optimlab.lab.halving import HalvingPolicy
        from optimlab.lab.tuner import OptunaUnavailable, import_optuna

        try:
            import_optuna()
        except OptunaUnavailable as error:
            raise typer.BadParameter(str(error), param_hint="--tuner") from None
        halving = HalvingPolicy()
    comparison = Comparison(
        problems=selected,
        optimizers=entries,
        grid=lr_grid(grid_points or chosen.grid_points, *chosen.lr_range),
        seeds=seeds or chosen.seeds,
        schedule=schedule,
        evals=evals or chosen.evals,
        suite=suite,
        # the suite's sizes the user replaced: the report must not call this run "the quick suite"
        suite_changes=[
            flag
            for flag, value in (
                ("--problems", problems),
                ("--steps", steps),
                ("--grid-points", grid_points),
                ("--seeds", seeds),
                ("--evals", evals),
            )
            if value is not None
        ],
        default_seeds=None if seeds else chosen.default_seeds,
        tuner=optuna_tuner,
        halving=halving,
    )
    comparison.resolve()
    return comparison


@dataclass
class Options:
    """Every option of `optimlab compare`, with its default (what `compare` and `optimlab demo`
    pass around — plain values, never typer's option objects)."""

    suite: str = "quick"
    problems: str | None = None
    optimizers: str | None = None
    seeds: int | None = None
    workers: int | None = None
    out: str = DEFAULT_OUT
    fresh: bool = False
    schedule: str = "constant"
    steps: int | None = None
    diagnose: bool = False
    grid_points: int | None = None
    #: evaluations of the train and validation sets along each run (the curve's points)
    evals: int | None = None
    executor: str = "local"
    ray_address: str | None = None
    ray_retries: int = 2
    tuner: str = "grid"
    trials: int | None = None
    search: str | None = None
    log_dir: str | None = None
    #: auto: train each population (the rates and seeds of one optimizer) batched; off: singly
    population: str = "auto"
    #: the command a rerun uses (``optimlab demo`` for the demo)
    program: tuple[str, ...] = ("optimlab", "compare")

    def resume_command(self) -> str:
        """The exact command that resumes this run (the same options; never ``--fresh``, which
        would delete what is stored)."""
        args = list(self.program)
        defaults = Options(program=self.program)
        flags = {
            "suite": "--suite",
            "problems": "--problems",
            "optimizers": "--optimizers",
            "seeds": "--seeds",
            "workers": "--workers",
            "out": "--out",
            "schedule": "--schedule",
            "steps": "--steps",
            "grid_points": "--grid-points",
            "evals": "--evals",
            "executor": "--executor",
            "ray_address": "--ray-address",
            "ray_retries": "--ray-retries",
            "tuner": "--tuner",
            "trials": "--trials",
            "search": "--search",
            "log_dir": "--log-dir",
            "population": "--population",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            if value is not None and value != getattr(defaults, name):
                args += [flag, str(value)]
        if self.diagnose:
            args.append("--diagnose")
        return shlex.join(args)


@dataclass
class Setup:
    """What `build` made: the checked comparison, the opened store and the executor."""

    options: Options
    comparison: Any
    store: Any
    executor: Any
    where: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: the directories this command created for --out (removed on Ctrl-C if nothing is stored)
    created: list[Path] = field(default_factory=list)


def build(options: Options) -> Setup:
    """Check every option (typer.BadParameter → exit 2) and make the comparison, the store and
    the executor. Nothing trains here."""
    from optimlab.lab.executor import Executor, default_workers
    from optimlab.lab.store import ResultStore, StoreError, check_writable
    from optimlab.lab.tuner import remove_studies

    o = options
    if o.workers is not None and o.workers < 1:
        raise typer.BadParameter(f"{o.workers}; allowed: an integer >= 1", param_hint="--workers")
    check_scale_options(o.executor, o.ray_address, o.ray_retries, o.tuner, o.trials, o.search)
    if o.population not in ("auto", "off"):
        raise typer.BadParameter(
            f"unknown mode {o.population!r}; valid: auto, off", param_hint="--population"
        )
    created = not Path(o.out).exists()  # removed again if the options turn out bad
    for hint, directory in (("--out", o.out), ("--log-dir", o.log_dir)):
        if directory is None:
            continue
        try:
            check_writable(directory)  # before any work, even building the problems
        except StoreError as error:
            if created and Path(o.out).is_dir() and not any(Path(o.out).iterdir()):
                Path(o.out).rmdir()  # made just now for --out: a rejected command leaves none
            raise typer.BadParameter(str(error), param_hint=hint) from None
    if o.log_dir is not None:
        check_log_dir()
    try:
        comparison = build_comparison(
            o.suite,
            o.problems,
            o.optimizers,
            o.seeds,
            o.schedule,
            o.steps,
            o.grid_points,
            o.tuner,
            o.trials,
            o.search,
            o.out,
            o.evals,
        )
    except typer.BadParameter:
        # a rejected command leaves no trace: the empty directory it made for --out goes
        if created and not any(Path(o.out).iterdir()):
            Path(o.out).rmdir()
        raise
    if comparison.tuner is not None and o.population == "auto":
        comparison.tuner.ask_in_populations()  # a population's worth of points per ask
    try:
        store = ResultStore(o.out, fresh=o.fresh)
    except StoreError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    if o.fresh:
        remove_studies(o.out)
    if comparison.tuner is not None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    workers = o.workers or default_workers()

    def fallback(message: str) -> None:  # once per reason a population runs as single trials
        print(message, file=sys.stderr)

    batching = {"population": o.population, "on_fallback": fallback}
    if o.executor == "ray":
        from optimlab.lab.ray_executor import RayExecutor

        executor = RayExecutor(
            store, workers, address=o.ray_address, retries=o.ray_retries, **batching
        )
        try:
            executor.start()
        except ConnectionError as error:
            raise typer.BadParameter(
                f"cannot connect to Ray at {o.ray_address!r}: {error}", param_hint="--ray-address"
            ) from None
        where = f"Ray ({executor.slots} CPUs)"
    else:
        executor = Executor(store, workers, **batching)
        where = f"{workers} worker(s)"
    return Setup(o, comparison, store, executor, where)


def announce_other_comparison(setup: Setup) -> None:
    """Before training: if --out holds another comparison's report (or trials), say that its
    trials stay and are reused where they match, that the report will describe this one, and
    the command that writes the other report again (`optimlab.cli._other_comparison`)."""
    if setup.options.fresh:  # the user asked to start over: the store is empty
        return
    from optimlab.cli._other_comparison import notice

    command = setup.options.resume_command()
    message = notice(setup.comparison, setup.store, setup.options.out, command)
    if message is not None:
        print(message, file=sys.stderr, flush=True)


def check_log_dir() -> None:
    """``--log-dir`` needs the TensorBoard writer (an extra); say how to install it."""
    from optimlab.lab.curve_log import CurveLogError, summary_writer_class

    try:
        summary_writer_class()
    except CurveLogError as error:
        raise typer.BadParameter(str(error), param_hint="--log-dir") from None


def run(setup: Setup) -> tuple[dict[str, int], float]:
    """Run the comparison with progress on stderr (a bar on a terminal, plain lines otherwise);
    Ctrl-C stops it, says how many trials are stored and the command that resumes, and exits
    130. Returns the counts and the seconds it took."""
    from optimlab.cli.progress import Progress
    from optimlab.lab.progress_file import ProgressFile
    from optimlab.lab.protocol import run_comparison

    record = ProgressFile(setup.store.directory, setup.options.resume_command())
    progress = Progress(sys.stderr, terminal=sys.stderr.isatty(), record=record)
    log = curve_logger(setup)

    def on_event(event: dict[str, Any]) -> None:
        progress(event)
        if log is not None and event["event"] == "finished":
            log(event["spec"], event["result"])

    started = time.perf_counter()
    try:
        counts = run_comparison(
            setup.comparison, setup.store, setup.executor.slots, on_event, setup.executor
        )
    except KeyboardInterrupt:
        progress.close()
        setup.executor.close()
        stored = setup.store.count()
        if not stored and remove_unused(setup.created):
            print(
                f"\ninterrupted before the first trial finished: nothing is stored, and "
                f"{removed_text(setup.options.out, setup.created)}; this command "
                f"starts it again:\n  {setup.options.resume_command()}",
                file=sys.stderr,
                flush=True,
            )
            raise typer.Exit(INTERRUPTED) from None
        print(
            f"\ninterrupted: {stored} trials are stored in {setup.store.path}; "
            f"this command resumes the run (stored trials are reused):\n"
            f"  {setup.options.resume_command()}",
            file=sys.stderr,
            flush=True,
        )
        raise typer.Exit(INTERRUPTED) from None
    finally:
        setup.executor.close()
    progress.close()
    return counts, time.perf_counter() - started


def curve_logger(setup: Setup) -> Any:
    """``--log-dir``: a function writing each finished trial's curves as TensorBoard events
    (`optimlab.lab.curve_log.write_trial`), called in this process as each result arrives —
    whichever executor ran it. Trials reused from the store were logged by the run that made
    them."""
    if setup.options.log_dir is None:
        return None
    from optimlab.lab.curve_log import write_trial

    directory = setup.options.log_dir
    budgets = {setup.comparison.resolved[p][0]: steps for p, steps in setup.comparison.problems}

    def log(spec: Any, result: Any) -> None:
        write_trial(directory, spec, result, default_steps=budgets.get(spec.problem))

    return log


def render(setup: Setup, counts: dict[str, int], seconds: float) -> None:
    """Summarize, write the report, and print the answer: the one-line recommendations, a table
    per problem (tuned rate, the metric with its unit and direction, ties), the overall
    ranking, and where the files are."""
    from rich.console import Console

    from optimlab.cli.console import stdout_console
    from optimlab.lab.summary import summarize_store
    from optimlab.report import write_report

    summary = summarize_store(setup.comparison, setup.store, seconds)
    if setup.options.diagnose:
        from optimlab.diagnose.run import diagnose_problems

        specs = [spec for spec, _ in setup.comparison.problems]
        log = Console(stderr=True, log_path=False).log
        for label, link in diagnose_problems(specs, setup.options.out, progress=log).items():
            summary["problem_info"][label]["diagnosis"] = link
    from optimlab.cli._other_comparison import record_command

    record_command(summary, setup.options.resume_command())  # how to get this report back
    index = write_report(setup.options.out, summary)
    output = stdout_console()
    # piped, the answers are one line each (grep '^overall:' finds all of it); on a terminal
    # rich folds them at words
    for line in answer_lines(summary):
        output.print(line, markup=False, highlight=False, soft_wrap=not output.is_terminal)
    for problem in summary["problems"]:
        for table in problem_tables(summary, problem, output.width):
            output.print(table)
    if summary["ranked_problems"]:  # else the answer's "overall: no ranking" says why
        output.print(ranking_table(summary))
    pruned = summary["run"]["trial_status"].get("pruned", 0)
    stopped = f"; {pruned} grid points stopped early by successive halving" if pruned else ""
    output.print(
        f"{counts['run']} trials run, {counts['reused']} reused from {setup.store.path} "
        f"in {seconds:.1f} s with {setup.where}{stopped}",
        markup=False,
        highlight=False,
    )
    # paths whole, never folded: they are copied
    output.print(f"report: {index.resolve()}", markup=False, highlight=False, soft_wrap=True)
    summary_path = (Path(setup.options.out) / "summary.json").resolve()
    output.print(f"summary: {summary_path}", markup=False, highlight=False, soft_wrap=True)


def answer_lines(summary: dict[str, Any]) -> list[str]:
    """The recommendations: one line per problem, then the overall one."""
    answers = summary["recommendations"]
    return [*answers["problems"].values(), answers["overall"]]


def _ms(value: float | None) -> str:
    """Milliseconds to three significant digits, never in exponent form or with a bare
    trailing point: 0.742, 4.50, 101, 12,000."""
    if value is None:
        return "—"
    ms = float(f"{1000 * value:.3g}")  # rounded first: 99.95 is 100, not "100."
    if ms >= 100:
        return f"{ms:,.0f}"
    return f"{ms:#.3g}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def problem_tables(summary: dict[str, Any], problem: str, width: int = 80) -> list[Any]:
    """One problem: rank (= tied), optimizer, tuned lr, the metric (name, unit, direction),
    steps and training seconds to the target, ms per step with the first step's warm-up
    (compile, cache load) apart in parentheses. One table when its natural width fits `width`
    columns; else the answer and the speed as two tables. Cells never get cut: on a very narrow
    terminal they fold onto more lines."""
    from rich import box
    from rich.table import Table

    from optimlab.lab.summary import ranked_metric

    info = summary["problem_info"][problem]
    entries = summary["problems"][problem]
    metric = info["metric"]
    title = problem if info["learned"] else f"{problem} — not learned ({info['learned_reason']})"
    rows = []
    # the learning-rate-free ones apart, below the tuned ones (AlgoPerf's two tracks)
    order = summary["per_problem_ranking"][problem]
    tuned = [label for label in order if not entries[label].get("learning_rate_free")]
    free = [label for label in order if entries[label].get("learning_rate_free")]
    for label in tuned + free:
        e = entries[label]
        tie = "=" if e["tied_with"] else ""
        rank = "—" if e["rank"] is None else f"{e['rank']}{tie}"
        value = ranked_metric(e, info["task"])
        steps_to = e["steps_to_target"]
        to_target = "never" if steps_to is None else str(steps_to)
        if steps_to is not None and e.get("seconds_to_target") is not None:
            to_target += f" / {e['seconds_to_target']:.2g} s"
        speed = _ms(e.get("seconds_per_step_mean"))
        if e.get("warmup_seconds_mean") is not None:
            speed += f" ({_ms(e['warmup_seconds_mean'])})"
        lr = "—" if e["best_lr"] is None else f"{e['best_lr']:.3g}"
        if e.get("best_lr_at_grid_edge"):
            lr += " ⇥"  # the best rate is the grid's end: the true optimum may lie beyond
        elif e["best_lr"] is not None and (e.get("lr_fixed") or e.get("lr_untuned")):
            lr += " (fixed)" if e.get("lr_fixed") else " (untuned)"
        rows.append(
            (
                rank,
                label,
                f"{lr} (default)" if e.get("learning_rate_free") else lr,
                f"{e['status']}: {e['reason']}" if e["rank"] is None else value,
                to_target if e["rank"] is not None else "—",
                speed if e["rank"] is not None else "—",
            )
        )
    headers = (
        "rank",
        "optimizer",
        "tuned lr",
        metric["label"],
        "to target: steps / time",
        "ms/step (warm-up ms)",
    )
    natural = [
        max([max(len(word) for word in header.split()), *(len(row[i]) for row in rows)])
        for i, header in enumerate(headers)
    ]
    groups = [list(range(6))]
    if sum(natural) + 3 * len(headers) > width:  # padding and separator per column
        groups = [[0, 1, 2, 3], [1, 4, 5]]
    tables = []
    for number, columns in enumerate(groups):
        table = Table(
            title=title if number == 0 else f"{problem}: speed",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for i in columns:
            # a cell too wide folds onto a second line, never cut ("3.61e-…")
            table.add_column(headers[i], justify="left" if i == 1 else "right", overflow="fold")
        for index, row in enumerate(rows):
            # a rule between the tuned rows and the learning-rate-free ones
            last_tuned = index == len(tuned) - 1 and len(free) > 0
            table.add_row(*(row[i] for i in columns), end_section=last_tuned)
        if number == len(groups) - 1:  # below the last table: how the others ran
            table.caption = protocol_caption(entries)
            table.caption_justify = "left"
        tables.append(table)
    return tables


def protocol_caption(entries: dict[str, Any]) -> str | None:
    """Which optimizers ran outside the tuned protocol, and how (None: all tuned)."""
    free = [label for label, e in entries.items() if e.get("learning_rate_free")]
    scheduled = [label for label, e in entries.items() if e.get("schedule_free")]
    lines = []
    edge = [label for label, e in entries.items() if e.get("best_lr_at_grid_edge")]
    if edge:
        lines.append(
            f"⇥ tuned rate at the end of the rates searched: {', '.join(edge)} — the best "
            f"rate may lie beyond "
            f"it (try it with a fixed lr beyond, e.g. NAME:lr=VALUE)"
        )
    untuned = [label for label, e in entries.items() if e.get("lr_untuned")]
    if untuned:
        lines.append(
            f"untuned: {', '.join(untuned)} — a one-point grid runs one rate; "
            f"--grid-points 2 or more tunes it"
        )
    if free:
        lines.append(
            f"learning-rate-free (below the rule): {', '.join(free)} — run at its defaults, "
            f"no learning-rate grid; its trials are its seeds"
        )
    if scheduled:
        notes = {entries[label]["protocol"] for label in scheduled}
        lines.append(f"{', '.join(scheduled)}: {'; '.join(sorted(notes))}")
    for label, e in entries.items():  # seeds that diverged or failed count in the rank
        counted = e.get("seeds_counted_untrained") or e.get("no_better_than_untrained")
        if counted and e.get("rank") is not None:
            lines.append(f"{label}: {e['reason']}")
    return "\n".join(lines) or None


def ranking_table(summary: dict[str, Any]) -> Any:
    """The overall ranking over the learned problems (performance profile); the unranked ones
    below with the reason."""
    from rich.table import Table

    tolerance = summary.get("target_tolerance")
    target = f", target tol {tolerance:g}" if tolerance is not None else ""
    count = len(summary["ranked_problems"])
    from rich import box

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"overall ranking on {count} learned problem{'s' if count != 1 else ''} "
        f"(performance profile, τ 1 to 4{target}; = marks a tie: the seeds do not separate them, "
        "even where their scores differ — other draws of the same seeds reorder the scores)",
        title_justify="left",
    )
    for name, justify in (
        ("rank", "right"),
        ("optimizer", "left"),
        ("score", "right"),
        ("fastest on", "right"),
        ("mean rank", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    ranks = [row["rank"] for row in summary["ranking"]]
    for row in summary["ranking"]:
        tied = "=" if ranks.count(row["rank"]) > 1 else ""
        mean_rank = "—" if row["mean_rank"] is None else f"{row['mean_rank']:.2f}"
        table.add_row(
            f"{row['rank']}{tied}",
            row["optimizer"],
            f"{row['profile_score']:.3f}",
            f"{100 * row['solved_within_best']:.0f}%",
            mean_rank,
        )
    for row in summary.get("unranked", []):
        table.add_row("—", row["optimizer"], "not ranked", "", row["reason"])
    return table


def compare(options: Options) -> int:
    """The whole command: build, run, render. Returns the exit code (typer.Exit(130) on
    Ctrl-C, typer.BadParameter for bad input)."""
    # torch, the problems' data and the pool's processes take seconds to start (tens on a
    # loaded machine): say what is happening instead of staying silent until a trial ends
    print("compare: starting (loading torch, building the problems)…", file=sys.stderr, flush=True)
    created = new_directories(options.out)  # a Ctrl-C before any result removes them again
    try:
        setup = build(options)
        announce_other_comparison(setup)
    except KeyboardInterrupt:
        removed = remove_unused(created)
        print(
            f"\ninterrupted before any trial ran (nothing stored yet"
            f"{f'; {removed_text(options.out, created)}' if removed else ''}"
            f"); this command starts it again:\n  {options.resume_command()}",
            file=sys.stderr,
        )
        raise typer.Exit(INTERRUPTED) from None
    setup.created = created
    counts, seconds = run(setup)  # Ctrl-C here: what is stored, how to resume
    print(f"compare: writing the report to {options.out} …", file=sys.stderr, flush=True)
    try:
        render(setup, counts, seconds)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted while writing the report; every trial is stored, and this command "
            f"writes it again:\n  {options.resume_command()}",
            file=sys.stderr,
        )
        raise typer.Exit(INTERRUPTED) from None
    return 0


def command(
    suite: str = typer.Option("quick", "--suite", help="Preset: quick, full."),
    problems: str | None = typer.Option(
        None,
        "--problems",
        "--problem",
        help="Comma-separated problem specs (name[:key=value...] or path.py:factory); "
        "default: the suite's. Names: quadratic-deep, digits-logreg, digits-mlp, mnist1d-mlp, "
        "deep-mlp, … (a bad name lists them all).",
    ),
    optimizers: str | None = typer.Option(
        None,
        "--optimizers",
        help="Optimizer spec, e.g. sgd,adam:amsgrad=true, your own as mine.py:MyOpt[:k=v] or "
        "package.module:Class, e.g. torch.optim:AdamW; presets classic (the textbook's nine, "
        "the default), modern, all.",
    ),
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Seeds per optimizer at its best rate.",
        **integer("--seeds", 1, MAX_SEEDS),
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Worker processes (default: one per core).",
        **integer("--workers", 1, MAX_WORKERS),
    ),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output directory (results, report)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete earlier results in --out first."),
    schedule: str = typer.Option(
        "constant",
        "--schedule",
        help="Learning-rate schedule: constant, step, exponential, cosine, warmup-cosine, plateau.",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Step budget for every problem.", **integer("--steps", 1, MAX_STEPS)
    ),
    diagnose: bool = typer.Option(
        False, "--diagnose", help="Also diagnose each problem (optimlab diagnose), linked."
    ),
    grid_points: int | None = typer.Option(
        None,
        "--grid-points",
        help="Learning rates on the log grid (default: the suite's).",
        **integer("--grid-points", 1, MAX_GRID_POINTS),
    ),
    evals: int | None = typer.Option(
        None,
        "--evals",
        help="Evaluations of the train and validation sets along each run (default: the suite's).",
        **integer("--evals", 1, MAX_EVALS),
    ),
    log_dir: str | None = typer.Option(
        None,
        "--log-dir",
        help="Write each trial's curves as TensorBoard event files under this directory "
        "(pip install 'optimlab[tensorboard]').",
    ),
    executor_name: str = typer.Option(
        "local",
        "--executor",
        help="Where trials run: local (process pool) or ray (Ray tasks; pip install "
        "'optimlab[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster to use, HOST:6379 of `ray start --head` (default: a local Ray "
        "instance with --workers CPUs).",
    ),
    ray_retries: int = typer.Option(
        2,
        "--ray-retries",
        help="Reruns of a trial whose Ray worker died, then it is 'failed'.",
        **integer("--ray-retries", 0, MAX_RETRIES),
    ),
    tuner: str = typer.Option(
        "grid",
        "--tuner",
        help="grid (the log learning-rate grid), optuna (TPE; pip install 'optimlab[optuna]') "
        "or halving (the grid, its losing points stopped at rungs by Optuna's "
        "SuccessiveHalvingPruner).",
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        help="Optuna trials per problem and optimizer (default: the grid's point count).",
        **integer("--trials", 1, MAX_TRIALS),
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        help="What Optuna tunes besides lr: comma-separated from lr, betas, momentum, alpha, "
        "rho, eps, weight_decay (only those an optimizer has; default: lr).",
    ),
    population: str = typer.Option(
        "auto",
        "--population",
        help="auto (the default): train the rates and seeds of one optimizer as one batched "
        "model where possible (else singly, said once); off: every trial alone.",
    ),
) -> int:
    """Tune, repeat and rank optimizers on training problems; write DIR/index.html."""
    return compare(
        Options(
            suite=suite,
            problems=problems,
            optimizers=optimizers,
            seeds=seeds,
            workers=workers,
            out=out,
            fresh=fresh,
            schedule=schedule,
            steps=steps,
            diagnose=diagnose,
            grid_points=grid_points,
            evals=evals,
            executor=executor_name,
            ray_address=ray_address,
            ray_retries=ray_retries,
            tuner=tuner,
            trials=trials,
            search=search,
            log_dir=log_dir,
            population=population,
        )
    )
