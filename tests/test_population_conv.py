"""Batched convolutions (issue 14): a population runs ``Conv1d`` as one matmul per member
(`optimlab.lab.population_conv`), batched by vmap; its values and gradients are
``torch.nn.functional.conv1d``'s, and a mnist1d-cnn population's members are their single
trials (float64, 1e-8 relative at every evaluation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from optimlab.lab.population import BatchedModel, train_population
from optimlab.lab.population_conv import MatmulConv1d, batchable, conv1d_as_matmul
from optimlab.lab.train import train
from optimlab.problems import get_problem
from tests.test_population import assert_same_trial, float64, specs_for

#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("channels", "out", "kernel", "stride", "padding", "length"),
    [(1, 4, 5, 2, 1, 40), (3, 5, 3, 2, 1, 19), (2, 3, 3, 1, 0, 7), (4, 2, 4, 3, 2, 11)],
)
def test_the_matmul_convolution_is_conv1d_with_its_gradients(
    channels, out, kernel, stride, padding, length
):
    """Per member of a vmap over 3 members (own weights, own inputs): values and the gradients
    in input, weight and bias equal conv1d's (float64)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, channels, length, generator=g, dtype=torch.float64)
    w = torch.randn(3, out, channels, kernel, generator=g, dtype=torch.float64)
    b = torch.randn(3, out, generator=g, dtype=torch.float64)
    upstream = torch.randn(3, 6, out, (length + 2 * padding - kernel) // stride + 1, generator=g)

    def grads(conv):
        inputs = [t.clone().requires_grad_() for t in (x, w, b)]
        y = vmap(conv)(*inputs)
        (y * upstream).sum().backward()
        return [y.detach(), *(t.grad for t in inputs)]

    mine = grads(lambda x, w, b: conv1d_as_matmul(x, w, b, stride, padding))
    torch_ = grads(lambda x, w, b: nn.functional.conv1d(x, w, b, stride=stride, padding=padding))
    for a, e, what in zip(mine, torch_, ("output", "d input", "d weight", "d bias"), strict=True):
        assert a.shape == e.shape, what
        assert torch.allclose(a, e, rtol=1e-12, atol=1e-12), what


def test_batchable_swaps_supported_convolutions_and_keeps_names_and_streams():
    model = nn.Sequential(
        nn.Conv1d(1, 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(2, 2, 3, dilation=2),  # not supported: stays a Conv1d
        nn.Conv1d(2, 4, 1, groups=2),  # not supported
    )
    model.stream = object()  # e.g. a MaskStream: shared, not copied
    copied = batchable(model)
    assert [type(m).__name__ for m in copied] == ["MatmulConv1d", "ReLU", "Conv1d", "Conv1d"]
    assert [n for n, _ in copied.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert copied.stream is model.stream
    assert isinstance(model[0], nn.Conv1d)  # the original is untouched
    x = torch.randn(5, 1, 17, dtype=torch.float64)
    model.double()
    params = dict(model.named_parameters())
    assert torch.allclose(functional_call(copied, params, (x,)), model(x), rtol=1e-12)
    assert batchable(nn.Linear(2, 2)).__class__ is nn.Linear
    single = MatmulConv1d(nn.Conv1d(2, 3, 3).double())
    unbatched = torch.randn(2, 9, dtype=torch.float64)  # (C, L), as Conv1d accepts
    assert single(unbatched).shape == (3, 7)


def test_the_population_model_of_the_cnn_uses_the_matmul_convolution():
    problem = get_problem("mnist1d-cnn:channels=4")
    batched = BatchedModel([problem.build_model(s) for s in (0, 1)])
    kinds = {type(m).__name__ for m in batched.module.modules()}
    assert "MatmulConv1d" in kinds and "Conv1d" not in kinds


@pytest.mark.parametrize(
    "spec", ["mnist1d-cnn:channels=5", "mnist1d-cnn:channels=4:batchnorm=true"]
)
def test_cnn_members_equal_their_single_trials(spec):
    problem = float64(get_problem(spec))
    members = [(1e-3, 0), (1e-2, 1), (0.3, 2)]
    specs = specs_for(problem, "adam", members, steps=10, evals=4)
    statuses = set()
    for spec_, member in zip(specs, train_population(specs, problem), strict=True):
        assert_same_trial(member, train(spec_, problem), f"{spec} lr={spec_.lr}")
        statuses.add(member.status)
    assert "ok" in statuses
