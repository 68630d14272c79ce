"""A run that ends with its validation loss above 10 × its step-0 value is stored ``diverged``
at the step the exploded stretch began (optimlab.lab.pruning.ended_exploded, applied to every
run by optimlab.lab.executor.run_unit): seed reruns and default-rate seeds included, where a
finite loss that grew a thousandfold used to be stored ``ok``. A run that spikes and comes back
stays ``ok``."""

from __future__ import annotations

import json

from optimlab.cli import main
from optimlab.lab.executor import run_unit
from optimlab.lab.protocol import Comparison, contenders
from optimlab.lab.pruning import EXPLODE_FACTOR, ended_exploded
from optimlab.lab.store import ResultStore
from optimlab.lab.trial import TrialResult


def finished(val_loss: list[float], final: float) -> TrialResult:
    curve = {"step": [0, 1, 2, 4, 8][: len(val_loss)], "val_loss": val_loss}
    return TrialResult("ok", {"curve": curve, "final_val_loss": final}, predictions=b"x")


def test_the_rule_on_hand_made_curves() -> None:
    start = 2.0
    above = EXPLODE_FACTOR * start * 1.5
    # spiked at step 1, back by the end: ok (many tuned runs do this: RMSprop's first steps)
    spiked = finished([start, above, 1.0, 0.5, 0.4], 0.4)
    assert ended_exploded(spiked) is spiked
    # ended above: diverged since the stretch it ended in began (step 4, not the spike at 1)
    exploded = ended_exploded(finished([start, above, 1.0, above, above * 2], above * 2))
    assert exploded.status == "diverged" and exploded.metrics["diverged_at"] == 4
    assert exploded.metrics["exploded"] is True and exploded.predictions is None
    assert "above 10 × its value at step 0 (2), since step 4" in exploded.reason
    # just at the factor is not above it; diverged and failed runs pass through untouched
    at_factor = finished([start, 1.0, 1.0, 1.0, EXPLODE_FACTOR * start], EXPLODE_FACTOR * start)
    assert ended_exploded(at_factor).status == "ok"
    failed = TrialResult("failed", {}, reason="boom")
    assert ended_exploded(failed) is failed


def test_a_seed_rerun_that_explodes_is_diverged_at_that_step_alone_and_batched() -> None:
    # SGD at lr 1000 on the digits logistic regression: the validation loss goes 2.34 → 394 at
    # step 1 and ends at ≈ 1,000, finite all along (it used to be stored ok); lr 0.1 learns
    comparison = Comparison([("digits-logreg", 8)], contenders("sgd"), [0.1], seeds=2, evals=4)
    comparison.resolve()
    sgd = comparison.optimizers[0]
    reruns = comparison.seed_trials("digits-logreg", 8, sgd, 1000.0)
    calm = comparison.seed_trials("digits-logreg", 8, sgd, 0.1)
    assert [s.seed for s in reruns] == [0, 1]
    alone = run_unit([reruns[1]])  # the seed rerun, alone
    batched = run_unit([*reruns, *calm])  # one population: rates and seeds
    for result in [*alone, *batched[:2]]:
        assert result.status == "diverged", result.reason
        assert result.metrics["diverged_at"] == 1
        assert (
            result.metrics["final_val_loss"]
            > EXPLODE_FACTOR * result.metrics["curve"]["val_loss"][0]
        )
    assert [r.status for r in batched[2:]] == ["ok", "ok"]


def test_compare_stores_a_fixed_rate_that_ended_exploded_as_diverged(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["compare", "--problems", "digits-logreg", "--optimizers", "sgd:lr=1000,adam"]
    args += ["--steps", "8", "--evals", "4", "--grid-points", "2", "--seeds", "2"]
    args += ["--workers", "1", "--out", str(out)]
    assert main(args) == 0
    trials = ResultStore(out).get()
    sgd = [t for t in trials.values() if t.spec.optimizer == "sgd" and t.spec.lr == 1000.0]
    assert sgd and all(t.result.status == "diverged" for t in sgd)
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["problems"]["digits-logreg"]["sgd:lr=1000"]
    assert entry["rank"] is None and entry["status"] == "diverged"
    assert (
        "it diverged at its fixed lr 1000 on seed 0, so its other seeds did not run"
        in entry["reason"]
    )
