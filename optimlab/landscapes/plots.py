"""Pictures of a landscape experiment: contour + trajectories, loss against step, an animation.

Figures are built with the object-oriented API on matplotlib's Agg canvas (``Figure`` +
``FigureCanvasAgg``), never through pyplot, so making them neither opens windows nor changes the
process-wide backend of a user who imports optimlab.

These are views: they read :mod:`~optimlab.landscapes.results` and nothing imports them back.

The view box is the plotting box widened to hold every finite trajectory, up to VIEW_LIMIT times
the box's half-size about its centre; a trajectory that goes further is drawn solid up to the edge,
where an arrow shows the way it left.  Diverged runs are dashed and end in a red ×.
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

from optimlab.landscapes.functions import Landscape
from optimlab.landscapes.results import LandscapeResult

GRID = 240
#: the smallest loss gap shown on log axes (exact zeros would vanish from the plot)
FLOOR = 1e-16
#: the view box grows to hold the trajectories, up to this many half-sizes of the plotting box
VIEW_LIMIT = 2.0
#: margin added around trajectories that widen the view, as a share of the view's size
MARGIN = 0.04
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # fmt: skip
MINIMUM_MARKERS = {"global": ("*", 15), "local": ("^", 9), "saddle": ("X", 10)}
Box = tuple[float, float, float, float]


def _new_figure(size: tuple[float, float], dpi: int = 100) -> Figure:
    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figures(result: LandscapeResult) -> dict[str, Figure]:
    """The contour plot with trajectories and the loss curves, as matplotlib figures."""
    return {"landscape": contour_figure(result), "loss": loss_figure(result)}


def colours(result: LandscapeResult) -> dict[str, str]:
    """One colour per configuration label, in the order of the runs."""
    labels = list(dict.fromkeys(run.label for run in result.runs))
    return {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}


def _legends(result: LandscapeResult) -> dict[str, str]:
    """Each label's legend text: the spec, the lr when the spec did not give it, the status."""
    texts = {}
    theory = {row["label"]: row for row in (result.theory or {}).get("runs", [])}
    for label in dict.fromkeys(run.label for run in result.runs):
        runs = [run for run in result.runs if run.label == label]
        text = runs[0].legend
        statuses = [run.metrics["status"] for run in runs]
        if all(s == "diverged" for s in statuses):
            text += " — diverged"
        elif all(s == "left" for s in statuses):
            text += " — left the plot"
        row = theory.get(label)
        if row and row["achieved_rate"] is not None:
            role = row["role"].removeprefix("theory: ")
            predicted = row["predicted_rate"]
            rate = f"ρ {row['achieved_rate']:.3f}/step"
            if predicted is not None:
                rate += f" (theory {predicted:.3f})"
            text += f"\n   {role}: {rate}" if row["role"] != "yours" else f"\n   {rate}"
        texts[label] = text
    return texts


def view_box(result: LandscapeResult) -> Box:
    """The plotting box widened to hold every point of the runs that did not diverge, at most
    VIEW_LIMIT half-sizes about the box's centre (beyond that, trajectories are clipped with edge
    arrows).  Diverged runs do not widen it: their way out is the lesson, not their whereabouts."""
    xmin, xmax, ymin, ymax = result.landscape.box
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    hx, hy = (xmax - xmin) / 2, (ymax - ymin) / 2
    points = [
        run.path for run in result.runs if len(run.path) and run.metrics["status"] != "diverged"
    ]
    if not points:
        return xmin, xmax, ymin, ymax
    every = np.concatenate(points)
    every = every[np.isfinite(every).all(axis=1)]
    limit = (cx - VIEW_LIMIT * hx, cx + VIEW_LIMIT * hx, cy - VIEW_LIMIT * hy, cy + VIEW_LIMIT * hy)
    box = [xmin, xmax, ymin, ymax]
    if len(every):
        px0, py0 = np.clip(every.min(axis=0), limit[::2], limit[1::2])
        px1, py1 = np.clip(every.max(axis=0), limit[::2], limit[1::2])
        mx, my = MARGIN * 2 * hx, MARGIN * 2 * hy
        if px0 < xmin:
            box[0] = max(px0 - mx, limit[0])
        if px1 > xmax:
            box[1] = min(px1 + mx, limit[1])
        if py0 < ymin:
            box[2] = max(py0 - my, limit[2])
        if py1 > ymax:
            box[3] = min(py1 + my, limit[3])
    return box[0], box[1], box[2], box[3]


def _surface(landscape: Landscape, view: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xmin, xmax, ymin, ymax = view
    xs = np.linspace(xmin, xmax, GRID)
    ys = np.linspace(ymin, ymax, GRID)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float64)
    with torch.no_grad():
        values = landscape.fn(points).numpy().reshape(gx.shape)
    return gx, gy, values


def draw_surface(axes: Any, landscape: Landscape, view: Box | None = None) -> None:
    """Filled contours (log-spaced over the loss gap when the minimum is known) and minima, over
    `view` (default: the plotting box); the plotting box is outlined when the view is wider."""
    view = view or landscape.box
    gx, gy, values = _surface(landscape, view)
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
    if tuple(view) != tuple(landscape.box):
        bx0, bx1, by0, by1 = landscape.box
        axes.plot([bx0, bx1, bx1, bx0, bx0], [by0, by0, by1, by1, by0], color="0.2",
                  linewidth=0.8, linestyle=":", zorder=1)  # fmt: skip
    xmin, xmax, ymin, ymax = view
    axes.set_xlim(xmin, xmax)
    axes.set_ylim(ymin, ymax)
    axes.set_xlabel("x")
    axes.set_ylabel("y")


def edge_exit(path: np.ndarray, view: Box) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a path that ends outside `view` last crosses its edge, and the direction it travels
    there; None when the path ends inside."""
    xmin, xmax, ymin, ymax = view

    def within(p: np.ndarray) -> bool:
        return bool(np.isfinite(p).all() and xmin <= p[0] <= xmax and ymin <= p[1] <= ymax)

    if len(path) < 2 or within(path[-1]):
        return None
    for i in range(len(path) - 2, -1, -1):
        if within(path[i]):
            a, b = path[i], path[i + 1]
            direction = b - a
            if not np.isfinite(direction).all() or not direction.any():
                return None
            # the largest s in [0, 1] with a + s·direction inside the view
            s = 1.0
            for k, (low, high) in enumerate(((xmin, xmax), (ymin, ymax))):
                if direction[k] > 0:
                    s = min(s, (high - a[k]) / direction[k])
                elif direction[k] < 0:
                    s = min(s, (low - a[k]) / direction[k])
            return a + s * direction, direction / np.linalg.norm(direction)
    return None


def _draw_arrow(axes: Any, point: np.ndarray, direction: np.ndarray, colour: Any, view: Box,
                scale: float = 0.06) -> None:  # fmt: skip
    size = scale * min(view[1] - view[0], view[3] - view[2])
    tail = point - direction * size
    axes.annotate("", xy=tuple(point), xytext=tuple(tail), zorder=7, annotation_clip=False,
                  arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2.0,
                              "mutation_scale": 16})  # fmt: skip


def _legend_handles(result: LandscapeResult, palette: dict[str, str]) -> list[Line2D]:
    texts = _legends(result)
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=texts[lbl])
               for lbl, c in palette.items()]  # fmt: skip
    handles.append(Line2D([], [], color="white", marker="o", markeredgecolor="black",
                          linestyle="none", label="start"))  # fmt: skip
    handles.append(Line2D([], [], color="0.3", marker="s", markeredgecolor="black",
                          linestyle="none", label="end"))  # fmt: skip
    statuses = {run.metrics["status"] for run in result.runs}
    if "diverged" in statuses:
        handles.append(Line2D([], [], color="red", marker="x", linestyle="--",
                              label="diverged (f non-finite or ×1e6)"))  # fmt: skip
    if any(_exits(result)):
        handles.append(Line2D([], [], color="0.2", marker=">", linestyle="none",
                              label="left the plot here (finite)"))  # fmt: skip
    for kind in dict.fromkeys(m.kind for m in result.landscape.minima):
        marker, size = MINIMUM_MARKERS[kind]
        name = {"global": "global minimum", "local": "local minimum", "saddle": "saddle point"}
        handles.append(Line2D([], [], color="gold", marker=marker, markersize=size * 0.7,
                              markeredgecolor="black", linestyle="none", label=name[kind]))  # fmt: skip
    return handles


#: legends with lines longer than this go below the plot, so the plot keeps its width
LEGEND_SIDE_CHARS = 36


def place_legend(
    figure: Figure, axes: Any, handles: list[Line2D], fontsize: int, columns: int = 2
) -> None:
    """The legend right of the plot, or below it (in two columns, the figure grown to fit) when
    its lines are too long to share the width."""
    longest = max((len(line) for h in handles for line in h.get_label().split("\n")), default=0)
    if longest <= LEGEND_SIDE_CHARS:
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    fontsize=fontsize, frameon=False)  # fmt: skip
        return
    lines = sum(len(h.get_label().split("\n")) for h in handles)
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + 0.2 * lines / columns)
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=columns,
                fontsize=fontsize, frameon=False)  # fmt: skip


def _exits(result: LandscapeResult) -> list[tuple[np.ndarray, np.ndarray] | None]:
    view = view_box(result)
    return [
        None if run.metrics["status"] == "diverged" else edge_exit(run.path, view)
        for run in result.runs
    ]


def _alpha(result: LandscapeResult) -> dict[str, float]:
    counts: dict[str, int] = {}
    for run in result.runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    return {label: 1.0 if n == 1 else max(0.15, 1 / math.sqrt(n)) for label, n in counts.items()}


def subtitle(result: LandscapeResult) -> str:
    """The settings every picture states: formula, function options, steps, noise σ."""
    land = result.landscape
    options = ", ".join(f"{k}={v:g}" for k, v in land.options.items())
    parts = [f"f = {land.formula}"]
    if options:
        parts.append(options)
    parts.append(f"{result.steps} steps")
    parts.append(f"noise σ={result.noise:g}")
    seeds = len({run.seed for run in result.runs})
    if seeds > 1:
        parts.append(f"{seeds} seeds")
    return ", ".join(parts)


def _title(result: LandscapeResult, title: str | None, what: str = "") -> str:
    head = title or result.landscape.title + what
    return f"{head}\n{subtitle(result)}"


def contour_figure(result: LandscapeResult, title: str | None = None) -> Figure:
    """Contour plot of the surface with every trajectory: a colour per optimizer configuration,
    start (white circle) and end (square) markers, edge arrows where a finite run leaves the
    view, a red × where a run diverged, minima marked, a legend."""
    figure = _new_figure((9.5, 6.2))
    axes = figure.add_subplot()
    land = result.landscape
    view = view_box(result)
    draw_surface(axes, land, view)
    palette, alpha = colours(result), _alpha(result)
    for run, exit_ in zip(result.runs, _exits(result)):
        colour = palette[run.label]
        x, y = run.path[:, 0], run.path[:, 1]
        diverged = run.metrics["status"] == "diverged"
        axes.plot(x, y, color=colour, alpha=alpha[run.label] * (0.6 if diverged else 1),
                  linewidth=1.3, marker="o", markersize=2.2 if len(x) <= 400 else 0,
                  linestyle="--" if diverged else "-", zorder=2 if diverged else 3)  # fmt: skip
        axes.plot(x[0], y[0], marker="o", color="white", markeredgecolor="black", zorder=6)
        if diverged:
            axes.plot(x[-1], y[-1], marker="x", color="red", markersize=8, markeredgewidth=2,
                      zorder=6)  # fmt: skip
        elif exit_ is not None:
            _draw_arrow(axes, exit_[0], exit_[1], colour, view)
        else:
            axes.plot(x[-1], y[-1], marker="s", color=colour, markeredgecolor="black",
                      markersize=6, zorder=6, alpha=max(alpha[run.label], 0.5))  # fmt: skip
    place_legend(figure, axes, _legend_handles(result, palette), fontsize=9)
    axes.set_title(_title(result, title), fontsize=10)
    figure.tight_layout()
    return figure


def loss_figure(result: LandscapeResult, title: str | None = None) -> Figure:
    """Loss against step: the gap f − f* on a log axis (f itself, symlog, without a minimum)."""
    figure = _new_figure((8.5, 4.8))
    axes = figure.add_subplot()
    land = result.landscape
    known = math.isfinite(land.min_value)
    palette, alpha = colours(result), _alpha(result)
    for run in result.runs:
        values = run.losses - land.min_value if known else run.losses
        if known:
            values = np.maximum(values, FLOOR)
        diverged = run.metrics["status"] == "diverged"
        axes.plot(np.arange(len(values)), values, color=palette[run.label],
                  alpha=alpha[run.label], linewidth=1.2,
                  linestyle="--" if diverged else "-")  # fmt: skip
        if diverged:
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
    texts = _legends(result)
    handles = [Line2D([], [], color=c, label=texts[lbl]) for lbl, c in palette.items()]
    place_legend(figure, axes, handles, fontsize=9)
    axes.set_title(_title(result, title, ": loss against step"), fontsize=10)
    figure.tight_layout()
    return figure


#: the animation's size: 8.4 × 6 inches at 100 dpi = 840 × 600 px
GIF_SIZE, GIF_DPI = (8.4, 6.0), 100


def save_animation(
    result: LandscapeResult,
    path: str | os.PathLike,
    frames: int = 50,
    fps: int = 10,
    title: str | None = None,
) -> None:
    """An animated GIF (840 × 600 px) of the trajectories advancing; at most `frames` frames
    (subsampled steps).  Written atomically.

    The contour background is drawn once and each frame only redraws the moving lines on a copy
    of it (blitting), then Pillow assembles the GIF: an order of magnitude faster than
    re-rendering every frame through matplotlib.animation.
    """
    from PIL import Image

    figure = _new_figure(GIF_SIZE, dpi=GIF_DPI)
    axes = figure.add_subplot()
    view = view_box(result)
    draw_surface(axes, result.landscape, view)
    palette, alpha = colours(result), _alpha(result)
    for run in result.runs:
        axes.plot(run.path[0, 0], run.path[0, 1], marker="o", color="white",
                  markeredgecolor="black", markersize=5)  # fmt: skip
    texts = _legends(result)
    handles = [Line2D([], [], color=c, linewidth=2.5, label=texts[lbl])
               for lbl, c in palette.items()]  # fmt: skip
    place_legend(figure, axes, handles, fontsize=10, columns=1)
    axes.set_title(_title(result, title), fontsize=10)
    figure.tight_layout()
    canvas = figure.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(figure.bbox)
    artists = []
    for run in result.runs:
        colour = to_rgba(palette[run.label], alpha[run.label])
        dashed = run.metrics["status"] == "diverged"
        (line,) = axes.plot([], [], color=colour, linewidth=1.6, animated=True,
                            linestyle="--" if dashed else "-")  # fmt: skip
        (head,) = axes.plot([], [], marker="o", color=colour, markeredgecolor="black",
                            markersize=7, animated=True)  # fmt: skip
        artists.append((run, line, head))
    counter = axes.text(0.02, 0.96, "", transform=axes.transAxes, fontsize=11, va="top",
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


__all__ = [
    "contour_figure",
    "edge_exit",
    "figures",
    "loss_figure",
    "save_animation",
    "save_figure",
    "subtitle",
    "view_box",
]
