"""What `optimlab compare` reuses from an --out that holds other runs, and what it says about
it (a newcomer's four findings): an exhaustive grid never takes a halving run's pruned points
for finished ones; a comparison written over another one's report says so before training and
how to get the other report back; --out naming a file, and a non-integer count option, get one
clear line each (argument, value, what is allowed; exit 2)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from optimlab.cli import main
from optimlab.lab.store import PRUNED_SUFFIX, ResultStore
from optimlab.lab.trial import TrialResult, TrialSpec

#: 27 steps, 9 evaluations: successive halving's rungs at steps 11 and 16 (tests/test_halving.py)
HALVING = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd", "--steps", "27"]
HALVING += ["--evals", "9", "--grid-points", "6", "--seeds", "2", "--workers", "1"]


@pytest.fixture()
def no_figures(monkeypatch):
    """The report's figures are not what these tests check (tests/test_report*.py do): skip
    drawing their SVG, most of a tiny comparison's time."""
    from optimlab.report import plots

    monkeypatch.setattr(plots, "to_svg", lambda figure: "<svg></svg>")


def flat(text: str) -> str:
    return " ".join(text.split())


def grid_points(out) -> dict[float, dict]:
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["problems"]["quadratic-deep"]["sgd"]
    return {point["lr"]: point for point in entry["lr_sensitivity"]}, summary


@pytest.mark.usefixtures("one_thread", "no_figures")
def test_an_exhaustive_grid_retrains_the_points_halving_stopped(tmp_path, capsys) -> None:
    """Halving, then the grid into the same --out: the grid trains every pruned point to the
    end (counted as run), and its tuned rate and every point's final loss are those of the grid
    run alone in a fresh directory. The halving resumed still reports its own pruned points."""
    pytest.importorskip("optuna")
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    assert main([*HALVING, "--tuner", "halving", "--out", str(shared)]) == 0
    capsys.readouterr()
    halved, _ = grid_points(shared)
    pruned = sorted(lr for lr, point in halved.items() if point["status"] == "pruned")
    assert pruned  # the fixture must prune something, or this test proves nothing
    stored_before = ResultStore(shared).count()

    assert main([*HALVING, "--tuner", "grid", "--out", str(shared)]) == 0
    out = flat(capsys.readouterr().out)
    assert f"{len(pruned)} trials run, {stored_before - len(pruned)} reused" in out
    assert "stopped early by successive halving" not in out
    assert main([*HALVING, "--tuner", "grid", "--out", str(alone)]) == 0
    capsys.readouterr()
    (grid, grid_summary), (reference, _) = grid_points(shared), grid_points(alone)
    assert {lr: p["status"] for lr, p in grid.items()} == {
        lr: p["status"] for lr, p in reference.items()
    }
    assert "pruned" not in {p["status"] for p in grid.values()}
    for lr in grid:  # same spec, same seed: the same numbers as a grid that never saw halving
        assert grid[lr]["final_val_loss"] == pytest.approx(reference[lr]["final_val_loss"])
    assert grid_summary["run"]["trial_status"].get("pruned", 0) == 0
    alone_summary = json.loads((alone / "summary.json").read_text())
    best = grid_summary["problems"]["quadratic-deep"]["sgd"]["best_lr"]
    assert best == alone_summary["problems"]["quadratic-deep"]["sgd"]["best_lr"]

    # both runs' rows are kept: the pruned point and its full run
    assert ResultStore(shared).count() == stored_before + len(pruned)
    assert main([*HALVING, "--tuner", "halving", "--out", str(shared)]) == 0
    out = flat(capsys.readouterr().out)
    assert "0 trials run" in out
    assert f"{len(pruned)} grid points stopped early by successive halving" in out
    resumed, _ = grid_points(shared)
    assert sorted(lr for lr, p in resumed.items() if p["status"] == "pruned") == pruned


def test_a_pruned_row_stored_under_its_specs_key_moves_aside_for_the_full_run(tmp_path) -> None:
    """Stores written before the suffix held a pruned row under the spec's own key, where the
    full run could not be inserted: opening the store for writing moves it to the suffixed key
    (nothing deleted), and the full run is then stored."""
    spec = TrialSpec("quadratic-deep", "sgd", {"lr": 0.1}, steps=27, evals=9)
    store = ResultStore(tmp_path)
    assert store.put(spec, TrialResult("pruned", {"pruned_at": 11}, "pruned at rung 0"))
    with sqlite3.connect(store.path) as connection:  # the layout of an older store
        connection.execute("UPDATE trials SET key = ?", (spec.key,))
    assert ResultStore(tmp_path, create=False).answers() == {}  # read-only: not the full run
    store = ResultStore(tmp_path)
    assert store.keys() == {spec.key + PRUNED_SUFFIX}
    assert spec.key not in store.answers() and store.answers(pruned=True)[spec.key]
    assert store.put(spec, TrialResult("ok", {"final_val_loss": 1.0}))
    assert store.answers()[spec.key].result.status == "ok"
    assert store.answers(pruned=True)[spec.key].result.status == "pruned"


@pytest.mark.parametrize(
    ("command", "option", "value", "allowed"),
    [
        ("compare", "--seeds", "abc", "[1, 10000]"),
        ("compare", "--grid-points", "abc", "[1, 1000]"),
        ("compare", "--workers", "abc", "[1, 1024]"),
        ("compare", "--steps", "1.5", "[1, 100000000]"),
        ("compare", "--evals", "ten", "[1, 100000]"),
        ("compare", "--trials", "abc", "[1, 100000]"),
        ("compare", "--ray-retries", "two", "[0, 100]"),
        ("compare", "--ray-retries", "-1", "[0, 100]"),
        ("demo", "--seeds", "abc", "[1, 10000]"),
        ("demo", "--steps", "2e3", "[1, 100000000]"),
    ],
)
def test_a_count_option_that_is_no_integer_names_option_value_and_what_is_allowed(
    tmp_path, capsys, command, option, value, allowed
) -> None:
    """typer's own message was "Input should be a valid integer, unable to parse string as an
    integer": neither the value nor the range. Now the range checks' form, one line, exit 2."""
    out = tmp_path / "out"
    assert main([command, option, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    shown = f"'{value}'" if not value.lstrip("-").isdigit() else value
    line = f"Invalid value for {option}: {shown}; allowed: an integer in {allowed}"
    assert [text for text in err.splitlines() if text.startswith("Error:")] == [f"Error: {line}"]
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_out_naming_a_file_says_it_is_a_file_and_what_is_allowed(tmp_path, capsys, below) -> None:
    """It was "output directory 'F' cannot be written: File exists" (less clear than
    diagnose's "'F': exists and is not a directory"); the file is left as it was."""
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    out = file / below if below else file
    argv = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd", "--out", str(out)]
    assert main(argv) == 2
    err = flat(capsys.readouterr().err)
    where = f"'{out}' cannot be made: '{file}'" if below else f"'{file}'"
    assert (
        f"Invalid value for --out: {where} is a file, not a directory; allowed: a directory "
        f"(one that exists, or a new one compare creates)"
    ) in err
    assert "Traceback" not in err and file.read_text() == "mine"


TINY = ["--problems", "quadratic-deep", "--steps", "6", "--evals", "2", "--grid-points", "2"]
TINY += ["--seeds", "1", "--workers", "1", "--population", "off"]


@pytest.mark.usefixtures("no_figures")
def test_a_comparison_into_another_ones_out_says_so_and_how_to_get_its_report_back(
    tmp_path, capsys, monkeypatch
) -> None:
    """sgd into D, then adam into D: before training, the second says D holds sgd's report,
    that its trials stay (nothing deleted) and are reused where shared, that the report will
    be adam's, and the exact command that writes sgd's report again — which then trains
    nothing and brings it back. A rerun of the same comparison says nothing."""
    monkeypatch.chdir(tmp_path)
    first = ["compare", "--optimizers", "sgd", *TINY, "--out", "D"]
    assert main(first) == 0
    assert "another comparison" not in capsys.readouterr().err
    stored = ResultStore("D").count()

    assert main(["compare", "--optimizers", "adam", *TINY, "--out", "D"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    start = next(i for i, line in enumerate(err) if "holds the report" in line)
    assert err[start] == (
        "compare: D holds the report of another comparison: sgd on quadratic-deep (6 steps); "
        "grid tuner, 2 rates, 1 seeds."
    )
    assert (
        f"Nothing is deleted: the {stored} stored trials this comparison does not use"
        in (err[start + 1])
    )
    assert "describes this comparison: adam on quadratic-deep (6 steps)" in err[start + 2]
    command = err[start + 4].strip()
    assert command.startswith("optimlab compare ") and "--optimizers sgd" in command
    assert err.index(err[start]) < min(i for i, line in enumerate(err) if "trials (" in line)
    summary = json.loads((tmp_path / "D" / "summary.json").read_text())
    assert summary["run"]["optimizers"] == ["adam"]
    assert ResultStore("D").count() > stored  # sgd's trials kept beside adam's

    argv = command.split()[1:]  # the printed command, as the user would paste it
    assert main(argv) == 0
    out = flat(capsys.readouterr().out)
    assert f"0 trials run, {stored} reused" in out
    summary = json.loads((tmp_path / "D" / "summary.json").read_text())
    assert summary["run"]["optimizers"] == ["sgd"] and summary["run"]["command"] == command
    assert main(argv) == 0  # the same comparison again: nothing to say
    assert "another comparison" not in capsys.readouterr().err

    # no report at all (a comparison stopped before writing one): the stored trials are named
    (tmp_path / "D" / "summary.json").unlink()
    assert main(["compare", "--optimizers", "adam", *TINY, "--out", "D"]) == 0
    err = capsys.readouterr().err
    assert f"compare: D holds {stored} stored trials of another comparison: sgd on " in err
    assert "quadratic-deep (6 steps)." in err and "are reused" in err
