"""Which differences between optimizers are real: tests across seeds, Holm's correction, tied ranks,
and whether a problem was learned at all.

An optimizer is significantly worse than another on a problem (one value per seed) when Welch's
t-test (unequal variances; scipy's ``ttest_ind(equal_var=False)``, or a bootstrap of the
difference of means when scipy is not installed) rejects equal means after Holm's step-down
correction over the comparisons with the best, at family-wise level `ALPHA`. Optimizers within
noise of the best share its rank ("tied"); the rest are ranked the same way (`tied_ranks`).
With one seed on either side nothing can be tested: the pair is tied.

A problem is *learned* when some optimizer's result beats the trivial one: for classification,
a mean test accuracy at least `LEARNED_MARGIN` above chance (the test set's majority-class
share); for regression, a mean final training loss below (1 − `LEARNED_MARGIN`) times the
starting loss. A problem nobody learned says nothing about the optimizers: it is left out of the
overall ranking.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
#: how far above chance (accuracy, absolute) or below the starting loss (relative) counts as learned
LEARNED_MARGIN = 0.02
BOOTSTRAP_SAMPLES = 10_000


def welch_p(a: Sequence[float], b: Sequence[float], resolution: float = 0.0) -> float:
    """Two-sided p-value of equal means (Welch's t-test; a bootstrap without scipy). 1.0 when
    either side has fewer than two values.

    `resolution` is the metric's smallest step (a test accuracy on N examples moves in steps of
    1/N). Values rounded to that grid hide up to resolution²/12 of variance each (the variance
    of a uniform rounding error), so each side's sample variance is floored there: two seeds
    that land on the same accuracy are not evidence of zero noise (without the floor, two such
    pairs a single test example apart were "significantly" different, p = 0). With resolution 0
    (a continuous metric), two constant samples with different means give p = 0.0."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return 1.0
    floor = resolution**2 / 12.0
    vx, vy = max(np.var(x, ddof=1), floor), max(np.var(y, ddof=1), floor)
    if vx == 0 and vy == 0:
        return 1.0 if np.mean(x) == np.mean(y) else 0.0
    try:
        from scipy import stats
    except ImportError:
        return bootstrap_p(x, y)
    # Welch's t with the (floored) variances; equals scipy's ttest_ind(equal_var=False) above
    # the floor
    se2x, se2y = vx / len(x), vy / len(y)
    t = (np.mean(x) - np.mean(y)) / math.sqrt(se2x + se2y)
    df = (se2x + se2y) ** 2 / (se2x**2 / (len(x) - 1) + se2y**2 / (len(y) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(2 * stats.t.sf(abs(t), df))


def bootstrap_p(x: np.ndarray, y: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> float:
    """Two-sided bootstrap p-value of equal means: both samples are shifted to the pooled mean
    (the null) and resampled; p = share of resampled |mean difference| ≥ the observed one."""
    rng = np.random.default_rng(0)  # the same answer on every run
    observed = abs(x.mean() - y.mean())
    pooled = np.concatenate([x, y]).mean()
    x0, y0 = x - x.mean() + pooled, y - y.mean() + pooled
    mx = rng.choice(x0, (samples, len(x0))).mean(1)
    my = rng.choice(y0, (samples, len(y0))).mean(1)
    return float((np.sum(np.abs(mx - my) >= observed) + 1) / (samples + 1))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down: reject the i-th smallest p while p_(i) ≤ α / (m − i); keeps the
    family-wise error ≤ α for any dependence between the tests."""
    m = len(p_values)
    rejected = [False] * m
    for i, index in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        if p_values[index] > alpha / (m - i):
            break
        rejected[index] = True
    return rejected


def same_mean(a: float, b: float, resolution: float = 0.0) -> bool:
    """Two means equal but for float rounding (a thousandth of the metric's step, or 1e-6
    relative)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=resolution * 1e-3)


def tied_ranks(
    values: dict[str, list[float]],
    higher_is_better: bool,
    resolution: float = 0.0,
    untrained: float | None = None,
) -> dict[str, int]:
    """Ranks with ties, by tied groups: the best mean and the optimizers after it, in order of
    mean, up to the first one significantly worse than it (Welch against the best, Holm over
    those comparisons) form the first group and share rank 1; the rest are ranked the same way,
    the next group's rank counting everyone before it (1, 1, 1, 4, 5). Ranks follow the means:
    an optimizer never ranks above one with a better mean. `values`: per optimizer label, its per-seed results;
    `resolution`: the metric's smallest step (see `welch_p`).

    Comparing with the best rather than all pairs is what a ranking claims ("X is worse than
    the best"), and keeps the power a few seeds have: with 3 seeds and nine optimizers, Holm
    over all 36 pairs would need p < 0.0014 to separate anything. But a best whose seeds spread
    widely separates from nothing, so the group also ends at the first optimizer significantly
    worse than another member of it (Welch, p < α / the number of comparisons with the best):
    an optimizer clearly worse than the second cannot share the first rank.

    `untrained`: the metric of an untrained model (chance accuracy, the step-0 loss). A group
    whose best beats it ends at the first optimizer whose mean does not: one that ended no
    better than not training at all did not learn, however widely its seeds spread (seeds at
    1,533, 2,138 and 2,703 from a step-0 loss of 546 had shared rank 1 with 87.8 ± 0.8)."""
    sign = 1.0 if higher_is_better else -1.0
    remaining = sorted(values, key=lambda label: -sign * float(np.mean(values[label])))
    ranks: dict[str, int] = {}
    while remaining:
        best, others = remaining[0], remaining[1:]
        worse = holm([welch_p(values[best], values[other], resolution) for other in others])
        # the group ends at the first optimizer (in order of mean) significantly worse than the
        # best: a wide-spread one further down is not tested separable, but ranking it above
        # a tight one with a better mean would contradict the means (a rank never improves as
        # the mean gets worse)
        cut = worse.index(True) if True in worse else len(others)
        # ... or at the first one significantly worse than a member already in the group: a
        # wide-spread best separates from nothing, and without this a 20.9 ± 0.6 % would share
        # rank 1 with a 47.6 ± 1.7 % it is clearly worse than (p = 0.0005). Each such test is
        # held to α / (number of comparisons with the best): Bonferroni over the same family
        # size, so the group can only get smaller, never larger, than the best alone allows
        threshold = ALPHA / max(len(others), 1)
        for index in range(1, cut):
            member_ps = [welch_p(values[g], values[others[index]], resolution)
                         for g in others[:index]]  # fmt: skip
            if member_ps and min(member_ps) < threshold:
                cut = index
                break
        # ... or at the first one no better than an untrained model, when the best learned
        if untrained is not None and sign * (float(np.mean(values[best])) - untrained) > 0:
            for index in range(cut):
                if sign * (float(np.mean(values[others[index]])) - untrained) <= 0:
                    cut = index
                    break
        # ... but never between two equal means (345/360 from [345, 345] and from [344, 346]):
        # a constant pair is "separable" where a spread one with the same mean is not, and
        # the two must share a rank (float32 rounding makes the means differ by ~1e-8)
        last = float(np.mean(values[others[cut - 1]])) if cut else float(np.mean(values[best]))
        while cut < len(others) and same_mean(
            float(np.mean(values[others[cut]])), last, resolution
        ):
            cut += 1
        group = [best, *others[:cut]]
        rank = len(values) - len(remaining) + 1
        for label in group:
            ranks[label] = rank
        remaining = [label for label in remaining if label not in group]
    return ranks


def chance_accuracy(targets: np.ndarray) -> float:
    """The accuracy of always answering the most frequent test class."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64))
    return float(counts.max() / counts.sum())


def learned(
    best_accuracy: float | None = None,
    chance: float | None = None,
    best_loss: float | None = None,
    start_loss: float | None = None,
) -> bool:
    """Whether the best optimizer beat the trivial result (see the module docstring)."""
    if chance is not None:
        return best_accuracy is not None and best_accuracy >= chance + LEARNED_MARGIN
    if best_loss is None or start_loss is None or not math.isfinite(start_loss):
        return False
    return best_loss <= (1 - LEARNED_MARGIN) * start_loss
