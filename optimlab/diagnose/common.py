"""Pieces every diagnostic shares: checked inputs, minibatches, and a snapshot that puts a model
and its optimizer back exactly as they were.

A diagnostic *measures* training; it must not *change* it. Each one that trains (the LR range
test, gradient flow, the training path of the landscape slices) runs inside `preserved`, which
restores the parameters, buffers, gradients, train/eval mode, the optimizer's state_dict and
torch's global random state bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
#: ``(inputs, targets)`` tensors (minibatches are drawn from them), or any iterable of such pairs
#: (a ``DataLoader``); an iterable is cycled when a diagnostic needs more batches than it yields.
Data = tuple[torch.Tensor, torch.Tensor] | Iterable[Batch]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[str], None]

#: the normalization layers: their parameters are scales and shifts, not weights
NORMALIZATION = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


class NotApplicable(ValueError):
    """A check that does not apply to this model (e.g. gradient flow without weight layers)."""


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients; ValueError if there are none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"model {type(model).__name__} has no trainable parameters (none with "
            f"requires_grad=True); there is nothing to diagnose"
        )
    return params


def check_scalar_loss(loss: Any) -> torch.Tensor:
    """`loss` must be a tensor with one element (a mean or sum over the batch)."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"loss_fn returned a non-scalar loss of shape {tuple(loss.shape)}; it must return one "
            f"number (e.g. reduction='mean')"
        )
    return loss.reshape(())


def is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def check_data(data: Any) -> None:
    if is_tensor_pair(data):
        x, y = data
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(
                f"data must be (inputs, targets) of equal, non-zero length; got {len(x)} inputs "
                f"and {len(y)} targets"
            )
    elif not isinstance(data, Iterable):
        raise TypeError(
            f"data must be an (inputs, targets) tuple of tensors or an iterable of such "
            f"batches, got {type(data).__name__}"
        )


def batches(
    data: Data, batch_size: int | None, generator: torch.Generator | None = None
) -> Iterator[Batch]:
    """Endless minibatches: from tensors, random minibatches of `batch_size` drawn without
    replacement within each epoch (all of them if `batch_size` is None); from an iterable, its
    batches in order, starting again at the end."""
    check_data(data)
    if is_tensor_pair(data):
        x, y = data
        n = len(x)
        size = n if batch_size is None else min(int(batch_size), n)
        if size < 1:
            raise ValueError(f"batch_size={batch_size!r}; allowed: an integer >= 1 or None")
        while True:
            order = torch.randperm(n, generator=generator) if size < n else torch.arange(n)
            for start in range(0, n - size + 1, size):
                index = order[start : start + size]
                yield x[index], y[index]
    else:
        while True:
            empty = True
            for batch in data:
                empty = False
                yield batch[0], batch[1]
            if empty:
                raise ValueError("data yielded no batches")


def full_batch(data: Data, max_samples: int | None = None) -> Batch:
    """One batch holding (the first `max_samples` of) the data, for deterministic measurements."""
    check_data(data)
    if is_tensor_pair(data):
        x, y = data
    else:
        xs, ys, count = [], [], 0
        for batch in data:
            xs.append(batch[0])
            ys.append(batch[1])
            count += len(batch[0])
            if max_samples is not None and count >= max_samples:
                break
        if not xs:
            raise ValueError("data yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    return x, y


def flatten(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for t in like:
        out.append(vector[offset : offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


def _optimizer_snapshot(optimizer: torch.optim.Optimizer) -> tuple[list[dict], dict]:
    groups = [
        {key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
        for group in optimizer.param_groups
    ]
    state = {param: copy.deepcopy(values) for param, values in optimizer.state.items()}
    return groups, state


def _optimizer_restore(optimizer: torch.optim.Optimizer, snapshot: tuple[list[dict], dict]) -> None:
    """Put hyperparameters and state back in place rather than through ``load_state_dict``,
    which casts state tensors and may add default keys: the optimizer must be *exactly* as it
    was, whatever its class."""
    groups, state = snapshot
    for group, saved in zip(optimizer.param_groups, groups):
        params = group["params"]
        group.clear()
        group.update(copy.deepcopy(saved))
        group["params"] = params
    optimizer.state.clear()
    for param, values in state.items():
        optimizer.state[param] = copy.deepcopy(values)


@contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[None]:
    """Run the body, then restore `model` and `optimizer` exactly (see the module docstring)."""
    model_state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {id(p): None if p.grad is None else p.grad.clone() for p in model.parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    optimizer_state = _optimizer_snapshot(optimizer) if optimizer is not None else None
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            with torch.no_grad():
                current = model.state_dict(keep_vars=True)
                for key, value in model_state.items():
                    current[key].copy_(value)
            for p in model.parameters():
                saved = grads[id(p)]
                p.grad = None if saved is None else saved.clone()
            for name, module in model.named_modules():
                module.training = modes[name]
            if optimizer is not None:
                _optimizer_restore(optimizer, optimizer_state)
