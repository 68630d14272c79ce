"""Parity table: how far each optimlab optimizer is from its reference implementation.

For every algorithm in the registry, each convention and each dtype, optimlab and the reference
take the same number of steps (200 by default) on the non-quadratic, coupled test loss of
``tests/torch_reference.py`` (a 7x5 matrix, a 5-vector and a scalar), both sides receiving the
autograd gradient at optimlab's current point (so the table compares update rules, not how the
loss landscape amplifies a rounding difference); the table shows the worst difference of the
final parameters relative to each tensor's scale (``tests.test_keras_parity.relative_error``)
over the option sets tried:

* ``convention="torch"`` against ``torch.optim.<info.torch_class>``: torch defaults, then each
  option set of ``info.samples`` that torch.optim can express (torch has a decoupled weight decay
  only on Adam and NAdam); two parameter groups, the second at half the learning rate.  float64
  rows run with ``torch.set_default_dtype(torch.float64)`` because torch.optim keeps scalar state
  (the step, NAdam's mu_product) in the default dtype.
* ``convention="keras"`` against ``keras.optimizers.<info.keras_class>`` (Keras 3,
  ``KERAS_BACKEND=torch``): Keras defaults, then each option set of ``info.keras_samples``; float64
  rows set ``keras.config.set_floatx("float64")`` so that Keras keeps its learning rate in float64.

Usage: ``python benchmarks/parity_table.py [--steps 200] [--impl auto|fused|reference] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `tests` helpers

import torch

from optimlab.optim.registry import REGISTRY, OptimizerInfo
from tests.test_keras_parity import relative_error, run_against_keras
from tests.torch_reference import (
    default_dtype,
    has_torch_counterpart,
    make_params,
    set_grads,
    torch_kwargs,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def run_against_torch(
    info: OptimizerInfo, options: dict[str, Any], dtype: torch.dtype, steps: int
) -> tuple[float, float]:
    """(worst relative difference from torch.optim, relative distance optimlab moved)."""
    with default_dtype(dtype):
        start = make_params(dtype)
        ours_params = [p.clone().requires_grad_() for p in start]
        theirs_params = [p.clone().requires_grad_() for p in start]
        lr = info.cls.default_hyperparameters("torch")["lr"]
        ours = info.cls(
            [{"params": ours_params[:1]}, {"params": ours_params[1:], "lr": lr / 2}], **options
        )
        theirs = info.torch_twin()(
            [{"params": theirs_params[:1]}, {"params": theirs_params[1:], "lr": lr / 2}],
            **torch_kwargs(info, ours.param_groups[0]),
        )
        maximize = options.get("maximize", False)
        for _ in range(steps):
            # As against Keras: one gradient, at optimlab's current point, fed to both.
            set_grads(ours_params, maximize)
            for ours_param, their_param in zip(ours_params, theirs_params):
                their_param.grad = ours_param.grad.clone()
            ours.step()
            theirs.step()
    return relative_error(ours_params, theirs_params, start), relative_error(
        ours_params, start, start
    )


def measure(steps: int, impl: str) -> list[dict[str, Any]]:
    """One record per (algorithm, convention, dtype, option set), optimlab run with `impl`."""
    records = []
    for name, info in REGISTRY.items():
        # an optimizer without a torch.optim / Keras twin is compared with its own references
        # in tests/test_modern_*.py (its rows are in docs/testing.md's modern parity table)
        plans = [
            ("torch", [o for o in ({}, *info.samples) if has_torch_counterpart(info, o)]),
            ("keras", [{}, *info.keras_samples]),
        ]
        if info.torch_twin is None:
            plans[0] = ("torch", [])
        if info.keras_twin is None:
            plans[1] = ("keras", [])
        for convention, option_sets in plans:
            for dtype_name, dtype in DTYPES.items():
                for sample in option_sets:
                    options = {**sample, "impl": impl}
                    if convention == "torch":
                        error, moved = run_against_torch(info, options, dtype, steps)
                    else:
                        error, moved = run_against_keras(info, options, dtype, steps)
                    records.append(
                        {
                            "algorithm": name,
                            "convention": convention,
                            "reference": (
                                f"torch.optim.{info.torch_class}"
                                if convention == "torch"
                                else f"keras.optimizers.{info.keras_class}"
                            ),
                            "dtype": dtype_name,
                            "impl": impl,
                            "options": {k: _jsonable(v) for k, v in sample.items()},
                            "steps": steps,
                            "relative_error": error,
                            "moved": moved,
                        }
                    )
    return records


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst error per (algorithm, convention, dtype), with the option set that produced it."""
    worst: dict[tuple[str, str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    least_moved: dict[tuple[str, str, str], float] = {}
    for record in records:
        key = (record["algorithm"], record["convention"], record["dtype"])
        counts[key] = counts.get(key, 0) + 1
        least_moved[key] = min(least_moved.get(key, float("inf")), record["moved"])
        if key not in worst or record["relative_error"] > worst[key]["relative_error"]:
            worst[key] = record
    return [
        {
            "algorithm": key[0],
            "convention": key[1],
            "dtype": key[2],
            "reference": worst[key]["reference"],
            "option_sets": counts[key],
            "worst_relative_error": worst[key]["relative_error"],
            "worst_options": worst[key]["options"],
            "least_moved": least_moved[key],
        }
        for key in worst
    ]


def markdown(summary: list[dict[str, Any]], steps: int, impl: str) -> str:
    """Rows algorithm x convention; float64 and float32 worst errors side by side."""
    rows = {}
    for entry in summary:
        rows.setdefault((entry["algorithm"], entry["convention"]), {})[entry["dtype"]] = entry
    lines = [
        f"Worst relative error after {steps} steps, optimlab impl={impl!r} "
        f"(tolerance: float64 1e-10, float32 1e-5)",
        "",
        "| algorithm | convention | reference | option sets | float64 | float32 | worst options (f32) | least moved |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for (algorithm, convention), by_dtype in rows.items():
        f64, f32 = by_dtype["float64"], by_dtype["float32"]
        options = json.dumps(f32["worst_options"]) if f32["worst_options"] else "defaults"
        lines.append(
            f"| {algorithm} | {convention} | {f64['reference']} | {f64['option_sets']} | "
            f"{f64['worst_relative_error']:.2e} | {f32['worst_relative_error']:.2e} | {options} | "
            f"{min(f64['least_moved'], f32['least_moved']):.2g} |"
        )
    return "\n".join(lines)


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    parser.add_argument(
        "--impl",
        choices=("auto", "fused", "reference"),
        default="auto",
        help="optimlab implementation: auto (what users get: fused kernel where it applies), "
        "fused, or the reference rule",
    )
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    started = time.perf_counter()
    records = measure(args.steps, args.impl)
    summary = summarize(records)
    print(markdown(summary, args.steps, args.impl))
    print(f"\n{len(records)} runs in {time.perf_counter() - started:.1f} s")
    if args.json is not None:
        payload = {
            "steps": args.steps,
            "impl": args.impl,
            "torch": torch.__version__,
            "keras": __import__("keras").__version__,
            "summary": summary,
            "runs": records,
        }
        write_json_atomically(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
