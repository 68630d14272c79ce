"""A rate nobody tuned is not shown as tuned: a fixed one (NAME:lr=…) says "fixed", a one-point
grid (--grid-points 1) says "untuned" and how to tune — in the terminal, the one-line answer,
the report and summary.json (a newcomer read both as tuned rates)."""

from __future__ import annotations

import json

from optimlab.cli import main


def test_fixed_and_one_point_rates_are_marked_everywhere(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # table cells unfolded
    out = tmp_path / "out"
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "adam,sgd:lr=0.001"]
    args += ["--grid-points", "1", "--steps", "10", "--seeds", "1", "--workers", "1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    entries = json.loads((out / "summary.json").read_text())["problems"]["quadratic-deep"]
    adam, sgd = entries["adam"], entries["sgd:lr=0.001"]
    assert (adam["lr_untuned"], adam["lr_fixed"]) == (True, False)
    assert (sgd["lr_untuned"], sgd["lr_fixed"]) == (False, True)
    assert f"adam {adam['best_lr']:.3g} (untuned)" in printed
    assert "sgd:lr=0.001 0.001 (fixed)" in printed
    assert "untuned: adam — a one-point grid runs one rate; --grid-points 2 or more tunes it" in (
        printed
    )
    html = (out / "index.html").read_text()
    assert f"{adam['best_lr']:g} (untuned: the only rate run)</td>" in html
    assert "0.001 (fixed)</td>" in html


def test_a_tuned_grid_marks_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "adam"]
    args += ["--grid-points", "3", "--steps", "10", "--seeds", "1", "--workers", "1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(untuned)" not in printed and "(fixed)" not in printed
    entry = json.loads((out / "summary.json").read_text())["problems"]["quadratic-deep"]["adam"]
    assert (entry["lr_untuned"], entry["lr_fixed"]) == (False, False)
