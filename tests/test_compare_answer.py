"""`optimlab compare`'s answer (issue 10): bad values rejected before training, failed trials never
ranked, ties within noise, problems nobody learned left out, progress a log file can read,
Ctrl-C that says how to resume, `optimlab demo` through the CLI, the planner without an executor."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optimlab.cli import main
from optimlab.lab.protocol import Comparison, Planner, contenders, lr_grid
from optimlab.lab.significance import (
    bootstrap_p,
    chance_accuracy,
    holm,
    learned,
    tied_ranks,
    welch_p,
)
from optimlab.lab.store import ResultStore
from optimlab.lab.summary import problem_recommendation
from optimlab.lab.trial import TrialResult

ROOT = Path(__file__).resolve().parents[1]


# --- 1. every bad value exits 2 before any training --------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adam:lr=-1", "Adam: invalid lr=-1; lr must be in [0, inf)"),
        ("adam:betas=0.9/1.5", "Adam: invalid betas[1]=1.5; betas[1] must be in [0, 1)"),
        ("adam:eps=0", "Adam: invalid eps=0; eps must be in (0, inf)"),
        ("sgd:nesterov=true", "SGD: nesterov=True requires momentum > 0"),
        ("adam:lr=nan", "Adam: invalid lr=nan"),
        ("adam:lr=abc", "Adam: invalid lr='abc'; lr must be a real number"),
        ("adam:convention=pytorch", "invalid convention='pytorch'; convention must be one of"),
        ("adam:lr=0.1:lr=0.2", "option 'lr' given twice in spec item 'adam:lr=0.1:lr=0.2'"),
        ("sgd,adam:weight_decay=-1", "Adam: invalid weight_decay=-1"),
    ],
)
def test_bad_optimizer_value_exits_2_before_training(spec, message, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["compare", "--optimizers", spec, "--problems", "digits-mlp", "--out", str(out)])
    captured = capsys.readouterr()
    error = " ".join(captured.err.split())
    assert code == 2, captured
    assert "Invalid value for --optimizers" in error and message in error
    assert "Traceback" not in captured.err + captured.out
    assert not (out / "results.sqlite").exists()  # nothing trained, nothing stored


FAILING_PROBLEM = """
import torch
from optimlab.problems import Problem

def make():
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    def broken_model(seed):
        raise RuntimeError("this model cannot be built")
    return Problem(
        name="broken", options={}, train=(x, y), val=(x, y), test=(x, y),
        build_model=broken_model, loss_fn=torch.nn.functional.mse_loss, batch_size=16,
        task="regression",
    )
"""


def test_an_optimizer_whose_trials_all_fail_is_failed_and_unranked(tmp_path, capsys) -> None:
    path = tmp_path / "broken.py"
    path.write_text(FAILING_PROBLEM)
    args = ["compare", "--problems", f"{path}:make", "--optimizers", "adam"]
    args += ["--steps", "5", "--grid-points", "2", "--seeds", "2", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    output = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (entries,) = summary["problems"].values()
    assert entries["adam"]["status"] == "failed"  # never "diverged"
    assert "this model cannot be built" in entries["adam"]["reason"]
    assert entries["adam"]["rank"] is None and summary["ranking"] == []
    assert summary["unranked"][0]["optimizer"] == "adam"
    assert "failed on every problem" in summary["unranked"][0]["reason"]
    assert "no ranking" in summary["recommendations"]["overall"]
    assert "this model cannot be built" in " ".join(output.split())


# --- 3. honest statistics against hand-made numbers --------------------------------------------
def student_t_two_sided_p(t: float, df: float) -> float:
    """2·∫_|t|^∞ of Student's t density, by the trapezoid rule (independent of scipy)."""
    x = np.linspace(abs(t), 400.0, 2_000_001)
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    density = norm * (1 + x**2 / df) ** (-(df + 1) / 2)
    return float(2 * np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))


def test_welch_matches_the_hand_computed_statistic() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    va, vb = 5 / 3 / 4, 10 / 5  # sample variances over n
    t = (2.5 - 6.0) / math.sqrt(va + vb)  # -2.2514
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)  # Welch–Satterthwaite: 5.52
    assert welch_p(a, b) == pytest.approx(student_t_two_sided_p(t, df), abs=1e-4)
    assert welch_p([1.0], [5.0, 6.0]) == 1.0  # one seed: nothing can be claimed
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0 and welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_a_metric_on_a_grid_floors_the_variance_at_its_rounding_error() -> None:
    """Two seeds that land on the same test accuracy are no evidence of zero noise: a sample's
    variance is floored at resolution²/12 (a uniform rounding error over one test example)."""
    res = 1 / 360  # digits' test set
    a, b = [0.9611, 0.9611], [0.9583, 0.9583]  # one test example apart, both constant
    v = res**2 / 12
    t = (0.9611 - 0.9583) / math.sqrt(v / 2 + v / 2)  # 3.36
    df = (v / 2 + v / 2) ** 2 / ((v / 2) ** 2 + (v / 2) ** 2)  # 2
    assert welch_p(a, b, res) == pytest.approx(student_t_two_sided_p(t, df), abs=1e-4)
    assert welch_p(a, b, res) > 0.05  # not separated by one example with two seeds
    assert welch_p([0.97, 0.97], [0.95, 0.95], res) < 0.05  # seven examples apart: separated
    # above the floor, the floored statistic is Welch's own
    x, y = [0.90, 0.95, 0.93], [0.80, 0.86, 0.83]
    assert welch_p(x, y, res) == pytest.approx(welch_p(x, y), rel=1e-12)


def test_constant_seeds_on_the_test_grid_tie_with_the_best() -> None:
    """The newcomer's ranking: Adan's two seeds both at 95.83 %, the best (two seeds at 96.11 %,
    one test example more) — Adan was ranked alone below worse optimizers."""
    res = 1 / 360
    values = {
        "prodigy": [0.9611, 0.9611],
        "radam": [0.9625, 0.9542],
        "adan": [0.9583, 0.9583],
        "schedulefree-sgd": [0.9306, 0.9556],
    }
    ranks = tied_ranks(values, higher_is_better=True, resolution=res)
    assert ranks["adan"] == ranks["prodigy"] == 1
    assert tied_ranks(values, higher_is_better=True)["adan"] > 1  # without the floor (the bug)


def test_ranks_follow_the_means() -> None:
    """tiny-lm with two seeds: Adan (1.228 ± 0.002, tight) was separated from the best (1.183 ±
    0.001) and ranked 16th, while RMSprop (1.561 ± 0.04, wide) tied at 1 — a worse mean ranked
    above a better one. A group now ends at the first significantly worse optimizer."""
    losses = {
        "schedulefree-adamw": [1.1816, 1.1844],
        "adan": [1.2261, 1.2299],
        "nadam": [1.2323, 1.2497],
        "rmsprop": [1.521, 1.601],
    }
    ranks = tied_ranks(losses, higher_is_better=False)
    assert ranks["schedulefree-adamw"] == 1 and ranks["adan"] == 2
    assert ranks["rmsprop"] >= ranks["nadam"] >= ranks["adan"]
    rng = np.random.default_rng(0)
    for _ in range(300):  # any draw: the ranks never improve as the mean gets worse
        values = {
            f"o{i}": list(rng.normal(rng.normal(0, 1), rng.choice([1e-3, 0.1, 1.0]), size=2))
            for i in range(6)
        }
        ranks = tied_ranks(values, higher_is_better=True)
        order = sorted(values, key=lambda label: -np.mean(values[label]))
        assert [ranks[label] for label in order] == sorted(ranks[label] for label in order)


def test_equal_means_share_a_rank() -> None:
    """digits-mlp, two seeds, 360 test images (newcomer): Adan at [345, 345]/360 ranked 10th
    while RAdam and LAMB at [344, 346]/360 — the same mean — tied with Prodigy's [352, 352] at
    1 (the constant pair is separable from the best, the spread one is not)."""
    f32 = lambda k: float(np.float32(k / 360))  # noqa: E731 - accuracies are float32
    accuracies = {
        "prodigy": [f32(352), f32(352)],
        "radam": [f32(344), f32(346)],
        "lamb": [f32(344), f32(346)],
        "adan": [f32(345), f32(345)],
        "schedulefree-sgd": [f32(335), f32(344)],
    }
    assert np.mean(accuracies["adan"]) != np.mean(accuracies["radam"])  # float32 rounding
    ranks = tied_ranks(accuracies, higher_is_better=True, resolution=1 / 360)
    assert ranks["radam"] == ranks["lamb"] == ranks["prodigy"] == 1
    assert ranks["adan"] == 1  # was 4
    assert ranks["schedulefree-sgd"] == 5


def test_bootstrap_fallback_separates_and_overlaps() -> None:
    apart = bootstrap_p(np.array([1.0, 1.1, 0.9, 1.05]), np.array([3.0, 3.1, 2.9, 3.05]))
    together = bootstrap_p(np.array([1.0, 1.1, 0.9, 1.05]), np.array([1.02, 0.95, 1.08, 1.0]))
    assert apart < 0.01 and together > 0.5


def test_holm_step_down() -> None:
    # α = 0.05, m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert holm([0.01, 0.04, 0.015, 0.2]) == [True, False, True, False]
    assert holm([0.02, 0.001]) == [True, True]  # 0.001 <= 0.025, then 0.02 <= 0.05
    assert holm([0.03, 0.001]) == [True, True] and holm([0.03, 0.026]) == [False, False]
    assert holm([0.3, 0.001, 0.024]) == [False, True, True]


def test_ties_where_seeds_overlap_ranks_where_they_do_not() -> None:
    values = {
        "adam": [0.980, 0.975, 0.983],
        "nadam": [0.978, 0.981, 0.976],  # overlaps adam: tied
        "rmsprop": [0.979, 0.977, 0.982],  # overlaps both: tied
        "sgd": [0.90, 0.91, 0.905],  # clearly worse than the three
        "adagrad": [0.60, 0.61, 0.605],  # clearly worse than everyone
    }
    ranks = tied_ranks(values, higher_is_better=True)
    assert ranks == {"adam": 1, "nadam": 1, "rmsprop": 1, "sgd": 4, "adagrad": 5}
    # one optimizer leaves the plateau (adagrad on the 10-layer sigmoid net): the rest tie at 2
    plateau = {f"o{i}": [0.100 + 0.001 * i, 0.103, 0.099] for i in range(6)}
    plateau["adagrad"] = [0.19, 0.20, 0.185]
    ranks = tied_ranks(plateau, higher_is_better=True)
    assert ranks.pop("adagrad") == 1 and set(ranks.values()) == {2}
    losses = {"a": [1.0, 1.1, 0.9], "b": [5.0, 5.2, 4.9], "c": [1.05, 0.95, 1.0]}
    assert tied_ranks(losses, higher_is_better=False) == {"a": 1, "c": 1, "b": 3}


def test_a_wide_spread_best_does_not_pull_a_clearly_worse_optimizer_into_rank_1() -> None:
    # a newcomer's mnist1d-mlp run (3 seeds): NAdam 47.7 ± 7.1 % had the best mean, so every
    # test was against it, and SGD at 20.9 ± 0.6 % shared rank 1 (Welch p = 0.025 against
    # NAdam, not below Holm's 0.05 / 3) although it is clearly worse than Adam at
    # 47.6 ± 1.7 % (p = 0.00044 < 0.05 / 3, scipy's ttest_ind(equal_var=False))
    values = {
        "nadam": [40.0, 48.0, 55.1],
        "adam": [45.9, 47.6, 49.3],
        "rmsprop": [32.5, 39.0, 45.0],  # not separable from nadam (0.19) or adam (0.13)
        "sgd": [20.3, 20.9, 21.5],
    }
    assert welch_p(values["nadam"], values["sgd"]) == pytest.approx(0.02487, abs=1e-5)
    assert welch_p(values["adam"], values["sgd"]) == pytest.approx(0.00044, abs=1e-5)
    assert tied_ranks(values, higher_is_better=True) == {
        "nadam": 1, "adam": 1, "rmsprop": 1, "sgd": 4,
    }  # fmt: skip
    # a member's test never joins anyone: without the wide-spread best, the ranks are the same
    del values["nadam"]
    assert tied_ranks(values, higher_is_better=True) == {"adam": 1, "rmsprop": 1, "sgd": 3}


def test_a_problem_nobody_learned_is_reported_and_left_out() -> None:
    targets = np.array([0] * 103 + list(range(1, 10)) * 99)
    chance = chance_accuracy(targets)
    assert chance == pytest.approx(103 / (103 + 9 * 99))
    assert not learned(best_accuracy=0.103, chance=chance)  # the 10-layer sigmoid net
    assert learned(best_accuracy=0.95, chance=chance)
    assert not learned(best_loss=2.29, start_loss=2.30) and learned(best_loss=0.5, start_loss=2.3)
    info = {
        "task": "classification",
        "learned": False,
        "learned_reason": "best test accuracy 10.3 %, chance 10.3 %",
        "optimizers": {},
    }
    line = problem_recommendation("deep-mlp:depth=10:activation=sigmoid", info)
    assert line.startswith("deep-mlp:depth=10:activation=sigmoid: no optimizer learned")


def test_recommendation_names_rate_result_and_ties() -> None:
    entry = {
        "rank": 1,
        "values": [0.98, 0.977, 0.983],
        "best_lr": 0.0719,
        "test_accuracy_mean": 0.980,
        "test_accuracy_std": 0.003,
        "tied_with": ["nadam", "rmsprop"],
    }
    info = {"task": "classification", "learned": True, "optimizers": {"adam": entry}}
    assert problem_recommendation("digits-mlp", info) == (
        "digits-mlp: adam at lr 0.0719 — test accuracy 98.0 ± 0.3 %, tied with nadam and "
        "rmsprop (not significantly different with 3 seeds)"
    )


# --- 8. the plan, without an executor ---------------------------------------------------------
def test_planner_plans_grid_defaults_and_seed_reruns_without_an_executor(tmp_path) -> None:
    comparison = Comparison(
        [("quadratic-deep", 10)], contenders("sgd,adam"), lr_grid(3, 3e-3, 0.3), seeds=3
    )
    comparison.default_seeds = 1
    store: dict = {}

    def results(keys):
        return {k: store[k] for k in keys if k in store}

    planner = Planner(comparison, set(), results)
    jobs = planner.start()
    # per optimizer: 1 default + 3 grid points; 2 seed reruns each estimated up front
    assert len(jobs) == 2 * (1 + 3) and planner.total == 2 * (1 + 3 + 2)
    assert planner.approximate
    grid_keys = {s.key for s, _ in jobs if s.seed == 0 and s.lr in comparison.grid}
    # finish sgd's grid: the best (lowest val loss) point gets its seeds 1 and 2, not seed 0 again
    from optimlab.lab.store import StoredTrial

    later = []
    for spec, _ in jobs:
        loss = {0.003: 3.0, 0.03: 1.0, 0.3: 2.0}.get(spec.lr, 5.0)
        result = TrialResult("ok", {"final_val_loss": loss})
        store[spec.key] = StoredTrial(spec, result, 0.0, 0)
        later += planner.finished(spec, result)
    assert len(grid_keys) == 6
    assert sorted((s.optimizer, s.lr, s.seed) for s, _ in later) == [
        ("adam", 0.03, 1),
        ("adam", 0.03, 2),
        ("sgd", 0.03, 1),
        ("sgd", 0.03, 2),
    ]
    assert not planner.approximate and planner.total == 12 == len(planner.planned)
    # a resumed planner reuses everything stored and hands out only what is missing
    resumed = Planner(comparison, set(store), results)
    again = resumed.start()
    assert sorted(s.key for s, _ in again) == sorted(s.key for s, _ in later)
    assert resumed.reused == 8 and resumed.total == 12


# --- 6. progress a log file can read, Ctrl-C, demo ----------------------------------------------
def test_piped_run_prints_progress_lines_whose_first_total_is_what_is_stored(
    tmp_path, capsys
) -> None:
    args = ["compare", "--problems", "quadratic-deep,digits-logreg", "--optimizers", "sgd,adam"]
    args += ["--steps", "10", "--grid-points", "3", "--seeds", "3", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    # the first line comes before torch loads (a loaded machine took 12-30 s to the first trial)
    assert err[0].startswith("compare: starting")
    assert err[-1].startswith(f"compare: writing the report to {tmp_path}")
    lines = [line for line in err if re.match(r"compare: \d", line)]
    assert len(lines) >= 2
    first = re.match(r"compare: (\d+)/(≈?)(\d+) trials", lines[0])
    assert first and first[2] == "≈"  # seed reruns estimated before tuning is done
    last = re.match(r"compare: (\d+)/(\d+) trials .*ETA", lines[-1])
    assert last and last[1] == last[2]
    stored = ResultStore(tmp_path).count()
    assert int(first[3]) == stored == int(last[2])
    assert "last: " in lines[-1]
    # the quick suite's problems and sizes were replaced: the report must not call it the suite
    header = (tmp_path / "index.html").read_text()
    assert "quick suite with --problems, --steps, --grid-points, --seeds set" in header
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["suite_changes"] == ["--problems", "--steps", "--grid-points", "--seeds"]


def test_demo_runs_through_the_cli_with_shrunk_budgets(tmp_path, capsys) -> None:
    # demo used to pass typer's OptionInfo objects to compare: "unknown executor <...OptionInfo>"
    args = ["demo", "--steps", "4", "--grid-points", "1", "--seeds", "1", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    from optimlab.optim.registry import preset_optimizers

    assert summary["run"]["suite"] == "quick"
    assert len(summary["run"]["optimizers"]) == len(preset_optimizers("classic"))  # the nine
    assert "deep-mlp:depth=10:activation=sigmoid" in summary["problems"]  # full labels
    assert "overall:" in capsys.readouterr().out


def test_ctrl_c_says_what_is_stored_and_how_to_resume(tmp_path) -> None:
    # long enough (22 single trials of 1,500 steps, ≈ 15 s) that the interrupt, sent when the
    # first piped progress line with a stored trial appears, lands while trials are still
    # running; a population stores 10 grid points at once and the whole run took ≈ 6 s, so on a
    # loaded machine the interrupt could arrive after the last trial (it failed so, once)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "optimlab.cli", "compare", "--problems", "digits-mlp"]
    command += ["--optimizers", "sgd,adam", "--steps", "1500", "--grid-points", "10"]
    command += ["--seeds", "1", "--workers", "1", "--out", str(out), "--fresh"]
    command += ["--population", "off"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # wait until at least one trial is stored
        line = process.stderr.readline()
        if re.match(r"compare: [1-9]\d*/", line):
            break
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    stored = ResultStore(out).count()
    assert f"interrupted: {stored} trials are stored" in rest
    resume = rest.strip().splitlines()[-1].strip()
    assert resume.startswith("optimlab compare ") and "--fresh" not in resume
    assert "Traceback" not in rest
    # the printed command resumes: it reuses every stored trial
    argv = shlex.split(resume)[1:]
    finished = subprocess.run(
        [sys.executable, "-m", "optimlab.cli", *argv], capture_output=True, text=True, env=env
    )
    assert finished.returncode == 0, finished.stderr
    assert re.search(rf"\d+ trials run, {stored} reused", " ".join(finished.stdout.split()))


# --- 4 and 7: your own optimizer, curves for TensorBoard ---------------------------------------
MY_OPTIMIZER = '''
import torch


class MyOpt(torch.optim.Optimizer):
    """Sign descent with momentum (signSGD with an EMA of the gradient)."""

    def __init__(self, params, lr=0.01, beta=0.9):
        if not 0 <= beta < 1:
            raise ValueError(f"MyOpt: invalid beta={beta}; beta must be in [0, 1)")
        super().__init__(params, dict(lr=lr, beta=beta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(m.sign(), alpha=-group["lr"])
'''


def test_own_optimizer_and_torch_optim_ranked_beside_a_built_in(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(MY_OPTIMIZER)
    args = ["compare", "--optimizers", "adam,torch.optim:AdamW,mine.py:MyOpt"]
    args += ["--problems", "digits-mlp", "--steps", "40", "--grid-points", "3", "--seeds", "2"]
    args += ["--workers", "2", "--out", "out", "--log-dir", "tb"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    entries = summary["problems"]["digits-mlp"]
    assert set(entries) == {"adam", "torch.optim:AdamW", "mine.py:MyOpt"}
    assert all(e["status"] == "ok" and e["rank"] is not None for e in entries.values())
    assert {r["optimizer"] for r in summary["ranking"]} == set(entries)
    # the default rate of a custom class is its signature's
    assert entries["mine.py:MyOpt"]["default"]["lr"] == 0.01
    assert entries["torch.optim:AdamW"]["default"]["lr"] == 0.001
    stored = ResultStore(tmp_path / "out")
    # every trial's curves are a TensorBoard run: one event file per stored trial
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == stored.count()
    capsys.readouterr()
    assert main(args) == 0  # resumes: the custom trials are found again
    assert re.search(rf"0 trials run, {stored.count()} reused", capsys.readouterr().out)
    # an edited optimizer file is another optimizer: its trials run again, the others do not
    # (a new process, as a user's next command is: this one remembers the text it read)
    (tmp_path / "mine.py").write_text(MY_OPTIMIZER.replace("Sign descent", "Sign descent!"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    edited = subprocess.run(
        [sys.executable, "-m", "optimlab.cli", *args], capture_output=True, text=True, env=env
    )
    assert edited.returncode == 0, edited.stderr
    ran = int(re.search(r"(\d+) trials run", edited.stdout)[1])
    my_trials = sum(t.spec.optimizer == "mine.py:MyOpt" for t in stored.iter()) // 2
    assert ran == my_trials > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mine.py:MyOpt:beta=1.5", "MyOpt: invalid beta=1.5; beta must be in [0, 1)"),
        ("mine.py:Nope", "Nope"),
        ("mine.py:MyOpt:gamma=1", "unknown option 'gamma' for optimizer mine.py:MyOpt"),
        ("missing.py:MyOpt", "does not exist"),
        ("torch.optim:RAdam:lr=-1", "Invalid learning rate: -1"),
    ],
)
def test_bad_custom_optimizer_exits_2(spec, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(MY_OPTIMIZER)
    code = main(["compare", "--optimizers", spec, "--problems", "digits-mlp", "--out", "out"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    error = " ".join(captured.err.split())
    assert "Invalid value for --optimizers" in error and message in error
    assert not (tmp_path / "out" / "results.sqlite").exists()


# --- 3. a hand-made comparison with known overlaps, through summarize ------------------------
def hand_made_summary(only_stuck: bool = False) -> dict:
    """Two classification problems, four optimizers, three seeds each, numbers chosen by hand:
    on "easy" adam and nadam overlap (tied), sgd is clearly behind, adagrad clearly last; on
    "stuck" everyone sits at chance (10 balanced classes: 10 %)."""
    from optimlab.lab.store import StoredTrial
    from optimlab.lab.summary import summarize

    accuracy = {
        ("easy", "adam"): [0.980, 0.975, 0.983],
        ("easy", "nadam"): [0.978, 0.981, 0.976],
        ("easy", "sgd"): [0.90, 0.91, 0.905],
        ("easy", "adagrad"): [0.60, 0.61, 0.605],
        ("stuck", "adam"): [0.101, 0.099, 0.100],
        ("stuck", "nadam"): [0.100, 0.102, 0.098],
        ("stuck", "sgd"): [0.103, 0.100, 0.101],
        ("stuck", "adagrad"): [0.097, 0.101, 0.100],
    }
    #: steps at which each optimizer's training loss reaches 0.1 on "easy"
    fast = {"adam": 4, "nadam": 8, "sgd": 16, "adagrad": 10**9}
    problems = {"easy": "digits-logreg", "stuck": "deep-mlp:depth=10:activation=sigmoid"}
    if only_stuck:
        del problems["easy"]
    comparison = Comparison(
        [(spec, 16) for spec in problems.values()],
        contenders("adam,nadam,sgd,adagrad"),
        [0.01],
        seeds=3,
        default_seeds=1,
    )
    comparison.resolve()
    trials = {}
    for name, spec in problems.items():
        for c in comparison.optimizers:
            for trial in comparison.seed_trials(spec, 16, c, 0.01):
                value = accuracy[(name, c.label)][trial.seed]
                start = 2.3
                losses = [
                    start,
                    *(
                        0.05 if s >= fast[c.label] and name == "easy" else 2.2
                        for s in (1, 2, 4, 8, 16)
                    ),
                ]
                metrics = {
                    "final_val_loss": losses[-1],
                    "final_train_loss": losses[-1],
                    "final_test_loss": losses[-1],
                    "test_accuracy": value,
                    "seconds_per_step": 0.001,
                    "warmup_seconds": 0.05,
                    "curve": {
                        "step": [0, 1, 2, 4, 8, 16],
                        "train_loss": losses,
                        "val_loss": losses,
                        "val_accuracy": [value] * 6,
                    },
                    "curve_seconds": [0.0, 0.05, 0.051, 0.053, 0.057, 0.065],
                }
                trials[trial.key] = StoredTrial(trial, TrialResult("ok", metrics), 0.0, 0)
    targets = {spec: np.arange(1000) % 10 for spec in problems.values()}
    return summarize(comparison, trials, targets)


def test_hand_made_summary_ties_overlaps_and_leaves_out_the_unlearned_problem() -> None:
    summary = hand_made_summary()
    easy = summary["problems"]["digits-logreg"]
    assert {label: e["rank"] for label, e in easy.items()} == {
        "adam": 1,
        "nadam": 1,
        "sgd": 3,
        "adagrad": 4,
    }
    assert easy["adam"]["tied_with"] == ["nadam"]
    stuck = "deep-mlp:depth=10:activation=sigmoid"  # the full label, options included
    info = summary["problem_info"]
    assert info["digits-logreg"]["learned"] and not info[stuck]["learned"]
    assert summary["ranked_problems"] == ["digits-logreg"]
    answers = summary["recommendations"]
    assert answers["problems"]["digits-logreg"] == (
        "digits-logreg: adam at lr 0.01 (the only rate run: not tuned) — test accuracy 97.9 ± 0.4 %, "
        "tied with nadam "
        "(not significantly different with 3 seeds)"
    )
    assert answers["problems"][stuck].startswith(f"{stuck}: no optimizer learned this problem")
    assert "left out, not learned: " + stuck in answers["overall"]
    # one learned problem: the overall line says what its score measures (the newcomer read
    # "overall: X" as a recommendation its test accuracy did not support)
    assert (
        "speed to the training-loss target only; for one problem, read its answer"
        in (answers["overall"])
    )
    # the overall ranking is the profile on the learned problem alone: adam reaches the target
    # first (step 4), nadam at 8 (ratio 2), sgd at 16 (ratio 4), adagrad never
    order = [(r["optimizer"], r["rank"]) for r in summary["ranking"]]
    assert order == [("adam", 1), ("nadam", 2), ("sgd", 3), ("adagrad", 4)]
    assert easy["adam"]["seconds_to_target"] == pytest.approx(0.053)
    assert easy["adam"]["seconds_per_step_mean"] == pytest.approx(0.001)  # warm-up apart
    assert easy["adam"]["warmup_seconds_mean"] == pytest.approx(0.05)


def test_no_learned_problem_no_overall_ranking() -> None:
    # the answer said "no ranking" while the table ranked adam 1st "on 0 learned problems"
    summary = hand_made_summary(only_stuck=True)
    assert summary["ranked_problems"] == [] and summary["ranking"] == []
    assert [u["optimizer"] for u in summary["unranked"]] == ["adam", "nadam", "sgd", "adagrad"]
    assert all("no optimizer learned" in u["reason"] for u in summary["unranked"])
    assert summary["recommendations"]["overall"].startswith("overall: no ranking")
    from optimlab.report.html import render_html

    page = render_html(summary)
    assert 'id="no-ranking"' in page and 'id="overall-ranking"' not in page


def test_evals_sets_the_points_of_every_curve(tmp_path, capsys) -> None:
    """`--evals N`: each run evaluates after N steps (plus the start), so a short run
    does not spend its time evaluating; a count below 1 is refused before any trial."""
    from optimlab.cli import main

    out = str(tmp_path / "run")
    argv = ["compare", "--problems", "digits-logreg", "--optimizers", "sgd", "--steps", "6"]
    argv += ["--grid-points", "1", "--seeds", "1", "--out", out]
    assert main([*argv, "--evals", "0"]) == 2
    assert "--evals" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.sqlite").exists()
    for evals in (2, 3):
        assert main([*argv, "--evals", str(evals)]) == 0
        capsys.readouterr()
        assert main(["export", "--out", out, "--format", "json", "--curves"]) == 0
        points = json.loads(capsys.readouterr().out)
        steps_per_trial: dict[str, set[int]] = {}
        for point in points:
            steps_per_trial.setdefault(point["key"], set()).add(point["step"])
        assert steps_per_trial and len({len(s) for s in steps_per_trial.values()}) == 1
        # the curve: step 0, then the evaluation steps (1 and 6; 1, 3 and 6)
        expected = {2: {0, 1, 6}, 3: {0, 1, 3, 6}}[evals]
        assert all(s == expected for s in steps_per_trial.values()), steps_per_trial
        (tmp_path / "run" / "results.sqlite").unlink()


def test_an_optuna_rate_is_at_the_edge_only_near_its_range_ends() -> None:
    # Optuna's largest sample (0.273 in 1e-4 … 10) was marked "at the grid's end"
    from types import SimpleNamespace

    from optimlab.lab.summary import _at_edge

    optuna = SimpleNamespace(tuner=SimpleNamespace(lr_range=(1e-4, 10.0)))
    assert not _at_edge(optuna, 0.273, [0.001, 0.01, 0.273])
    assert _at_edge(optuna, 6.0, [0.001, 6.0]) and _at_edge(optuna, 1.5e-4, [1.5e-4, 0.01])
    grid = SimpleNamespace(tuner=None)
    assert _at_edge(grid, 0.273, [0.001, 0.01, 0.273])
    assert not _at_edge(grid, 0.01, [0.001, 0.01, 0.273])


def test_ctrl_c_before_any_trial_prints_the_command(monkeypatch, capsys, tmp_path) -> None:
    """Ctrl-C while torch and the problems load (tens of seconds on a loaded machine) said only
    "interrupted before any trial ran": the newcomer had to rebuild the command by hand."""
    import optimlab.cli.compare as command

    def interrupted(options):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "build", interrupted)
    out = str(tmp_path / "run")
    code = main(["compare", "--problems", "digits-mlp", "--steps", "50", "--out", out])
    assert code == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "interrupted before any trial ran" in err
    assert f"optimlab compare --problems digits-mlp --out {out} --steps 50" in err


@pytest.mark.parametrize(
    "bad", [["--schedule", "step:every=2"], ["--optimizers", "adam:lr=nan"], ["--population", "x"]]
)
def test_a_rejected_command_leaves_no_output_directory(bad, tmp_path, capsys) -> None:
    """A newcomer's rejected commands (exit 2) had each left an empty --out directory."""
    out = tmp_path / "never"
    assert main(["compare", "--problems", "digits-mlp", "--out", str(out), *bad]) == 2
    assert not out.exists()
    # an existing directory is never removed
    out.mkdir()
    assert main(["compare", "--problems", "digits-mlp", "--out", str(out), *bad]) == 2
    assert out.is_dir()


def test_one_seed_ties_the_overall_ranking_and_says_why(tmp_path) -> None:
    # a bootstrap of one seed redraws that seed: no spread, so without the rule every score
    # difference would be "significant"; one seed says nothing about noise
    args = ["compare", "--problems", "digits-logreg", "--optimizers", "sgd,adam",
            "--steps", "40", "--grid-points", "2", "--seeds", "1", "--evals", "4",
            "--workers", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    scores = {row["optimizer"]: row["profile_score"] for row in summary["ranking"]}
    assert scores["sgd"] != scores["adam"]
    assert [row["rank"] for row in summary["ranking"]] == [1, 1]
    assert "one seed each: differences cannot be tested" in summary["recommendations"]["overall"]


def test_a_fixed_rate_that_diverges_says_so_not_every_rate(tmp_path) -> None:
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "adam,sgd:lr=1e12",
            "--steps", "20", "--grid-points", "2", "--seeds", "1", "--evals", "2",
            "--workers", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    entry = json.loads((tmp_path / "summary.json").read_text())["problems"]["quadratic-deep"]
    assert entry["sgd:lr=1e12"]["status"] == "diverged"
    assert entry["sgd:lr=1e12"]["reason"] == (
        "it diverged at its fixed lr 1e+12 on seed 0, so its other seeds did not run"
    )
