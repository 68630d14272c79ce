"""`optimlab diagnose` and `optimlab lr-find` through `main(argv)`, and `run_diagnosis`."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from optimlab.cli import main
from optimlab.diagnose import run_diagnosis


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from intra-op threads, and under ``pytest -n 2`` on two cores
    the workers' spinning threads slow each other down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lr_find_prints_a_json_suggestion(capsys, tmp_path):
    plot = tmp_path / "curve.png"
    code = main(["lr-find", "--problem", "digits-logreg", "--optimizer", "adam", "--json",
                 "--plot", str(plot)])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["suggestion"]) and result["suggestion"] > 0
    assert result["rule"] in ("valley", "steepest", "fallback")
    assert len(result["lrs"]) == result["iterations"] <= 100
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_diagnose_writes_a_self_contained_page_and_json(capsys, tmp_path):
    out = tmp_path / "diag"
    code = main(["diagnose", "--problem", "deep-mlp:depth=4:width=16:activation=sigmoid",
                 "--optimizer", "sgd:lr=0.1", "--out", str(out), "--json"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert set(result) == {"lr", "gradflow", "hessian", "landscape", "meta"}
    # progress lines without rich's source location (a log file read "diagnose.py:128")
    assert captured.err and ".py:" not in captured.err
    # the title's label keeps the options given (was "deep-mlp:activation=sigmoid", depth lost)
    assert result["meta"]["problem_label"] == "deep-mlp:depth=4:width=16:activation=sigmoid"
    for key in ("lambda_max", "lambda_min", "trace", "condition_number", "mode"):
        assert key in result["hessian"]
    assert result["hessian"]["mode"] == "eval"
    for key in ("vanishing", "exploding", "layers", "advice"):
        assert key in result["gradflow"]
    assert len(result["gradflow"]["layers"]) == 5
    # A 4-layer sigmoid net's loss barely moves in the range test: flat, no number.
    assert result["lr"]["verdict"] == "flat" and result["lr"]["suggestion"] is None
    assert len(result["landscape"]["slice_2d"]["losses"]) == 21
    assert json.loads((out / "diagnosis.json").read_text()) == result
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 6
    # self-contained: no external resource of any kind
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    for section in ('id="lr"', 'id="gradflow"', 'id="hessian"', 'id="landscape"'):
        assert section in page


def test_run_diagnosis_skips_checks_that_do_not_apply():
    result = run_diagnosis("quadratic-deep", "sgd", "gradflow,hessian")
    assert "no Linear or Conv layer" in result["gradflow"]["skipped"]
    assert result["hessian"]["lambda_max"] == pytest.approx(53.13, rel=0.01)
    assert result["meta"]["checks"] == ["gradflow", "hessian"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["diagnose", "--problem", "nope"], ["--problem", "unknown problem 'nope'", "digits-mlp"]),
        (["diagnose", "--problem", "digits-mlp", "--checks", "lr,speed"],
         ["--checks", "'speed'", "valid: lr, gradflow, hessian, landscape"]),
        (["diagnose", "--problem", "digits-mlp", "--optimizer", "adam,sgd"],
         ["--optimizer", "names 2 optimizers"]),
        (["diagnose", "--problem", "digits-mlp", "--optimizer", "adam:lr=-1"],
         ["--optimizer", "lr=-1"]),
        (["diagnose", "--problem", "digits-mlp", "--optimizer", "adamz"],
         ["--optimizer", "unknown optimizer 'adamz'", "adam"]),
        (["diagnose", "--problem", "deep-mlp:depth=0"], ["--problem", "depth"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd:speed=2"],
         ["--optimizer", "unknown option 'speed'"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--plot", "x.svg"],
         ["--plot", "x.svg", ".png"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--num-iter", "1"],
         ["--num-iter", "1", "[2, 1000]"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--start-lr", "0"],
         ["--start-lr", "0.0", "> 0"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--end-lr", "inf"],
         ["--end-lr", "inf", "finite"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--start-lr", "1",
          "--end-lr", "0.1"], ["--end-lr", "must be greater than --start-lr 1.0"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--suggest", "best"],
         ["--suggest", "'best'", "valley, steepest, minimum"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "sgd", "--num-iter", "ten"],
         ["--num-iter", "'ten'", "an integer in [2, 1000]"]),
        (["lr-find", "--problem", "digits-mlp", "--seed", "-1"], ["--seed", "-1", "an integer in [0, 9223372036854775807]"]),
        (["diagnose", "--problem", "digits-mlp", "--seed", "x"], ["--seed", "'x'", "an integer in [0, 9223372036854775807]"]),
        (["lr-find", "--problem", "digits-mlp", "--optimizer", "prodigy"],
         ["--optimizer", "'prodigy' is learning-rate free", "does not apply"]),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_message(argv, words, capsys):
    assert main(argv) == 2
    error = " ".join(capsys.readouterr().err.split())
    for word in words:
        assert word in error


def test_run_diagnosis_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="valid: lr, gradflow, hessian, landscape"):
        run_diagnosis("digits-mlp", "adam", "curvature")
    with pytest.raises(ValueError, match="unknown optimizer"):
        run_diagnosis("digits-mlp", "no-such-optimizer", "lr")


@pytest.fixture
def no_computation(monkeypatch):
    """Fail the test if a problem is ever built: the path must be refused before any work."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a problem was built before the output path was checked")

    monkeypatch.setattr("optimlab.problems.get_problem", refuse)
    monkeypatch.setattr("optimlab.problems.registry.get_problem", refuse, raising=False)


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("missing-dir/x.png", "directory 'missing-dir' does not exist"),
        ("afile/x.png", "'afile' is not a directory"),
        ("adir", "'adir' is a directory"),
        ("/proc/x.png", "cannot write in '/proc'"),
    ],
)
def test_lr_find_plot_path_is_checked_before_any_work(where, why, tmp_path, monkeypatch,
                                                       capsys, no_computation):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir.png").mkdir()
    where = "adir.png" if where == "adir" else where
    why = why.replace("'adir'", "'adir.png'")
    argv = ["lr-find", "--problem", "digits-mlp", "--optimizer", "adam", "--plot", where]
    assert main(argv) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "--plot" in error and where in error and why in error


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("afile", "'afile': exists and is not a directory"),
        ("afile/sub", "'afile' is a file, not a directory"),
        ("/proc/nope", "cannot write in '/proc'"),
    ],
)
def test_diagnose_out_path_is_checked_before_any_work(where, why, tmp_path, monkeypatch,
                                                      capsys, no_computation):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(["diagnose", "--problem", "digits-mlp", "--out", where]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "--out" in error and why in error
    assert (tmp_path / "afile").read_text() == ""
