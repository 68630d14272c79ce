"""How fast the CLI answers `--version`, `--help` and each subcommand's `--help`.

The issue's budget (issue 11, item 7): ``optimlab --version`` and ``optimlab --help`` ≤ 0.5 s,
every subcommand's ``--help`` ≤ 1 s. Each command runs in a fresh interpreter (``python -m
optimlab.cli ...``), `--repeats` times, in turns (so that a burst of load on this shared 2-core
machine hits every command alike); the table shows the median and the minimum, and, as ratios,
the median over the interpreter's own start-up (``python -c pass``) and over importing torch
alone (what a command that loads torch costs at least). Nothing is stubbed: the numbers are the
CLI as it is on this branch.

    .venv/bin/python benchmarks/cli_speed.py [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELP_BUDGET, SUB_HELP_BUDGET = 0.5, 1.0


def subcommands() -> list[str]:
    """The registered commands, asked of the app in a child process (this one stays light)."""
    code = (
        "import typer.main\nfrom optimlab.cli.app import app\n"
        "print(' '.join(sorted(typer.main.get_command(app).commands)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()

    cli = [sys.executable, "-m", "optimlab.cli"]
    cases: list[tuple[str, list[str], float | None]] = [
        ("python -c pass (interpreter start-up)", [sys.executable, "-c", "pass"], None),
        ("python -c 'import torch'", [sys.executable, "-c", "import torch"], None),
        ("optimlab --version", [*cli, "--version"], HELP_BUDGET),
        ("optimlab --help", [*cli, "--help"], HELP_BUDGET),
    ]
    cases += [(f"optimlab {c} --help", [*cli, c, "--help"], SUB_HELP_BUDGET) for c in subcommands()]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeats):
        for name, argv, _ in cases:
            times[name].append(timed(argv))

    python = statistics.median(times[cases[0][0]])
    torch_import = statistics.median(times[cases[1][0]])
    rows = []
    for name, _, budget in cases:
        median = statistics.median(times[name])
        rows.append({
            "command": name,
            "median_s": round(median, 3),
            "min_s": round(min(times[name]), 3),
            "x_python": round(median / python, 2),
            "x_import_torch": round(median / torch_import, 2),
            "budget_s": budget,
            "within": None if budget is None else median <= budget,
        })  # fmt: skip

    print(f"{args.repeats} fresh processes per command, in turns; median and minimum seconds")
    print()
    print("| command | median s | min s | × python start | × import torch | budget s | ok |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        ok = "" if r["within"] is None else ("yes" if r["within"] else "**no**")
        budget = "" if r["budget_s"] is None else f"{r['budget_s']:.1f}"
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['x_python']:.1f} "
              f"| {r['x_import_torch']:.2f} | {budget} | {ok} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
