"""Every `optimlab ...` command line shown in README.md and docs/*.md runs.

The command lines are collected from the fenced code blocks of the docs (comments stripped,
``\\`` continuations joined, ``> file`` redirections dropped) and each runs through
`optimlab.cli.main(argv)` in a temporary directory: it must exit 0 and print no traceback.

- **Synopsis lines** (``optimlab landscape FUNCTION [--steps N]``) become real commands: the
  placeholders are replaced from `PLACEHOLDERS`, optional ``[...]`` groups are included (so
  their options run too) and ``a|b|c`` alternatives expand to one command each.
- **Budgets are shrunk by appending options** (`SHRINK`; a later option wins in click), never
  by editing the docs: a comparison runs 10 steps, 2 grid points, 2 seeds, and two optimizers
  where the line does not choose them.
- **Skipped, with the reason** (`SKIP`): only the lines that need a Ray cluster's address
  (``ray start`` on other machines).
- ``optimlab export`` reads a comparison: its ``--out`` gets a tiny one first if missing.

Nothing is marked xfail: a command the docs show that does not run is a failing test.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from optimlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: placeholder of a synopsis line -> a real value
PLACEHOLDERS = {
    "FUNCTION": "quadratic",  # takes every option of the synopsis, --theory too
    "SPEC": "adam",
    "P": "digits-logreg",
    "P,...": "digits-logreg,quadratic-deep",
    "DIR": "out",
    "N": "20",
    "S": "0.5",
    "NAME": "ravine",
    "OPTIMIZER...": "adam",
    "X,Y": "-1,1",
}
#: options appended per command to shrink its budget (never by editing the docs)
SHRINK = {
    "compare": ["--steps", "5", "--grid-points", "1", "--seeds", "1", "--evals", "1"],
    "demo": ["--steps", "20", "--grid-points", "2", "--seeds", "2"],
    "landscape": ["--steps", "20"],
}
#: appended to a comparison that does not choose its optimizers (nine would multiply the time)
FEW_OPTIMIZERS = ["--optimizers", "adam,sgd"]
#: (pattern in the command line, reason): the only lines that are not run
SKIP = [
    (
        re.compile(r"--ray-address\s+(HEAD|head):6379"),
        "needs a Ray cluster started with `ray start` on other machines",
    ),
]


@dataclass(frozen=True)
class DocCommand:
    where: str  # "docs/compare.md:10"
    line: str  # as in the docs
    argv: tuple[str, ...]  # what runs (placeholders replaced, budget appended)
    skip: str = ""


def code_block_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a fenced code block, continuations joined."""
    lines, inside, pending, start = [], False, "", 0
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((start, pending + stripped))
        pending = ""
    return lines


def substitute(tokens: list[str]) -> list[list[str]]:
    """A synopsis's tokens -> real argvs: brackets dropped (their contents kept), placeholders
    replaced, ``a|b`` alternatives expanded (one argv per alternative)."""
    choices: list[list[str]] = []
    for token in tokens:
        token = token.strip("[]")
        if not token:
            continue
        option, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
        value = PLACEHOLDERS.get(value, value)
        alternatives = value.split("|") if "|" in value else [value]
        choices.append([f"{option}{eq}{a}" for a in alternatives])
    return [list(argv) for argv in itertools.product(*choices)]


def shrink(argv: list[str]) -> list[str]:
    command = next((a for a in argv if not a.startswith("-")), "")
    extra = list(SHRINK.get(command, []))
    if command == "landscape" and ("--list" in argv or "--scenario" in argv):
        extra = []  # a scenario is a fixed experiment; --list trains nothing
    if command in ("compare", "demo") and "--workers" not in argv:
        extra += ["--workers", "1"]  # trials in this process: no pool to start per command
    if command == "compare":
        if "--optimizers" not in argv:
            extra += FEW_OPTIMIZERS
        if "--tuner" in argv and argv[argv.index("--tuner") + 1] == "optuna":
            extra += ["--trials", "2"]  # (--trials is Optuna's alone: halving rejects it)
    return argv + extra


def collect() -> list[DocCommand]:
    """Every command line of the docs, once (the same argv shown twice runs once)."""
    commands, seen = [], set()
    for path in DOCS:
        for number, text in code_block_lines(path):
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError:
                continue
            if not tokens or tokens[0] != "optimlab":
                continue
            for redirect in (">", ">>", "2>"):
                if redirect in tokens:  # the output goes to pytest's capture instead
                    tokens = tokens[: tokens.index(redirect)]
            where = f"{path.relative_to(ROOT)}:{number}"
            skip = next((reason for pattern, reason in SKIP if pattern.search(text)), "")
            for argv in map(shrink, substitute(tokens[1:])):
                if tuple(argv) in seen:
                    continue
                seen.add(tuple(argv))
                commands.append(DocCommand(where, text.split("#")[0].strip(), tuple(argv), skip))
    return commands


COMMANDS = collect()


def test_the_docs_show_commands_of_every_kind() -> None:
    """The collector finds the docs' commands (a parser that finds none would pass vacuously)."""
    kinds = {c.argv[0] for c in COMMANDS if c.argv}
    assert {"compare", "export", "landscape", "diagnose", "lr-find", "demo", "list"} <= kinds
    assert any(c.argv == ("--version",) for c in COMMANDS)
    assert len(COMMANDS) >= 25


def _tiny_comparison(out: str) -> None:
    code = main(
        [
            "compare",
            "--problems",
            "digits-logreg",
            "--optimizers",
            "adam",
            "--steps",
            "10",
            "--grid-points",
            "2",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--out",
            out,
        ]
    )
    assert code == 0, "the tiny comparison that export reads failed"


def write_shown_files(argv: list[str]) -> None:
    """A file a command names (``lion.py:Lion``) that the docs show in a code block whose first
    line is ``# lion.py`` is written into the working directory first, as a reader would."""
    for name in {m for arg in argv for m in re.findall(r"([\w.-]+\.py):", arg)}:
        for path in DOCS:
            blocks = re.findall(r"```\w*\n# (\S+)\n(.*?)```", path.read_text(), re.DOTALL)
            for shown, body in blocks:
                if shown == name and not Path(name).exists():
                    Path(name).write_text(body)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", COMMANDS, ids=[f"{c.where}:{' '.join(c.argv)}" for c in COMMANDS]
)
def test_a_documented_command_runs(
    command: DocCommand, tmp_path: Path, monkeypatch, capsys
) -> None:
    if command.skip:
        pytest.skip(command.skip)
    monkeypatch.chdir(tmp_path)
    argv = list(command.argv)
    write_shown_files(argv)
    if argv[0] == "export":
        out = argv[argv.index("--out") + 1]
        if not Path(out).exists():
            _tiny_comparison(out)
            capsys.readouterr()
    code = main(argv)
    output = capsys.readouterr()
    shown = f"{command.where}: {command.line}\nran: optimlab {' '.join(argv)}"
    assert "Traceback" not in output.out + output.err, f"{shown}\n{output.err[-3000:]}"
    assert code == 0, f"{shown}\nexit {code}\n{output.err[-3000:]}"
