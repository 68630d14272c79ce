"""Optimizers with two points: where the gradient is taken (train) and what is evaluated (eval).

Schedule-Free (``optimlab.optim.schedulefree``, the ``schedulefree`` package and any user class
with the same protocol) keeps the parameters at the gradient point y in train mode and at the
average x after ``optimizer.eval()``.  Everything that trains or evaluates a model with a given
optimizer goes through these helpers, so it works for any optimizer that has the two methods and
is a no-op for the others.

Batch norm. A network with batch norm keeps running statistics of its activations, collected
during training at the gradient point y. At the average x they are wrong (the Schedule-Free
authors' note: "BatchNorm ... the running statistics must be recomputed at x"), so
`evaluation_point` given the model and some training batches recomputes them there: it resets
each layer's running mean and variance, sets its momentum to None (a cumulative average:
after k batches the statistic is the plain mean of the k batch statistics), runs the batches
forward in train mode without gradients and with torch's random state untouched (dropout
draws do not shift the training run), then evaluates. On leaving the block the statistics
collected at y are put back, so training continues exactly as if nothing had happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn


def has_modes(optimizer: Any) -> bool:
    """Whether `optimizer` has ``train()`` and ``eval()`` (Schedule-Free's protocol)."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


def to_train_point(optimizer: Any) -> None:
    """Put the parameters at the optimizer's training point (before steps); no-op without modes."""
    if has_modes(optimizer):
        optimizer.train()


def to_evaluation_point(optimizer: Any) -> None:
    """Put the parameters at the optimizer's evaluation point; no-op without modes."""
    if has_modes(optimizer):
        optimizer.eval()


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of `model` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every batch-norm layer's running statistics by their cumulative average over
    `batches` (inputs of the model) at the current parameters: reset, momentum None, forward
    in train mode. torch's global random state (and any layer's own ``generator``) is left as
    it was; the model's train/eval flag and the layers' momentum are restored."""
    layers = batchnorm_layers(model)
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average
    model.train()
    # a layer's own mask generator (a seeded dropout's) is forked too, like the global one
    own = {
        id(g): g
        for m in model.modules()
        if isinstance(g := getattr(m, "generator", None), torch.Generator)
    }
    states = [(g, g.get_state()) for g in own.values()]
    try:
        with torch.random.fork_rng(devices=[]):
            for inputs in batches:
                model(inputs)
    finally:
        for generator, state in states:
            generator.set_state(state)
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)


@contextlib.contextmanager
def evaluation_point(
    optimizer: Any,
    model: nn.Module | None = None,
    batches: Iterable[torch.Tensor] | None = None,
) -> Iterator[None]:
    """Inside the block the parameters are at the evaluation point, then back at the training
    point (Schedule-Free: x inside, y after).

    With `model` and `batches` (training inputs), an optimizer with modes and a model with
    batch norm, the running statistics are recomputed at the evaluation point inside the
    block (`recompute_batchnorm`) and the training point's put back after it."""
    to_evaluation_point(optimizer)
    saved = None
    try:
        if model is not None and batches is not None and has_modes(optimizer):
            layers = batchnorm_layers(model)
            if layers:
                saved = [[b.clone() for b in layer.buffers()] for layer in layers]
                recompute_batchnorm(model, batches)
        yield
    finally:
        if saved is not None:
            for layer, buffers in zip(batchnorm_layers(model), saved):  # type: ignore[arg-type]
                for buffer, value in zip(layer.buffers(), buffers):
                    buffer.copy_(value)
        to_train_point(optimizer)
