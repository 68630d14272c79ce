"""Learning-rate-free and schedule-free optimizers in compare.

An optimizer declared ``learning_rate_free`` (Prodigy) runs at its defaults: one point (its
default ``lr``) instead of the grid, its seeds there, no separate default-rate runs, no Optuna
study; the report shows it apart. An optimizer with Schedule-Free's ``train()``/``eval()``
modes gets the tuned grid but never a schedule. The optimizer here is a throwaway, registered
for the test only (Prodigy itself lives in its own module): plain SGD declared LR-free, with
default lr 0.05, so that "ran at its defaults" is visible in every trial's hyperparameters.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from optimlab.cli import main
from optimlab.lab.protocol import Comparison, Planner, contenders
from optimlab.lab.store import ResultStore
from optimlab.lab.summary import summarize_store
from optimlab.optim.base import Optimizer, scaled_sub_
from optimlab.optim.declaration import OptimizerInfo
from optimlab.optim.hyperparameters import NON_NEGATIVE
from optimlab.optim.registry import registered

NAME = "free-sgd"
# a rate plain SGD trains quadratic-deep at (0.05 explodes: its loss ends 45,000× step 0,
# which compare rightly stores as diverged)
DEFAULT_LR = 0.002


class FreeSGD(Optimizer):
    """θ ← θ − η·g, declared learning-rate-free for the test."""

    name = NAME
    DEFAULTS = {"torch": {"lr": DEFAULT_LR}, "keras": {"lr": DEFAULT_LR}}
    RANGES = {"lr": NON_NEGATIVE}
    COUNTS_STEPS = False

    def __init__(self, params: Any, lr: float | None = None, **options: Any) -> None:
        super().__init__(params, {"lr": lr}, **options)

    @staticmethod
    def reference_rule(param, grad, state, group, step) -> None:
        scaled_sub_(param, grad, group["lr"])


INFO = OptimizerInfo(
    name=NAME,
    cls=FreeSGD,
    title="LR-free SGD (test only)",
    family="none",
    rule="θ ← θ − η·g",
    learning_rate_free=True,
)

GRID = [3e-3, 3e-2, 3e-1]
SEEDS = 2


@pytest.fixture
def free_sgd():
    with registered(INFO) as info:
        yield info


def comparison(optimizers: str, schedule: str = "constant") -> Comparison:
    c = Comparison(
        [("quadratic-deep", 12)],
        contenders(optimizers),
        GRID,
        seeds=SEEDS,
        schedule=schedule,
        evals=4,
        default_seeds=1,
    )
    c.resolve()
    return c


def planned(c: Comparison) -> list:
    return [spec for spec, _ in Planner(c, set(), lambda keys: {}).start()]


def test_lr_free_runs_one_point_at_its_defaults_and_no_default_trials(free_sgd):
    c = comparison(f"sgd,{NAME}")
    free = c.optimizers[1]
    assert free.learning_rate_free and not c.optimizers[0].learning_rate_free
    specs = c.grid_trials("quadratic-deep", 12, free)
    assert [s.hyperparameters for s in specs] == [{"lr": DEFAULT_LR}]
    assert c.default_trials("quadratic-deep", 12, free) == []
    first = planned(c)
    assert [s.lr for s in first if s.optimizer == NAME] == [DEFAULT_LR]
    # sgd: the grid plus its default-rate run, as before
    assert sorted(s.lr for s in first if s.optimizer == "sgd") == sorted([*GRID, 0.001])


def test_a_fixed_lr_makes_it_an_ordinary_entry(free_sgd):
    c = comparison(f"{NAME}:lr=0.2")
    assert not c.optimizers[0].learning_rate_free


def test_schedule_free_never_gets_the_schedule():
    c = comparison("sgd,schedulefree-sgd", schedule="cosine")
    sgd, sf = c.optimizers
    assert sf.schedule_free and not sgd.schedule_free
    assert {s.schedule for s in c.grid_trials("quadratic-deep", 12, sgd)} == {"cosine"}
    assert {s.schedule for s in c.grid_trials("quadratic-deep", 12, sf)} == {"constant"}
    assert [s.lr for s in c.grid_trials("quadratic-deep", 12, sf)] == GRID  # still tuned
    assert {s.schedule for s in c.default_trials("quadratic-deep", 12, sf)} == {"constant"}


def test_a_users_schedulefree_class_is_schedule_free_too():
    pytest.importorskip("schedulefree")
    c = comparison("schedulefree.sgd_schedulefree:SGDScheduleFree", schedule="cosine")
    assert c.optimizers[0].schedule_free
    assert {s.schedule for s in c.grid_trials("quadratic-deep", 12, c.optimizers[0])} == {
        "constant"
    }


def test_compare_reports_lr_free_apart(free_sgd, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", f"sgd,{NAME}"]
    args += ["--steps", "12", "--seeds", str(SEEDS), "--grid-points", "2", "--workers", "1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    words = " ".join(printed.split())  # rich folds long lines
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["problems"]["quadratic-deep"][NAME]
    assert entry["learning_rate_free"] is True
    assert entry["best_lr"] == DEFAULT_LR
    assert [p["lr"] for p in entry["lr_sensitivity"]] == [DEFAULT_LR]
    assert entry["seeds"] == SEEDS and entry["default"]["seeds"] == SEEDS
    assert entry["protocol"].startswith("learning-rate-free: run at its defaults")
    assert summary["run"]["learning_rate_free"] == [NAME]
    assert summary["problems"]["quadratic-deep"]["sgd"]["learning_rate_free"] is False
    # trials: sgd 2 grid points + 1 more seed + its default-rate runs; the LR-free one its seeds only
    assert summary["run"]["trials"] == 2 + (SEEDS - 1) + summary["run"]["default_seeds"] + SEEDS
    store = ResultStore(out)
    assert (
        sorted(t.spec.lr for t in store.get().values() if t.spec.optimizer == NAME)
        == [DEFAULT_LR] * SEEDS
    )
    # terminal: the row says default, the caption says how it ran; below the tuned ones
    assert f"{DEFAULT_LR:g} (default)" in printed
    assert f"learning-rate-free (below the rule): {NAME} — run at its defaults" in words
    lines = printed.splitlines()

    def table_row(name: str) -> int:  # the first table row (a rank, then the name)
        return next(
            i
            for i, line in enumerate(lines)
            if line.split()[:1] and line.split()[0].isdigit() and line.split()[1:2] == [name]
        )

    row, sgd_row = table_row(NAME), table_row("sgd")
    assert sgd_row < row
    html = (out / "index.html").read_text()
    assert "learning-rate-free: run at its defaults, no learning-rate grid" in html
    # rerun: everything reused
    assert main([*args, "--out", str(out)]) == 0
    assert "0 trials run" in capsys.readouterr().out


def test_lr_free_is_not_tuned_by_optuna(free_sgd, tmp_path):
    pytest.importorskip("optuna")
    from optimlab.lab.tuner import OptunaTuner

    tuner = OptunaTuner(str(tmp_path), trials=3, search="lr", lr_range=(1e-3, 1.0))
    c = Comparison([("quadratic-deep", 12)], contenders(NAME), [], seeds=SEEDS, tuner=tuner)
    c.resolve()
    specs = c.grid_trials("quadratic-deep", 12, c.optimizers[0])
    assert [s.lr for s in specs] == [DEFAULT_LR]


def test_schedulefree_summary_says_it_was_never_scheduled(tmp_path):
    c = comparison("schedulefree-sgd", schedule="cosine")
    store = ResultStore(tmp_path)
    from optimlab.lab.protocol import run_comparison

    run_comparison(c, store, workers=1)
    summary = summarize_store(c, store)
    entry = summary["problems"]["quadratic-deep"]["schedulefree-sgd"]
    assert entry["schedule_free"] is True
    assert "constant schedule (not cosine" in entry["protocol"]
    assert summary["run"]["schedule_free"] == ["schedulefree-sgd"]
    assert {t.spec.schedule for t in store.get().values()} == {"constant"}
