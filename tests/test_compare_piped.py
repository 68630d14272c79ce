"""Piped to a file, compare's one-line answers are one line each and its paths are whole (a
newcomer's `grep '^overall:'` missed the end of a folded answer)."""

from __future__ import annotations

import json
from pathlib import Path

from optimlab.cli import main


def test_piped_answers_are_one_line_each_and_paths_whole(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # capsys's stdout is no terminal
    out = tmp_path / ("a-long-directory-name-" * 4) / "out"
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd,adam,momentum,nag"]
    args += ["--grid-points", "2", "--steps", "10", "--seeds", "2", "--workers", "1"]
    assert main([*args, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    answers = json.loads((out / "summary.json").read_text())["recommendations"]
    for answer in [*answers["problems"].values(), answers["overall"]]:
        assert answer in lines  # whole, on its own line
    assert len(answers["overall"]) > 120  # long enough that a fold would have cut it
    assert f"report: {(out / 'index.html').resolve()}" in lines
    assert f"summary: {Path(out, 'summary.json').resolve()}" in lines
