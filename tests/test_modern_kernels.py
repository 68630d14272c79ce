"""The fused kernels of the modern element-wise optimizers against their reference rules.

RAdam (both sides of the rectification switch, L2 and decoupled weight decay), Lion, Schedule-Free
AdamW and SGD (the kernel steps; ``train()``/``eval()`` run around every step) and AdamW (Adam's
kernel): 120 steps of the modern-optimizer model (a 0-D, 1-D, 2-D and 4-D parameter in two groups,
tests/modern_harness.py, its convolution as a matrix product) with weight decay, maximize and a non-finite gradient skipped, at the
classic kernels' tolerances (tests/test_kernels.py).  In float64 two more runs move the state
mid-run through ``state_dict``/``torch.save``: fused → reference and reference → fused.  The
reference rules themselves are tested against the authors' packages (tests/test_modern_*.py).
"""

from __future__ import annotations

import ast
import io
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import optimlab
from optimlab.optim.registry import REGISTRY
from tests import modern_harness as harness
from tests.test_kernels import STATE_TOLERANCE, TOLERANCE

STEPS = 120
SWITCH_AT = 57
NONFINITE_AT = 40

#: (name, learning rate, options): each with weight decay, maximize where it means something
CASES = [
    ("radam", 1e-2, {"weight_decay": 0.1, "maximize": True}),
    ("radam", 1e-2, {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.8, 0.9)}),
    ("lion", 3e-3, {"weight_decay": 0.1, "maximize": True}),
    ("lion", 3e-3, {"weight_decay": 0.1, "decoupled_weight_decay": False, "betas": (0.5, 0.9)}),
    (
        "schedulefree-adamw",
        1e-2,
        {"weight_decay": 0.1, "maximize": True, "warmup_steps": 10, "r": 1.0},
    ),
    ("schedulefree-sgd", 2e-2, {"weight_decay": 0.1, "maximize": True, "warmup_steps": 10}),
    ("adamw", 1e-2, {"weight_decay": 0.1, "maximize": True, "amsgrad": True}),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]
NAMES = sorted({name for name, _, _ in CASES})


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """A small model gains nothing from intra-op threads, and under ``pytest -n 2`` on two cores
    the workers' spinning threads slow each other down many times over (measured here: the
    model's gradient 15 ms of CPU per step with two threads under load, 0.3 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    return [p.detach().to(dtype).requires_grad_() for p in harness.make_params()]


def _build(name: str, params: list[torch.Tensor], lr: float, options: dict, impl: str) -> Any:
    second = {"lr": lr / 2}
    return optimlab.create(
        name, harness.groups(params, second), lr=lr, impl=impl, nonfinite="skip", **options
    )


def _loss(params: list[torch.Tensor], step: int) -> torch.Tensor:
    """The harness model's shape without its convolution (the cost of the harness's conv2d
    dominated these runs): the 4-D kernel acts on flattened 2×3×3 patches."""
    gain, bias, weight, conv = params
    generator = torch.Generator().manual_seed(1000 + step)
    patches = torch.randn(4, conv[0].numel(), generator=generator, dtype=torch.float64)
    target = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    features = (patches.to(conv.dtype) @ conv.flatten(1).T).tanh()
    out = gain * (features @ weight) + bias
    return (out - target.to(out.dtype)).pow(2).mean() + 0.1 * out.pow(4).mean()


def _set_grads(params: list[torch.Tensor], step: int) -> None:
    for p in params:
        p.grad = None
    _loss(params, step).backward()
    if step == NONFINITE_AT:
        params[3].grad.view(-1)[5] = math.nan  # one element of the conv kernel's gradient


def _reload(optimizer: Any, build: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    fresh = build()
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    return fresh


def _run(
    name: str, lr: float, options: dict, dtype: torch.dtype, impls: tuple[str, str]
) -> tuple[list[torch.Tensor], Any]:
    """Train with impls[0], move the state into a new impls[1] optimizer at SWITCH_AT."""
    params = _params(dtype)
    optimizer = _build(name, params, lr, options, impls[0])
    switches = hasattr(optimizer, "eval")  # Schedule-Free: gradients at y, x between steps
    for step in range(STEPS):
        if step == SWITCH_AT and impls[1] != impls[0]:
            optimizer = _reload(optimizer, lambda: _build(name, params, lr, options, impls[1]))
        if switches:
            optimizer.train()
        _set_grads(params, step)
        optimizer.step()
        if switches:
            optimizer.eval()
    return params, optimizer


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    scale = float(theirs.detach().abs().max()) if theirs.numel() else 1.0
    return float((ours.detach() - theirs.detach()).abs().max()) / max(scale, 1e-30)


def _assert_close_runs(ours: Any, theirs: Any, dtype: torch.dtype) -> None:
    (ours_params, ours_opt), (their_params, their_opt) = ours, theirs
    for mine, reference in zip(ours_params, their_params, strict=True):
        assert _relative(mine, reference) <= TOLERANCE[dtype], "parameters differ"
        mine_state, their_state = ours_opt.state[mine], their_opt.state[reference]
        assert set(mine_state) == set(their_state)
        # the NaN is in the second group's gradients: that group skips one step, the first none
        skipped = mine_state.get("nonfinite_skipped", 0)
        assert skipped == their_state.get("nonfinite_skipped", 0)
        assert skipped == (1 if mine is ours_params[3] or mine is ours_params[2] else 0)
        for key, value in their_state.items():
            if key == "step":
                assert float(mine_state[key]) == float(value)
            elif isinstance(value, torch.Tensor):  # the moments, Schedule-Free's z
                assert mine_state[key].dtype == value.dtype, key
                bound = max(TOLERANCE[dtype], STATE_TOLERANCE[dtype])
                assert _relative(mine_state[key], value) <= bound, key
    for mine_group, their_group in zip(ours_opt.param_groups, their_opt.param_groups):
        for key in ("k", "weight_sum", "lr_max"):  # Schedule-Free's group bookkeeping
            assert mine_group.get(key) == their_group.get(key), key


@pytest.mark.parametrize(("name", "lr", "options"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_fused_matches_reference(name: str, lr: float, options: dict, dtype) -> None:
    reference = _run(name, lr, options, dtype, ("reference", "reference"))
    assert harness.moved([p.double() for p in reference[0]]) > 1e-2, "the run must move"
    fused = _run(name, lr, options, dtype, ("fused", "fused"))
    _assert_close_runs(fused, reference, dtype)
    if dtype is torch.float64:  # the state moves both ways mid-run and continues alike
        _assert_close_runs(_run(name, lr, options, dtype, ("fused", "reference")), reference, dtype)
        _assert_close_runs(_run(name, lr, options, dtype, ("reference", "fused")), reference, dtype)


@pytest.mark.parametrize("impl", ["auto", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_the_default_and_fused_run_the_kernel(name: str, impl: str) -> None:
    params = _params(torch.float32)
    options = {} if impl == "auto" else {"impl": "fused"}  # auto: the default, as the classics
    optimizer = optimlab.create(name, params, **options)
    assert optimizer.param_groups[0]["impl"] == impl
    _set_grads(params, 0)
    optimizer.step()
    (layout,) = optimizer.fused_layouts.values()
    for p in params:
        for key in REGISTRY[name].cls.STATE:
            if key in layout.keys:  # every tensor state is a view of the group's flat buffer
                assert optimizer.state[p][key]._base is layout.buffer


def test_adamw_runs_adams_kernel() -> None:
    assert optimlab.AdamW.kernel() is optimlab.Adam.kernel()


def test_fused_true_selects_the_kernel_as_in_torch() -> None:
    params = _params(torch.float64)
    optimizer = optimlab.create("lion", params, fused=True)
    _set_grads(params, 0)
    optimizer.step()
    assert optimizer.fused_layouts


@pytest.mark.parametrize("name", ["schedulefree-adamw", "schedulefree-sgd"])
def test_schedulefree_fused_step_in_eval_mode_still_refuses(name: str) -> None:
    params = _params(torch.float64)
    optimizer = optimlab.create(name, params, impl="fused")
    _set_grads(params, 0)
    optimizer.step()
    optimizer.eval()
    with pytest.raises(RuntimeError, match="called in eval mode"):
        optimizer.step()
    assert optimizer.param_groups[0]["k"] == 1


@pytest.mark.parametrize("module", ["radam", "lion", "schedulefree"])
def test_kernel_modules_never_import_their_algorithm_module(module: str) -> None:
    """Layers point one way: the per-step scalars are handed to the kernel's make_spec."""
    path = Path(optimlab.__file__).parent / "optim" / "kernels" / f"{module}.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    algorithms = {
        f"optimlab.optim.{info.cls.__module__.rsplit('.', 1)[-1]}" for info in REGISTRY.values()
    }
    assert not imported & algorithms


_CACHE_KEY = """
import hashlib
from optimlab.optim.registry import kernel_specs
for name, spec in sorted(kernel_specs().items()):
    dispatcher = spec.kernel.dispatcher
    key = dispatcher._cache._index_key((), dispatcher.targetctx.codegen())
    print(name, hashlib.sha256(repr(key[2]).encode()).hexdigest()[:16])
"""


def test_every_kernel_finds_its_disk_cache_in_a_new_process() -> None:
    """numba keys a cached kernel on its bytecode and, for a closure, on its pickled cells; the
    skeleton once wrapped the element loop in a closure, whose pickle differs in every process,
    so no process ever reused another's compiled code.  The key must be the same in two
    processes (computed without compiling anything)."""
    keys = [
        subprocess.run(
            [sys.executable, "-c", _CACHE_KEY],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(optimlab.__file__).parents[1])},
        ).stdout
        for _ in range(2)
    ]
    assert keys[0] and keys[0] == keys[1]
