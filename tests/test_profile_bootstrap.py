"""The overall ranking's ties: a bootstrap over seeds of the performance-profile score
(optimlab.lab.profile_bootstrap), checked against the summary's own profile and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from optimlab.lab.profile_bootstrap import SeedCurves, bootstrap_scores, supported_ranks
from optimlab.lab.summary import TAUS, performance_profile, steps_to, target_loss

STEPS = list(range(0, 110, 10))


def decay(rate: float, floor: float = 0.0) -> list[float]:
    """A training-loss curve from 1.0 falling geometrically toward `floor`."""
    return [floor + (1.0 - floor) * (1.0 - rate) ** (s / 10) for s in STEPS]


def curves(*per_seed: list[float | None] | None) -> SeedCurves:
    """One optimizer's seeds; None for a seed that diverged."""
    return SeedCurves.from_curves(
        [(c is not None, STEPS if c is not None else None, c) for c in per_seed]
    )


def test_replicate_zero_is_the_reported_profile_score() -> None:
    rng = np.random.default_rng(3)
    problems = {}
    for p in range(3):
        problems[f"p{p}"] = {
            label: curves(*[decay(rate * rng.uniform(0.8, 1.2)) for _ in range(4)])
            for label, rate in (("a", 0.5), ("b", 0.3), ("c", 0.1 + 0.2 * p))
        }
    labels = ["a", "b", "c"]
    scores = bootstrap_scores(problems, labels, 0.01, TAUS, replicates=50)
    # the summary's path: mean curves over the seeds, Moré & Wild's target, steps, profile
    steps = {}
    for p, per_label in problems.items():
        means = {
            label: {"step": STEPS, "mean": list(np.nanmean(c.losses, axis=0))}
            for label, c in per_label.items()
        }
        target = target_loss(means.values(), 0.01)
        steps[p] = {label: steps_to(m, target) for label, m in means.items()}
    profile = performance_profile(steps, labels)
    assert scores[0] == pytest.approx([np.mean(profile[label]) for label in labels], abs=1e-12)


def test_clearly_separated_optimizers_get_their_own_ranks() -> None:
    # every seed of "fast" reaches the target at step 30, of "slow" at 100: no draw swaps them
    problems = {
        "p": {
            "fast": curves(decay(0.9), decay(0.9), decay(0.9)),
            "slow": curves(decay(0.37), decay(0.37), decay(0.37)),
        }
    }
    scores = bootstrap_scores(problems, ["fast", "slow"], 0.01, TAUS, replicates=200)
    assert scores[0, 0] > scores[0, 1]
    assert supported_ranks(["fast", "slow"], scores) == {"fast": 1, "slow": 2}


def test_overlapping_seeds_share_a_rank() -> None:
    # seeds as spread as the gap between the two: the point scores differ, the seeds cannot say
    problems = {
        "p": {
            "a": curves(*[decay(r) for r in (0.9, 0.4, 0.8, 0.35)]),
            "b": curves(*[decay(r) for r in (0.85, 0.35, 0.8, 0.35)]),
        }
    }
    scores = bootstrap_scores(problems, ["a", "b"], 0.01, TAUS, replicates=400)
    assert scores[0, 0] != scores[0, 1]
    assert supported_ranks(["a", "b"], scores) == {"a": 1, "b": 1}


def test_ranks_follow_the_scores_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    labels = [f"o{i}" for i in range(6)]
    problems = {
        f"p{p}": {
            label: curves(*[decay(0.1 + 0.12 * i * rng.uniform(0.7, 1.3)) for _ in range(5)])
            for i, label in enumerate(labels)
        }
        for p in range(4)
    }
    first = bootstrap_scores(problems, labels, 0.01, TAUS, replicates=300)
    again = bootstrap_scores(problems, labels, 0.01, TAUS, replicates=300)
    assert np.array_equal(first, again)
    ranks = supported_ranks(labels, first)
    order = sorted(labels, key=lambda label: -first[0, labels.index(label)])
    # never above a better score; a rank is the count of optimizers before its group, plus one
    assert [ranks[label] for label in order] == sorted(ranks[label] for label in order)
    for label in order:
        assert ranks[label] == 1 + sum(ranks[o] < ranks[label] for o in labels)


def test_diverged_seeds_do_not_count_and_a_fully_diverged_optimizer_ranks_last() -> None:
    problems = {
        "p": {
            "steady": curves(decay(0.5), decay(0.5), decay(0.5)),
            "lost": curves(None, None, None),
            # one finished seed of three: its mean curve is that seed's, as in mean_curve
            "partial": curves(None, decay(0.9), None),
        }
    }
    labels = ["steady", "lost", "partial"]
    # target 0.01 (1 % of the way from the best, 1e-10, to the start, 1.0): partial's 0.1 per
    # 10 steps reaches it at step 20, steady's 0.5 per 10 steps at step 70 (ratio 3.5)
    scores = bootstrap_scores(problems, labels, 0.01, TAUS, replicates=200)
    assert scores[0].tolist() == pytest.approx([np.mean([t >= 70 / 20 for t in TAUS]), 0.0, 1.0])
    # partial's one finished seed is missing from (2/3)³ of the draws: the seeds cannot
    # separate it from the others (the group is tested against its best)
    assert supported_ranks(labels, scores) == {"steady": 1, "lost": 1, "partial": 1}
    alone = {"p": {k: problems["p"][k] for k in ("steady", "lost")}}
    scores = bootstrap_scores(alone, ["steady", "lost"], 0.01, TAUS, replicates=200)
    assert supported_ranks(["steady", "lost"], scores) == {"steady": 1, "lost": 2}


def test_enough_replicates_to_separate_many_optimizers() -> None:
    # twelve optimizers, each seed of the i-th reaching the target later than the (i-1)-th's: a
    # bootstrap too small for Holm over eleven comparisons (2 / (R + 1) > 0.05 / 11) would tie
    # them all; the default number of replicates separates every one
    labels = [f"o{i:02d}" for i in range(12)]
    problems = {
        "p": {label: curves(*[decay(0.95 - 0.05 * i)] * 3) for i, label in enumerate(labels)},
        "q": {label: curves(*[decay(0.9 - 0.05 * i)] * 3) for i, label in enumerate(labels)},
    }
    scores = bootstrap_scores(problems, labels, 0.01, TAUS)
    assert supported_ranks(labels, scores) == {label: i + 1 for i, label in enumerate(labels)}
    assert len(set(supported_ranks(labels, scores[:201]).values())) == 1


def test_a_single_seed_is_never_separated() -> None:
    # one seed each: every redraw is the seed itself, so the replicates show no spread; the
    # scores differ, but one seed says nothing about noise (as Welch's test on one seed)
    problems = {"p": {"fast": curves(decay(0.9)), "slow": curves(decay(0.37))}}
    scores = bootstrap_scores(problems, ["fast", "slow"], 0.01, TAUS, replicates=200)
    assert scores[0, 0] > scores[0, 1] and np.all(scores[1:] == scores[0])
    untested = {"fast": True, "slow": False}
    assert supported_ranks(["fast", "slow"], scores, testable=untested) == {"fast": 1, "slow": 1}


def test_the_overall_answer_gives_each_tied_leader_its_own_score() -> None:
    """A newcomer read "adam and sgd (performance-profile score 1.000), tied" while the table
    showed sgd at 0.000: the answer gives every tied leader's score, and says why a tie can
    hold between different scores."""
    from optimlab.lab.summary import recommendations

    problems = {"p": {"learned": True, "optimizers": {}, "task": "classification"}}
    tied = [
        {"optimizer": "adam", "rank": 1, "profile_score": 1.0},
        {"optimizer": "sgd", "rank": 1, "profile_score": 0.0},
        {"optimizer": "lion", "rank": 3, "profile_score": 0.0},
    ]
    line = recommendations(problems, tied, [], seeds=3)["overall"]
    assert "adam and sgd (performance-profile scores 1.000 and 0.000 on 1 learned problem)" in line
    assert "other draws of the same seeds reorder their scores" in line
    equal = [{**row, "profile_score": 0.5} for row in tied[:2]]
    line = recommendations(problems, equal, [], seeds=3)["overall"]
    assert "adam and sgd (performance-profile score 0.500 on 1 learned problem), tied" in line
    assert "reorder" not in line
    alone = recommendations(problems, tied[:1], [], seeds=3)["overall"]
    assert alone.startswith("overall: adam (performance-profile score 1.000 on 1 learned")
