"""The pictures of a diagnosis, one function per figure, each a pure function of a result.

Built on matplotlib's object-oriented API with the Agg canvas (never pyplot), so making them
neither opens windows nor changes the process-wide backend.
"""

from __future__ import annotations

import base64
import io
import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from optimlab.diagnose.gradflow import GradFlowResult
from optimlab.diagnose.hessian import HessianResult
from optimlab.diagnose.lr_find import LRFindResult, robust_curve
from optimlab.diagnose.slices import PathSlice, Slice1D, Slice2D


def _figure(width: float = 6.4, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_png(figure: Figure, path: str | os.PathLike) -> None:
    """Write the figure as a PNG atomically (temporary file, then os.replace)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_bytes(png_bytes(figure))
    os.replace(temporary, path)


def data_uri(figure: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, to embed in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(figure)).decode("ascii")


def lr_find_figure(result: LRFindResult, title: str = "Learning-rate range test") -> Figure:
    """Raw and smoothed loss against the learning rate (log axis), the suggestion marked."""
    figure = _figure()
    axes = figure.add_subplot()
    lrs = np.array(result.lrs)
    losses = np.array(result.losses, dtype=float)
    finite = np.isfinite(losses)
    axes.plot(lrs[finite], losses[finite], color="#bbbbbb", lw=1, label="minibatch loss")
    axes.plot(lrs, result.smoothed, color="#1f77b4", lw=2, label="smoothed (debiased EMA)")
    # The suggestion reads the robust curve of the losses before the first non-finite one.
    cut = len(losses) if finite.all() else int(np.argmin(finite))
    if cut > 0:
        robust = robust_curve(list(losses[:cut]))
        axes.plot(lrs[:cut], robust, color="#2ca02c", lw=1, ls="--", label="robust curve")
    suggestion = result.suggestion
    if suggestion.valley_range is not None:
        axes.axvspan(*suggestion.valley_range, color="#2ca02c", alpha=0.08, label="valley")
    verdict = suggestion.verdict
    if suggestion.lr is not None:
        style = "-" if verdict.reliable else "--"
        mark = "" if verdict.reliable else f" ({verdict.verdict}: unreliable)"
        axes.axvline(suggestion.lr, color="#d62728", lw=2, ls=style,
                     label=f"suggestion {suggestion.lr:.3g}{mark}")  # fmt: skip
    if suggestion.steepest is not None and suggestion.steepest != suggestion.lr:
        axes.axvline(suggestion.steepest, color="#ff7f0e", lw=1, ls=":",
                     label=f"steepest {suggestion.steepest:.3g}")  # fmt: skip
    axes.set_xscale("log")
    shown = losses[finite]
    if len(shown):
        low, start = float(np.min(shown)), float(np.median(shown[:5]))
        axes.set_ylim(low - 0.05 * abs(start - low) - 1e-12, start + 0.6 * abs(start - low) + 1e-9)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.set_title(f"{title} (stopped: {result.stop_reason})")
    # The verdict, in the picture itself: a flat or noisy curve must not look authoritative.
    colour = "#2ca02c" if verdict.reliable else "#d62728"
    axes.text(0.01, 0.01, textwrap.fill(verdict.reason, 90), transform=axes.transAxes,
              fontsize=7, color=colour, va="bottom", ha="left",
              bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": colour})  # fmt: skip
    if len(shown) == 0:
        axes.set_xlim(result.start_lr, result.end_lr)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)
    return figure


def gradflow_figure(result: GradFlowResult, title: str = "Gradient flow") -> Figure:
    """Per layer (input → output): gradient and weight norms, and the update/weight ratio."""
    figure = _figure(7.2, 5.2)
    top, bottom = figure.subplots(2, 1, sharex=True)
    names = [layer.name for layer in result.layers]
    x = np.arange(len(names))
    top.bar(x - 0.2, [max(layer.grad_norm, 1e-30) for layer in result.layers], 0.4,
            color="#d62728", label="‖∂L/∂W‖")  # fmt: skip
    top.bar(x + 0.2, [max(layer.weight_norm, 1e-30) for layer in result.layers], 0.4,
            color="#1f77b4", label="‖W‖")  # fmt: skip
    top.set_yscale("log")
    flags = [name for name in ("vanishing", "exploding", "dead_relu") if getattr(result, name)]
    verdict = ", ".join(flags) if flags else "healthy"
    top.set_title(f"{title}: {verdict} (output/input gradient ratio {result.shrink_factor:.3g})")
    top.legend(fontsize=8)
    top.grid(alpha=0.3, axis="y")
    ratios = [layer.update_ratio or 1e-30 for layer in result.layers]
    bottom.bar(x, ratios, 0.5, color="#2ca02c", label="‖ΔW‖/‖W‖ per step")
    dead = [layer.dead_fraction for layer in result.layers]
    if any(d is not None for d in dead):
        twin = bottom.twinx()
        twin.plot(x, [np.nan if d is None else d for d in dead], "ko-", ms=4,
                  label="dead ReLU fraction")  # fmt: skip
        twin.set_ylim(0, 1)
        twin.set_ylabel("dead fraction")
        twin.legend(fontsize=8, loc="upper right")
    bottom.axhline(1e-3, color="#777777", ls=":", lw=1)
    bottom.set_yscale("log")
    bottom.set_ylabel("update / weight")
    bottom.legend(fontsize=8, loc="upper left")
    bottom.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    bottom.set_xlabel("layer (input → output)")
    bottom.grid(alpha=0.3, axis="y")
    return figure


def density_figure(result: HessianResult, title: str = "Hessian spectral density") -> Figure:
    """The SLQ density (log scale) with λmin, λmax and the top eigenvalues marked."""
    figure = _figure()
    axes = figure.add_subplot()
    if result.density is not None:
        density = np.maximum(np.array(result.density.density), 1e-12)
        axes.plot(result.density.grid, density, color="#1f77b4")
        axes.set_yscale("log")
        axes.set_ylim(max(density.max() * 1e-8, 1e-12), density.max() * 3)
    for value in result.top_eigenvalues:
        axes.axvline(value, color="#d62728", lw=0.8, alpha=0.6)
    axes.axvline(result.lambda_min, color="#9467bd", lw=1.5,
                 label=f"λmin {result.lambda_min:.3g}")  # fmt: skip
    axes.axvline(result.lambda_max, color="#d62728", lw=1.5,
                 label=f"λmax {result.lambda_max:.3g}")  # fmt: skip
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density")
    axes.set_title(f"{title} ({result.mode} mode)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return figure


def slice_1d_figure(result: Slice1D, title: str = "Loss along a random direction") -> Figure:
    figure = _figure(5.6, 3.6)
    axes = figure.add_subplot()
    axes.plot(result.alphas, result.losses, color="#1f77b4")
    axes.axvline(0.0, color="#777777", ls=":")
    axes.set_xlabel("α (filter-normalized direction)")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return figure


def _contour(axes, result: Slice2D) -> None:
    losses = np.array(result.losses, dtype=float)
    finite = losses[np.isfinite(losses)]
    if finite.size == 0:
        return
    # Log-spaced levels follow the shape near the minimum and far from it alike.
    low, high = float(finite.min()), float(np.percentile(finite, 98))
    offset = low - 1e-3 * max(high - low, 1e-12)
    levels = offset + np.geomspace(low - offset, max(high - offset, 2 * (low - offset)), 25)
    shown = np.where(np.isfinite(losses), np.minimum(losses, levels[-1]), levels[-1])
    filled = axes.contourf(result.alphas, result.betas, shown, levels=levels, cmap="viridis")
    axes.contour(result.alphas, result.betas, shown, levels=levels, colors="k",
                 linewidths=0.3, alpha=0.5)  # fmt: skip
    axes.figure.colorbar(filled, ax=axes, label="loss", format="%.4g")
    axes.plot([0], [0], "r*", ms=12)


def slice_2d_figure(result: Slice2D, title: str = "Loss on a random plane") -> Figure:
    figure = _figure(5.6, 4.6)
    axes = figure.add_subplot()
    _contour(axes, result)
    axes.set_xlabel("α (direction 1)")
    axes.set_ylabel("β (direction 2)")
    axes.set_title(title)
    return figure


def path_figure(result: PathSlice, title: str = "Training path on its PCA plane") -> Figure:
    figure = _figure(5.6, 4.6)
    axes = figure.add_subplot()
    _contour(axes, result.slice)
    xs, ys = zip(*result.path)
    axes.plot(xs, ys, "w.-", lw=1.5, ms=6)
    axes.plot(xs[0], ys[0], "wo", ms=8, mec="k", label="start")
    axes.set_xlabel(f"PC1 ({result.explained[0]:.0%} of the path's variance)")
    axes.set_ylabel(f"PC2 ({result.explained[1]:.0%})")
    axes.set_title(title)
    axes.legend(fontsize=8, loc="upper right")
    return figure
