"""The population's faster formulations (issue 14, point 6) against torch's own operations,
member by member: the classes-major cross-entropy (`optimlab.lab.population_loss`), the
linear layer with its products reoriented (`BatchedLinear`), the malloc thresholds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.lab import population_loss
from optimlab.lab.population import BatchedModel
from optimlab.lab.population_batched import BatchedLinear
from optimlab.lab.population_memory import keep_freed_memory
from optimlab.problems import get_problem

pytestmark = pytest.mark.usefixtures("one_thread")


def _single_cross_entropy(logits: torch.Tensor, targets: torch.Tensor):
    """Each member's cross_entropy and its gradient, one member at a time."""
    losses, grads = [], []
    for z, y in zip(logits, targets):
        z = z.detach().clone().requires_grad_()
        loss = nn.functional.cross_entropy(z, y)
        loss.backward()
        losses.append(loss.detach())
        grads.append(z.grad)
    return torch.stack(losses), torch.stack(grads)


@pytest.mark.parametrize("members, batch, classes", [(3, 7, 10), (5, 128, 10), (2, 33, 3)])
def test_member_cross_entropy_is_each_members_cross_entropy_in_float64(members, batch, classes):
    generator = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(members, batch, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (members, batch), generator=generator)
    weights = torch.rand(members, generator=generator, dtype=torch.float64)  # ∂L/∂loss_m
    expected_losses, expected_grads = _single_cross_entropy(logits, targets)
    z = logits.clone().requires_grad_()
    losses = population_loss.member_cross_entropy(z, targets)
    (losses * weights).sum().backward()
    torch.testing.assert_close(losses, expected_losses, rtol=1e-12, atol=0)
    torch.testing.assert_close(z.grad, expected_grads * weights.view(-1, 1, 1), rtol=1e-12, atol=0)


def test_member_cross_entropy_reads_a_classes_major_view_as_its_input():
    # the CNN's head hands over logits as a transposed view of (M, C, B)
    generator = torch.Generator().manual_seed(2)
    stored = torch.randn(4, 10, 9, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 10, (4, 9), generator=generator)
    z = stored.clone().requires_grad_()
    losses = population_loss.member_cross_entropy(z.transpose(1, 2), targets)
    losses.sum().backward()
    expected_losses, expected_grads = _single_cross_entropy(stored.transpose(1, 2), targets)
    torch.testing.assert_close(losses, expected_losses, rtol=1e-12, atol=0)
    torch.testing.assert_close(z.grad.transpose(1, 2), expected_grads, rtol=1e-12, atol=0)


def test_in_float32_it_is_used_only_where_its_gradients_are_torchs_bit_for_bit():
    """Where the probe says it rounds like torch, the gradients of a fresh draw (a full
    population's shape, 36 × 128 rows) equal cross_entropy's exactly; where it does not, the
    population keeps the problem's loss under vmap."""
    for classes in (3, 10, 20):
        logits = 3 * torch.randn(36, 128, classes, generator=torch.Generator().manual_seed(3))
        targets = torch.randint(0, classes, (36, 128), generator=torch.Generator().manual_seed(4))
        nn_loss = nn.functional.cross_entropy
        used = population_loss.applies(nn_loss, logits, targets)
        assert used == population_loss.rounds_like_torch(classes, torch.float32)
        if used:
            z = logits.clone().requires_grad_()
            population_loss.member_cross_entropy(z, targets).sum().backward()
            assert torch.equal(z.grad, _single_cross_entropy(logits, targets)[1])


def test_another_loss_keeps_the_problems_own_function():
    logits, targets = torch.randn(2, 4, 10, dtype=torch.float64), torch.zeros(2, 4).long()
    assert population_loss.applies(nn.functional.cross_entropy, logits, targets)
    assert not population_loss.applies(
        lambda z, y: nn.functional.cross_entropy(z, y), logits, targets
    )
    assert not population_loss.applies(nn.functional.mse_loss, logits, logits)
    assert not population_loss.applies(nn.functional.cross_entropy, logits, targets[:, :2])


@pytest.mark.parametrize(
    "batch, inputs, outputs, bias",
    [(16, 12, 5, True), (16, 5, 12, True), (4, 12, 5, False), (16, 12, 12, True)],
)
def test_batched_linear_is_each_members_linear_forward_and_backward(batch, inputs, outputs, bias):
    """Both orientations of the forward (a narrow layer computes the transposed product) and of
    ∂W, against F.linear member by member in float64."""
    generator = torch.Generator().manual_seed(5)
    members = 3

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    h, w, b = draw(members, batch, inputs), draw(members, outputs, inputs), draw(members, outputs)
    grad = draw(members, batch, outputs)
    leaves = [t.clone().requires_grad_() for t in (h, w, b)]
    out = BatchedLinear.apply(leaves[0], leaves[1], leaves[2] if bias else None)
    out.backward(grad)
    for m in range(members):
        single = [t[m].clone().requires_grad_() for t in (h, w, b)]
        expected = nn.functional.linear(single[0], single[1], single[2] if bias else None)
        expected.backward(grad[m])
        torch.testing.assert_close(out[m], expected, rtol=1e-12, atol=1e-12)
        for leaf, one in zip(leaves, single[: 3 if bias else 2]):
            torch.testing.assert_close(leaf.grad[m], one.grad, rtol=1e-12, atol=1e-12)
    if not bias:
        assert leaves[2].grad is None


def test_a_population_step_takes_the_classes_major_loss_and_matches_single_models():
    """Through BatchedModel.losses (the population's entry point): each member's loss and
    gradient equal its own model's on its own minibatch, float64."""
    problem = get_problem("digits-mlp:width=8")
    models = [problem.build_model(seed).double() for seed in range(3)]
    batched = BatchedModel(models)
    x, y = problem.train[0].double(), problem.train[1]
    index = torch.stack([torch.arange(m, m + 16) for m in range(3)])
    calls = []
    original = population_loss.member_cross_entropy

    def counting(*args):
        calls.append(1)
        return original(*args)

    population_loss.member_cross_entropy = counting
    try:
        losses = batched.losses(x[index], y[index], problem.loss_fn)
    finally:
        population_loss.member_cross_entropy = original
    assert calls == [1]
    losses.sum().backward()
    for m, model in enumerate(models):
        loss = problem.loss_fn(model(x[index[m]]), y[index[m]])
        loss.backward()
        torch.testing.assert_close(losses[m], loss, rtol=1e-10, atol=0)
        for leaf, p in zip(batched.leaves, model.parameters()):
            torch.testing.assert_close(leaf.grad[m].view_as(p), p.grad, rtol=1e-9, atol=1e-12)


def test_freed_memory_is_kept_in_the_process():
    import ctypes
    import ctypes.util

    if ctypes.util.find_library("c") is None or not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    assert keep_freed_memory() is True
