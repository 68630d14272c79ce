"""Three errors a newcomer found unclear (each exit 2, no traceback): export pointed at the
database file, a bad option of a known problem followed by the list of problems, and a
non-Python file given as an optimizer file."""

from __future__ import annotations

import pytest

from optimlab.cli import main


def test_export_of_the_database_file_names_the_directory(tmp_path, capsys) -> None:
    database = tmp_path / "run" / "results.sqlite"
    database.parent.mkdir()
    database.write_bytes(b"")
    assert main(["export", "--out", str(database), "--format", "json"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"'{database}' is the results database, not a directory" in err
    assert f"(--out '{database.parent}'?)" in err
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert main(["export", "--out", str(other), "--format", "csv"]) == 2
    assert f"'{other}' is a file, not a directory" in " ".join(capsys.readouterr().err.split())


def test_a_bad_option_of_a_known_problem_is_not_followed_by_every_problem(capsys) -> None:
    assert main(["diagnose", "--problem", "digits-mlp:width=0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "width=0 is not allowed; allowed: an integer >= 1" in err
    assert "valid problems" not in err and "tiny-lm" not in err
    assert main(["diagnose", "--problem", "no-such-problem"]) == 2
    assert "tiny-lm" in capsys.readouterr().err  # an unknown name still lists the names


def test_a_file_that_is_not_python_as_an_optimizer_says_how_to_name_one(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a bare file name, as the newcomer typed it (a path says so)
    (tmp_path / "afile").write_text("not python")
    argv = ["compare", "--problems", "digits-mlp", "--optimizers", "afile:Lion"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "a class in a file is path/to/file.py:Class, the file ending in .py" in err
    assert main(["compare", "--optimizers", "adam:lr", "--out", str(tmp_path / "o2")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "expected key=value" in err and "file.py:Class" not in err


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["compare", "--grid-points", HUGE], "[1, 1000]"),  # was numpy's ValueError
        (["compare", "--workers", HUGE], "[1, 1024]"),  # was an OverflowError in the pool
        (["compare", "--evals", HUGE], "[1, 100000]"),  # was SQLite's OverflowError
        (["compare", "--seeds", HUGE], "[1, 10000]"),  # trained until killed
        (["compare", "--steps", HUGE], "[1, 100000000]"),
        (["demo", "--workers", HUGE], "[1, 1024]"),
        (["diagnose", "--problem", "quadratic-deep", "--seed", HUGE], "[0, 9223372036854775807]"),
        (["lr-find", "--problem", "quadratic-deep", "--seed", HUGE], "[0, 9223372036854775807]"),
        (["landscape", "ravine", "--steps", "abc"], "[1, 1000000]"),
    ],
)
def test_a_huge_count_or_seed_is_refused_before_anything_runs(argv, allowed, tmp_path, capsys):
    assert main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "compare" else [])]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{argv[-2]}: " in err and f"allowed: an integer in {allowed}" in err
    assert "Traceback" not in err


def test_ctrl_c_before_a_command_handles_it_is_one_line_and_130(monkeypatch, capsys) -> None:
    """Ctrl-C while typer and the command modules load (seconds on a loaded machine) printed a
    traceback through `import typer`."""
    import optimlab.cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err


def test_an_error_after_a_swallowed_ctrl_c_is_still_an_interrupt(monkeypatch, capsys) -> None:
    """A Ctrl-C during numpy's import was swallowed there and surfaced as "module 'numpy' has
    no attribute 'matrix'" with a traceback; an error without a Ctrl-C still propagates."""
    import os
    import signal

    import optimlab.cli as cli

    def swallowed(argv=None):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_kill(signal.pthread_self(), 0)  # let the handler run here
        except KeyboardInterrupt:
            pass  # what a library's import did with it
        raise AttributeError("module 'numpy' has no attribute 'matrix'")

    def broken(argv=None):
        raise AttributeError("a bug")

    previous = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(cli, "main", swallowed)
        with pytest.raises(SystemExit) as exited:
            cli.run()
        assert exited.value.code == 130
        assert capsys.readouterr().err.strip() == "interrupted"
        monkeypatch.setattr(cli, "main", broken)
        with pytest.raises(AttributeError, match="a bug"):
            cli.run()
    finally:
        signal.signal(signal.SIGINT, previous)
