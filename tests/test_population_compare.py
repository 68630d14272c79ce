"""Populations through the executors and `optimlab compare --population auto|off`: members are
stored as ordinary trials (same keys), resumed member by member, the unbatchable fall back to
single trials with the reason said once, and Ray runs a population as one task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.lab.executor import Executor
from optimlab.lab.population import train_population
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from optimlab.lab.trial import TrialSpec
from optimlab.problems import get_problem

SMALL = ["--optimizers", "sgd", "--steps", "12", "--seeds", "2", "--grid-points", "3"]
SMALL += ["--workers", "1"]


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def stored(out: Path) -> dict[str, object]:
    return {t.spec.key: t.result for t in ResultStore(out).iter()}


def test_compare_with_and_without_populations_stores_the_same_trials(tmp_path, capsys):
    """The same keys either way; the batched run's members say so (population_size) and agree
    with the single trials to float32 rounding."""
    args = ["compare", "--problems", "digits-mlp:width=16", *SMALL]
    assert main([*args, "--population", "auto", "--out", str(tmp_path / "auto")]) == 0
    assert main([*args, "--population", "off", "--out", str(tmp_path / "off")]) == 0
    capsys.readouterr()
    batched, single = stored(tmp_path / "auto"), stored(tmp_path / "off")
    assert set(batched) == set(single) and len(batched) == 3 + 1 + 2
    # one population: 3 grid rates and 2 default-rate seeds; the extra seed at
    # the best rate, submitted alone once the grid is done, runs alone
    sizes = [r.metrics.get("population_size") for r in batched.values()]
    assert sizes.count(5) == 5 and sizes.count(None) == 1
    assert not any("population_size" in r.metrics for r in single.values())
    for key, result in batched.items():
        assert result.status == single[key].status
        if result.status == "ok":
            a, b = result.metrics["final_val_loss"], single[key].metrics["final_val_loss"]
            assert math.isclose(a, b, rel_tol=1e-4), key


#: a user's problem whose model has torch's own nn.Dropout (masks from the global generator)
TORCH_DROPOUT = """
import torch
from optimlab.problems import Problem
from optimlab.problems.models import seeded

def make(n=64):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    split = (x, (x[:, 0] > 0).long())
    model = lambda: torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.2))
    return Problem(
        name="ignored", options={}, train=split, val=split, test=split,
        build_model=lambda seed: seeded(model, seed),
        loss_fn=torch.nn.functional.cross_entropy, batch_size=16,
    )
"""


def test_unbatchable_populations_run_singly_and_say_why_once(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(TORCH_DROPOUT)
    args = ["compare", "--problems", f"{tmp_path / 'mine.py'}:make", *SMALL]
    assert main([*args, "--population", "auto", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("population: single trials for problem") == 1, err
    assert "Dropout" in err
    assert not any("population_size" in r.metrics for r in stored(tmp_path / "out").values())


def test_bad_population_mode_exits_2(tmp_path, capsys):
    code = main(["compare", *SMALL, "--population", "maybe", "--out", str(tmp_path)])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "--population" in error and "'maybe'" in error and "auto, off" in error


def test_a_population_resumes_member_by_member(tmp_path):
    """Members already stored are not rerun: the population trains the missing ones only, and
    each is stored under its trial's own key."""
    problem = get_problem("quadratic-deep")
    specs = [
        TrialSpec(problem.spec, "adam", {"lr": lr}, seed=seed, steps=10, evals=4)
        for lr, seed in ((0.01, 0), (0.1, 0), (0.1, 1))
    ]
    store = ResultStore(tmp_path)
    store.put(specs[1], train(specs[1], problem))
    with Executor(store, 1, population="auto") as executor:
        assert [executor.submit(s) for s in specs] == [True, False, True]
        finished = [executor.wait_one() for _ in range(2)]
    assert [s.key for s, _ in finished] == [specs[0].key, specs[2].key]
    assert {r.metrics["population_size"] for _, r in finished} == {2}
    assert store.count() == 3
    again = train_population([specs[0], specs[2]], problem)
    assert [r.metrics["curve"] for _, r in finished] == [r.metrics["curve"] for r in again]


def test_ray_runs_a_population_as_one_task(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'optimlab[ray]'")
    import ray

    from optimlab.lab.ray_executor import RayExecutor

    problem = get_problem("quadratic-deep")
    specs = [
        TrialSpec(problem.spec, "sgd", {"lr": lr}, seed=seed, steps=10, evals=4)
        for lr, seed in ((0.01, 0), (0.02, 1), (0.04, 2))
    ]
    store = ResultStore(tmp_path)
    started_here = not ray.is_initialized()
    with RayExecutor(store, 1, population="auto") as executor:
        for spec in specs:
            executor.submit(spec)
        results = {s.key: r for s, r in (executor.wait_one() for _ in specs)}
        assert len(executor._refs) == 0
    if started_here:
        assert not ray.is_initialized()
    local = train_population(specs, problem)
    for spec, expected in zip(specs, local, strict=True):
        assert results[spec.key].metrics["population_size"] == 3
        assert results[spec.key].metrics["curve"] == expected.metrics["curve"]
    assert store.count() == 3
