"""The comparison report: DIR/index.html (self-contained) and DIR/summary.json.

`render_html` is a pure function of the summary. Figures are SVG embedded as ``data:`` URIs and
the style is inline, so the page makes no network request and renders offline; each figure is
an isolated image, so the SVGs' internal ids cannot collide. `write_report` writes both files
atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import jinja2

from optimlab.report import plots

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("optimlab.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _ok(value: Any) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def fmt(value: Any, spec: str) -> str:
    return format(value, spec) if _ok(value) else "—"


def pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if _ok(value) else "—"


def pm(mean: Any, std: Any) -> str:
    if not _ok(mean):
        return "—"
    return f"{mean:.4g} ± {std:.2g}" if _ok(std) else f"{mean:.4g}"


def pm_pct(mean: Any, std: Any) -> str:
    if not _ok(mean):
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f}%" if _ok(std) else f"{100 * mean:.1f}%"


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    labels = summary["run"]["optimizers"]
    return {
        "profile": data_uri(
            plots.performance_profile(
                summary["performance_profile"], labels, summary.get("target_tolerance")
            )
        ),
        "curves": {
            problem: data_uri(plots.loss_curves(summary["curves"][problem], labels, problem))
            for problem in summary["problems"]
        },
        "sensitivity": {
            problem: data_uri(plots.lr_sensitivity(entries, labels, problem))
            for problem, entries in summary["problems"].items()
        },
    }


def render_html(summary: dict[str, Any]) -> str:
    """The report page for a summary (see `optimlab.lab.summary.summarize`)."""
    template = _ENV.get_template("compare.html.j2")
    return template.render(
        version=summary["optimlab_version"],
        run=summary["run"],
        ranking=summary["ranking"],
        # (summaries written before the field: a ranking means learned problems)
        ranked_problems=summary.get("ranked_problems", summary["ranking"]),
        unranked=summary.get("unranked", []),
        recommendations=summary.get("recommendations", {"problems": {}, "overall": ""}),
        problems=summary["problems"],
        problem_info=summary["problem_info"],
        per_problem_ranking=summary["per_problem_ranking"],
        target_tolerance=summary.get("target_tolerance"),
        figures=figures(summary),
        fmt=fmt,
        pct=pct,
        pm=pm,
        pm_pct=pm_pct,
    )


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; a report is for reading
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(directory: str | os.PathLike[str], summary: dict[str, Any]) -> Path:
    """Write DIR/summary.json and DIR/index.html; return the path of index.html."""
    directory = Path(directory)
    write_atomic(directory / "summary.json", json.dumps(summary, indent=1, allow_nan=False))
    index = directory / "index.html"
    write_atomic(index, render_html(summary))
    return index
