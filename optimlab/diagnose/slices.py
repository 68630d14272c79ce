"""Loss-landscape slices: the loss along one or two directions through the current weights θ*,

    f(α) = L(θ* + α·d),        f(α, β) = L(θ* + α·d₁ + β·d₂),

(Goodfellow, Vinyals & Saxe 2015; Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss
Landscape of Neural Nets").

* Random directions are **filter-normalized** (Li et al. §4): a Gaussian direction d is rescaled
  filter by filter (each output unit's row or kernel, the slices along dimension 0 of a weight
  tensor) to the norm of the corresponding filter of θ*, d_i ← d_i·‖θ*_i‖/‖d_i‖. Without it the
  picture depends on the scale of the weights, which ReLU nets and batch norm leave arbitrary,
  not on the geometry. Bias and normalization-layer directions are zero (the weights are left
  where they are); any other 1-D parameter counts as one filter.
* The **training path** directions come from PCA of the checkpoints θ_0 … θ_T of a run: the top
  two principal directions of the differences θ_t − θ_T, on which the path is projected (random
  directions in a space of many thousand dimensions are almost orthogonal to the path, so the
  path would look like a point).

Every loss is evaluated under ``torch.no_grad`` in eval mode on one fixed batch; the weights are
restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from optimlab.diagnose.common import (
    NORMALIZATION,
    Data,
    LossFn,
    Progress,
    batches,
    check_data,
    check_scalar_loss,
    flatten,
    full_batch,
    preserved,
    trainable_parameters,
    unflatten,
)
from optimlab.optim.modes import evaluation_point, to_train_point


def zeroed_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters that get a zero direction: biases and normalization layers."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if param_name == "bias" or isinstance(module, NORMALIZATION):
                names.add(full)
    return names


def filter_normalized_direction(
    model: nn.Module, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """One random direction, a tensor per trainable parameter (see the module docstring)."""
    trainable_parameters(model)
    zeroed = zeroed_parameters(model)
    direction = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        weights = param.detach()
        if name in zeroed:
            direction.append(torch.zeros_like(weights))
            continue
        d = torch.randn(weights.shape, generator=generator, dtype=weights.dtype)
        rows_w = (
            weights.reshape(weights.shape[0], -1) if weights.dim() >= 2 else weights.view(1, -1)
        )
        rows_d = d.reshape(rows_w.shape)
        scale = rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-30)
        direction.append((rows_d * scale).reshape(weights.shape))
    return direction


class _Evaluator:
    """L(θ* + Σ c_k·d_k) on one batch, with θ* the weights when it was made."""

    def __init__(self, model: nn.Module, data: Data, loss_fn: LossFn, max_samples: int | None):
        self.model, self.loss_fn = model, loss_fn
        self.params = trainable_parameters(model)
        self.base = [p.detach().clone() for p in self.params]
        self.x, self.y = full_batch(data, max_samples)

    @torch.no_grad()
    def __call__(self, directions: Sequence[Sequence[torch.Tensor]], coefficients: Sequence[float]):
        for i, param in enumerate(self.params):
            value = self.base[i].clone()
            for direction, c in zip(directions, coefficients):
                value.add_(direction[i], alpha=float(c))
            param.copy_(value)
        loss = check_scalar_loss(self.loss_fn(self.model(self.x), self.y))
        value = float(loss)
        return value if math.isfinite(value) else math.nan


def _grid(span: float | tuple[float, float], points: int, name: str) -> list[float]:
    low, high = (-span, span) if isinstance(span, int | float) else span
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"{name}={span!r}; allowed: a number > 0 or a (low, high) pair")
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        raise ValueError(f"points={points!r}; allowed: an integer >= 3")
    return torch.linspace(low, high, points, dtype=torch.float64).tolist()


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return None if isinstance(values, float) and not math.isfinite(values) else values


@dataclass
class Slice1D:
    alphas: list[float]
    losses: list[float]
    center_loss: float

    def to_json(self) -> dict[str, Any]:
        return {k: _nan_to_none(v) for k, v in asdict(self).items()}


@dataclass
class Slice2D:
    """``losses[i][j]`` is the loss at (alphas[j], betas[i]): rows follow β, as for contour."""

    alphas: list[float]
    betas: list[float]
    losses: list[list[float]]
    center_loss: float

    def to_json(self) -> dict[str, Any]:
        return {k: _nan_to_none(v) for k, v in asdict(self).items()}


def slice_1d(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    direction: list[torch.Tensor] | None = None,
    *,
    span: float | tuple[float, float] = 1.0,
    points: int = 41,
    max_samples: int | None = 1000,
    seed: int = 0,
) -> Slice1D:
    """f(α) = L(θ* + α·d) for α on a grid over [−span, span] (a filter-normalized random d by
    default, drawn with `seed`)."""
    alphas = _grid(span, points, "span")
    with preserved(model):
        model.eval()
        if direction is None:
            direction = filter_normalized_direction(model, torch.Generator().manual_seed(seed))
        evaluate = _Evaluator(model, data, loss_fn, max_samples)
        losses = [evaluate([direction], [a]) for a in alphas]
        center = evaluate([direction], [0.0])
    return Slice1D(alphas, losses, center)


def slice_2d(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    directions: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    *,
    span: float | tuple[float, float] = 1.0,
    span_beta: float | tuple[float, float] | None = None,
    points: int = 21,
    max_samples: int | None = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Slice2D:
    """f(α, β) = L(θ* + α·d₁ + β·d₂) on a points × points grid (two filter-normalized random
    directions by default)."""
    alphas = _grid(span, points, "span")
    betas = _grid(span if span_beta is None else span_beta, points, "span_beta")
    with preserved(model):
        model.eval()
        if directions is None:
            generator = torch.Generator().manual_seed(seed)
            directions = (
                filter_normalized_direction(model, generator),
                filter_normalized_direction(model, generator),
            )
        evaluate = _Evaluator(model, data, loss_fn, max_samples)
        losses = []
        for i, b in enumerate(betas):
            losses.append([evaluate(directions, [a, b]) for a in alphas])
            if progress is not None and (i + 1) % 5 == 0:
                progress(f"landscape: row {i + 1}/{len(betas)}")
        center = evaluate(directions, [0.0, 0.0])
    return Slice2D(alphas, betas, losses, center)


def training_path(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int = 100,
    checkpoints: int = 21,
    batch_size: int | None = 128,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[torch.Tensor]:
    """Train a copy's worth of `steps` minibatch steps and return `checkpoints` flat weight
    vectors evenly spaced along the run (the first is the start, the last the end). The model and
    optimizer are restored afterwards."""
    trainable_parameters(model)
    check_data(data)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps={steps!r}; allowed: an integer >= 2")
    if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 3:
        raise ValueError(f"checkpoints={checkpoints!r}; allowed: an integer >= 3")
    marks = {round(i * steps / (checkpoints - 1)) for i in range(checkpoints)}
    path = []
    params = trainable_parameters(model)
    with preserved(model, optimizer):
        model.train()
        to_train_point(optimizer)  # Schedule-Free steps only in train mode
        stream = batches(data, batch_size, torch.Generator().manual_seed(seed))
        for step in range(steps + 1):
            if step in marks:
                with evaluation_point(optimizer):  # Schedule-Free: the path of the average x
                    path.append(flatten(p.detach() for p in params).double())
            if step == steps:
                break
            x, y = next(stream)
            optimizer.zero_grad()
            check_scalar_loss(loss_fn(model(x), y)).backward()
            optimizer.step()
            if progress is not None and (step + 1) % 50 == 0:
                progress(f"landscape: training path step {step + 1}/{steps}")
    return path


@dataclass
class PathSlice:
    """The loss on the plane of the top two principal directions of a training path, centred
    on its end point. ``path`` holds each checkpoint's (α, β) coordinates (the end is (0, 0)),
    ``path_losses`` each checkpoint's own loss, ``explained`` the fraction of the path's
    variance along each direction (their sum says how well the plane holds the path)."""

    slice: Slice2D
    path: list[tuple[float, float]]
    path_losses: list[float]
    explained: tuple[float, float]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.slice.to_json(),
            "path": [list(p) for p in self.path],
            "path_losses": _nan_to_none(self.path_losses),
            "explained_variance": list(self.explained),
        }


def pca_directions(
    path: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """The top two principal directions (unit rows) of θ_t − θ_T, the coordinates of every
    checkpoint along them, and the fraction of variance each explains."""
    if len(path) < 3:
        raise ValueError(f"a training path needs at least 3 checkpoints, got {len(path)}")
    end = path[-1]
    differences = torch.stack([p - end for p in path])
    _, singular, vh = torch.linalg.svd(differences, full_matrices=False)
    if float(singular[0]) == 0.0:
        raise ValueError("the training path does not move: every checkpoint is the same")
    directions = vh[:2]
    coordinates = differences @ directions.T
    variance = singular.square()
    explained = variance[:2] / variance.sum()
    return directions, coordinates, (float(explained[0]), float(explained[1]))


def path_slice(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    path: Sequence[torch.Tensor],
    *,
    points: int = 21,
    margin: float = 0.25,
    max_samples: int | None = 1000,
    progress: Progress | None = None,
) -> PathSlice:
    """The 2-D slice through the path's end point θ_T along its two principal directions, on a
    grid covering the projected path plus `margin` of its extent on each side."""
    directions, coordinates, explained = pca_directions(path)
    params = trainable_parameters(model)
    spans = []
    for axis in range(2):
        low, high = float(coordinates[:, axis].min()), float(coordinates[:, axis].max())
        extent = max(high - low, 1e-3 * max(abs(low), abs(high), 1e-12))
        spans.append((low - margin * extent, high + margin * extent))
    with preserved(model):
        with torch.no_grad():
            for param, value in zip(params, unflatten(path[-1], params)):
                param.copy_(value)
        as_params = [unflatten(d, params) for d in directions]
        result = slice_2d(
            model,
            data,
            loss_fn,
            (as_params[0], as_params[1]),
            span=spans[0],
            span_beta=spans[1],
            points=points,
            max_samples=max_samples,
            progress=progress,
        )
        # The losses of the checkpoints themselves (not of their projections on the plane).
        model.eval()
        evaluate = _Evaluator(model, data, loss_fn, max_samples)
        losses = [evaluate([unflatten(p - path[-1], params)], [1.0]) for p in path]
    path_coordinates = [(float(c[0]), float(c[1])) for c in coordinates]
    return PathSlice(result, path_coordinates, losses, explained)
