"""Which overall ranks the seeds support: a bootstrap over seeds of the performance-profile score.

The overall ranking orders optimizers by the area under their performance profile of steps to
a target (`optimlab.lab.summary`). That score is a function of the seeds' mean training-loss
curves, and with a few seeds two optimizers' scores can swap from one set of seeds to another:
the full suite's ranking recomputed from seeds 0–4 and from seeds 5–9 agreed at Kendall's
τ = 0.72 (docs/compare.md). Printing "1 momentum, 2 AdaMax" when the next seeds say the
opposite ranks noise. So the overall ranks are tied the way the per-problem ranks are
(`optimlab.lab.significance.tied_ranks`), with a bootstrap in place of Welch's test, because
the score is not a mean of per-seed values:

1. Replicate r (r = 1 … R) draws, for every (problem, optimizer) independently, as many seeds
   as it ran, with replacement, and recomputes everything downstream from those seeds: the
   mean curves, each problem's target (f_best + tol·(f(0) − f_best) over the optimizers' mean
   curves), the steps to target, the profile ratios and each optimizer's score s_r.
   Replicate 0 is the seeds as run: its scores are the reported ones.
2. Groups, as `tied_ranks` forms them: the best score and the optimizers after it in order of
   score, up to the first one significantly worse, share rank 1; the rest are ranked the same
   way. "Worse than the best" is tested with the bootstrap p-value
   p = 2·(1 + #{r : s_r(other) ≥ s_r(best)}) / (1 + R) (two-sided, capped at 1), with Holm's
   correction over the comparisons with the best at family-wise level α = 0.05.

The seeds are the ones the ranking counts (`summary.counted_curves`): a seed that diverged or
failed enters as an untrained model from the step it stopped (its step-0 loss from there on),
so a replicate that draws mostly such seeds gets a mean curve that misses the target, which is
what a run with those seeds would have shown. Rows marked not ``ok`` (none, as the summary
builds them) are left out of the means. The draws come from a fixed seed, so the same results
give the same ranks.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from optimlab.lab.significance import ALPHA, holm

#: bootstrap replicates of the overall score (the p-value's resolution is 2 / (R + 1))
REPLICATES = 1000


def replicates_for(optimizers: int, alpha: float = ALPHA) -> int:
    """Enough replicates for Holm's first step to be reachable: its smallest p-value,
    2 / (R + 1), must be well below α / (m − 1) for m optimizers (with 200 replicates and nine
    optimizers nothing could ever be separated); `REPLICATES` up to 25 optimizers."""
    return max(REPLICATES, math.ceil(8 * max(optimizers - 1, 1) / alpha))


@dataclass(frozen=True)
class SeedCurves:
    """One optimizer's tuned seeds on one problem: the evaluation steps (E,), each seed's
    training loss at them (S, E; NaN where a seed has no value) and which seeds finished."""

    steps: np.ndarray
    losses: np.ndarray
    ok: np.ndarray

    @classmethod
    def from_curves(
        cls, curves: list[tuple[bool, list[int] | None, list[float | None] | None]]
    ) -> SeedCurves | None:
        """From (finished, steps, train losses) per seed; the finished seeds' common length
        (early stopping and divergence cut curves short), as `summary.mean_curve` takes it."""
        if not curves:
            return None
        finished = [(steps, losses) for ok, steps, losses in curves if ok and steps]
        length = min((len(steps) for steps, _ in finished), default=0)
        steps = np.asarray(finished[0][0][:length] if finished else [], dtype=np.int64)
        losses = np.full((len(curves), length), np.nan)
        ok = np.zeros(len(curves), dtype=bool)
        for row, (done, _, values) in enumerate(curves):
            if done and values is not None and length:
                losses[row] = [np.nan if v is None else v for v in values[:length]]
                ok[row] = True
        return cls(steps, losses, ok)


def _mean_curves(curve: SeedCurves, weights: np.ndarray) -> np.ndarray:
    """(R+1, E) mean curves: row r averages the finished seeds with multiplicities weights[r]
    (NaN rows where no finished seed was drawn; NaN values ignored, as np.nanmean does)."""
    w = weights * curve.ok[None, :]
    present = ~np.isnan(curve.losses)
    sums = w @ np.where(present, curve.losses, 0.0)
    counts = w @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1e-300), np.nan)


def bootstrap_scores(
    problems: dict[str, dict[str, SeedCurves | None]],
    labels: list[str],
    tolerance: float,
    taus: list[float],
    replicates: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(replicates + 1, len(labels)) profile scores; row 0 from the seeds as run
    (`replicates`: default `replicates_for(len(labels))`)."""
    if replicates is None:
        replicates = replicates_for(len(labels))
    rng = np.random.default_rng(seed)
    tau_grid = np.asarray(taus, dtype=float)
    # ratios[r, p, l]: steps to target over the best steps on problem p (inf: never reached)
    ratios = np.full((replicates + 1, len(problems), len(labels)), np.inf)
    solved = np.zeros((replicates + 1, len(problems)), dtype=bool)
    for p, per_label in enumerate(problems.values()):
        means: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index, label in enumerate(labels):
            curve = per_label.get(label)
            if curve is None or curve.losses.shape[1] == 0:
                continue
            seeds = len(curve.ok)
            weights = np.zeros((replicates + 1, seeds))
            weights[0] = 1.0
            draws = rng.integers(0, seeds, size=(replicates, seeds))
            np.add.at(weights, (np.arange(1, replicates + 1)[:, None], draws), 1.0)
            means[index] = (curve.steps, _mean_curves(curve, weights))
        if not means:
            continue
        with warnings.catch_warnings():  # all-NaN rows: a replicate drew no finished seed
            warnings.simplefilter("ignore", RuntimeWarning)
            starts = np.stack([m[:, 0] for _, m in means.values()], axis=1)
            f0 = np.nanmean(starts, axis=1)
            best = np.nanmin(np.stack([np.nanmin(m, axis=1) for _, m in means.values()], 1), 1)
        target = best + tolerance * (f0 - best)
        steps_to = np.full((replicates + 1, len(labels)), np.inf)
        for index, (steps, m) in means.items():
            with np.errstate(invalid="ignore"):
                hit = np.isfinite(m) & (m <= target[:, None])
            first = hit.argmax(axis=1)
            reached = hit.any(axis=1)
            steps_to[reached, index] = np.maximum(steps[first[reached]], 1)
        best_steps = steps_to.min(axis=1)
        solved[:, p] = np.isfinite(best_steps)
        with np.errstate(invalid="ignore"):
            ratios[:, p, :] = np.where(
                solved[:, p, None],
                steps_to / np.where(solved[:, p], best_steps, 1.0)[:, None],
                np.inf,
            )
    within = ratios[..., None] <= tau_grid  # (R+1, P, L, T)
    counted = solved.sum(axis=1)  # problems someone solved, per replicate
    share = (within & solved[:, :, None, None]).sum(axis=1) / np.maximum(counted, 1)[:, None, None]
    return share.mean(axis=-1)


def supported_ranks(
    labels: list[str],
    scores: np.ndarray,
    alpha: float = ALPHA,
    testable: dict[str, bool] | None = None,
) -> dict[str, int]:
    """Ranks with ties from `bootstrap_scores`: groups formed as `tied_ranks` forms them, in order
    of the reported score (row 0), ending at the first optimizer significantly worse than the
    group's best (bootstrap p-value, Holm). Ranks follow the scores: 1, 1, 3, 3, 3, 6, …

    `testable[label]`: False when the label ran a single seed on every problem. Redrawing one
    seed gives that seed back, so its score would look noise-free and every difference
    "significant"; as with Welch's test on one seed, a pair with such a side is not tested
    (p = 1: tied)."""
    point = scores[0]
    replicate = scores[1:]
    remaining = sorted(range(len(labels)), key=lambda i: -point[i])
    ranks: dict[str, int] = {}

    def p_value(best: int, other: int) -> float:
        if testable is not None and not (testable[labels[best]] and testable[labels[other]]):
            return 1.0
        worse = np.sum(replicate[:, other] >= replicate[:, best])
        return min(1.0, 2 * (1 + worse) / (1 + len(replicate)))

    while remaining:
        best, others = remaining[0], remaining[1:]
        p_values = [p_value(best, o) for o in others]
        worse = holm(p_values, alpha)
        cut = worse.index(True) if True in worse else len(others)
        # equal reported scores always share a rank
        while cut < len(others) and point[others[cut]] == point[others[cut - 1] if cut else best]:
            cut += 1
        group = [best, *others[:cut]]
        rank = len(labels) - len(remaining) + 1
        for i in group:
            ranks[labels[i]] = rank
        remaining = [i for i in remaining if i not in group]
    return ranks
