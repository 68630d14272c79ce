"""The parity harness of the modern optimizers (tests/test_modern_*.py).

A small model with a 0-D, a 1-D, a 2-D and a 4-D (conv) parameter in two parameter groups, trained
in float64 on a fresh minibatch every step by optimlab's optimizer and by a reference; optimlab's
optimizer is saved and reloaded (through ``torch.save``) into a new instance mid-run, so the
comparison also proves a bit-for-bit resume.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

STEPS = 120
ROUND_TRIP_AT = 57
TOLERANCE = 1e-10

#: name -> shape; 0-D gain, 1-D bias, 2-D matrix, 4-D conv kernel
SHAPES = {"gain": (), "bias": (5,), "weight": (3, 5), "conv": (3, 2, 3, 3)}


def make_params(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()
        for shape in SHAPES.values()
    ]


def clone_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def groups(params: Sequence[torch.Tensor], second: dict[str, Any]) -> list[dict[str, Any]]:
    """Two parameter groups: (gain, bias) with the class defaults, (weight, conv) with `second`."""
    return [{"params": list(params[:2])}, {"params": list(params[2:]), **second}]


def loss(params: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    gain, bias, weight, conv = params
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(4, 2, 6, 6, generator=generator, dtype=torch.float64)
    target = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    features = F.conv2d(x, conv).tanh().mean(dim=(2, 3))
    out = gain * (features @ weight) + bias
    return (out - target).pow(2).mean() + 0.1 * (out.pow(4).mean())


def set_grads(params: Sequence[torch.Tensor], step: int) -> torch.Tensor:
    for p in params:
        p.grad = None
    value = loss(params, step)
    value.backward()
    return value


def round_trip(optimizer: torch.optim.Optimizer, rebuild: Callable[[], Any]) -> Any:
    """A new optimizer from `rebuild()`, loaded with `optimizer`'s state_dict through torch.save."""
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    fresh = rebuild()
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    return fresh


def max_difference(ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor]) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in zip(ours, theirs))


def moved(params: Sequence[torch.Tensor], seed: int = 0) -> float:
    return max_difference(params, make_params(seed))


def run_parity(
    make_ours: Callable[[list[torch.Tensor]], Any],
    make_theirs: Callable[[list[torch.Tensor]], Any],
    steps: int = STEPS,
    before_step: Callable[[Any], None] | None = None,
    after_step: Callable[[Any], None] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], Any, Any]:
    """Train both for `steps` steps (ours reloaded from its state_dict mid-run); return both
    parameter lists and both optimizers.  `before_step`/`after_step` run on each optimizer (the
    Schedule-Free ones switch to train mode there)."""
    ours_params, theirs_params = make_params(), make_params()
    ours, theirs = make_ours(ours_params), make_theirs(theirs_params)
    for step in range(steps):
        if step == ROUND_TRIP_AT:
            ours = round_trip(ours, lambda: make_ours(ours_params))
        for params, optimizer in ((ours_params, ours), (theirs_params, theirs)):
            if before_step is not None:
                before_step(optimizer)
            set_grads(params, step)
            optimizer.step()
            if after_step is not None:
                after_step(optimizer)
    return ours_params, theirs_params, ours, theirs


class KerasGroups:
    """Keras 3 optimizers (``KERAS_BACKEND=torch``) stepping torch tensors, one per parameter
    group, behind torch.optim's ``step()``: each step the tensors' ``.grad`` are applied to Keras
    variables holding the same values, and the results are copied back into the tensors."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], Any]]) -> None:
        import keras

        self.groups = [
            (
                params,
                optimizer,
                [keras.Variable(p.detach().clone(), dtype="float64") for p in params],
            )
            for params, optimizer in groups
        ]

    def step(self) -> None:
        for params, optimizer, variables in self.groups:
            optimizer.apply_gradients(zip([p.grad.detach().clone() for p in params], variables))
            with torch.no_grad():
                for param, variable in zip(params, variables):
                    param.copy_(variable.value)
