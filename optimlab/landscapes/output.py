"""The files of a landscape experiment: trajectories.json and the pictures, written atomically.

``DIR/trajectories.json`` follows the schema ``{"function": ..., "runs": [{"optimizer",
"hyperparameters", "path": [[x, y, loss], ...], "metrics": {...}}]}`` (start point first in each
path), plus the box, minima, steps, noise, tuning scores and, for a scenario, its explanation and
checks.  Next to it: ``landscape.png``, ``landscape.svg``, ``loss.png``, ``landscape.gif``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from optimlab.landscapes.results import LandscapeResult, json_safe

FILES = ("trajectories.json", "landscape.png", "landscape.svg", "loss.png", "landscape.gif")


def write_json(data: dict[str, Any], path: str | os.PathLike) -> None:
    """JSON written atomically; non-finite numbers (not valid JSON) are written as null."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(json_safe(data), allow_nan=False), encoding="utf-8")
    os.replace(temporary, path)


def default_directory(result_or_landscape: Any) -> str:
    """``landscape-NAME`` plus the function's options (``landscape-quadratic-condition=100-angle=30``)
    so runs on differently-built surfaces never share a folder."""
    land = getattr(result_or_landscape, "landscape", result_or_landscape)
    options = "".join(f"-{k}={v:g}" for k, v in land.options.items())
    return f"landscape-{land.name}{options}"


def write_outputs(
    result: LandscapeResult,
    directory: str | os.PathLike,
    *,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write every file into `directory` (created if needed); return their paths by name."""
    from optimlab.landscapes import plots

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in FILES}
    write_json({**result.to_json(), **(extra or {})}, paths["trajectories.json"])
    contour = plots.contour_figure(result, title)
    plots.save_figure(contour, paths["landscape.png"], dpi=110)
    plots.save_figure(contour, paths["landscape.svg"])
    plots.save_figure(plots.loss_figure(result), paths["loss.png"], dpi=100)
    plots.save_animation(result, paths["landscape.gif"], title=title)
    return paths


__all__ = ["FILES", "default_directory", "write_json", "write_outputs"]
