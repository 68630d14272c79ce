"""The diagnosis page: DIR/index.html, self-contained (PNG figures embedded as ``data:`` URIs,
inline style, no network request). `render_page` is a pure function of the results."""

from __future__ import annotations

import math
from typing import Any

import jinja2

from optimlab.diagnose import plots

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("optimlab.diagnose", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def num(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


_ENV.filters["num"] = num


def findings(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One line per check for the summary at the top: (check, verdict, level) with level in
    ok / warn / bad."""
    out = []
    skipped = {name for name, value in results.items() if "skipped" in value}
    for name in skipped:
        out.append((name, f"skipped: {results[name]['skipped']}", "warn"))
    results = {name: value for name, value in results.items() if name not in skipped}
    if "lr" in results:
        lr = results["lr"]
        if lr["suggestion"] is None:
            text, level = f"no suggestion: {lr['reason']}", "bad"
        else:
            text = (f"suggested {num(lr['suggestion'], '.3g')} ({lr['rule']} rule; the loss was "
                    f"lowest at {num(lr['minimum'], '.3g')})")  # fmt: skip
            level = "ok" if lr["reliable"] else "warn"
            if not lr["reliable"]:
                text += f"; unreliable: {lr['reason']}"
        out.append(("Learning rate", text, level))
    if "gradflow" in results:
        flow = results["gradflow"]
        flags = [n.replace("_", " ") for n in ("vanishing", "exploding", "dead_relu") if flow[n]]
        text = (
            ("gradients " + " and ".join(flags)) if flags else "healthy"
        ) + f" (output/input gradient ratio {num(flow['shrink_factor'], '.3g')})"
        out.append(("Gradient flow", text, "bad" if flags else "ok"))
    if "hessian" in results:
        h = results["hessian"]
        if h["negative_curvature"]:
            text = (
                f"negative curvature: λmin = {num(h['lambda_min'], '.3g')} < 0 — a saddle "
                f"region, not a minimum; λmax = {num(h['lambda_max'], '.3g')}"
            )
            level = "warn"
        else:
            text = (
                f"λmax = {num(h['lambda_max'], '.4g')}, λmin = {num(h['lambda_min'], '.3g')}, "
                f"condition number {num(h['condition_number'], '.3g')}"
            )
            level = "ok"
        out.append(("Curvature", text, level))
    if "landscape" in results:
        land = results["landscape"]
        explained = sum(v for v in land["explained_variance"] if v is not None)
        out.append(("Landscape", f"{land['at']}: loss {num(land['center_loss'])}; the PCA plane "
                    f"holds {explained:.0%} of the training path's variance", "ok"))  # fmt: skip
    return out


def render_page(results: dict[str, Any], objects: dict[str, Any]) -> str:
    """The HTML page for `results` (the JSON of `run_diagnosis`) and the result `objects` the
    figures are drawn from."""
    images: dict[str, str] = {}
    if "lr" in objects:
        images["lr"] = plots.data_uri(plots.lr_find_figure(objects["lr"]))
    if "gradflow" in objects:
        images["gradflow"] = plots.data_uri(plots.gradflow_figure(objects["gradflow"]))
    if "hessian" in objects:
        images["hessian"] = plots.data_uri(plots.density_figure(objects["hessian"]))
    if "landscape" in objects:
        land = objects["landscape"]
        images["slice_1d"] = plots.data_uri(plots.slice_1d_figure(land["slice_1d"]))
        images["slice_2d"] = plots.data_uri(plots.slice_2d_figure(land["slice_2d"]))
        images["path"] = plots.data_uri(plots.path_figure(land["path"]))
    template = _ENV.get_template("diagnose.html.j2")
    shown = {name: value for name, value in results.items() if "skipped" not in value}
    return template.render(r=shown, images=images, findings=findings(results))
