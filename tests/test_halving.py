"""`--tuner halving` (issue 14, point 6): the learning-rate grid successively halved by Optuna's
SuccessiveHalvingPruner. The verdicts are checked against successive halving's rule computed
here from the stored curves (synchronous in a population, asynchronous — in grid order — for
single trials), compaction against a population that never had the pruned members (bit for
bit, float64), and the command's store, resume, export and bad input."""

from __future__ import annotations

import json

import pytest

from optimlab.cli import main
from optimlab.lab.halving import HalvingPolicy, RungJudge, keep_at_rung, run_halving
from optimlab.lab.population import train_population
from optimlab.lab.store import ResultStore
from optimlab.problems import get_problem
from tests.test_population import float64, specs_for

pytest.importorskip("optuna", reason="Optuna is not installed: pip install 'optimlab[optuna]'")

#: 27 steps, 9 evaluations: r = ⌈27 / 2²⌉ = 7, so rungs at steps 7 and 14, decided at the first
#: evaluations at or after them (11 and 16)
STEPS, EVALS = 27, 9
RATES = [(lr, 0) for lr in (1e-3, 3e-3, 1e-2, 2e-2, 3e-2, 3.5e-2)]
POLICY = HalvingPolicy()
TIMING = {"seconds", "cpu_seconds", "seconds_per_step", "warmup_seconds", "curve_seconds"}


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def kept_by_rule(values: list[float], eta: int = POLICY.reduction_factor) -> list[bool]:
    """Successive halving's rule at a synchronous rung: the best max(1, ⌊n/η⌋) go on."""
    keep = max(1, len(values) // eta)
    threshold = sorted(values)[keep - 1]
    return [v <= threshold for v in values]


def value_at(result, step: int) -> float:
    curve = result.metrics["curve"]
    return curve["val_loss"][curve["step"].index(step)]


def test_the_rungs_are_at_r_eta_k_evaluated_at_the_next_evaluation():
    assert POLICY.reduction_factor == 2
    assert POLICY.min_resource(STEPS) == 7
    assert POLICY.rung_steps(STEPS, EVALS) == [11, 16]
    assert POLICY.min_resource(1500) == 375 and POLICY.rung_steps(1500, 30) == [400, 800]
    eta3 = HalvingPolicy(reduction_factor=3)  # r = ⌈1500 / 9⌉ = 167 and 501: evaluated at
    assert eta3.rung_steps(1500, 30) == [200, 566]  # 200 and round(1500^(13/15)) = 566
    with pytest.raises(ValueError, match="reduction_factor=1; allowed: >= 2"):
        HalvingPolicy(reduction_factor=1)


def test_a_synchronous_rung_keeps_what_the_rule_keeps():
    values = [5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 0.5, 7.0, 6.0]  # 9 points, η = 2: the best 4 go on
    assert keep_at_rung(values, POLICY) == kept_by_rule(values)
    assert sum(kept_by_rule(values)) == 4
    eta3 = HalvingPolicy(reduction_factor=3)  # η = 3: the best 3
    assert (
        keep_at_rung(values, eta3) == kept_by_rule(values, 3) and sum(kept_by_rule(values, 3)) == 3
    )
    assert keep_at_rung([2.0, 1.0], POLICY) == [False, True]  # fewer than η: the best alone


def test_a_population_stops_what_the_pruner_says_at_each_rung_and_compacts():
    """Real pruner, tiny problem: at each rung the members outside the best third stop there
    (status pruned, curve up to the rung), the rest finish; the survivors' numbers are bit for
    bit those of a population that never had the pruned members."""
    problem = float64(get_problem("quadratic-deep"))
    specs = specs_for(problem, "sgd", RATES, steps=STEPS, evals=EVALS)
    results = train_population(specs, problem, rung=RungJudge(POLICY, STEPS, EVALS))
    standing = list(range(len(specs)))
    for step in POLICY.rung_steps(STEPS, EVALS):
        verdict = kept_by_rule([value_at(results[i], step) for i in standing])
        for i, kept in zip(standing, verdict, strict=True):
            if not kept:
                r = results[i]
                assert r.status == "pruned", (specs[i].lr, r.status)
                assert r.metrics["pruned_at"] == step == r.metrics["curve"]["step"][-1]
                assert "SuccessiveHalvingPruner" in r.reason and f"step {step}" in r.reason
        standing = [i for i, kept in zip(standing, verdict, strict=True) if kept]
    assert len(standing) == 1  # 6 points: 3 after the first rung, 1 after the second
    assert [results[i].status for i in standing] == ["ok"]
    assert results[standing[0]].metrics["steps_run"] == STEPS
    assert sum(r.status == "pruned" for r in results) == len(specs) - 1

    survivors = [specs[i] for i in standing]
    alone = train_population([*survivors, specs[0]], problem)[: len(survivors)]
    for i, b in zip(standing, alone, strict=True):
        a = results[i]
        assert {k: v for k, v in a.metrics.items() if k not in TIMING | {"population_size"}} == {
            k: v for k, v in b.metrics.items() if k not in TIMING | {"population_size"}
        }


def test_single_trials_are_asked_in_turn_as_asynchronous_successive_halving():
    """Without a population each point is an Optuna trial of one study, asking after each
    evaluation; a point is compared with those that reached the rung before it."""
    problem = float64(get_problem("quadratic-deep"))
    # the largest rate (the best here) first: the later, smaller ones fall behind at the rungs
    specs = specs_for(problem, "sgd", RATES[::-1], steps=STEPS, evals=EVALS)
    results = run_halving(specs, problem, POLICY.single())
    seen: dict[int, list[float]] = {}
    for spec, result in zip(specs, results, strict=True):
        expected = "ok"
        for k, step in enumerate(POLICY.rung_steps(STEPS, EVALS)):
            value = value_at(result, step)
            seen.setdefault(k, []).append(value)
            if not kept_by_rule(seen[k])[-1]:
                expected = "pruned"
                assert result.metrics["pruned_at"] == step, spec.lr
                break
        assert result.status == expected, (spec.lr, result.status, result.reason)
    assert results[0].status == "ok" and any(r.status == "pruned" for r in results)


ARGS = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd", "--steps", str(STEPS)]
ARGS += ["--evals", str(EVALS), "--grid-points", "6", "--seeds", "2", "--workers", "1"]
ARGS += ["--tuner", "halving"]


def test_the_command_stores_pruned_points_resumes_and_exports_them(tmp_path, capsys, monkeypatch):
    """A population (the single-trial path is the test above's); resumed and exported."""
    population = "auto"
    out = str(tmp_path / "run")
    assert main([*ARGS, "--population", population, "--out", out]) == 0
    first = capsys.readouterr().out
    rows = list(ResultStore(out, create=False).iter())
    grid = [t for t in rows if t.spec.seed == 0 and t.spec.lr != 0.001]
    assert {t.result.status for t in grid} >= {"ok", "pruned"}
    pruned = [t for t in grid if t.result.status == "pruned"]
    assert all(t.result.metrics["pruned_at"] < STEPS for t in pruned)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    entry = summary["problems"]["quadratic-deep"]["sgd"]
    tuned = [t for t in grid if t.spec.lr == entry["best_lr"]]
    assert tuned and tuned[0].result.status == "ok"  # never a pruned point
    shown = {point["lr"]: point["status"] for point in entry["lr_sensitivity"]}
    assert sorted(lr for lr, status in shown.items() if status == "pruned") == sorted(
        t.spec.lr for t in pruned
    )
    assert summary["run"]["tuner"]["name"] == "halving"
    # the sensitivity plot draws them hollow at their last loss (they were crosses: "diverged")
    from optimlab.report import plots

    drawn = []
    with monkeypatch.context() as patched:
        patched.setattr(plots, "to_svg", drawn.append)
        plots.lr_sensitivity(summary["problems"]["quadratic-deep"], ["sgd"], "quadratic-deep")
    axes = drawn[0].axes[0]
    assert "○ = stopped at a rung" in axes.get_xlabel()
    hollow = [c for c in axes.collections if len(c.get_facecolors()) == 0]
    assert sorted(hollow[0].get_offsets()[:, 0]) == sorted(t.spec.lr for t in pruned)
    assert summary["run"]["trial_status"]["pruned"] == len(pruned)
    assert "trials run" in first
    # the terminal and the report say how many points halving stopped, and name the tuner
    # (a newcomer read "12 trials (8 ok, 1 diverged, 0 failed)": the pruned were missing)
    assert f"{len(pruned)} grid points stopped early by successive halving" in " ".join(
        first.split()
    )
    page = (tmp_path / "run" / "index.html").read_text()
    assert f"{len(pruned)} stopped early by successive halving)" in page
    assert "successive halving over the grid (Optuna&#39;s SuccessiveHalvingPruner" in page or (
        "successive halving over the grid (Optuna's SuccessiveHalvingPruner" in page
    )
    # resumed: nothing is trained again, pruned points included
    assert main([*ARGS, "--population", population, "--out", out]) == 0
    assert f"0 trials run, {len(rows)} reused" in " ".join(capsys.readouterr().out.split())
    assert main(["export", "--out", out, "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert sum(r["status"] == "pruned" for r in exported) == len(pruned)


@pytest.mark.parametrize(
    ("extra", "option", "message"),
    [
        (["--trials", "5"], "--trials", "5 needs --tuner optuna (the tuner is 'halving')"),
        (["--search", "betas"], "--search", "needs --tuner optuna"),
        (
            ["--tuner", "halving:eta=2"],
            "--tuner",
            "unknown tuner 'halving:eta=2'; valid: grid, optuna, halving",
        ),
    ],
)
def test_options_that_make_no_sense_with_halving_exit_2(tmp_path, capsys, extra, option, message):
    code = main([*ARGS, *extra, "--out", str(tmp_path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and option in err and message in err and "Traceback" not in err
