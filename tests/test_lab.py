"""The lab: schedules against closed forms, the training loop against a hand-written loop, the
diverged and failed paths, the store's guarantees, and the summary's arithmetic."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time

import numpy as np
import pytest
import torch

from optimlab.lab import store as store_module
from optimlab.lab.protocol import Comparison, Contender, best_lr, contenders, lr_grid
from optimlab.lab.schedules import make_schedule, parse_schedule
from optimlab.lab.store import ResultStore, StoredTrial, StoreError
from optimlab.lab.summary import ensemble_accuracy, performance_profile, steps_to, target_loss
from optimlab.lab.train import eval_steps, train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.optim.registry import get_info, list_optimizers
from optimlab.problems import get_problem


def lrs(spec: str, steps: int, lr: float = 1.0) -> list[float]:
    """The learning rate used at each of `steps` steps under schedule `spec`."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = make_schedule(spec, optimizer, steps)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_step()
    return seen


def test_schedules_follow_their_formulas() -> None:
    assert lrs("constant", 5) == [1.0] * 5
    cosine = lrs("cosine", 100)
    for t in (0, 25, 50, 99):
        assert cosine[t] == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 100)), abs=1e-9)
    exponential = lrs("exponential:final=0.01", 100)
    assert exponential[50] == pytest.approx(0.01**0.5, rel=1e-9)
    step = lrs("step:every=0.25:gamma=0.5", 100)
    assert step[24] == 1.0 and step[25] == 0.5 and step[99] == 0.125
    warm = lrs("warmup-cosine:warmup=0.1", 100)
    assert warm[0] == pytest.approx(0.01) and warm[10] == pytest.approx(1.0)
    assert warm[5] == pytest.approx(0.01 + 0.99 * 5 / 10)
    assert warm[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_plateau_schedule_steps_on_validation_loss() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = make_schedule("plateau:factor=0.5:patience=1", optimizer, 100)
    schedule.after_step()  # no effect: plateau moves only at evaluations
    for loss in (1.0, 1.0, 1.0):
        schedule.on_eval(loss)
    assert optimizer.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("linear", r"unknown schedule 'linear'; valid schedules: constant, step, exponential"),
        (
            "cosine:warmup=0.1",
            r"unknown option 'warmup' for schedule 'cosine'; valid options: none",
        ),
        ("step:gamma=2", r"gamma=2 must be in \(0, 1\]"),
        ("step:gamma=fast", r"gamma='fast' must be a number"),
        ("plateau:patience=1.5", r"patience=1.5 must be an integer >= 0"),
    ],
)
def test_bad_schedules(spec: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_schedule(spec)


def test_trial_key_is_the_spec_identity() -> None:
    a = TrialSpec("p", "adam", {"lr": 0.1, "betas": (0.9, 0.99)}, seed=1, problem_label="x")
    b = TrialSpec("p", "adam", {"betas": [0.9, 0.99], "lr": 0.1}, seed=1, problem_label="y")
    assert a.key == b.key and len(a.key) == 20
    assert a.key != TrialSpec("p", "adam", {"lr": 0.1, "betas": (0.9, 0.99)}, seed=2).key
    assert a.key != TrialSpec("p", "adam", {"lr": 0.1}, seed=1).key


def legacy_key(spec: TrialSpec) -> str:
    # the key as every version before trial_version computed it: sha256 of the canonical JSON
    data = {"problem": spec.problem, "optimizer": spec.optimizer, "schedule": spec.schedule,
            "hyperparameters": spec.hyperparameters, "seed": spec.seed, "steps": spec.steps,
            "evals": spec.evals}  # fmt: skip
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def test_a_trial_version_makes_stored_trials_stale_and_leaves_the_others_keys_alone() -> None:
    adam = TrialSpec("digits-mlp", "adam", {"lr": 0.01}, seed=3)
    assert adam.key == legacy_key(adam)  # results stored by earlier versions are reused
    # Muon's trials were built as Muon(model.parameters()) before its whole-network build:
    # those stored under the old key must not be reused
    muon = TrialSpec("tiny-lm", "muon", {"lr": 0.02}, seed=3)
    assert get_info("muon").trial_version == 1 and "trial_version" in muon.identity()
    assert muon.key != legacy_key(muon)


def test_eval_steps_are_half_geometric_half_even() -> None:
    assert eval_steps(100, 1) == {100}
    assert eval_steps(100, 4) == {1, 10, 50, 100}
    assert eval_steps(10000, 8) == {1, 10, 100, 1000, 2500, 5000, 7500, 10000}
    assert eval_steps(3, 10) == {1, 2, 3}


def test_training_loop_equals_a_hand_written_loop() -> None:
    problem = get_problem("digits-mlp:width=16:batch_size=32")
    spec = TrialSpec(problem.spec, "momentum", {"lr": 0.05}, seed=4, steps=60, evals=3)
    # evals=3: step 1 (geometric), 30 and 60 (even)
    result = train(spec, problem)
    assert result.status == "ok"
    # the same run, written by hand with torch.optim: same init, same minibatch order
    model = problem.build_model(4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(4)
    x, y = problem.train
    order, position = torch.randperm(len(x), generator=generator), 0
    for _ in range(60):
        if position + 32 > len(x):
            order, position = torch.randperm(len(x), generator=generator), 0
        index = order[position : position + 32]
        position += 32
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        x_test, y_test = problem.test
        logits = model(x_test)
        test_loss = torch.nn.functional.cross_entropy(logits, y_test).item()
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
    assert result.metrics["final_test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert result.metrics["test_accuracy"] == pytest.approx(accuracy)
    assert result.metrics["curve"]["step"] == [0, 1, 30, 60]
    assert result.metrics["steps_run"] == 60
    probabilities = np.frombuffer(result.predictions, dtype=np.float16).reshape(len(y_test), 10)
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=2e-3)


def test_diverged_run_is_a_result_not_a_crash() -> None:
    problem = get_problem("quadratic-deep")
    # lr far above 2/λmax = 2/53.1: gradient descent on the quadratic blows up
    result = train(TrialSpec(problem.spec, "sgd", {"lr": 10.0}, steps=500), problem)
    assert result.status == "diverged"
    assert result.reason.startswith("non-finite loss at step")
    assert result.metrics["diverged_at"] < 500 and result.predictions is None
    stable = train(TrialSpec(problem.spec, "sgd", {"lr": 0.01}, steps=20), problem)
    assert (
        stable.status == "ok"
        and stable.metrics["final_train_loss"] < stable.metrics["curve"]["train_loss"][0]
    )


def test_failed_run_records_the_reason() -> None:
    problem = get_problem("quadratic-deep")
    result = train(
        TrialSpec(problem.spec, "adam", {"lr": 0.1, "betas": (1.5, 0.9)}, steps=5), problem
    )
    assert result.status == "failed" and "betas" in result.reason and "ValueError" in result.reason
    missing = train(TrialSpec("no-such-problem", "adam", {"lr": 0.1}, steps=5))
    assert missing.status == "failed" and "unknown problem 'no-such-problem'" in missing.reason


def test_early_stopping_stops_and_restores_the_best() -> None:
    # a rate high enough to overfit/oscillate; patience 1 stops at the first non-improvement
    problem = get_problem("digits-logreg:early_stopping=1")
    result = train(TrialSpec(problem.spec, "sgd", {"lr": 50.0}, steps=400, evals=40), problem)
    assert result.status == "ok"
    curve = result.metrics["curve"]
    if result.metrics["stopped_early"]:
        assert result.metrics["steps_run"] < 400
        assert result.metrics["final_val_loss"] == pytest.approx(
            min(curve["val_loss"][1:]), rel=1e-6
        )
    else:  # never worsened: the curve must then be monotone
        assert all(b < a for a, b in zip(curve["val_loss"][1:], curve["val_loss"][2:]))


def test_lr_grid_is_log_spaced() -> None:
    grid = lr_grid(8, 1e-4, 10.0)
    assert len(grid) == 8 and grid[0] == 1e-4 and grid[-1] == 10.0
    ratios = np.diff(np.log10(grid))
    np.testing.assert_allclose(ratios, 5 / 7, atol=0.01)
    assert len(lr_grid(36, 1e-5, 100.0)) == 36


def test_contenders_parse_and_reject() -> None:
    entries = contenders("sgd,adam:amsgrad=true:lr=0.01")
    assert [c.label for c in entries] == ["sgd", "adam:amsgrad=true:lr=0.01"]
    assert entries[1].options == {"amsgrad": True, "lr": 0.01}
    assert entries[0].default_lr == 1e-3
    nine = ["sgd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam", "adamax", "nadam"]
    assert [c.name for c in contenders(None)] == nine  # the classic preset: the textbook's nine
    assert [c.name for c in contenders("all")] == list_optimizers()
    assert [c.name for c in contenders("classic,lion")] == [*nine, "lion"]
    with pytest.raises(ValueError, match="unknown optimizer 'adamz'; valid names: sgd"):
        contenders("adamz")
    with pytest.raises(ValueError, match="lists sgd twice"):
        contenders("sgd,sgd")
    with pytest.raises(ValueError, match="'modern,adamw' lists adamw twice"):
        contenders("modern,adamw")  # the message quotes what the user typed
    for typo in ("adam,,sgd", "modern,", ",adam"):  # a name went missing: not silently dropped
        with pytest.raises(ValueError, match=f"empty item .* in spec '{typo}'"):
            contenders(typo)


def _stored(lr: float, status: str, val: float | None) -> StoredTrial:
    spec = TrialSpec("p", "sgd", {"lr": lr})
    return StoredTrial(spec, TrialResult(status, {"final_val_loss": val}), 0.0, 0)


def test_best_lr_is_lowest_validation_loss_among_finished_runs() -> None:
    trials = [_stored(0.1, "ok", 0.5), _stored(1.0, "diverged", None), _stored(0.01, "ok", 0.4)]
    assert best_lr(trials) == 0.01
    assert best_lr([_stored(1.0, "diverged", None)]) is None


def test_fixed_lr_turns_tuning_off() -> None:
    comparison = Comparison(
        [("quadratic-deep", 10)], [Contender("sgd:lr=0.01", "sgd", {"lr": 0.01})], [0.1, 1.0], 2
    )
    comparison.resolve()
    grid = comparison.grid_trials("quadratic-deep", 10, comparison.optimizers[0])
    assert [s.lr for s in grid] == [0.01]
    # seed 0 at the best rate is the grid trial itself (one run, two roles)
    seeds = comparison.seed_trials("quadratic-deep", 10, comparison.optimizers[0], 0.01)
    assert seeds[0].key == grid[0].key and seeds[1].seed == 1


def test_steps_to_target_and_performance_profile() -> None:
    curve = {"step": [0, 10, 20, 30], "mean": [2.0, 1.0, 0.5, 0.2], "std": [0] * 4}
    assert steps_to(curve, 0.5) == 20 and steps_to(curve, 0.1) is None
    steps = {"p1": {"a": 10, "b": 20, "c": None}, "p2": {"a": 30, "b": 10, "c": 35}}
    profile = performance_profile(steps, ["a", "b", "c"])
    tau = [round(1 + 0.1 * i, 1) for i in range(31)]
    at = {t: i for i, t in enumerate(tau)}
    # a: ratios 1 and 3; b: 2 and 1; c: ∞ and 3.5
    assert profile["a"][at[1.0]] == 0.5 and profile["a"][at[3.0]] == 1.0
    assert profile["b"][at[1.9]] == 0.5 and profile["b"][at[2.0]] == 1.0
    assert profile["c"][at[3.4]] == 0.0 and profile["c"][at[3.5]] == 0.5 and profile["c"][-1] == 0.5


def test_target_is_more_and_wild_share_of_the_best_reduction() -> None:
    # starts 10 and 12 (mean 11), best point 1: target = 1 + tol * (11 - 1)
    a = {"step": [0, 10, 20], "mean": [10.0, 4.0, 1.0], "std": [0] * 3}
    b = {"step": [0, 10, 20], "mean": [12.0, 1.9, 1.5], "std": [0] * 3}
    assert target_loss([a, b], 0.1) == pytest.approx(2.0)
    assert target_loss([a, b], 0.01) == pytest.approx(1.1)
    # the loose target rewards b's fast start, the tight one a's better end
    assert (steps_to(a, 2.0), steps_to(b, 2.0)) == (20, 10)
    assert (steps_to(a, 1.1), steps_to(b, 1.1)) == (20, None)
    assert target_loss([{"step": [], "mean": [], "std": []}], 0.1) is None


def test_ensemble_averages_probabilities() -> None:
    targets = np.array([0, 1, 1])
    # seed A right on 0 and 1, wrong on 2 (barely); seed B wrong on 1 (barely), right on 2
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45]], dtype=np.float16)
    b = np.array([[0.6, 0.4], [0.55, 0.45], [0.1, 0.9]], dtype=np.float16)
    trials = [
        StoredTrial(TrialSpec("p", "sgd", {"lr": 1}), TrialResult("ok", {}, "", p.tobytes()), 0, 0)
        for p in (a, b)
    ]
    # each seed alone: 2/3; averaged probabilities: all three right
    assert ensemble_accuracy(trials, targets) == 1.0


# --- the store ---------------------------------------------------------------------------------


def _result(status: str = "ok") -> TrialResult:
    return TrialResult(status, {"final_train_loss": 1.5, "nan": math.nan}, "", b"\x00\x01")


def test_store_round_trip_and_no_duplicates(tmp_path) -> None:
    store = ResultStore(tmp_path)
    spec = TrialSpec("p", "adam", {"lr": 0.1, "betas": (0.8, 0.9)}, seed=3, problem_label="P")
    assert store.put(spec, _result())
    assert not store.put(spec, _result("failed"))  # the first result wins
    again = ResultStore(tmp_path).get()
    assert list(again) == [spec.key] and store.count() == 1
    trial = again[spec.key]
    assert trial.result.status == "ok" and trial.result.metrics["nan"] is None
    assert trial.result.predictions == b"\x00\x01" and trial.spec.key == spec.key
    record = trial.as_record()
    assert record["problem"] == "P" and record["hyperparameters"]["betas"] == [0.8, 0.9]
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_refuses_another_version(tmp_path, monkeypatch) -> None:
    ResultStore(tmp_path)
    monkeypatch.setattr(store_module, "__version__", "9.9.9")
    with pytest.raises(StoreError, match=r"written by optimlab 0\.1\.0 .*this is optimlab 9\.9\.9"):
        ResultStore(tmp_path)
    assert ResultStore(tmp_path, fresh=True).count() == 0  # --fresh is the explicit way out


def test_store_refuses_a_corrupted_file(tmp_path) -> None:
    (tmp_path / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a readable optimlab results database"):
        ResultStore(tmp_path)
    assert (tmp_path / "results.sqlite").read_bytes().startswith(b"this is not")  # untouched


def test_store_refuses_a_foreign_database(tmp_path) -> None:
    connection = sqlite3.connect(tmp_path / "results.sqlite")
    connection.execute("CREATE TABLE mine (x)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="not an optimlab results database; refusing"):
        ResultStore(tmp_path)


def test_store_refuses_an_unwritable_directory(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"file/sub' cannot be made: '.*file' is a file, not a"):
        ResultStore(blocker / "sub")


def test_store_read_only_open_needs_an_existing_database(tmp_path) -> None:
    with pytest.raises(StoreError, match="no results database in"):
        ResultStore(tmp_path, create=False)


def test_curve_seconds_leave_out_the_first_steps_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds to a target compare optimizers, not compilers: a fake clock makes the first step
    take 100 s and every later one 1 s; the curve's seconds count only the later steps."""
    import types

    import optimlab.lab.train as train_module

    clock = {"now": 0.0, "ticks": 0}

    def perf_counter() -> float:
        return clock["now"]

    real_create = train_module.create

    def create(*args, **kwargs):  # type: ignore[no-untyped-def]
        optimizer = real_create(*args, **kwargs)
        real_step = optimizer.step

        def timed_step(*a, **k):  # type: ignore[no-untyped-def]
            clock["ticks"] += 1
            clock["now"] += 100.0 if clock["ticks"] == 1 else 1.0
            return real_step(*a, **k)

        optimizer.step = timed_step
        return optimizer

    fake_time = types.SimpleNamespace(perf_counter=perf_counter, process_time=time.process_time)
    monkeypatch.setattr(train_module, "time", fake_time)
    monkeypatch.setattr(train_module, "create", create)
    problem = get_problem("quadratic-deep")
    spec = TrialSpec(problem.spec, "sgd", {"lr": 0.01}, steps=10, evals=2)
    result = train(spec, problem)
    assert result.status == "ok", result.reason
    metrics = result.metrics
    assert metrics["warmup_seconds"] == 100.0
    assert metrics["seconds_per_step"] == 1.0
    steps = metrics["curve"]["step"]
    assert metrics["curve_seconds"] == [max(0, s - 1) * 1.0 for s in steps]
