"""TensorBoard curves of a trial (`optimlab.lab.curve_log`), read back with TensorBoard's own
reader, and the export of every curve point (`optimlab export --curves`)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optimlab.cli import main
from optimlab.lab import curve_log
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


@pytest.fixture(scope="module")
def trained() -> tuple[TrialSpec, TrialResult]:
    spec = TrialSpec(
        "digits-logreg",
        "adam",
        {"lr": 0.01},
        seed=1,
        steps=30,
        evals=6,
        problem_label="digits-logreg",
    )
    result = train(spec)
    assert result.status == "ok"
    return spec, result


def test_curves_read_back_with_tensorboard(trained, tmp_path: Path) -> None:
    spec, result = trained
    run = curve_log.write_trial(tmp_path, spec, result)
    assert run == tmp_path / "digits-logreg" / "adam" / "lr=0.01" / "seed=1"
    scalars = read_scalars(run)
    curve = result.metrics["curve"]
    for key, tag in curve_log.CURVE_TAGS.items():
        assert [s for s, _ in scalars[tag]] == curve["step"]
        # TensorBoard stores float32
        np.testing.assert_array_equal(
            np.float32([v for _, v in scalars[tag]]), np.float32(curve[key])
        )
    assert scalars["final/test_accuracy"] == [
        (30, pytest.approx(result.metrics["test_accuracy"], rel=1e-6))
    ]
    assert len(list(run.iterdir())) == 1  # one event file, no staging left behind
    assert [p.name for p in run.parent.iterdir()] == ["seed=1"]


def test_writing_a_trial_again_replaces_its_run(trained, tmp_path: Path) -> None:
    spec, result = trained
    curve_log.write_trial(tmp_path, spec, result)
    run = curve_log.write_trial(tmp_path, spec, result)
    assert len(read_scalars(run)["loss/val"]) == len(result.metrics["curve"]["step"])


def test_null_points_are_left_out_and_a_failed_trial_has_no_curve(tmp_path: Path) -> None:
    spec = TrialSpec("quadratic-deep", "sgd", {"lr": 10.0}, steps=4, evals=4)
    curve = {"step": [0, 1, 2], "train_loss": [1.0, 5.0, None], "val_loss": [1.0, 6.0, None]}
    curve["val_accuracy"] = [None, None, None]
    diverged = TrialResult(
        "diverged", {"curve": curve, "steps_run": 2}, "non-finite loss at step 3"
    )
    scalars = read_scalars(curve_log.write_trial(tmp_path, spec, diverged))
    assert scalars["loss/train"] == [(0, 1.0), (1, 5.0)]
    assert "accuracy/val" not in scalars
    failed = TrialResult("failed", {}, "ValueError: boom")
    other = TrialSpec("quadratic-deep", "sgd", {"lr": 1.0})
    assert read_scalars(curve_log.write_trial(tmp_path, other, failed)) == {}


def test_run_names_are_readable_and_distinct() -> None:
    base = TrialSpec(
        "/home/me/mine.py:make:n=3",
        "/home/me/opt.py:MyOpt",
        {"lr": 0.001, "betas": [0.9, 0.99]},
        schedule="cosine",
        seed=2,
        steps=100,
        problem_label="mine.py:make:n=3",
    )
    assert curve_log.run_name(base, default_steps=100) == (
        "mine.py_make_n=3/opt.py_MyOpt,betas=0.9/0.99,cosine/lr=0.001/seed=2".replace(
            "0.9/0.99", "0.9_0.99"
        )
    )
    longer = TrialSpec(**{**base.__dict__, "steps": 200})
    assert curve_log.run_name(longer, default_steps=100).endswith(",steps=200/lr=0.001/seed=2")


def test_missing_tensorboard_is_a_clear_error(monkeypatch, trained, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(curve_log.CurveLogError, match=r"pip install 'optimlab\[tensorboard\]'"):
        curve_log.write_trial(tmp_path, *trained)


def test_export_curves_has_every_point_of_every_trial(trained, tmp_path: Path, capsys) -> None:
    store = ResultStore(tmp_path)
    spec, result = trained
    store.put(spec, result)
    other = TrialSpec("digits-logreg", "sgd", {"lr": 0.1}, steps=10, evals=3)
    store.put(other, train(other))
    expected = {
        (t.spec.key, step, train_loss, val_loss, accuracy)
        for t in store.iter()
        for step, train_loss, val_loss, accuracy in zip(*t.result.metrics["curve"].values())
    }
    assert main(["export", "--out", str(tmp_path), "--format", "csv", "--curves"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    got = {
        (
            r["key"],
            int(r["step"]),
            float(r["train_loss"]),
            float(r["val_loss"]),
            float(r["val_accuracy"]),
        )
        for r in rows
    }
    assert got == expected and len(rows) == len(expected)
    assert {r["optimizer"] for r in rows} == {"adam", "sgd"}
    assert main(["export", "--out", str(tmp_path), "--format", "json", "--curves"]) == 0
    points = json.loads(capsys.readouterr().out)
    assert {
        (p["key"], p["step"], p["train_loss"], p["val_loss"], p["val_accuracy"]) for p in points
    } == expected
    assert points[0]["hyperparameters"] == spec.hyperparameters
