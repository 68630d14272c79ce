"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", §3.3; popularised by fastai's ``lr_find``).

Train for at most `num_iter` minibatches while the learning rate grows exponentially,

    η_i = η_start · (η_end / η_start)^(i / (num_iter − 1)),   i = 0 … num_iter − 1,

and record the loss of each minibatch. The raw losses are noisy, so they are smoothed with a
debiased exponential moving average (as Adam debiases its moments):

    m_i = β·m_{i−1} + (1 − β)·L_i,   m_{−1} = 0,    L̂_i = m_i / (1 − β^{i+1}).

The test stops early once L̂_i > `diverge` × min_{j≤i} L̂_j, or a loss is not finite: beyond that
point the curve says nothing more. Afterwards the model and the optimizer are restored exactly
(`optimlab.diagnose.common.preserved`), so the test can run before real training.

The suggestion (`suggest_lr`) reads a zero-lag, spike-proof version of the raw curve
(`robust_curve`): the *valley* rule picks a learning rate inside the longest stretch over which
the loss keeps falling, the *steepest* rule the point of fastest descent per decade of learning
rate, the *minimum* rule (fastai's) a tenth of the rate at which the loss is lowest. All ignore
the part of the curve after the minimum and never return NaN.

A suggestion is only as good as the curve it reads. `curve_verdict` says how far to trust it,
from the curve's finiteness, drop and noise (thresholds `FLAT_DROP`, `NOISY_RATIO`, `MIN_POINTS`):

* ``"nonfinite"`` — the loss was not finite before the curve had `MIN_POINTS` points (NaN
  inputs, a broken model): nothing to read;
* ``"short"`` — fewer than `MIN_POINTS` points in all;
* ``"flat"`` — the loss never fell by more than `FLAT_DROP` of its starting level (random
  labels, a deep saturated sigmoid net): no rate trained the model, so none is suggested;
* ``"noisy"`` — it fell, but the minibatch noise around the trend (robust standard deviation
  of raw − `robust_curve`) exceeds `NOISY_RATIO` of the fall: a rough guide only;
* ``"reliable"`` — otherwise.

With a ``nonfinite``, ``short`` or ``flat`` curve there is no suggestion (``lr`` is None); a
``noisy`` one keeps its number, marked unreliable with the reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from optimlab.diagnose.common import (
    Data,
    LossFn,
    Progress,
    batches,
    check_data,
    check_scalar_loss,
    preserved,
    trainable_parameters,
)
from optimlab.optim.modes import to_train_point

#: where the valley's suggestion sits between its first (0) and last (1) point, in log lr.
#: Not the middle: the loss recorded at rate η_i was reached with every smaller rate before it,
#: so the curve lags the rate, and the rate that trains best lies closer to the minimum (on
#: digits-mlp, compare's tuned rates are about half the rate of the minimum for Adam and SGD).
VALLEY_POSITION = 0.75

#: a curve whose loss falls by less than this fraction of its starting level is "flat". Measured
#: (seeds 0, 1): random labels fall 0.2–1.9 %, a 10-layer sigmoid net 1.2–7.2 %; real curves
#: (digits-mlp with Adam, SGD, Momentum; digits-logreg; mnist1d-mlp; batch-normed ReLU nets)
#: fall 16–93 %.
FLAT_DROP = 0.10
#: noise (robust std of raw − trend) above this fraction of the fall makes a curve "noisy".
#: Measured: real curves 0.005–0.033, the flat ones above 0.1.
NOISY_RATIO = 0.10
#: fewer finite points than this and the curve cannot be read
MIN_POINTS = 5
#: the suggestion rules, fastai's names (`suggest_lr`)
RULES = ("valley", "steepest", "minimum")
VERDICTS = ("reliable", "noisy", "flat", "nonfinite", "short")


@dataclass
class CurveVerdict:
    """How far to trust a range-test curve (see the module docstring).

    Attributes:
        verdict: one of `VERDICTS`.
        reason: one sentence saying why, with the numbers.
        drop: (starting level − lowest point of the trend) / |starting level|, or None.
        noise: robust standard deviation of the raw losses around the trend / the fall, or None.
    """

    verdict: str
    reason: str
    drop: float | None
    noise: float | None

    @property
    def reliable(self) -> bool:
        return self.verdict == "reliable"

    @property
    def usable(self) -> bool:
        """Whether the curve supports a number at all (reliable or noisy)."""
        return self.verdict in ("reliable", "noisy")


@dataclass
class LRSuggestion:
    """What the curve suggests.

    Attributes:
        lr: the recommended learning rate, by the requested rule (else the valley rule's, else
            the steepest point's, else the minimum rule's); a finite positive number, or None when
            the curve says nothing (`verdict` ``flat``, ``nonfinite`` or ``short``).
        rule: which rule produced `lr`: ``"valley"``, ``"steepest"``, ``"minimum"``, or
            ``"none"`` for a curve without a finite point.
        valley: the valley rule's learning rate, or None when the curve has no valley.
        steepest: the learning rate of steepest descent of the smoothed loss per decade, or None.
        minimum: the learning rate at which the smoothed loss is lowest.
        valley_range: the first and last learning rate of the valley (None without a valley).
        verdict: how far to trust the curve (`CurveVerdict`).
    """

    lr: float | None
    rule: str
    valley: float | None
    steepest: float | None
    minimum: float | None
    valley_range: tuple[float, float] | None
    verdict: CurveVerdict

    @property
    def reliable(self) -> bool:
        return self.verdict.reliable


@dataclass
class LRFindResult:
    """The curve of a range test and its suggestion.

    ``lrs[i]`` is the learning rate of minibatch i, ``losses[i]`` its raw loss, ``smoothed[i]``
    the debiased moving average; `stop_reason` is ``"diverged"`` (smoothed loss above `diverge` ×
    best), ``"nonfinite"`` or ``"completed"``.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: LRSuggestion
    stop_reason: str
    start_lr: float
    end_lr: float
    num_iter: int
    beta: float
    diverge: float

    @property
    def suggested_lr(self) -> float | None:
        return self.suggestion.lr

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"suggestion": lr or None, "rule", "verdict", "reliable",
        "reason", "drop", "noise", "valley", "steepest", ...}``."""
        suggestion = asdict(self.suggestion)
        verdict = suggestion.pop("verdict")
        finite = [x if math.isfinite(x) else None for x in self.losses]
        return {
            "suggestion": suggestion.pop("lr"),
            **suggestion,
            "verdict": verdict["verdict"],
            "reliable": self.suggestion.reliable,
            "reason": verdict["reason"],
            "drop": verdict["drop"],
            "noise": verdict["noise"],
            "stop_reason": self.stop_reason,
            "iterations": len(self.lrs),
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "num_iter": self.num_iter,
            "beta": self.beta,
            "diverge": self.diverge,
            "lrs": self.lrs,
            "losses": finite,
            "smoothed": [x if math.isfinite(x) else None for x in self.smoothed],
        }


def lr_schedule(start_lr: float, end_lr: float, num_iter: int) -> list[float]:
    """The exponential ramp η_i = η_start·(η_end/η_start)^(i/(num_iter−1))."""
    if num_iter == 1:
        return [start_lr]
    ratio = math.log(end_lr / start_lr)
    return [start_lr * math.exp(ratio * i / (num_iter - 1)) for i in range(num_iter)]


def smooth(losses: Sequence[float], beta: float) -> list[float]:
    """Debiased exponential moving average m_i/(1 − β^{i+1}); NaN once a loss is not finite."""
    out, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"suggest={rule!r}; allowed: {', '.join(RULES)}")


def _check_args(start_lr: float, end_lr: float, num_iter: int, beta: float, diverge: float) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={value!r}; allowed: a finite number > 0")
    if end_lr <= start_lr:
        raise ValueError(f"end_lr={end_lr!r} must be greater than start_lr={start_lr!r}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or not 2 <= num_iter <= 1000:
        raise ValueError(f"num_iter={num_iter!r}; allowed: an integer in [2, 1000]")
    if not isinstance(beta, int | float) or not 0 <= beta < 1:
        raise ValueError(f"beta={beta!r}; allowed: a number in [0, 1)")
    if not isinstance(diverge, int | float) or not diverge > 1:
        raise ValueError(f"diverge={diverge!r}; allowed: a number > 1")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            # A tensor lr (optimlab extension, or torch's capturable/fused options) keeps its
            # shape and dtype: every entry gets this iteration's rate. A new tensor, so that the
            # caller's own lr tensor is never written to.
            group["lr"] = torch.full_like(group["lr"], lr)
        else:
            group["lr"] = lr


def lr_find(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    batch_size: int | None = 128,
    seed: int = 0,
    suggest: str = "valley",
    progress: Progress | None = None,
) -> LRFindResult:
    """Run the learning-rate range test (see the module docstring) and restore everything.

    Args:
        model: the network; trained in train mode during the test, then restored.
        data: ``(inputs, targets)`` tensors, from which minibatches of `batch_size` are drawn
            with a generator seeded by `seed`, or an iterable of ``(inputs, targets)`` batches.
        loss_fn: ``(output, target) -> scalar tensor``.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters (optimlab's or
            torch's); every parameter group gets the same ramped learning rate.
        start_lr, end_lr, num_iter: the ramp (fastai's defaults; at most 1000 iterations).
        beta: smoothing factor of the moving average.
        diverge: stop when the smoothed loss exceeds this multiple of the best smoothed loss.
        suggest: the rule of the suggestion: ``"valley"``, ``"steepest"`` or ``"minimum"``.
        progress: called with a short message every 10 iterations.
    """
    _check_args(start_lr, end_lr, num_iter, beta, diverge)
    check_rule(suggest)
    trainable_parameters(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    check_data(data)
    schedule = lr_schedule(float(start_lr), float(end_lr), num_iter)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, stop_reason = 0.0, math.inf, "completed"
    generator = torch.Generator().manual_seed(seed)
    with preserved(model, optimizer):
        model.train()
        to_train_point(optimizer)  # Schedule-Free steps only in train mode
        stream = batches(data, batch_size, generator)
        for i, lr in enumerate(schedule):
            x, y = next(stream)
            _set_lr(optimizer, lr)
            optimizer.zero_grad()
            loss = check_scalar_loss(loss_fn(model(x), y))
            value = loss.item()
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(math.nan)
                stop_reason = "nonfinite"
                break
            average = beta * average + (1 - beta) * value
            current = average / (1 - beta ** (i + 1))
            smoothed.append(current)
            best = min(best, current)
            if current > diverge * best:
                stop_reason = "diverged"
                break
            loss.backward()
            optimizer.step()
            if progress is not None and (i + 1) % 10 == 0:
                progress(f"lr-find {i + 1}/{num_iter}: lr={lr:.3g} loss={current:.4g}")
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        suggestion=suggest_lr(lrs, losses, suggest),
        stop_reason=stop_reason,
        start_lr=float(start_lr),
        end_lr=float(end_lr),
        num_iter=num_iter,
        beta=float(beta),
        diverge=float(diverge),
    )


def valley_bounds(values: Sequence[float], threshold: float = 0.1) -> tuple[int, int] | None:
    """The first and last index of the valley of a curve that ends at its minimum.

    The valley starts where the loss leaves its starting level for good: the point after the
    last one still within `threshold` × (total fall) of the starting level (the median of the
    first five points, so one noisy point cannot set it). It ends at the minimum (the last
    point). None if the curve falls by less than 2% of its starting level or the valley has
    fewer than 3 points.
    """
    start_level = statistics.median(values[:5])
    lowest = values[-1]
    fall = start_level - lowest
    if fall <= 0.02 * abs(start_level):
        return None
    plateau = start_level - threshold * fall
    last_high = max((i for i, v in enumerate(values) if v >= plateau), default=-1)
    first = last_high + 1
    end = len(values) - 1
    if end - first < 2:
        return None
    return first, end


def robust_curve(losses: Sequence[float], window: int = 5) -> list[float]:
    """A zero-lag, spike-proof version of the curve for reading off a suggestion: a centred
    running median over `window` points (an isolated spike, even of several points less than
    half the window, disappears) followed by a centred running mean over `window` points (the
    minibatch noise averages out). The exponential average of the stopping rule lags the raw
    curve by about 1/(1 − β) iterations, which would push a suggestion to larger rates."""
    half = window // 2
    n = len(losses)

    def centred(values: Sequence[float], reduce: Any) -> list[float]:
        return [reduce(values[max(0, i - half) : i + half + 1]) for i in range(n)]

    medians = centred(losses, statistics.median)
    return centred(medians, statistics.fmean)


def _finite_prefix(lrs: Sequence[float], losses: Sequence[float]) -> list[tuple[float, float]]:
    """The (lr, loss) points before the first non-finite loss or rate."""
    points: list[tuple[float, float]] = []
    for lr, loss in zip(lrs, losses):
        if not (math.isfinite(loss) and math.isfinite(lr) and lr > 0):
            break
        points.append((float(lr), float(loss)))
    return points


def curve_verdict(lrs: Sequence[float], losses: Sequence[float]) -> CurveVerdict:
    """How far a range-test curve of raw minibatch losses can be trusted (module docstring).

    Over the finite prefix, with the trend T = `robust_curve` of the losses and the starting
    level S = median of the first five losses:

        drop  = (S − min T) / |S|
        noise = 1.4826 · median |L_i − T_i| over the points up to the minimum, / (S − min T)

    (1.4826 · median absolute deviation estimates a standard deviation, unmoved by spikes.)
    """
    points = _finite_prefix(lrs, losses)
    if len(points) < MIN_POINTS:
        if len(points) < len(losses):
            at = len(points)
            return CurveVerdict(
                "nonfinite",
                f"non-finite from the start: the loss was {losses[at]} at iteration {at + 1} "
                f"(lr={lrs[at]:.3g}), before the curve had {MIN_POINTS} points",
                None,
                None,
            )
        return CurveVerdict(
            "short",
            f"too short: {len(points)} points; the curve needs at least {MIN_POINTS}",
            None,
            None,
        )
    values = [loss for _, loss in points]
    trend = robust_curve(values)
    lowest = min(range(len(trend)), key=lambda i: trend[i])
    start_level = statistics.median(values[:5])
    fall = start_level - trend[lowest]
    drop = fall / abs(start_level) if start_level != 0 else 0.0
    if drop <= FLAT_DROP:
        return CurveVerdict(
            "flat",
            f"flat — the loss did not fall by more than {FLAT_DROP:.0%} (it fell "
            f"{max(drop, 0.0):.1%}, from {start_level:.4g} to {trend[lowest]:.4g}): no learning "
            f"rate in [{points[0][0]:.3g}, {points[-1][0]:.3g}] trained the model",
            drop,
            None,
        )
    residuals = [abs(loss - level) for loss, level in zip(values[: lowest + 1], trend)]
    noise = 1.4826 * statistics.median(residuals) / fall
    if noise > NOISY_RATIO:
        return CurveVerdict(
            "noisy",
            f"noisy — the minibatch noise is {noise:.0%} of the loss's fall (above "
            f"{NOISY_RATIO:.0%}): a rough guide only; a larger batch or another seed helps",
            drop,
            noise,
        )
    return CurveVerdict(
        "reliable",
        f"reliable — the loss fell {drop:.1%} with noise {noise:.1%} of the fall",
        drop,
        noise,
    )


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], rule: str = "valley") -> LRSuggestion:
    """Suggest a learning rate from a range-test curve of raw minibatch losses (`LRSuggestion`).

    1. The curve is cut at its first non-finite loss and made robust (`robust_curve`); only the
       part up to its minimum counts: after the minimum the loss climbs towards divergence.
    2. *Valley*: the stretch from where the loss leaves its starting plateau to its minimum
       (`valley_bounds`); the suggestion lies `VALLEY_POSITION` of the way from its first to its
       last learning rate in log scale: where the loss still falls fast, below the rate at
       which it bottoms out (beyond which training becomes unstable).
    3. *Steepest*: the point where the curve falls fastest per decade of learning rate (central
       differences in log lr).
    4. *Minimum* (fastai's ``minimum``): a tenth of the rate at which the loss is lowest.

    `rule` picks which one is suggested; a rule that finds nothing (no valley, no descent)
    falls back to the next in the order valley, steepest, minimum. The number is withheld
    (``lr=None``) when `curve_verdict` finds the curve flat, non-finite or too short.
    """
    check_rule(rule)
    verdict = curve_verdict(lrs, losses)
    points = _finite_prefix(lrs, losses)
    if not points:
        return LRSuggestion(None, "none", None, None, None, None, verdict)
    curve_values = robust_curve([loss for _, loss in points])
    lowest = min(range(len(points)), key=lambda i: curve_values[i])
    minimum = points[lowest][0]
    lr_values = [lr for lr, _ in points[: lowest + 1]]
    logs = [math.log10(lr) for lr in lr_values]
    values = curve_values[: lowest + 1]

    valley = valley_range = None
    bounds = valley_bounds(values) if len(values) >= 3 else None
    if bounds is not None:
        start, end = bounds
        valley = 10 ** (logs[start] + VALLEY_POSITION * (logs[end] - logs[start]))
        valley_range = (lr_values[start], lr_values[end])

    steepest = None
    if len(values) >= 3:
        slopes = [
            (values[i + 1] - values[i - 1]) / (logs[i + 1] - logs[i - 1])
            for i in range(1, len(values) - 1)
        ]
        index = min(range(len(slopes)), key=lambda i: slopes[i])
        if slopes[index] < 0:
            steepest = lr_values[index + 1]

    by_rule = {"valley": valley, "steepest": steepest, "minimum": minimum / 10}
    order = [rule, *(r for r in RULES if r != rule)]
    used = next(r for r in order if by_rule[r] is not None)
    lr = by_rule[used] if verdict.usable else None
    return LRSuggestion(lr, used, valley, steepest, minimum, valley_range, verdict)
