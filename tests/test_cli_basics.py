"""`optimlab --version` and `optimlab list [--json]`, run in-process through main(argv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optimlab
from optimlab.cli import main
from optimlab.optim.registry import REGISTRY


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"optimlab {optimlab.__version__}"


def test_list_json_has_both_conventions_and_a_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    # strict JSON (jq, JSON.parse): Prodigy's growth_rate default inf was a bare Infinity
    rows = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(name))
    prodigy = next(row for row in rows if row["name"] == "prodigy")
    assert prodigy["defaults"]["torch"]["growth_rate"] == "inf"
    assert [row["name"] for row in rows] == list(REGISTRY)
    adam = next(row for row in rows if row["name"] == "adam")
    assert adam["defaults"]["torch"]["eps"] == 1e-8
    assert adam["defaults"]["keras"]["eps"] == 1e-7
    adagrad = next(row for row in rows if row["name"] == "adagrad")
    assert adagrad["defaults"]["keras"]["initial_accumulator_value"] == 0.1
    assert all(row["rule"] for row in rows)


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out


def test_list_prints_each_rule_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in a rule are text, not terminal markup: SOAP's "E[g gᵀ]" was printed as "E"."""
    for name, info in REGISTRY.items():
        assert main(["list", name]) == 0
        out = " ".join(capsys.readouterr().out.split())
        cells = " ".join(line.strip("│ ") for line in out.split("│"))
        for token in info.rule.split():
            if "[" in token:
                assert token in cells, (name, token)


def test_list_preset_keeps_only_that_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--preset", "classic", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert names == [n for n, info in REGISTRY.items() if info.preset == "classic"]
    assert "adam" in names and "lion" not in names


def test_list_names_show_defaults_of_both_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "adagrad"]) == 0
    out = capsys.readouterr().out
    assert "initial_accumulator_value=0.0" in out  # torch's
    assert "initial_accumulator_value=0.1" in out  # Keras's
    assert "torch.optim.Adagrad" in out and "rmsprop" not in out


@pytest.mark.parametrize("argv", [["list", "no-such-optimizer"], ["list", "--preset", "newest"]])
def test_list_bad_input_is_a_usage_error(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert argv[-1] in err


def test_unknown_command_is_a_usage_error() -> None:
    assert main(["no-such-command"]) == 2


# --- a fast CLI (issue 11, item 7) --------------------------------------------------------------
# Timing lives in benchmarks/cli_speed.py; these tests check the cause of slowness instead: which
# heavy modules get imported. Every module under optimlab/cli/ must keep them out of its top level.

HEAVY = ("torch", "numba", "matplotlib", "optimlab.optim", "optimlab.lab", "optimlab.problems",
         "optimlab.landscapes", "optimlab.diagnose", "optimlab.report")  # fmt: skip
CLI_MODULES = sorted(
    p.stem for p in (Path(optimlab.__file__).parent / "cli").glob("*.py") if p.stem != "__main__"
)


def heavy_imports(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the heavy modules it imported."""
    probe = (
        f"import sys, json\n{code}\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def subcommands() -> list[str]:
    import typer.main

    from optimlab.cli.app import app

    return sorted(typer.main.get_command(app).commands)


def test_import_optimlab_is_light_until_an_optimizer_is_touched():
    assert heavy_imports("import optimlab") == []
    touched = heavy_imports("import optimlab; optimlab.Adam")
    assert "torch" in touched and "optimlab.optim" in touched


def test_lazy_names_are_the_real_ones_and_dir_is_honest():
    from optimlab import optim

    for name in optimlab.__all__:
        if name != "__version__":
            assert getattr(optimlab, name) is getattr(optim, name)
    assert set(optimlab.__all__) <= set(dir(optimlab))
    assert not {"importlib", "Any", "TYPE_CHECKING", "annotations"} & set(dir(optimlab))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        optimlab.nope  # noqa: B018


@pytest.mark.parametrize("module", CLI_MODULES)
def test_cli_module_imports_nothing_heavy(module):
    """Fails, until merged, for the command modules other branches make lazy."""
    assert heavy_imports(f"import optimlab.cli.{module}") == [], module


#: every subcommand, sorted (a new command must be added here, so its help is tested)
COMMANDS = ["compare", "demo", "diagnose", "export", "landscape", "list", "lr-find", "serve"]


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(argv):
    assert heavy_imports(f"from optimlab.cli import main; main({argv!r})") == []


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_imports_nothing_heavy(command):
    assert command in subcommands()
    code = f"from optimlab.cli import main; main([{command!r}, '--help'])"
    assert heavy_imports(code) == [], command


def test_every_subcommand_is_in_the_help_test():
    assert subcommands() == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_boolean_flags_as_flags(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "--help" in out
    for line in out.splitlines():
        if line.strip().startswith("--json"):
            assert line.split()[1][0] not in "<[", line  # the help text follows the flag


def test_literals_in_cli_modules_agree_with_the_library():
    """The CLI repeats a few constants as literals so that it need not import torch."""
    import importlib

    diagnose_cli = importlib.import_module("optimlab.cli.diagnose")
    lr_find_cli = importlib.import_module("optimlab.cli.lr_find")
    lr_find = importlib.import_module("optimlab.diagnose.lr_find")
    run = importlib.import_module("optimlab.diagnose.run")

    assert ",".join(run.CHECKS) == diagnose_cli.CHECKS_TEXT
    assert diagnose_cli.DEFAULT_OPTIMIZER == run.DEFAULT_OPTIMIZER
    assert lr_find_cli.RULES == lr_find.RULES


def test_diagnose_table_wraps_at_narrow_widths_and_never_cuts_numbers(capsys, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setenv("COLUMNS", "60")
    argv = ["diagnose", "--problem", "deep-mlp:depth=6:width=16:activation=sigmoid:init=xavier",
            "--checks", "lr,gradflow", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    # (the last line is the page's path, as long as the path)
    assert max(len(line) for line in out.splitlines() if not line.startswith("page:")) <= 60
    result = json.loads((tmp_path / "diagnosis.json").read_text())
    joined = " ".join(out.replace("│", " ").split())
    assert f"{result['gradflow']['shrink_factor']:.3g}" in joined


def test_top_level_help_lists_every_command_with_a_whole_summary(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    commands = out.split("Commands:")[1].splitlines()[1:]
    assert [line.split()[0] for line in commands if line.strip()] == [
        "list", "demo", "compare", "export", "landscape", "diagnose", "lr-find", "serve",
    ]  # fmt: skip
    assert not any(line.endswith("...") for line in commands)
    assert max(len(line) for line in out.splitlines()) <= 80


def test_milliseconds_print_without_a_bare_point_or_an_exponent() -> None:
    """The speed table printed "101." and "(1.11e+03)" for warm-ups (newcomer's report)."""
    from optimlab.cli.compare import _ms

    cases = {0.000742: "0.742", 0.0045: "4.50", 0.0101: "10.1", 0.101: "101", 0.09995: "100"}
    cases.update({1.11: "1,110", 12.0: "12,000", None: "—"})
    for seconds, shown in cases.items():
        assert _ms(seconds) == shown


def test_a_tuned_rate_at_the_grids_end_is_flagged_in_the_terminal() -> None:
    """The HTML report flagged it; the terminal table did not (newcomer's report)."""
    from optimlab.cli.compare import protocol_caption

    entries = {
        "sgd": {"best_lr_at_grid_edge": True},
        "adam": {"best_lr_at_grid_edge": False},
    }
    caption = protocol_caption(entries) or ""
    assert (
        "⇥ tuned rate at the end of the rates searched: sgd —" in caption and "adam" not in caption
    )
    assert protocol_caption({"adam": {"best_lr_at_grid_edge": False}}) is None


def test_piped_tables_are_not_folded_at_80_columns(monkeypatch, tmp_path, capsys) -> None:
    # in a log file rich assumed 80 columns and cut numbers across lines ("sgd:lr=0.9" / "5")
    from optimlab.cli.console import FILE_WIDTH, stdout_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert stdout_console().width == FILE_WIDTH  # capsys's stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert stdout_console().width == 100  # the user's choice wins
    monkeypatch.delenv("COLUMNS")
    spec = "sgd:lr=0.95,momentum:lr=0.05:momentum=0.95,adam:lr=0.25:eps=1e-06:amsgrad=True"
    out = str(tmp_path / "ls")
    assert main(["landscape", "ravine", "--optimizers", spec, "--steps", "5", "--out", out]) == 0
    printed = capsys.readouterr().out
    for label in spec.split(","):
        assert label in printed, label
