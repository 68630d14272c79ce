"""The population's hand-written forward (`optimlab.lab.population_batched`, issue 14 point 6):
the built-in models run it (not vmap), and its values, gradients and batch-norm statistics are
those of vmap over the problem's own module (float64) — the formulation that the parity tests
of test_population*.py check against single trials end to end.

References: ``torch.nn.functional.conv1d`` per member for the convolution, and the population's
vmap path (`BatchedModel` with `explicit_forward` switched off) for whole models.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.lab import population
from optimlab.lab.population import BatchedModel
from optimlab.lab.population_batched import BatchedConv1d, explicit_forward
from optimlab.problems import get_problem
from tests.test_population import float64

#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("channels", "out", "kernel", "stride", "padding", "length"),
    [
        (1, 4, 5, 2, 1, 40),
        (3, 5, 3, 2, 1, 10),
        (2, 3, 3, 1, 0, 7),
        (4, 2, 4, 3, 2, 11),
        (2, 2, 5, 1, 4, 3),
    ],
)
def test_the_batched_convolution_and_its_backward_are_conv1d_per_member(
    channels, out, kernel, stride, padding, length
):
    g = torch.Generator().manual_seed(0)
    members, batch = 3, 5
    x = torch.randn(members, channels, length, batch, generator=g, dtype=torch.float64)
    w = torch.randn(members, out, channels, kernel, generator=g, dtype=torch.float64)
    b = torch.randn(members, out, generator=g, dtype=torch.float64)
    positions = (length + 2 * padding - kernel) // stride + 1
    upstream = torch.randn(members, out, positions, batch, generator=g, dtype=torch.float64)

    def grads(conv):
        inputs = [t.clone().requires_grad_() for t in (x, w, b)]
        y = conv(*inputs)
        (y * upstream).sum().backward()
        return [y.detach(), *(t.grad for t in inputs)]

    def reference(x, w, b):  # each member alone, in conv1d's (B, C, L) layout
        return torch.stack(
            [
                nn.functional.conv1d(x[i].permute(2, 0, 1), w[i], b[i], stride, padding)
                for i in range(members)
            ]
        ).permute(0, 2, 3, 1)

    mine = grads(lambda x, w, b: BatchedConv1d.apply(x, w, b, stride, padding))
    for a, e, what in zip(mine, grads(reference), ("out", "d input", "d weight", "d bias")):
        assert a.shape == e.shape, what
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-12), what


def test_the_built_in_models_run_the_explicit_forward_and_others_vmap():
    for spec in (
        "quadratic-deep",
        "digits-logreg",
        "digits-mlp",
        "mnist1d-cnn:channels=4:batchnorm=true",
        "deep-mlp:depth=2:width=8:batchnorm=true:dropout=0.1:dropconnect=0.1:residual=true",
        "deep-mlp:depth=2:width=8:activation=leaky_relu",
    ):
        model = get_problem(spec).build_model(0)
        assert explicit_forward(model) is not None, spec
    assert explicit_forward(nn.Sequential(nn.Linear(2, 3), nn.GELU())) is None
    assert explicit_forward(get_problem("tiny-lm:width=8:heads=2").build_model(0)) is None


@pytest.mark.parametrize(
    "spec",
    [
        "mnist1d-cnn:channels=3:batchnorm=true",
        "mnist1d-cnn:channels=11",  # C·k = 33: the bias in the product
        "deep-mlp:depth=3:width=6:activation=relu",  # each ReLU fused into the next block's linear layer
        "deep-mlp:depth=3:width=6:batchnorm=true:dropout=0.3:dropconnect=0.2:residual=true",
        "deep-mlp:depth=2:width=6:activation=tanh",
        "quadratic-deep",
    ],
)
def test_the_explicit_forward_equals_vmap_over_the_module(spec, monkeypatch):
    """Losses, gradients, batch-norm running statistics after a training forward, and eval-mode
    outputs: the explicit forward's against the vmap path's (same members, same masks)."""
    problem = float64(get_problem(spec))
    x, y = problem.train
    g = torch.Generator().manual_seed(1)
    index = torch.stack([torch.randperm(len(x), generator=g)[:16] for _ in range(3)])
    inputs, targets = x[index], y[index]
    monkeypatch.setattr(population, "EVAL_CHUNK", 4)  # evaluations in chunks of 4·4/3 samples

    def run():
        batched = BatchedModel([problem.build_model(s) for s in (0, 1, 2)])
        losses = batched.losses(inputs, targets, problem.loss_fn, problem.penalty)
        losses.sum().backward()
        outputs = batched.outputs(x[:50], torch.arange(3))
        return batched, losses.detach(), [leaf.grad for leaf in batched.leaves], outputs

    explicit, losses, grads, outputs = run()
    assert explicit.explicit is not None
    monkeypatch.setattr(population, "explicit_forward", lambda module: None)
    vmapped, expected_losses, expected_grads, expected_outputs = run()
    assert vmapped.explicit is None
    assert torch.allclose(losses, expected_losses, rtol=1e-12, atol=0)
    for a, e in zip(grads, expected_grads, strict=True):
        assert torch.allclose(a, e, rtol=1e-10, atol=1e-13)
    assert explicit.buffers.keys() == vmapped.buffers.keys()
    for name, value in explicit.buffers.items():
        assert torch.allclose(value.double(), vmapped.buffers[name].double(), rtol=1e-12), name
    assert torch.allclose(outputs, expected_outputs, rtol=1e-12, atol=1e-13)
