"""The population's fused layers (issue 14 point 6, `optimlab.lab.population_batched`): a
convolution or a linear layer that takes the ReLU before it (``relu_input``), a convolution
with its bias in the product (windows padded to a multiple of 8 rows), and the col2im that
writes each input position once. References: ``torch.nn.functional.conv1d`` /
``torch.nn.functional.linear`` after ``torch.relu``, differentiated by autograd, per member
(float64), and ``torch.autograd.gradcheck`` (finite differences)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.lab.population import BatchedModel
from optimlab.lab.population_batched import (
    PAD_FROM,
    BatchedConv1d,
    BatchedHead,
    BatchedLinear,
    BatchedLinearChain,
)
from optimlab.problems import get_problem
from tests.test_population import float64

#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _grads(function, inputs, upstream):
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs]
    y = function(*leaves)
    (y * upstream).sum().backward()
    return [y.detach(), *(None if t is None else t.grad for t in leaves)]


@pytest.mark.parametrize("relu_input", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(
    ("channels", "out", "kernel", "stride", "padding", "length"),
    [
        (1, 4, 5, 2, 1, 40),  # mnist1d-cnn's first layer
        (11, 3, 3, 2, 1, 19),  # C·k = 33: bias in the product; odd length
        (11, 3, 3, 2, 1, 10),  # the same, even length (its last position read by one tap)
        (3, 2, 3, 1, 1, 8),  # stride 1, even length
        (12, 2, 3, 1, 0, 7),  # stride 1, odd length, no padding, C·k = 36
        (2, 3, 4, 2, 2, 9),  # positions read by no tap of some residue class
        (2, 2, 5, 3, 4, 3),  # taps only on the padding
    ],
)
def test_the_fused_convolution_is_conv1d_after_relu_with_its_gradients(
    channels, out, kernel, stride, padding, length, with_bias, relu_input
):
    g = torch.Generator().manual_seed(0)
    members, batch = 3, 4
    x = torch.randn(members, channels, length, batch, generator=g, dtype=torch.float64)
    w = torch.randn(members, out, channels, kernel, generator=g, dtype=torch.float64)
    b = torch.randn(members, out, generator=g, dtype=torch.float64) if with_bias else None
    positions = (length + 2 * padding - kernel) // stride + 1
    upstream = torch.randn(members, out, positions, batch, generator=g, dtype=torch.float64)

    def reference(x, w, b):  # each member alone, in conv1d's (B, C, L) layout
        h = torch.relu(x) if relu_input else x
        return torch.stack(
            [
                nn.functional.conv1d(
                    h[i].permute(2, 0, 1), w[i], None if b is None else b[i], stride, padding
                )
                for i in range(members)
            ]
        ).permute(0, 2, 3, 1)

    def fused(x, w, b):
        return BatchedConv1d.apply(x, w, b, stride, padding, relu_input)

    expected = _grads(reference, (x, w, b), upstream)
    for a, e, what in zip(
        _grads(fused, (x, w, b), upstream), expected, ("out", "d input", "d weight", "d bias")
    ):
        if e is None:
            assert a is None, what
            continue
        assert a.shape == e.shape, what
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-12), what


def test_the_padded_path_is_the_one_these_shapes_take():
    """The parametrization above covers both products: C·k below and above `PAD_FROM`."""
    assert 1 * 5 < PAD_FROM <= 11 * 3


@pytest.mark.parametrize("relu_input", [False, True])
def test_the_fused_convolution_passes_gradcheck(relu_input):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 11, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: BatchedConv1d.apply(x, w, b, 2, 1, relu_input), (x, w, b)
    )


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("inputs", "outputs"), [(6, 4), (4, 9), (12, 3)])
def test_the_linear_layer_after_relu_is_linear_of_relu(inputs, outputs, with_bias):
    g = torch.Generator().manual_seed(2)
    members, batch = 3, 5
    h = torch.randn(members, batch, inputs, generator=g, dtype=torch.float64)
    w = torch.randn(members, outputs, inputs, generator=g, dtype=torch.float64)
    b = torch.randn(members, outputs, generator=g, dtype=torch.float64) if with_bias else None
    upstream = torch.randn(members, batch, outputs, generator=g, dtype=torch.float64)

    def reference(h, w, b):
        return torch.stack(
            [
                nn.functional.linear(torch.relu(h[i]), w[i], None if b is None else b[i])
                for i in range(members)
            ]
        )

    mine = _grads(lambda h, w, b: BatchedLinear.apply(h, w, b, True), (h, w, b), upstream)
    for a, e in zip(mine, _grads(reference, (h, w, b), upstream)):
        assert (a is None) == (e is None)
        if e is not None:
            assert torch.allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_grad", [False, True])
def test_the_linear_chain_is_its_layers_one_after_another(input_grad):
    """`BatchedLinearChain` over a narrow layer (the wide product), a layer without bias and
    layers with and without the ReLU before them: values and every gradient equal linear and
    relu per member under autograd (float64)."""
    g = torch.Generator().manual_seed(3)
    members, batch = 3, 7
    sizes = [(9, 5, True, False), (5, 6, False, True), (6, 6, True, True), (6, 2, True, True)]
    h = torch.randn(members, batch, 9, generator=g, dtype=torch.float64)
    tensors = []
    for inputs, outputs, biased, _ in sizes:
        tensors.append(torch.randn(members, outputs, inputs, generator=g, dtype=torch.float64))
        tensors.append(
            torch.randn(members, outputs, generator=g, dtype=torch.float64) if biased else None
        )
    relus = tuple(relu for *_, relu in sizes)
    upstream = torch.randn(members, batch, 2, generator=g, dtype=torch.float64)

    def reference(h, *tensors):
        out = []
        for i in range(members):
            x = h[i]
            for j, relu in enumerate(relus):
                bias = tensors[2 * j + 1]
                x = nn.functional.linear(
                    torch.relu(x) if relu else x,
                    tensors[2 * j][i],
                    None if bias is None else bias[i],
                )
            out.append(x)
        return torch.stack(out)

    def grads(function):
        leaves = [None if t is None else t.clone().requires_grad_() for t in tensors]
        x = h.clone().requires_grad_(input_grad)
        y = function(x, *leaves)
        (y * upstream).sum().backward()
        return [y.detach(), x.grad, *(None if t is None else t.grad for t in leaves)]

    mine = grads(lambda h, *tensors: BatchedLinearChain.apply(h, relus, *tensors))
    for a, e in zip(mine, grads(reference), strict=True):
        assert (a is None) == (e is None)
        if e is not None:
            assert torch.allclose(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relu_input", [False, True])
def test_the_cnn_head_after_relu_is_linear_of_the_flattened_features(relu_input):
    """`BatchedHead` against linear(flatten(relu(z))) per member in the single trial's (B, C, T)
    layout, values and gradients under autograd, and gradcheck (float64)."""
    g = torch.Generator().manual_seed(4)
    members, channels, positions, batch, classes = 2, 3, 4, 5, 6
    z = torch.randn(members, channels, positions, batch, generator=g, dtype=torch.float64)
    w = torch.randn(members, classes, channels * positions, generator=g, dtype=torch.float64)
    b = torch.randn(members, classes, generator=g, dtype=torch.float64)
    upstream = torch.randn(members, batch, classes, generator=g, dtype=torch.float64)

    def reference(z, w, b):
        h = torch.relu(z) if relu_input else z
        return torch.stack(
            [nn.functional.linear(h[i].permute(2, 0, 1).flatten(1), w[i], b[i]) for i in range(2)]
        )

    def head(z, w, b):
        return BatchedHead.apply(z, w, b, relu_input)

    for a, e in zip(_grads(head, (z, w, b), upstream), _grads(reference, (z, w, b), upstream)):
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-12)
    leaves = [t.clone().requires_grad_() for t in (z, w, b)]
    assert torch.autograd.gradcheck(head, leaves)


def _relu_nodes(loss: torch.Tensor) -> int:
    """ReLU backward nodes in the autograd graph of `loss`."""
    seen, stack, count = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__.startswith("ReluBackward")
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


@pytest.mark.parametrize(
    ("spec", "separate_relus"),
    [
        (
            "deep-mlp:depth=3:width=6:activation=relu",
            0,
        ),  # each block's ReLU fused into the next linear layer
        ("mnist1d-cnn:channels=11", 0),  # the last one into the head (BatchedHead)
        (
            "deep-mlp:depth=2:width=6:activation=relu:residual=true",
            2,
        ),  # h + block(h): nothing to fuse
    ],
)
def test_a_relu_before_a_linear_or_convolution_is_fused(spec, separate_relus):
    """The built-in models' ReLUs fuse into the layer after them (float64: and the explicit
    forward still equals vmap over the module, test_population_speed_explicit.py)."""
    problem = float64(get_problem(spec))
    x, y = problem.train
    batched = BatchedModel([problem.build_model(s) for s in (0, 1)])
    index = torch.arange(8).expand(2, 8)
    loss = batched.losses(x[index], y[index], problem.loss_fn).sum()
    assert _relu_nodes(loss) == separate_relus
