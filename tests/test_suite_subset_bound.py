"""benchmarks/suite_subset_bound.py: the bound on a cheaper suite's agreement, on fabricated curves
whose rankings are known by construction."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# training-loss curves at steps 0, 10, 20, 30: "fast" reaches the floor at step 10, "mid" at 20,
# "slow" at 30; three seeds each, a hair apart so the bootstrap has spread but no overlap
STEPS = [0, 10, 20, 30]
SHAPES = {
    "fast": [1.0, 0.01, 0.01, 0.01],
    "mid": [1.0, 0.5, 0.01, 0.01],
    "slow": [1.0, 0.5, 0.5, 0.01],
}


@pytest.fixture(scope="module")
def bound_module():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling halving_agreement
    try:
        import suite_subset_bound

        yield suite_subset_bound
    finally:
        sys.path.remove(str(BENCHMARKS))


def curves(order: dict[str, str]) -> dict:
    """One problem: optimizer → its 3 seeds, with the curve shape named by `order`."""
    return {
        name: [
            (seed, True, STEPS, [v * (1 + 1e-4 * seed) for v in SHAPES[shape]]) for seed in range(3)
        ]
        for name, shape in order.items()
    }


def test_problems_that_agree_give_every_subset_full_agreement(bound_module) -> None:
    same = {"adam": "fast", "sgd": "mid", "adagrad": "slow"}
    run = {"p1": curves(same), "p2": curves(same), "p3": curves(same)}
    assert bound_module.ranks(run, ("p1", "p2", "p3"), None) == {"adam": 1, "sgd": 2, "adagrad": 3}
    head, *rows = bound_module.bound(run, run, {"p1": 10.0, "p2": 20.0, "p3": 40.0})
    assert head["full_a_vs_full_b"] == pytest.approx(1.0)
    # 6 proper subsets × 3 seed sets; seeds 3–5 don't exist here, so those rows rank nothing
    assert {(tuple(r["problems"]), r["seeds"]) for r in rows} >= {
        (("p1",), "all"),
        (("p1", "p3"), "0-2"),
    }
    assert all(r["tau_min"] == pytest.approx(1.0) for r in rows)
    by_subset = {(tuple(r["problems"]), r["seeds"]): r["cpu_seconds"] for r in rows}
    assert by_subset[("p2", "p3"), "all"] == 60.0


def test_a_problem_that_reverses_the_order_disagrees_alone(bound_module) -> None:
    # p1 and p2: adam < sgd < adagrad in steps; p3 the reverse. Overall, over three problems,
    # the majority order wins the profile; p3 alone ranks exactly backwards: τ-b = −1.
    run = {
        "p1": curves({"adam": "fast", "sgd": "mid", "adagrad": "slow"}),
        "p2": curves({"adam": "fast", "sgd": "mid", "adagrad": "slow"}),
        "p3": curves({"adam": "slow", "sgd": "mid", "adagrad": "fast"}),
    }
    full = bound_module.ranks(run, ("p1", "p2", "p3"), None)
    assert full["adam"] < full["adagrad"]
    _, *rows = bound_module.bound(run, run, {})
    alone = next(r for r in rows if r["problems"] == ["p3"] and r["seeds"] == "all")
    assert alone["tau_a_to_b"] == pytest.approx(-1.0)
    assert rows[-1]["tau_min"] <= alone["tau_min"]  # sorted best first


def test_short_names_and_a_missing_run(bound_module, tmp_path: Path) -> None:
    assert bound_module.short("deep-mlp:depth=10:activation=sigmoid") == "deep-mlp sigmoid"
    assert bound_module.short("digits-mlp") == "digits-mlp"
    with pytest.raises(SystemExit, match=r"no summary\.json"):
        bound_module.main([str(tmp_path), str(tmp_path)])
