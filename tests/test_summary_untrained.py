"""An optimizer whose runs finished but ended no better than an untrained model did not learn:
it never shares a rank with one that did, however widely its seeds spread (a newcomer saw
SGD's seeds end at test losses 1,533, 2,138 and 2,703 from a step-0 loss of 546 tied first
with momentum's 87.8 ± 0.8: with 3 seeds Welch's test cannot separate them)."""

from __future__ import annotations

from optimlab.lab.significance import tied_ranks
from tests.test_summary_failed_seeds import START, fabricated

# the newcomer's run (test loss; lower is better): momentum, two SGD rates that learned, and
# sgd:lr=0.038's three seeds
MOMENTUM = [87.0, 87.8, 88.6]
LEARNED = {"sgd:lr=0.037": [86.5, 92.3, 99.6], "sgd:lr=0.0375": [92.0, 102.6, 112.0]}
SGD = [1533.0, 2138.0, 2703.0]


def test_welch_alone_ties_them_and_the_untrained_value_separates_them() -> None:
    values = {"momentum": MOMENTUM, **LEARNED, "sgd": SGD}
    tied = dict.fromkeys(values, 1)
    assert tied_ranks(values, higher_is_better=False) == tied  # Welch + Holm, 3 seeds
    assert tied_ranks(values, higher_is_better=False, untrained=545.7) == {**tied, "sgd": 4}
    # an untrained value all beat, or none: the rule says nothing
    assert tied_ranks(values, False, untrained=5000.0) == tied
    assert tied_ranks(values, False, untrained=10.0) == tied
    # accuracy: below chance never ties with above it
    accuracy = {"a": [0.95, 0.3, 0.97], "b": [0.05, 0.06, 0.07]}
    assert tied_ranks(accuracy, True) == {"a": 1, "b": 1}
    assert tied_ranks(accuracy, True, untrained=0.1) == {"a": 1, "b": 2}


def test_a_pair_that_ended_above_its_step_0_loss_ranks_after_the_learners_and_says_why() -> None:
    # adam's ten seeds end at 0.05; nadam's at 3–60, above the step-0 loss 2.3, none diverged
    seeds = {
        "adam": [("ok", 0.05, 8) for _ in range(10)],
        "nadam": [("ok", 3.0 if s % 2 else 60.0, 99) for s in range(10)],
    }
    summary = fabricated("regression", seeds)
    entries = summary["problems"]["quadratic-deep"]
    assert entries["adam"]["rank"] == 1 and entries["nadam"]["rank"] == 2
    assert entries["nadam"]["no_better_than_untrained"] is True
    assert entries["adam"]["no_better_than_untrained"] is False
    assert f"against {START:.4g} at step 0" in entries["nadam"]["reason"]
    assert "did not learn" in entries["nadam"]["reason"]
