"""The Optuna tuner (``--tuner optuna``) against Optuna's own record of each study (read back
from ``DIR/optuna.journal`` with Optuna's API) and the results store: resume, trials asked but
never told, pruning of a diverging trial, bad input.

Skipped, with the reason, only when Optuna is not installed (``pip install 'optimlab[optuna]'``);
the bad-input tests need no Optuna.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.lab.protocol import Comparison, contenders, lr_grid, run_comparison
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train

BASE = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd,adam", "--steps", "20"]
BASE += ["--seeds", "2", "--workers", "1", "--tuner", "optuna"]
TIMING = {"seconds", "cpu_seconds", "seconds_per_step", "warmup_seconds", "curve_seconds"}


@pytest.fixture
def optuna():
    return pytest.importorskip(
        "optuna", reason="Optuna is not installed: pip install 'optimlab[optuna]'"
    )


def studies(directory: Path) -> dict[str, list]:
    """Optuna's own view: every study in DIR/optuna.journal and its trials."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(directory / "optuna.journal")))
    return {
        summary.study_name: optuna.load_study(study_name=summary.study_name, storage=storage).trials
        for summary in optuna.get_all_study_summaries(storage)
    }


def counts(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) trials run, (\d+) reused", output)
    assert match, output
    return int(match[1]), int(match[2])


def test_a_rerun_resumes_each_study_and_adds_only_what_is_missing(
    optuna, tmp_path: Path, capsys
) -> None:
    assert main([*BASE, "--trials", "4", "--out", str(tmp_path)]) == 0
    first = studies(tmp_path)
    assert len(first) == 2  # one study per (problem, optimizer)
    keys = ResultStore(tmp_path, create=False).keys()
    for trials in first.values():
        assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
        assert {t.user_attrs["key"] for t in trials} <= keys  # each trial is in the store
    capsys.readouterr()

    assert main([*BASE, "--trials", "4", "--out", str(tmp_path)]) == 0
    run, reused = counts(capsys.readouterr().out)
    assert run == 0 and reused == len(keys)
    assert {name: len(t) for name, t in studies(tmp_path).items()} == {n: 4 for n in first}

    assert main([*BASE, "--trials", "6", "--out", str(tmp_path)]) == 0
    run, _ = counts(capsys.readouterr().out)
    grown = studies(tmp_path)
    assert {name: len(t) for name, t in grown.items()} == {n: 6 for n in first}
    for name, trials in grown.items():  # the first four are the same trials, untouched
        assert [t.params for t in trials[:4]] == [t.params for t in first[name]]
    # 2 new points per study, plus at most one new seed rerun each if the best point moved
    assert 4 <= run <= 6

    problems = json.loads((tmp_path / "summary.json").read_text())["problems"]["quadratic-deep"]
    for name, trials in grown.items():
        label = name.split("|optimizer=")[1].split("|")[0]
        entry = problems[label]
        assert len(entry["lr_sensitivity"]) == 6
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        best = min(complete, key=lambda t: t.value)  # Optuna's best trial = the tuned rate
        assert entry["best_lr"] == best.params["lr"]
        assert entry["seeds"] == 2

    # the report says how the rate was tuned (not an empty learning-rate grid)
    page = (tmp_path / "index.html").read_text()
    assert "Optuna TPE, 6 trials per problem and optimizer" in page
    assert "0 points" not in page


def test_trials_asked_but_never_told_are_told_from_the_store_or_run_again(
    optuna, tmp_path: Path
) -> None:
    from optimlab.lab.tuner import OptunaTuner

    def comparison() -> Comparison:
        return Comparison(
            [("quadratic-deep", 20)],
            contenders("sgd,adam"),
            lr_grid(3, 1e-4, 10),
            seeds=1,
            tuner=OptunaTuner(tmp_path, trials=3, lr_range=(1e-4, 1.0)),
        )

    store = ResultStore(tmp_path)
    told_late: list[str] = []

    def crash_on_the_second_tuning_trial(event: dict) -> None:
        if event["event"] != "finished":
            return
        running = {
            t.user_attrs.get("key")
            for trials in studies(tmp_path).values()
            for t in trials
            if t.state.name == "RUNNING"
        }
        if event["spec"].key in running:  # a tuning trial, announced before it is told
            told_late.append(event["spec"].key)
            if len(told_late) == 2:
                raise KeyboardInterrupt  # stored by the executor, never told to Optuna

    with pytest.raises(KeyboardInterrupt):
        run_comparison(comparison(), store, 1, crash_on_the_second_tuning_trial)
    dangling = {
        t.user_attrs["key"]: (name, t.number)
        for name, trials in studies(tmp_path).items()
        for t in trials
        if t.state.name == "RUNNING"
    }
    stored_before = store.keys()
    assert told_late[-1] in dangling and told_late[-1] in stored_before
    assert any(key not in stored_before for key in dangling)  # asked, not yet run

    counts_ = run_comparison(comparison(), store, 1)
    after = studies(tmp_path)
    for key, (name, number) in dangling.items():
        assert after[name][number].state.is_finished()  # the same trial, told now
        assert after[name][number].user_attrs["key"] == key
    assert all(len(t) == 3 and all(x.state.is_finished() for x in t) for t in after.values())
    assert store.count() == counts_["total"]
    # the told-from-the-store trial was not run again
    assert counts_["run"] == counts_["total"] - len(stored_before)


def test_a_diverging_trial_is_pruned_early_and_stored_as_diverged(optuna, tmp_path: Path) -> None:
    from optimlab.lab.tuner import OptunaTuner

    tuner = OptunaTuner(tmp_path, trials=2, lr_range=(1e-4, 10.0))
    comparison = Comparison(
        [("quadratic-deep", 200)], contenders("sgd"), [], seeds=1, evals=16, tuner=tuner
    )
    comparison.resolve()
    name = tuner.study_name(comparison, "quadratic-deep", 200, comparison.optimizers[0])
    study = optuna.create_study(study_name=name, storage=tuner.storage(), direction="minimize")
    study.enqueue_trial({"lr": 2.0})  # far above 2/λmax = 0.038: explodes at once
    study.enqueue_trial({"lr": 0.01})
    store = ResultStore(tmp_path)
    run_comparison(comparison, store, 1)

    (trials,) = studies(tmp_path).values()
    exploding, fine = trials
    assert exploding.state.name == "PRUNED" and fine.state.name == "COMPLETE"
    stored = store.get()
    pruned = stored[exploding.user_attrs["key"]]
    assert pruned.result.status == "diverged" and pruned.result.reason.startswith("pruned")
    step, value = max(exploding.intermediate_values.items())
    assert pruned.result.metrics["steps_run"] == step and math.isfinite(value)
    # without pruning the same run goes on until its loss overflows, several steps later
    unpruned = train(pruned.spec)
    assert unpruned.status == "diverged" and unpruned.metrics["diverged_at"] > step
    # the pruned run is the unpruned one cut short: the same curve up to the pruning step
    assert pruned.result.metrics["pruned"] is True and "pruned" not in unpruned.metrics
    cut, full = pruned.result.metrics["curve"], unpruned.metrics["curve"]
    assert cut["step"][-1] == step
    assert cut == {k: v[: len(cut["step"])] for k, v in full.items()}
    # and a run that does not diverge gives train()'s own numbers, told to Optuna as its value
    kept = stored[fine.user_attrs["key"]]
    reference = train(kept.spec)
    assert fine.value == reference.metrics["final_val_loss"]
    assert {k: v for k, v in kept.result.metrics.items() if k not in TIMING} == {
        k: v for k, v in reference.metrics.items() if k not in TIMING
    }


def test_fresh_removes_the_studies(optuna, tmp_path: Path, capsys) -> None:
    args = [*BASE[:4], "sgd", "--steps", "10", "--seeds", "1", "--workers", "1"]
    args += ["--tuner", "optuna", "--trials", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-4], "--trials", "3", "--out", str(tmp_path), "--fresh"]) == 0
    run, reused = counts(capsys.readouterr().out)
    assert reused == 0 and run > 0
    assert [len(t) for t in studies(tmp_path).values()] == [3]  # not 2 + 1


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--tuner", "hyperband"], "--tuner", "unknown tuner 'hyperband'; valid: grid, optuna"),
        (
            ["--tuner", "optuna", "--trials", "0"],
            "--trials",
            "0; allowed: an integer in [1, 100000]",
        ),
        (
            ["--tuner", "optuna", "--search", "lr,gamma"],
            "--search",
            "unknown search name 'gamma'; valid: lr, betas, momentum, alpha, rho, eps, weight_decay",
        ),
        (["--trials", "5"], "--trials", "5 needs --tuner optuna"),
    ],
)
def test_bad_tuner_options_exit_2(args, option, message, tmp_path: Path, capsys) -> None:
    code = main([*BASE[:-2], *args, "--out", str(tmp_path / "out")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"Invalid value for {option}" in error and message in error
    assert not (tmp_path / "out" / "results.sqlite").exists()
    assert not (tmp_path / "out" / "optuna.journal").exists()


def test_a_search_name_no_optimizer_has_exits_2(optuna, tmp_path: Path, capsys) -> None:
    args = [*BASE[:4], "sgd,momentum", "--tuner", "optuna", "--search", "betas"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for --search" in error
    assert "search name 'betas' applies to none of the optimizers (sgd, momentum)" in error


def test_without_optuna_the_tuner_says_how_to_install_it(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    assert main([*BASE, "--out", str(tmp_path / "out")]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for --tuner" in error and "pip install 'optimlab[optuna]'" in error
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_the_answer_gives_every_tuned_hyperparameter(optuna, tmp_path: Path, capsys) -> None:
    """With --search betas, the best point's betas are part of the answer (summary.json and the
    printed line), not only its lr — else the recommended setting cannot be reproduced."""
    argv = [*BASE[:4], "adam", "--steps", "20", "--seeds", "1", "--workers", "1"]
    argv += ["--tuner", "optuna", "--trials", "3", "--search", "betas", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = " ".join(capsys.readouterr().out.split())
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["problems"]["quadratic-deep"]["adam"]
    tuned = entry["tuned_hyperparameters"]
    assert set(tuned) == {"betas"}
    # the tuned point is a stored trial's: the seed-0 run at the best lr carries these betas
    (seed,) = [
        t
        for t in ResultStore(tmp_path, create=False).get().values()
        if t.spec.lr == entry["best_lr"] and t.spec.optimizer == "adam"
    ][:1]
    assert list(seed.spec.hyperparameters["betas"]) == list(tuned["betas"])
    beta1 = f"{tuned['betas'][0]:.3g}"
    assert f"at lr {entry['best_lr']:.3g} (betas=({beta1}, " in printed


@pytest.mark.parametrize("name", ["betas", "momentum", "alpha", "rho", "eps", "weight_decay"])
def test_every_optimizer_a_dimension_applies_to_builds_at_its_ends(name: str, tmp_path) -> None:
    """A searched value must be one the optimizer takes: betas had been sampled as a pair for
    Adan's and AdEMAMix's three betas, alpha as a decay rate for AdEMAMix's mixing weight α = 5,
    eps as one number for Adafactor's pair."""
    import torch

    from optimlab.lab.tuner import SEARCH, OptunaTuner, _defaults
    from optimlab.optim.registry import get_info

    tuner = OptunaTuner(tmp_path, 4, f"lr,{name}", (1e-4, 10.0))
    dimension = SEARCH[name]
    applied = []
    for c in contenders("all"):
        if not dimension.applies(_defaults(c)):
            continue
        applied.append(c.label)
        # each Optuna parameter at its low end, then just inside its high end (suggest_float
        # samples [low, high): 1-momentum never reaches 1, which NAG would refuse)
        for end in (lambda low, high: low, lambda low, high: high * (1 - 1e-9)):
            params = {"lr": 1e-3, **{p: end(low, high) for p, low, high in dimension.params}}
            values = tuner.hyperparameters(c, params)
            get_info(c.name).cls([torch.zeros(2, 2, requires_grad=True)], **values)  # no error
    assert applied  # each dimension applies to some optimizer
    tuner.check(contenders("all"))
    assert tuner.describe()["search"][name].endswith("; " + ", ".join(applied))
