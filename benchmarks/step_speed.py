"""Optimizer step speed: optimlab's fused kernels beside torch.optim's for-loop, foreach and fused.

Three workloads, float32: large (32M parameters in 64 tensors), small (1.3M parameters in 40
tensors: 20 x [256x256, 256]) and one-1000 (a single 1,000-element tensor: the fixed cost of a
call, timed over 200 interleaved steps).  For each algorithm it prints ms/step (median of repeated steps)
(the implementations take turns step by step, so load drift touches all alike) and the effective bandwidth: the bytes one step must move at least (stated per algorithm, e.g. 28
bytes/parameter for Adam: read p, g, m, v, write p, m, v) divided by the time.  Every number of
one table comes from one run, so the ratios compare like with like; the bar, torch's fused Adam,
takes its turns inside every algorithm's rounds.

    .venv/bin/python benchmarks/step_speed.py [--repeat 15] [--json PATH] [--only adam,nadam]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import tempfile
import time
from typing import Any

import torch

import optimlab
from optimlab.optim.registry import REGISTRY

WORKLOADS = {
    "large": [(1 << 19,)] * 64,
    "small": [(256, 256), (256,)] * 20,
    # one 1,000-element tensor: the fixed cost per call and parameter group (issue 12, item 6)
    "one-1000": [(1000,)],
}
#: a tiny workload takes microseconds per step: more timed steps for a stable median
TINY_REPEAT = 200


def _torch_twin(name: str) -> tuple[type, dict[str, Any]]:
    """The torch.optim twin the optimizer declares, with optimlab's torch defaults as arguments
    (Momentum is torch's SGD with momentum=0.9, ...)."""
    info = REGISTRY[name]
    cls = info.torch_twin()
    accepted = inspect.signature(cls).parameters
    return cls, {k: v for k, v in info.cls.DEFAULTS["torch"].items() if k in accepted}


def _params(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=generator).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return params


def _time_interleaved(
    optimizers: dict[str, torch.optim.Optimizer], repeat: int
) -> dict[str, float]:
    """Median seconds per step of each optimizer, after three warm-up steps each (the first
    compiles or allocates).  The optimizers take turns, one step each per round, so a change in
    the machine's load during the run touches them all alike and the ratios stay fair."""
    for optimizer in optimizers.values():
        for _ in range(3):
            optimizer.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeat):
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            optimizer.step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


#: torch.optim's implementations timed beside optimlab (``--torch``)
TORCH_VARIANTS = ("for-loop", "foreach", "fused")


def _torch_variants(name: str, params: list[torch.Tensor]) -> dict[str, torch.optim.Optimizer]:
    cls, kwargs = _torch_twin(name)
    variants = {
        "for-loop": cls(params, foreach=False, **kwargs),
        "foreach": cls(params, foreach=True, **kwargs),
    }
    # torch has fused CPU kernels for a few algorithms only; the others refuse fused=True
    with contextlib.suppress(RuntimeError, TypeError, ValueError):
        fused = cls(params, fused=True, **kwargs)
        fused.step()
        variants["fused"] = fused
    return variants


def measure(
    workload: str, names: list[str], repeat: int, variants: tuple[str, ...] = TORCH_VARIANTS
) -> list[dict[str, Any]]:
    shapes = WORKLOADS[workload]
    rows = []
    # The bar, torch's fused Adam on the same workload, takes turns with every algorithm's
    # contenders: on a shared machine the bandwidth drifts between one algorithm's measurement
    # and the next (measured: torch's fused Adam at 87 GB/s, then every other kernel at 57),
    # so a bar measured once would compare one minute's machine with another's.
    bar_params = _params(shapes)
    bar = torch.optim.Adam(bar_params, lr=1e-3, fused=True)
    for name in names:
        params = _params(shapes)
        count = sum(p.numel() for p in params)
        ours = optimlab.create(name, params, **_torch_twin(name)[1])
        bytes_per_param = REGISTRY[name].cls.kernel().bytes_per_param(ours.param_groups[0])
        row: dict[str, Any] = {
            "workload": workload,
            "algorithm": name,
            "params": count,
            "tensors": len(params),
            "bytes_per_param": bytes_per_param,
        }
        # the bar is torch's fused Adam, timed only with the fused variants (see --torch)
        contenders = {"optimlab": ours, "bar": bar} if "fused" in variants else {"optimlab": ours}
        contenders.update(
            (f"torch_{variant}", optimizer)
            for variant, optimizer in _torch_variants(name, params).items()
            if variant in variants
        )
        rounds = max(repeat, TINY_REPEAT) if count < 100_000 else repeat
        for who, seconds in _time_interleaved(contenders, rounds).items():
            row[f"{who}_ms"] = seconds * 1e3
        del ours, contenders
        for key in [k for k in row if k.endswith("_ms")]:
            row[key.replace("_ms", "_gbs")] = bytes_per_param * count / (row[key] * 1e-3) / 1e9
        rows.append(row)
    for row in rows:
        torch_times = [row[k] for k in row if k.startswith("torch_") and k.endswith("_ms")]
        row["vs_best_torch"] = min(torch_times) / row["optimlab_ms"]
        row["vs_torch_default"] = row["torch_for-loop_ms"] / row["optimlab_ms"]
        if "torch_fused_ms" in row:
            row["vs_same_fused"] = row["torch_fused_ms"] / row["optimlab_ms"]
        if "bar_ms" not in row:
            continue
        # torch's fused Adam is the bar: 28 bytes/param at its speed, in the same rounds
        row["bar_gbs"] = 28 * row["params"] / (row["bar_ms"] * 1e-3) / 1e9
        row["gbs_vs_adam_fused"] = row["optimlab_gbs"] / row["bar_gbs"]
        row["time_vs_adam_fused"] = row["optimlab_ms"] / row["bar_ms"]
    return rows


def _cell(row: dict[str, Any], key: str, digits: int = 1) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "—"


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| workload | algorithm | B/param | optimlab ms | GB/s | torch for-loop ms | foreach ms "
        "| fused ms | best torch GB/s | × best torch | × torch default | × same fused "
        "| bar: torch fused Adam ms | GB/s ÷ bar | time ÷ bar |"
    )
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in rows:
        best_gbs = max(r[k] for k in r if k.startswith("torch_") and k.endswith("_gbs"))
        lines.append(
            f"| {r['workload']} | {r['algorithm']} | {r['bytes_per_param']} "
            f"| {_cell(r, 'optimlab_ms', 2)} | {_cell(r, 'optimlab_gbs')} "
            f"| {_cell(r, 'torch_for-loop_ms', 2)} | {_cell(r, 'torch_foreach_ms', 2)} "
            f"| {_cell(r, 'torch_fused_ms', 2)} | {best_gbs:.1f} | {_cell(r, 'vs_best_torch', 2)} "
            f"| {_cell(r, 'vs_torch_default', 2)} | {_cell(r, 'vs_same_fused', 2)} "
            f"| {_cell(r, 'bar_ms', 2)} "
            f"| {_cell(r, 'gbs_vs_adam_fused', 2)} | {_cell(r, 'time_vs_adam_fused', 2)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Modern optimizers (issue 13): rows added at the end, the classic rows above unchanged.


def modern_kernels() -> list[str]:
    """The registered modern optimizers that declare a fused kernel, in registry order."""
    return [
        name
        for name, info in REGISTRY.items()
        if info.preset == "modern" and info.cls.kernel is not None
    ]


def measure_modern(workload: str, names: list[str], repeat: int) -> list[dict[str, Any]]:
    """Rows like `measure`'s for optimizers that may lack a torch.optim twin.

    The torch columns come from the declared twin when there is one (AdamW, RAdam); otherwise the
    "torch for-loop" column is optimlab's own reference rule (``impl="reference"``: the
    reference package's torch operations, one tensor at a time, as lion-pytorch and schedulefree
    run them) and the row is marked "(ref)".
    """
    shapes = WORKLOADS[workload]
    bar = torch.optim.Adam(_params(shapes), lr=1e-3, fused=True)
    rows = []
    for name in names:
        info = REGISTRY[name]
        params = _params(shapes)
        count = sum(p.numel() for p in params)
        twin = info.torch_twin is not None
        arguments = _torch_twin(name)[1] if twin else {}
        ours = optimlab.create(name, params, impl="fused", **arguments)
        if twin:
            variants = _torch_variants(name, params)
        else:
            variants = {"for-loop": optimlab.create(name, params, impl="reference", **arguments)}
        bytes_per_param = info.cls.kernel().bytes_per_param(ours.param_groups[0])
        row: dict[str, Any] = {
            "workload": workload,
            "algorithm": name if twin else f"{name} (ref)",
            "params": count,
            "tensors": len(params),
            "bytes_per_param": bytes_per_param,
        }
        # the bar is torch's fused Adam, timed only with the fused variants (see --torch)
        contenders = {"optimlab": ours, "bar": bar} if "fused" in variants else {"optimlab": ours}
        contenders.update((f"torch_{variant}", opt) for variant, opt in variants.items())
        rounds = max(repeat, TINY_REPEAT) if count < 100_000 else repeat
        for who, seconds in _time_interleaved(contenders, rounds).items():
            row[f"{who}_ms"] = seconds * 1e3
        del ours, contenders, variants
        for key in [k for k in row if k.endswith("_ms")]:
            row[key.replace("_ms", "_gbs")] = bytes_per_param * count / (row[key] * 1e-3) / 1e9
        torch_times = [row[k] for k in row if k.startswith("torch_") and k.endswith("_ms")]
        row["vs_best_torch"] = min(torch_times) / row["optimlab_ms"]
        row["vs_torch_default"] = row["torch_for-loop_ms"] / row["optimlab_ms"]
        if "torch_fused_ms" in row:
            row["vs_same_fused"] = row["torch_fused_ms"] / row["optimlab_ms"]
        row["bar_gbs"] = 28 * row["params"] / (row["bar_ms"] * 1e-3) / 1e9
        row["gbs_vs_adam_fused"] = row["optimlab_gbs"] / row["bar_gbs"]
        row["time_vs_adam_fused"] = row["optimlab_ms"] / row["bar_ms"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed steps per measurement")
    parser.add_argument("--json", type=str, default=None, help="also write the rows here")
    # the fused kernels beside their torch.optim twins (an optimizer without either has no row);
    # the modern kernels have their own rows (--modern)
    modern = modern_kernels()
    with_twin = [
        name
        for name, info in REGISTRY.items()
        if info.torch_twin is not None and info.cls.kernel is not None and name not in modern
    ]
    parser.add_argument("--only", type=str, default=",".join(with_twin), help="algorithms")
    parser.add_argument("--modern", type=str, default=",".join(modern), help="modern kernels")
    parser.add_argument("--workloads", type=str, default="large,small,one-1000")
    # On a loaded machine torch's fused kernels leave OpenMP threads spinning between steps, which
    # slows whatever is timed next: `--torch for-loop` times optimlab against the for-loop alone.
    parser.add_argument(
        "--torch", type=str, default=",".join(TORCH_VARIANTS), help="torch variants to time"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n and n != "none"]
    rows: list[dict[str, Any]] = []
    modern_names = [n for n in args.modern.split(",") if n and n != "none"]
    for flag, chosen, allowed in (("--only", names, with_twin), ("--modern", modern_names, modern)):
        unknown = [n for n in chosen if n not in allowed]
        if unknown:
            parser.error(f"{flag}: unknown {unknown}; allowed: {', '.join(allowed)} (or none)")
    variants = tuple(v for v in args.torch.split(",") if v)
    if "for-loop" not in variants or not set(variants) <= set(TORCH_VARIANTS):
        parser.error(f"--torch: {args.torch!r}; allowed: for-loop plus any of foreach, fused")
    for workload in args.workloads.split(","):
        rows += measure(workload, names, args.repeat, variants)
        rows += measure_modern(workload, modern_names, args.repeat)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    print(table(rows))
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)
        os.replace(f.name, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
