"""`optimlab compare` and `optimlab export` end to end: a tiny comparison, resume, a run killed
with SIGKILL, every bad input, the exported fields."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimlab.cli import main

#: a tiny comparison, whatever the executor (tests/test_ray_executor.py runs it on Ray)
TINY_COMPARISON = [
    "--problems",
    "quadratic-deep,digits-logreg",
    "--optimizers",
    "sgd,adam",
    "--steps",
    "15",
    "--seeds",
    "2",
    "--grid-points",
    "3",
]
TINY = [*TINY_COMPARISON, "--workers", "1"]
# per (problem, optimizer): 3 grid points + 1 extra seed at the best rate + 2 default seeds
TINY_TRIALS = 2 * 2 * (3 + 1 + 2)


def counts(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) trials run, (\d+) reused", output)
    assert match, output
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", *TINY, "--out", str(out)]) == 0
    return out


def test_tiny_comparison_writes_results_and_report(tiny_run: Path) -> None:
    assert (tiny_run / "index.html").is_file()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert set(summary["problems"]) == {"quadratic-deep", "digits-logreg"}
    for problem in summary["problems"].values():
        assert set(problem) == {"sgd", "adam"}
        for entry in problem.values():
            assert entry["best_lr"] in summary["run"]["lr_grid"]
            assert entry["seeds"] == 2 and len(entry["lr_sensitivity"]) == 3
    assert summary["run"]["trials"] == TINY_TRIALS
    connection = sqlite3.connect(tiny_run / "results.sqlite")
    rows = connection.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM trials").fetchone()
    assert rows == (TINY_TRIALS, TINY_TRIALS)


def test_rerun_resumes_without_running_anything(tiny_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["compare", *TINY, "--out", str(tiny_run)]) == 0
    assert counts(capsys.readouterr().out) == (0, TINY_TRIALS)


@pytest.mark.slow
def test_fresh_starts_over(tmp_path: Path, capsys) -> None:
    args = ["compare", *TINY[:4], "--optimizers", "sgd", "--steps", "5", "--grid-points", "2"]
    args += ["--seeds", "1", "--workers", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    first = counts(capsys.readouterr().out)
    assert main([*args, "--fresh"]) == 0
    assert counts(capsys.readouterr().out) == first and first[1] == 0


def test_export_json_has_every_trial_and_field(tiny_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["export", "--out", str(tiny_run), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == TINY_TRIALS
    for record in records:
        for field in ("problem", "optimizer", "hyperparameters", "seed", "status", "metrics"):
            assert field in record
        assert record["status"] in ("ok", "diverged", "failed")
        if record["status"] == "ok":
            assert {"final_train_loss", "final_test_loss"} <= set(record["metrics"])
            has_accuracy = "test_accuracy" in record["metrics"]
            assert has_accuracy == (record["problem"] == "digits-logreg")
    assert {r["optimizer"] for r in records} == {"sgd", "adam"}


def test_export_csv(tiny_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["export", "--out", str(tiny_run), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == TINY_TRIALS
    assert {"problem", "optimizer", "hyperparameters", "seed", "status"} <= set(rows[0])
    assert "metrics.final_train_loss" in rows[0] and "metrics.test_accuracy" in rows[0]
    assert all("lr" in json.loads(row["hyperparameters"]) for row in rows)


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--suite", "huge"], "--suite", "unknown suite 'huge'; valid: quick, full"),
        (["--problems", "mnist3d"], "--problems", "unknown problem 'mnist3d'; valid names:"),
        (["--problems", "digits-mlp:depth=0"], "--problems", "depth=0 is not allowed"),
        (["--optimizers", "adamz"], "--optimizers", "unknown optimizer 'adamz'; valid names:"),
        (["--optimizers", "adam:foo=1"], "--optimizers", "unknown option 'foo' for optimizer"),
        (["--seeds", "0"], "--seeds", "0; allowed: an integer in [1, 10000]"),
        (["--workers", "0"], "--workers", "0; allowed: an integer in [1, 1024]"),
        (["--steps", "-3"], "--steps", "-3; allowed: an integer in [1, 100000000]"),
        (["--grid-points", "0"], "--grid-points", "0; allowed: an integer in [1, 1000]"),
        (["--schedule", "linear"], "--schedule", "unknown schedule 'linear'; valid schedules"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, option, message, tmp_path: Path, capsys) -> None:
    code = main(["compare", *args, "--out", str(tmp_path / "out")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"Invalid value for {option}" in error and message in error
    assert not (tmp_path / "out" / "results.sqlite").exists()  # nothing ran


def test_unwritable_output_directory(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["compare", *TINY, "--out", str(blocker / "out")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for --out" in error and "is a file, not a directory" in error


def test_corrupted_database_is_an_error_not_an_overwrite(tmp_path: Path, capsys) -> None:
    database = tmp_path / "results.sqlite"
    database.write_bytes(b"garbage" * 1000)
    assert main(["compare", *TINY, "--out", str(tmp_path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "not a readable optimlab results database" in error and "--fresh" in error
    assert database.read_bytes() == b"garbage" * 1000


def test_database_of_another_version_is_an_error(tmp_path: Path, capsys) -> None:
    from optimlab.lab.store import ResultStore

    ResultStore(tmp_path)
    connection = sqlite3.connect(tmp_path / "results.sqlite")
    connection.execute("UPDATE meta SET value = '0.0.1' WHERE key = 'optimlab_version'")
    connection.commit()
    connection.close()
    assert main(["compare", *TINY, "--out", str(tmp_path)]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "written by optimlab 0.0.1" in error


def test_export_reads_another_versions_results_and_never_suggests_fresh(
    tmp_path: Path, capsys
) -> None:
    # export is read-only: it reads a database another optimlab version wrote in the same
    # schema (exporting is what one does before starting over), and its errors don't advise
    # `--fresh`, an option export doesn't have (it used to, for both cases below)
    from optimlab.lab.store import SCHEMA_VERSION, ResultStore
    from optimlab.lab.trial import TrialResult, TrialSpec

    store = ResultStore(tmp_path / "old")
    spec = TrialSpec(problem="P", optimizer="adam", hyperparameters={"lr": 0.1}, seed=3, steps=5)
    store.put(spec, TrialResult(status="ok", reason="", metrics={"final_val_loss": 0.25}))
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE meta SET value = '0.0.9' WHERE key = 'optimlab_version'")
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path / "old"), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "adam" in out and "0.25" in out
    with sqlite3.connect(store.path) as connection:
        connection.execute(
            f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'"
        )
    assert main(["export", "--out", str(tmp_path / "old")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "read it with optimlab 0.0.9" in error and "--fresh" not in error
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.sqlite").write_bytes(b"garbage" * 1000)
    assert main(["export", "--out", str(tmp_path / "bad")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "not a readable optimlab results database" in error and "--fresh" not in error


def test_export_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["export", "--out", str(tmp_path)]) == 2
    assert "no results database in" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path), "--format", "xml"]) == 2
    assert "'xml'; valid: json, csv" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_kill_9_loses_nothing_finished_and_duplicates_nothing(tmp_path: Path, capsys) -> None:
    args = [
        "compare",
        "--problems",
        "quadratic-deep",
        "--optimizers",
        "sgd,adam,nadam",
        "--steps",
        "150",
        "--seeds",
        "2",
        "--grid-points",
        "4",
        "--out",
        str(tmp_path),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "optimlab.cli", *args, "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = tmp_path / "results.sqlite"
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists():
            try:
                connection = sqlite3.connect(database, timeout=5)
                stored = connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
                connection.close()
            except sqlite3.OperationalError:
                stored = 0
        if stored >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the comparison ended before it could be killed"
    assert stored >= 3
    workers = _children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # the workers die with their parent (no orphans left computing)
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)

    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = dict(connection.execute("SELECT key, finished_at FROM trials"))
    connection.close()
    planned = 3 * (4 + 1 + 2)
    assert 3 <= len(before) < planned

    capsys.readouterr()
    assert main([*args, "--workers", "1"]) == 0
    run, reused = counts(capsys.readouterr().out)
    assert reused == len(before) and run == planned - len(before)
    connection = sqlite3.connect(database)
    after = dict(connection.execute("SELECT key, finished_at FROM trials"))
    total, distinct = connection.execute(
        "SELECT COUNT(*), COUNT(DISTINCT key) FROM trials"
    ).fetchone()
    connection.close()
    assert total == distinct == planned
    assert all(after[key] == finished for key, finished in before.items())  # not rerun


def test_diverged_optimizer_is_reported_not_a_crash(tmp_path: Path, capsys) -> None:
    # gradient descent at lr 10 on the quadratic (λmax ≈ 53) diverges; tuning is off (fixed lr)
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd:lr=10,adam"]
    args += ["--steps", "30", "--grid-points", "2", "--seeds", "1", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["problems"]["quadratic-deep"]["sgd:lr=10"]
    assert entry["status"] == "diverged" and entry["best_lr"] is None
    assert entry["lr_sensitivity"] == [{"lr": 10.0, "status": "diverged", "final_val_loss": None}]
    # never ranked: not last, not at all (alone it used to be ranked #1)
    assert entry["rank"] is None and "sgd:lr=10" not in [r["optimizer"] for r in summary["ranking"]]
    assert summary["unranked"][0]["optimizer"] == "sgd:lr=10"
    assert entry["default"]["seeds_ok"] == 1  # the default rate (1e-3) is stable
    assert "all diverged" in (tmp_path / "index.html").read_text()
    capsys.readouterr()
    assert main(["export", "--out", str(tmp_path)]) == 0
    records = json.loads(capsys.readouterr().out)
    diverged = [r for r in records if r["status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0]["reason"].startswith("non-finite loss at step")


USER_FILE = """
import torch
from optimlab.problems import Problem
from optimlab.problems.models import seeded

def make(n=200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    split = (x, y)
    return Problem(
        name="ignored", options={}, train=split, val=split, test=split,
        build_model=lambda seed: seeded(lambda: torch.nn.Linear(4, 2), seed),
        loss_fn=torch.nn.functional.cross_entropy, batch_size=32,
    )
"""


def test_user_problem_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    out = tmp_path / "out"
    args = ["compare", "--problem", f"{path}:make:n=100", "--optimizers", "adam"]
    args += ["--steps", "20", "--grid-points", "2", "--seeds", "2", "--workers", "1"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["problems"]) == ["mine.py:make:n=100"]
    assert summary["problems"]["mine.py:make:n=100"]["adam"]["test_accuracy_mean"] > 0.5


@pytest.mark.slow
def test_suites_are_what_the_issue_asks() -> None:
    from optimlab.cli.compare import build_comparison
    from optimlab.optim.registry import preset_optimizers

    quick = build_comparison("quick", None, None, None, "constant", None)
    labels = [quick.resolved[spec][1] for spec, _ in quick.problems]
    assert {"quadratic-deep", "digits-mlp", "mnist1d-mlp"} <= set(labels)
    # the vanishing-gradient pair: the same 10-layer net with sigmoid, and with ReLU + He init
    deep = [quick.resolved[spec][0] for spec, _ in quick.problems if spec.startswith("deep-mlp")]
    assert len(deep) == 2 and all("depth=10" in spec for spec in deep)
    assert "activation=sigmoid" in deep[0]
    assert "activation=relu" in deep[1] and "init=he" in deep[1]
    assert [c.name for c in quick.optimizers] == preset_optimizers("classic")  # the nine
    assert len(quick.grid) == 8 and quick.seeds == 3
    full = build_comparison("full", None, None, None, "constant", None)
    assert len(full.grid) == 36 and full.seeds == 10 and len(full.problems) == 7


@pytest.mark.slow
def test_diagnose_links_a_diagnosis_of_each_problem_from_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["compare", "--problems", "digits-logreg", "--optimizers", "sgd", "--steps", "10"]
    args += ["--grid-points", "2", "--seeds", "1", "--workers", "1", "--diagnose"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    link = summary["problem_info"]["digits-logreg"]["diagnosis"]
    page = out / link
    assert page.is_file(), link
    diagnosis = json.loads((page.parent / "diagnosis.json").read_text())
    assert {"lr", "hessian"} <= set(diagnosis)  # the diagnosis of this problem, not a stub
    assert diagnosis["hessian"]["lambda_max"] > 0  # logistic regression: a convex loss
    assert f'href="{link}"' in (out / "index.html").read_text()
