"""`run_diagnosis`: every check on one named problem, written to DIR/index.html and
DIR/diagnosis.json. The CLI (`optimlab diagnose`) and `optimlab compare --diagnose` call it.

What is measured where:

* ``lr``, ``gradflow``, ``hessian`` look at the **initial** weights (seed `seed`): the point
  where a run that is slow or stuck from the start goes wrong.
* ``landscape`` trains `landscape_steps` steps with the optimizer (recording checkpoints), then
  slices the loss around the **end** weights along random filter-normalized directions and on
  the PCA plane of the path.

Each check trains or probes with the problem's training split and minibatch size; the loss is the
problem's data loss plus its L1/L2 penalty, as in training. The model and optimizer are restored
after every check, so the checks are independent of their order.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimlab.diagnose.common import NotApplicable, Progress
from optimlab.diagnose.gradflow import gradient_flow
from optimlab.diagnose.hessian import analyze_hessian
from optimlab.diagnose.lr_find import lr_find
from optimlab.diagnose.slices import path_slice, slice_1d, slice_2d, training_path, unflatten

CHECKS = ("lr", "gradflow", "hessian", "landscape")
DEFAULT_OPTIMIZER = "adam"


def parse_checks(checks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"lr,hessian"`` or a list → checked names in the canonical order (ValueError if not)."""
    names = [c.strip() for c in checks.split(",")] if isinstance(checks, str) else list(checks)
    names = [c for c in names if c]
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        raise ValueError(
            f"unknown check(s) {', '.join(map(repr, unknown)) or repr(checks)}; "
            f"valid: {', '.join(CHECKS)}"
        )
    return [c for c in CHECKS if c in names]


def optimizer_factory(spec: str) -> tuple[str, Callable[[Any], torch.optim.Optimizer]]:
    """One optimizer spec (``"adam:lr=0.01"``) → its canonical text and a factory of params."""
    from optimlab.optim.registry import create
    from optimlab.spec import parse_optimizer_spec

    parsed = parse_optimizer_spec(spec)
    if len(parsed) != 1:
        raise ValueError(f"optimizer spec {spec!r} names {len(parsed)} optimizers; give one")
    name, options = parsed[0]
    return spec.strip(), lambda params: create(name, params, **options)


def problem_loss(problem: Any, model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """The training loss of `problem` for `model`: data loss + L1/L2 penalty (if any)."""
    if problem.penalty is None:
        return problem.loss_fn
    return lambda output, target: problem.loss_fn(output, target) + problem.penalty(model)


def _timed(results: dict[str, Any], name: str, work: Callable[[], dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        results[name] = work()
    except NotApplicable as reason:
        # One check that does not fit the model should not sink the others.
        results[name] = {"skipped": str(reason)}
    results[name]["seconds"] = round(time.perf_counter() - started, 3)


def diagnose_model(
    model: nn.Module,
    data: Any,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    make_optimizer: Callable[[Any], torch.optim.Optimizer],
    checks: list[str],
    *,
    batch_size: int | None = 128,
    landscape_steps: int = 200,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `checks` on any model; return (JSON-ready results keyed by check, result objects).
    `settings` (a problem's options) tell the gradient-flow advice what the model has."""
    results: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    say = progress or (lambda _message: None)
    if "lr" in checks:
        say("lr: range test")

        def lr() -> dict[str, Any]:
            found = lr_find(
                model, data, loss_fn, make_optimizer(model.parameters()),
                batch_size=batch_size, seed=seed, progress=progress,
            )  # fmt: skip
            objects["lr"] = found
            return found.to_json()

        _timed(results, "lr", lr)
    if "gradflow" in checks:
        say("gradflow: per-layer gradients")

        def flow() -> dict[str, Any]:
            found = gradient_flow(
                model, data, loss_fn, make_optimizer(model.parameters()),
                batch_size=batch_size, seed=seed, settings=settings,
            )  # fmt: skip
            objects["gradflow"] = found
            return found.to_json()

        _timed(results, "gradflow", flow)
    if "hessian" in checks:
        say("hessian: Lanczos, Hutchinson, spectral density")

        def curvature() -> dict[str, Any]:
            found = analyze_hessian(model, data, loss_fn, seed=seed, progress=progress)
            objects["hessian"] = found
            return found.to_json()

        _timed(results, "hessian", curvature)
    if "landscape" in checks:
        say(f"landscape: {landscape_steps} training steps, then slices")

        def landscape() -> dict[str, Any]:
            path = training_path(
                model, data, loss_fn, make_optimizer(model.parameters()),
                steps=landscape_steps, batch_size=batch_size, seed=seed, progress=progress,
            )  # fmt: skip
            params = [p for p in model.parameters() if p.requires_grad]
            saved = [p.detach().clone() for p in params]
            try:
                with torch.no_grad():
                    for param, value in zip(params, unflatten(path[-1], params)):
                        param.copy_(value)
                line = slice_1d(model, data, loss_fn, seed=seed)
                plane = slice_2d(model, data, loss_fn, seed=seed + 1, progress=progress)
            finally:
                with torch.no_grad():
                    for param, value in zip(params, saved):
                        param.copy_(value)
            along = path_slice(model, data, loss_fn, path, progress=progress)
            objects["landscape"] = {"slice_1d": line, "slice_2d": plane, "path": along}
            return {
                "at": f"after {landscape_steps} training steps",
                "steps": landscape_steps,
                "center_loss": line.center_loss,
                "explained_variance": list(along.explained),
                "slice_1d": line.to_json(),
                "slice_2d": plane.to_json(),
                "path": along.to_json(),
            }

        _timed(results, "landscape", landscape)
    return results, objects


def json_safe(value: Any) -> Any:
    """Non-finite floats (a diverged loss) become None: JSON has no NaN or infinity."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def run_diagnosis(
    problem_spec: str,
    optimizer_spec: str = DEFAULT_OPTIMIZER,
    checks: str | list[str] | tuple[str, ...] = CHECKS,
    out_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    landscape_steps: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Diagnose the problem `problem_spec` (``"deep-mlp:depth=10:activation=sigmoid"``) with
    the optimizer `optimizer_spec`; write ``out_dir/index.html`` and ``out_dir/diagnosis.json``
    (if `out_dir` is given) and return the JSON object: one key per check (``lr``, ``gradflow``,
    ``hessian``, ``landscape``) plus ``meta``. Raises ValueError for bad specs or checks.
    """
    from optimlab.problems import get_problem
    from optimlab.problems.registry import full_label

    names = parse_checks(checks)
    optimizer_text, make_optimizer = optimizer_factory(optimizer_spec)
    problem = get_problem(problem_spec)
    model = problem.build_model(seed)
    # Build one optimizer now so that a bad hyperparameter fails before any work.
    make_optimizer(model.parameters())
    steps = landscape_steps if landscape_steps is not None else min(problem.default_steps, 200)
    started = time.perf_counter()
    results, objects = diagnose_model(
        model,
        problem.train,
        problem_loss(problem, model),
        make_optimizer,
        names,
        batch_size=problem.batch_size,
        landscape_steps=steps,
        seed=seed,
        settings=problem.options,
        progress=progress,
    )
    results["meta"] = {
        "problem": problem.spec,
        "problem_label": full_label(problem_spec, problem.label),  # the user's options kept
        "optimizer": optimizer_text,
        "checks": names,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_examples": len(problem.train[0]),
        "batch_size": problem.batch_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    results = json_safe(results)
    if out_dir is not None:
        from optimlab.diagnose.page import render_page

        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "diagnosis.json", json.dumps(results, allow_nan=False))
        write_atomic(directory / "index.html", render_page(results, objects))
    return results


def diagnose_problems(
    problem_specs: list[str],
    out_dir: str | os.PathLike,
    optimizer_spec: str = DEFAULT_OPTIMIZER,
    *,
    checks: str | list[str] | tuple[str, ...] = CHECKS,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, str]:
    """Diagnose each problem into ``out_dir/diagnose/<n>-<name>/`` (for ``optimlab compare
    --diagnose``); return ``{problem label: path of its index.html relative to out_dir}``, the
    links the comparison report shows next to each problem."""
    from optimlab.problems import get_problem

    links: dict[str, str] = {}
    for number, spec in enumerate(problem_specs, start=1):
        problem = get_problem(spec)
        slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in problem.label)[:60]
        relative = Path("diagnose") / f"{number}-{slug}"
        if progress is not None:
            progress(f"diagnose {problem.label} → {relative}/index.html")
        run_diagnosis(
            spec, optimizer_spec, checks, Path(out_dir) / relative, seed=seed, progress=progress
        )
        links[problem.label] = (relative / "index.html").as_posix()
    return links
