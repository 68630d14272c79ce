"""`optimlab landscape` in-process through main(argv): files, table, list, scenario, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.landscapes.functions import list_functions
from optimlab.landscapes.output import FILES
from optimlab.landscapes.scenarios import list_scenarios


@pytest.mark.slow  # writes every picture (PNG, SVG, GIF): a few seconds
def test_function_run_writes_every_file_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ravine"
    code = main(["landscape", "ravine", "--optimizers", "sgd:lr=0.95,momentum:lr=0.1",
                 "--steps", "30", "--start=-7,2", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    data = json.loads((out / "trajectories.json").read_text())
    assert [r["optimizer"] for r in data["runs"]] == ["sgd", "momentum"]
    assert data["runs"][0]["path"][0][:2] == [-7.0, 2.0] and len(data["runs"][0]["path"]) == 31
    printed = capsys.readouterr().out
    assert "sgd" in printed and "momentum" in printed and "zigzag" in printed


@pytest.mark.slow  # writes every picture (PNG, SVG, GIF): a few seconds
def test_tune_and_noise_options(tmp_path: Path) -> None:
    out = tmp_path / "q"
    code = main(["landscape", "quadratic:condition=4:angle=10", "--optimizers", "sgd,adam:lr=0.1",
                 "--steps", "40", "--noise", "0.1", "--tune", "--out", str(out)])  # fmt: skip
    assert code == 0
    data = json.loads((out / "trajectories.json").read_text())
    assert data["function_options"] == {"condition": 4, "angle": 10}
    assert data["noise"] == 0.1
    assert list(data["tuning"]) == ["sgd"] and len(data["tuning"]["sgd"]["lrs"]) == 36
    assert data["runs"][1]["hyperparameters"]["lr"] == 0.1


def test_tune_leaves_a_learning_rate_free_optimizer_at_its_default() -> None:
    # --tune tuned Prodigy's lr (to 1.58) while compare runs it at its defaults
    from optimlab.landscapes.experiment import build_configs

    sgd, prodigy = build_configs("sgd,prodigy", tune=True)
    assert len(sgd.lrs) == 36 and prodigy.lrs == (1.0,) and not prodigy.given_lr


def test_list_names_functions_and_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["landscape", "--list"]) == 0
    printed = capsys.readouterr().out
    for name in [*list_functions(), *list_scenarios()]:
        assert name in printed


@pytest.mark.slow  # writes every picture (PNG, SVG, GIF): a few seconds
def test_scenario_prints_explanation_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    assert main(["landscape", "--scenario", "lr-too-large", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2/λmax" in printed and "✓" in printed and "✗" not in printed
    data = json.loads((out / "trajectories.json").read_text())
    assert data["scenario"]["name"] == "lr-too-large"
    assert all(check["holds"] for check in data["scenario"]["checks"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "unknown function 'nope'; valid functions: ravine, quadratic"),
        (["quadratic:kappa=2"], "valid options: condition, angle"),
        (["--scenario", "nope"], "valid scenarios: ravine, saddle"),
        (["ravine", "--optimizers", "adamm"], "unknown optimizer 'adamm'; valid names: sgd"),
        (["ravine", "--optimizers", "adam:bet=1"], "unknown option 'bet' for optimizer 'adam'"),
        (["ravine", "--start=1"], "'1' is not two finite numbers"),
        (["ravine", "--start=1,inf"], "'1,inf' is not two finite numbers"),
        (["ravine", "--start=a,b"], "'a,b' is not two finite numbers"),
        (["ravine", "--steps", "0"], "--steps: 0; allowed: an integer in [1, 1000000]"),
        (["ravine", "--steps", "1000001"], "1000001; allowed: an integer in [1, 1000000]"),
        (["ravine", "--steps", "abc"], "--steps: 'abc'; allowed: an integer in [1, 1000000]"),
        (["ravine", "--noise", "-1"], "-1.0 is not a finite number ≥ 0"),
        (["ravine", "--optimizers", "sgd:lr=-2"], "sgd: invalid lr=-2"),
        ([], "give a FUNCTION"),
        (["ravine", "--scenario", "saddle"], "not both"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["landscape", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()), err
    assert not (tmp_path / "x").exists()


def test_two_functions_at_once_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    # Was "too many values to unpack (expected 1)": Python's words, not the user's problem.
    assert main(["landscape", "ravine,saddle", "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "names 2 functions" in err and "one function at a time" in err
    assert "unpack" not in err
