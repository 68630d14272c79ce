"""What compare says before training into an --out that holds another comparison.

One output directory holds one report (``index.html``, ``summary.json``) but any number of
trials: a second comparison into it reuses the stored trials it shares with the first and
writes its own report over the first one's. Nothing is deleted, but the first report is gone
from the directory — so, before any training, `notice` says so in one paragraph on stderr:
what the directory holds (the other comparison, briefly, and how many stored trials this one
does not use), that those trials stay and are reused where they match, that the report will
describe this comparison, and the exact command that writes the other report again (it reuses
the other comparison's stored trials). The command comes from the report itself
(``summary.json``'s ``run.command``, written by `record_command`) or, for a report written
before that field, from ``progress.json`` when its run finished. Never a prompt: pipes and CI
run it unattended.

Quiet when the report in the directory is this comparison's (a rerun or a resume), when the
directory is new or empty, and with ``--fresh`` (the user asked to start over).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

SUMMARY_NAME = "summary.json"
#: parts of the tuner's description that do not change what is compared: where the Optuna
#: journal is (the same directory, however --out was spelled) and how many points it asks at
#: once (--population)
INCIDENTAL = ("storage", "batch")


def previous_run(out: str | Path) -> dict[str, Any] | None:
    """The ``run`` section of the report in `out` (None: no readable report)."""
    try:
        data = json.loads((Path(out) / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    run = data.get("run") if isinstance(data, dict) else None
    return run if isinstance(run, dict) else None


def same_comparison(run: dict[str, Any], described: dict[str, Any]) -> bool:
    """Whether a report's ``run`` describes the comparison `described` (`Comparison.describe`,
    as summary.json stores it: through JSON)."""
    current = json.loads(json.dumps(_jsonable(described)))

    def essential(key: str, value: Any) -> Any:
        if key == "tuner" and isinstance(value, dict):
            return {k: v for k, v in value.items() if k not in INCIDENTAL}
        return value

    return all(
        essential(key, run.get(key)) == essential(key, value) for key, value in current.items()
    )


def brief(run: dict[str, Any]) -> str:
    """A comparison in one phrase: ``sgd, adam on quadratic-deep (50 steps); grid tuner, 3
    rates, 2 seeds``."""
    problems = ", ".join(f"{p['problem']} ({p['steps']} steps)" for p in run.get("problems", []))
    tuner = (run.get("tuner") or {}).get("name", "grid")
    parts = [f"{tuner} tuner"]
    if run.get("lr_grid"):
        parts.append(f"{len(run['lr_grid'])} rates")
    if run.get("seeds"):
        parts.append(f"{run['seeds']} seeds")
    return f"{', '.join(run.get('optimizers', []))} on {problems}; {', '.join(parts)}"


def unused_trials(comparison: Any, store: Any) -> list[Any]:
    """The stored trials this comparison can never use: not a point of its tuning, a seed at
    any of its rates, or a default run, of any of its (problem, optimizer) pairs — and a
    point successive halving stopped, unless this comparison's tuner is the halving."""
    from optimlab.lab.store import PRUNED_SUFFIX

    needed: set[str] = set()
    for problem, steps, c in comparison.pairs():
        grid = comparison.grid_trials(problem, steps, c)
        needed |= {s.key for s in grid}
        needed |= {s.key for s in comparison.default_trials(problem, steps, c)}
        for lr in {s.lr for s in grid}:
            needed |= {s.key for s in comparison.seed_trials(problem, steps, c, lr)}
    prunes = comparison.halving is not None  # a pruned point serves the halving alone
    return [
        t
        for t in store.iter()
        if t.key.removesuffix(PRUNED_SUFFIX) not in needed
        or (t.result.status == "pruned" and not prunes)
    ]


def stored_brief(trials: list[Any]) -> str:
    """What a set of stored trials is, from their rows: optimizers on problems (steps)."""
    optimizers = list(dict.fromkeys(t.spec.optimizer for t in trials))
    problems = list(dict.fromkeys((t.spec.problem_label, t.spec.steps) for t in trials))
    where = ", ".join(f"{label} ({steps} steps)" for label, steps in problems)
    return f"{', '.join(optimizers)} on {where}"


def other_command(out: str | Path, run: dict[str, Any] | None, current: str) -> str | None:
    """The command that wrote the other report: its ``run.command``, else the last run's
    (``progress.json``) if that run finished and was not this very command. Its ``--out`` is
    replaced by `out` as given now (the same directory, perhaps from another working
    directory)."""
    if run is not None and run.get("command"):
        command = str(run["command"])
    else:
        from optimlab.lab.progress_file import read_progress

        progress = read_progress(out)
        if progress is None or not progress["finished"] or progress["command"] == current:
            return None
        command = str(progress["command"])
    args = shlex.split(command)
    if "--out" in args[:-1]:
        args[args.index("--out") + 1] = str(out)
    else:  # the default --out: name it, this directory may not be the default now
        args += ["--out", str(out)]
    return shlex.join(args)


def notice(comparison: Any, store: Any, out: str, command: str) -> str | None:
    """The paragraph to print before training, or None (nothing another comparison left)."""
    run = previous_run(out)
    described = comparison.describe()
    if run is not None and same_comparison(run, described):
        return None
    if not store.count():
        return None
    unused = unused_trials(comparison, store)
    this = brief(_jsonable(described))
    if run is None:
        if not unused:
            return None
        again = other_command(out, None, command)
        lines = [
            f"compare: {out} holds {len(unused)} stored trials of another comparison: "
            f"{stored_brief(unused)}.",
            f"  They stay in {store.path}; trials this comparison shares with it are reused.",
        ]
        if again:
            lines += ["  This command resumes the other comparison:", f"    {again}"]
        return "\n".join(lines)
    again = other_command(out, run, command)
    kept = (
        f"the {len(unused)} stored trials this comparison does not use" if unused else "its trials"
    )
    lines = [
        f"compare: {out} holds the report of another comparison: {brief(run)}.",
        f"  Nothing is deleted: {kept} stay in {store.path}; trials the two share are reused.",
        f"  The report written now (index.html, summary.json) describes this comparison: {this}.",
    ]
    if again:
        lines += ["  This command writes the other report again from its stored trials:"]
        lines += [f"    {again}"]
    else:
        lines += [
            "  Its command is not recorded there: rerun it with this --out to write its report "
            "again (its stored trials are reused)."
        ]
    return "\n".join(lines)


def record_command(summary: dict[str, Any], command: str) -> None:
    """Put the command that reproduces this report into it (``run.command``), so that a later
    comparison into the same directory can say how to get this report back."""
    summary["run"]["command"] = command


def _jsonable(value: Any) -> Any:
    from optimlab.lab.trial import jsonable

    return jsonable(value)
