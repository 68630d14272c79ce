"""Shared helpers: run an optimlab optimizer and its torch.optim twin side by side."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from optimlab.optim.registry import OptimizerInfo

SHAPES = ((7, 5), (5,), ())


def torch_twin(info: OptimizerInfo) -> type:
    """The torch.optim class the optimizer declares as its twin; the test skips, saying why,
    for an optimizer that has none (it is still covered by every test that needs no twin)."""
    if info.torch_twin is None:
        pytest.skip(f"{info.name} declares no torch.optim twin")
    return info.torch_twin()


def torch_kwargs(info: OptimizerInfo, group: dict[str, Any]) -> dict[str, Any]:
    """The optimlab group's hyperparameters under the names torch.optim's class accepts."""
    accepted = inspect.signature(torch_twin(info)).parameters
    return {k: v for k, v in group.items() if k in accepted and k != "params"}


def has_torch_counterpart(info: OptimizerInfo, options: dict[str, Any]) -> bool:
    """Whether torch.optim's twin takes `options`; without a twin, only the defaults case is
    generated (it skips with the reason, so the optimizer shows in the report)."""
    if info.torch_twin is None:
        return not options
    accepted = inspect.signature(info.torch_twin()).parameters
    return all(k in accepted for k in options)


def make_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype) for shape in SHAPES]


def loss_fn(params: list[torch.Tensor]) -> torch.Tensor:
    """A smooth non-quadratic loss that couples the parameters."""
    a, b, c = params
    return (
        (a.pow(4).sum() / 4 + (a.sin() * a).sum())
        + ((a @ b).tanh().pow(2).sum() + (b - 0.5).pow(2).sum())
        + (c - 1).pow(2) * (1 + b.pow(2).mean())
    )


def set_grads(params: list[torch.Tensor], maximize: bool = False) -> None:
    """Gradients of the loss, or of its negative when the optimizer maximizes (so both stay stable)."""
    for p in params:
        p.grad = None
    (-loss_fn(params) if maximize else loss_fn(params)).backward()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch.optim keeps scalar state (step, NAdam's mu_product) in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def max_relative_error(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], start: list[torch.Tensor] | None = None
) -> float:
    """Worst max|a - b| / max|b| over the tensors; with `start`, the scale is the larger of the
    tensor's current and starting magnitude (a parameter passing through 0 keeps its scale)."""
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        scale = b.detach().abs().max().clamp_min(1e-30)
        if start is not None:
            scale = torch.maximum(scale, start[i].detach().abs().max())
        error = float((a.detach() - b.detach()).abs().max() / scale)
        worst = max(worst, error) if error == error else float("inf")  # NaN counts as a failure
    return worst
