"""The report's figures as SVG text: pure functions of the summary (no pyplot, no global state).

Each figure is drawn on its own `matplotlib.figure.Figure` with the SVG canvas; text is stored
as paths (``svg.fonttype = "path"``), so the image needs no font and no network to render.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

#: one color per optimizer, stable across figures (tab10 order, then tab20's second half)
COLORS = [matplotlib.colormaps["tab10"](i) for i in range(10)] + [
    matplotlib.colormaps["tab20"](i) for i in range(1, 20, 2)
]


def color(index: int) -> Any:
    return COLORS[index % len(COLORS)]


def to_svg(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "optimlab"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    return buffer.getvalue()


def _finite(values: list[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def loss_curves(curves: dict[str, Any], labels: list[str], title: str) -> str:
    """Mean training loss over the seeds (line) ± one std (band) against steps, per optimizer."""
    figure = Figure(figsize=(6.4, 3.8))
    axes = figure.add_subplot()
    positive = True
    for index, label in enumerate(labels):
        curve = curves.get(label, {}).get("train_loss", {})
        if not curve or not curve.get("step"):
            continue
        mean, std = _finite(curve["mean"]), _finite(curve["std"])
        low = [m - s for m, s in zip(mean, std)]
        high = [m + s for m, s in zip(mean, std)]
        positive &= all(v > 0 for v in mean if not math.isnan(v))
        axes.plot(curve["step"], mean, color=color(index), label=label, linewidth=1.5)
        axes.fill_between(curve["step"], low, high, color=color(index), alpha=0.2, linewidth=0)
    if positive:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (mean ± std over seeds)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, ncol=2, loc="best")
    return to_svg(figure)


def lr_sensitivity(entries: dict[str, Any], labels: list[str], title: str) -> str:
    """Final validation loss against the learning rate (log x) for each optimizer; diverged or
    failed grid points are crosses at the top of the axes."""
    figure = Figure(figsize=(6.4, 3.8))
    axes = figure.add_subplot()
    finite = [
        point["final_val_loss"]
        for label in labels
        for point in entries.get(label, {}).get("lr_sensitivity", [])
        if point["status"] == "ok" and point["final_val_loss"] is not None
    ]
    # A run that blew up to 1e20 without overflowing would flatten every other curve: values
    # above 10× the median are drawn at that cap, as triangles.
    cap = min(max(finite), 10 * float(sorted(finite)[len(finite) // 2])) if finite else 1.0
    ceiling = cap * 1.5
    log_y = bool(finite) and min(finite) > 0
    for index, label in enumerate(labels):
        points = entries.get(label, {}).get("lr_sensitivity", [])
        good = [(p["lr"], min(p["final_val_loss"], cap)) for p in points if p["status"] == "ok"]
        clipped = [p["lr"] for p in points if p["status"] == "ok" and p["final_val_loss"] > cap]
        # --tuner halving: stopped at a rung, drawn at its last validation loss, hollow (not a
        # final loss, and not a divergence)
        pruned = [
            (p["lr"], min(p["last_val_loss"], cap))
            for p in points
            if p["status"] == "pruned" and p.get("last_val_loss") is not None
        ]
        bad = [p["lr"] for p in points if p["status"] not in ("ok", "pruned")]
        if good:
            axes.plot(*zip(*good), marker="o", markersize=3, color=color(index), label=label)
        if clipped:
            axes.scatter(clipped, [cap] * len(clipped), marker="^", color=color(index), s=18)
        if pruned:
            axes.scatter(
                *zip(*pruned), marker="o", facecolors="none", edgecolors=color(index), s=18
            )
        if bad:
            axes.scatter(bad, [ceiling] * len(bad), marker="x", color=color(index), s=18)
        best = entries.get(label, {}).get("best_lr")
        if best is not None:
            axes.axvline(best, color=color(index), alpha=0.15, linewidth=3)
    axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    stopped = any(
        p["status"] == "pruned" for e in entries.values() for p in e.get("lr_sensitivity", [])
    )
    axes.set_xlabel(
        "learning rate (× = diverged, ▲ = above the axis"
        + (", ○ = stopped at a rung: its last loss)" if stopped else ")")
    )
    axes.set_ylabel("final validation loss")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, ncol=2, loc="best")
    return to_svg(figure)


def performance_profile(
    profile: dict[str, Any], labels: list[str], tolerance: float | None = None
) -> str:
    """ρ(τ): share of problems solved within τ× the fastest optimizer's steps."""
    figure = Figure(figsize=(6.4, 3.8))
    axes = figure.add_subplot()
    taus = profile["tau"]
    for index, label in enumerate(labels):
        if label in profile:
            axes.step(taus, profile[label], where="post", color=color(index), label=label)
    axes.set_xlim(taus[0], taus[-1])
    axes.set_ylim(-0.03, 1.03)
    axes.set_xlabel("τ (steps to target ÷ best optimizer's steps)")
    axes.set_ylabel("share of problems")
    title = "performance profile" + (f" (target tol {tolerance:g})" if tolerance else "")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # nobody ranked: no curve, no legend
        axes.legend(fontsize=7, ncol=2, loc="lower right")
    return to_svg(figure)
