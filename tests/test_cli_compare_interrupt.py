"""Ctrl-C before the first trial is stored leaves no trace of the run: the --out directory
compare created goes (its parents too), one the user had stays, and one holding a stored trial
stays with it."""

from __future__ import annotations

import pytest

import optimlab.lab.executor as executor_module
from optimlab.cli import main
from optimlab.lab.store import ResultStore

ARGS = ["compare", "--problems", "digits-logreg", "--optimizers", "sgd", "--steps", "8"]
ARGS += ["--grid-points", "2", "--seeds", "1", "--workers", "1", "--population", "off"]


def interrupt_after(monkeypatch: pytest.MonkeyPatch, trials: int) -> None:
    """Ctrl-C in the (single, in-process) worker once `trials` trials have run and been stored."""
    real = executor_module.run_unit_and_store
    calls = {"n": 0}

    def run_unit_and_store(*args, **kwargs):
        if calls["n"] >= trials:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(executor_module, "run_unit_and_store", run_unit_and_store)


def test_ctrl_c_in_the_first_trial_removes_the_directories_compare_created(
    tmp_path, monkeypatch, capsys
) -> None:
    interrupt_after(monkeypatch, 0)
    out = tmp_path / "new" / "run"
    assert main([*ARGS, "--out", str(out)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "new").exists()  # the parent it made too
    assert "nothing is stored" in err
    assert f"{tmp_path / 'new'}, which this command created for {out}, is removed" in err
    assert "Traceback" not in err


def test_ctrl_c_while_starting_says_which_directories_it_removed(
    tmp_path, monkeypatch, capsys
) -> None:
    """Interrupted while compare starts up (the store made, no trial yet): the parent it made
    for --out is removed too, and named (it went silently)."""
    import optimlab.cli.compare as compare_module

    def interrupted(setup):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "announce_other_comparison", interrupted)
    out = tmp_path / "new" / "run"
    assert main([*ARGS, "--out", str(out)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "new").exists()
    assert "interrupted before any trial ran" in err
    assert f"{tmp_path / 'new'}, which this command created for {out}, is removed" in err
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main([*ARGS, "--out", str(mine / "run")]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert mine.is_dir() and not (mine / "run").exists()
    assert f"{mine / 'run'}, which this command created, is removed" in err


def test_ctrl_c_leaves_a_directory_the_user_had(tmp_path, monkeypatch, capsys) -> None:
    interrupt_after(monkeypatch, 0)
    out = tmp_path / "mine"
    out.mkdir()
    assert main([*ARGS, "--out", str(out)]) == 130
    assert out.is_dir() and ResultStore(out).count() == 0
    assert "interrupted: 0 trials are stored" in capsys.readouterr().err


def test_ctrl_c_after_a_stored_trial_keeps_the_new_directory(tmp_path, monkeypatch, capsys) -> None:
    interrupt_after(monkeypatch, 1)
    out = tmp_path / "run"
    assert main([*ARGS, "--out", str(out)]) == 130
    assert ResultStore(out).count() == 1
    assert "interrupted: 1 trials are stored" in capsys.readouterr().err


def test_a_created_directory_holding_another_file_is_kept(tmp_path, monkeypatch, capsys) -> None:
    import optimlab.cli.compare as command

    out = tmp_path / "run"
    real = command.build

    def build_then_interrupt(options):
        real(options)
        (out / "notes.txt").write_text("mine")  # something compare did not write
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "build", build_then_interrupt)
    assert main([*ARGS, "--out", str(out)]) == 130
    assert (out / "notes.txt").read_text() == "mine"
    assert "interrupted before any trial ran" in capsys.readouterr().err
