"""Pictures of a landscape experiment: contour + trajectories, loss against step, an animation.

Figures are built with the object-oriented API on matplotlib's Agg canvas (``Figure`` +
``FigureCanvasAgg``), never through pyplot, so making them neither opens windows nor changes the
process-wide backend of a user who imports optimlab.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from optimlab.landscapes.experiment import LandscapeResult
from optimlab.landscapes.functions import Landscape

GRID = 240
#: the smallest loss gap shown on log axes (exact zeros would vanish from the plot)
FLOOR = 1e-16
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # fmt: skip
MINIMUM_MARKERS = {"global": ("*", 15), "local": ("^", 9), "saddle": ("X", 10)}


def _new_figure(size: tuple[float, float], dpi: int = 100) -> Figure:
    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def colours(result: LandscapeResult) -> dict[str, str]:
    """One colour per configuration label, in the order of the runs."""
    labels = list(dict.fromkeys(run.label for run in result.runs))
    return {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}


def _surface(landscape: Landscape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xmin, xmax, ymin, ymax = landscape.box
    xs = np.linspace(xmin, xmax, GRID)
    ys = np.linspace(ymin, ymax, GRID)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float64)
    with torch.no_grad():
        values = landscape.fn(points).numpy().reshape(gx.shape)
    return gx, gy, values


def draw_surface(axes: Any, landscape: Landscape) -> None:
    """Filled contours (log-spaced over the loss gap when the minimum is known) and minima."""
    gx, gy, values = _surface(landscape)
    if math.isfinite(landscape.min_value):
        gap = np.maximum(values - landscape.min_value, 0)
        top = float(np.nanmax(gap))
        low = max(top * 1e-6, 1e-4)
        levels = np.geomspace(low, top, 24)
        shown = np.log10(np.clip(gap, low, top))
        axes.contourf(gx, gy, shown, levels=np.log10(levels), cmap="Greys_r", alpha=0.55)
        axes.contour(gx, gy, shown, levels=np.log10(levels), colors="0.35", linewidths=0.4,
                     negative_linestyles="solid")  # fmt: skip
    else:
        axes.contourf(gx, gy, values, levels=24, cmap="Greys_r", alpha=0.55)
        axes.contour(gx, gy, values, levels=24, colors="0.35", linewidths=0.4,
                     negative_linestyles="solid")  # fmt: skip
    for minimum in landscape.minima:
        marker, size = MINIMUM_MARKERS[minimum.kind]
        axes.plot(*minimum.point, marker=marker, markersize=size, color="gold",
                  markeredgecolor="black", linestyle="none", zorder=5)  # fmt: skip
    xmin, xmax, ymin, ymax = landscape.box
    axes.set_xlim(xmin, xmax)
    axes.set_ylim(ymin, ymax)
    axes.set_xlabel("x")
    axes.set_ylabel("y")


def _legend_handles(result: LandscapeResult, palette: dict[str, str]) -> list[Line2D]:
    diverged = {
        label: all(r.metrics["diverged"] for r in result.runs if r.label == label)
        for label in palette
    }
    handles = [Line2D([], [], color=c, marker="o", markersize=3,
                      label=f"{lbl} — diverged" if diverged[lbl] else lbl)
               for lbl, c in palette.items()]  # fmt: skip
    handles.append(Line2D([], [], color="white", marker="o", markeredgecolor="black",
                          linestyle="none", label="start"))  # fmt: skip
    handles.append(Line2D([], [], color="0.3", marker="s", markeredgecolor="black",
                          linestyle="none", label="end"))  # fmt: skip
    if any(r.metrics["diverged"] for r in result.runs):
        handles.append(Line2D([], [], color="red", marker="x", linestyle="none", label="diverged"))
    for kind in dict.fromkeys(m.kind for m in result.landscape.minima):
        marker, size = MINIMUM_MARKERS[kind]
        name = {"global": "global minimum", "local": "local minimum", "saddle": "saddle point"}
        handles.append(Line2D([], [], color="gold", marker=marker, markersize=size * 0.7,
                              markeredgecolor="black", linestyle="none", label=name[kind]))  # fmt: skip
    return handles


def _alpha(result: LandscapeResult) -> dict[str, float]:
    counts: dict[str, int] = {}
    for run in result.runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    return {label: 1.0 if n == 1 else max(0.15, 1 / math.sqrt(n)) for label, n in counts.items()}


def contour_figure(result: LandscapeResult, title: str | None = None) -> Figure:
    """Contour plot of the surface with every trajectory: a colour per optimizer configuration,
    start (white circle) and end (square) markers, minima marked, a legend."""
    figure = _new_figure((8, 6.2))
    axes = figure.add_subplot()
    land = result.landscape
    draw_surface(axes, land)
    palette, alpha = colours(result), _alpha(result)
    for run in result.runs:
        colour = palette[run.label]
        x, y = run.path[:, 0], run.path[:, 1]
        diverged = run.metrics["diverged"]
        axes.plot(x, y, color=colour, alpha=alpha[run.label] * (0.6 if diverged else 1),
                  linewidth=1.3, marker="o", markersize=2.2 if len(x) <= 400 else 0,
                  linestyle="--" if diverged else "-", zorder=2 if diverged else 3)  # fmt: skip
        axes.plot(x[0], y[0], marker="o", color="white", markeredgecolor="black", zorder=6)
        end_marker = ("x", "red") if run.metrics["diverged"] else ("s", colour)
        axes.plot(x[-1], y[-1], marker=end_marker[0], color=end_marker[1],
                  markeredgecolor="black" if not run.metrics["diverged"] else "red",
                  markersize=6, zorder=6, alpha=max(alpha[run.label], 0.5))  # fmt: skip
    axes.legend(handles=_legend_handles(result, palette), loc="upper left",
                bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # fmt: skip
    axes.set_title(title or f"{land.title}: {land.formula}, {result.steps} steps", fontsize=10)
    figure.tight_layout()
    return figure


def loss_figure(result: LandscapeResult, title: str | None = None) -> Figure:
    """Loss against step: the gap f − f* on a log axis (f itself, symlog, without a minimum)."""
    figure = _new_figure((7, 4.5))
    axes = figure.add_subplot()
    land = result.landscape
    known = math.isfinite(land.min_value)
    palette, alpha = colours(result), _alpha(result)
    for run in result.runs:
        values = run.losses - land.min_value if known else run.losses
        if known:
            values = np.maximum(values, FLOOR)
        axes.plot(np.arange(len(values)), values, color=palette[run.label],
                  alpha=alpha[run.label], linewidth=1.2)  # fmt: skip
        if run.metrics["diverged"]:
            axes.plot(len(values) - 1, values[-1], marker="x", color="red")
    if known:
        axes.set_yscale("log")
        axes.set_ylabel("f(θ) − f*  (log)")
    else:
        axes.set_yscale("symlog", linthresh=1e-3)
        axes.set_ylabel("f(θ)  (symlog; unbounded below)")
    axes.set_xlabel("step")
    axes.set_xlim(0, result.steps)
    axes.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=c, label=lbl) for lbl, c in palette.items()]
    axes.legend(handles=handles, fontsize=8, frameon=False, loc="upper left",
                bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    axes.set_title(title or f"{land.title}: loss against step", fontsize=10)
    figure.tight_layout()
    return figure


def save_animation(
    result: LandscapeResult, path: str | os.PathLike, frames: int = 50, fps: int = 10
) -> None:
    """An animated GIF of the trajectories advancing; at most `frames` frames (subsampled steps)
    at a small size, so the file stays small.  Written atomically.

    The contour background is drawn once and each frame only redraws the moving lines on a copy
    of it (blitting), then Pillow assembles the GIF: an order of magnitude faster than
    re-rendering every frame through matplotlib.animation.
    """
    from PIL import Image

    figure = _new_figure((5.2, 4.0), dpi=64)
    axes = figure.add_subplot()
    draw_surface(axes, result.landscape)
    palette, alpha = colours(result), _alpha(result)
    for run in result.runs:
        axes.plot(run.path[0, 0], run.path[0, 1], marker="o", color="white",
                  markeredgecolor="black", markersize=4)  # fmt: skip
    handles = [Line2D([], [], color=c, label=lbl) for lbl, c in palette.items()]
    axes.legend(handles=handles, fontsize=6, loc="lower right", framealpha=0.7)
    axes.set_title(result.landscape.title, fontsize=8)
    figure.tight_layout()
    canvas = figure.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    artists = []
    for run in result.runs:
        colour = to_rgba(palette[run.label], alpha[run.label])
        (line,) = axes.plot([], [], color=colour, linewidth=1.2, animated=True)
        (head,) = axes.plot([], [], marker="o", color=colour, markeredgecolor="black",
                            markersize=5, animated=True)  # fmt: skip
        artists.append((run, line, head))
    counter = axes.text(0.02, 0.96, "", transform=axes.transAxes, fontsize=8, va="top",
                        animated=True, bbox={"facecolor": "white", "alpha": 0.7, "pad": 1.5})  # fmt: skip
    steps = np.unique(np.linspace(0, result.steps, min(frames, result.steps + 1)).round())
    images = []
    for step in steps.astype(int):
        canvas.restore_region(background)
        for run, line, head in artists:
            upto = min(step, len(run.path) - 1)
            line.set_data(run.path[: upto + 1, 0], run.path[: upto + 1, 1])
            head.set_data([run.path[upto, 0]], [run.path[upto, 1]])
            axes.draw_artist(line)
            axes.draw_artist(head)
        counter.set_text(f"step {step}")
        axes.draw_artist(counter)
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3].copy()).quantize(colors=128))
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.gif")
    duration = int(1000 / fps)
    images[0].save(temporary, save_all=True, append_images=images[1:], duration=duration,
                   loop=0, optimize=True)  # fmt: skip
    os.replace(temporary, path)


def save_figure(figure: Figure, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save `figure` atomically (temporary file in the same directory, then os.replace)."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    figure.savefig(temporary, format=path.suffix.lstrip("."), **kwargs)
    os.replace(temporary, path)


__all__ = ["contour_figure", "loss_figure", "save_animation", "save_figure"]
