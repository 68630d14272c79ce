"""A logistic-regression population's fused node (`optimlab.lab.population_logistic`, issue 14
point 6) against torch's own ``linear`` + ``cross_entropy`` + autograd member by member, and a
digits-logreg population against its single trials with every option that reaches it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.lab import population_logistic
from optimlab.lab.population import BatchedModel, train_population
from optimlab.lab.train import train
from optimlab.problems import get_problem
from tests.test_population import assert_same_trial, float64, specs_for

pytestmark = pytest.mark.usefixtures("one_thread")


def _single(inputs, weight, bias, targets, dtype=torch.float64):
    """Each member's loss and (∂W, ∂b) as torch computes them, one member at a time."""
    losses, grads = [], []
    for m in range(len(inputs)):
        w = weight[m].detach().clone().requires_grad_()
        b = None if bias is None else bias[m].detach().clone().requires_grad_()
        loss = nn.functional.cross_entropy(nn.functional.linear(inputs[m], w, b), targets[m])
        loss.backward()
        losses.append(loss.detach())
        grads.append((w.grad, None if b is None else b.grad))
    return torch.stack(losses), grads


@pytest.mark.parametrize(
    "members, batch, features, classes, with_bias",
    [(3, 7, 5, 10, True), (4, 128, 64, 10, True), (2, 33, 6, 3, False), (1, 1, 2, 2, True)],
)
def test_the_fused_node_is_linear_then_cross_entropy_per_member_in_float64(
    members, batch, features, classes, with_bias
):
    generator = torch.Generator().manual_seed(3)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    inputs = draw(members, batch, features)
    weight = (2 * draw(members, classes, features)).requires_grad_()
    bias = draw(members, classes).requires_grad_() if with_bias else None
    targets = torch.randint(0, classes, (members, batch), generator=generator)
    upstream = torch.rand(members, generator=generator, dtype=torch.float64)  # ∂total/∂L_m
    losses = population_logistic.member_logistic_loss(inputs, weight, bias, targets)
    (losses * upstream).sum().backward()
    expected, grads = _single(inputs, weight, bias, targets)
    torch.testing.assert_close(losses, expected, rtol=1e-12, atol=0)
    for m, (grad_weight, grad_bias) in enumerate(grads):
        # sums of B products in another order: 1e-16 absolute, relative where nothing cancels
        close = {"rtol": 1e-10, "atol": 1e-14}
        torch.testing.assert_close(weight.grad[m], grad_weight * upstream[m], **close)
        if with_bias:
            torch.testing.assert_close(bias.grad[m], grad_bias * upstream[m], **close)


def test_the_inputs_gradient_is_the_weights_product_when_asked_for():
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 4, (2, 5), generator=generator)
    assert torch.autograd.gradcheck(
        lambda x, w: population_logistic.member_logistic_loss(x, w, None, targets), (inputs, weight)
    )


def test_in_float32_the_logit_gradient_is_torchs_bit_for_bit_where_the_probe_says_so():
    generator = torch.Generator().manual_seed(5)
    logits = 4 * torch.randn(6, 128, 10, generator=generator)  # a fresh draw, not the probe's
    targets = torch.randint(0, 10, (6, 128), generator=generator)
    out = population_logistic.log_probabilities(logits.transpose(1, 2).contiguous())
    mine = population_logistic.logit_gradient(out, targets, torch.ones(6)).transpose(1, 2)
    single = []
    for z, y in zip(logits, targets):
        z = z.clone().requires_grad_()
        nn.functional.cross_entropy(z, y).backward()
        single.append(z.grad)
    probe = population_logistic.rounds_like_torch(10, 128)
    assert torch.equal(mine, torch.stack(single)) or not probe
    x = torch.zeros(2, 128, 3)  # float32 inputs: the node is used exactly where the probe passed
    assert population_logistic.applies(nn.functional.cross_entropy, x, targets[:2], 10) == probe


def test_the_node_is_used_only_for_one_linear_layer_on_cross_entropy():
    assert population_logistic.names(nn.Linear(3, 2)) == ("weight", "bias")
    assert population_logistic.names(nn.Linear(3, 2, bias=False)) == ("weight", None)
    assert population_logistic.names(nn.Sequential(nn.Linear(3, 2))) is None
    x, y = torch.zeros(2, 4, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.long)
    assert population_logistic.applies(nn.functional.cross_entropy, x, y, 2)
    assert not population_logistic.applies(nn.functional.mse_loss, x, y, 2)
    assert not population_logistic.applies(nn.functional.cross_entropy, x, y.float(), 2)


def test_minibatches_are_advanced_indexing():
    generator = torch.Generator().manual_seed(6)
    x, y = torch.randn(20, 3, 2, generator=generator), torch.randint(0, 5, (20,))
    index = torch.randint(0, 20, (4, 6), generator=generator)
    inputs, targets = BatchedModel.minibatches(x, y, index)
    assert torch.equal(inputs, x[index]) and torch.equal(targets, y[index])


def test_digits_logreg_members_equal_single_trials_with_every_option(monkeypatch):
    """L1 + L2 penalties, augmentation and early stopping reach the fused node; the members'
    curves and final metrics equal their single trials' (float64, 1e-8), and the node ran."""
    calls = []
    fused = population_logistic.member_logistic_loss

    def counting(*args):
        calls.append(1)
        return fused(*args)

    monkeypatch.setattr(population_logistic, "member_logistic_loss", counting)
    spec = "digits-logreg:weight_decay=0.001:l1=0.0001:augment=true:early_stopping=1"
    problem = float64(get_problem(spec))
    members = [(1e-3, 0), (0.3, 1), (30.0, 2)]
    specs = specs_for(problem, "adam", members, steps=24, evals=8)
    results = train_population(specs, problem)
    assert calls, "the fused node did not run"
    for s, member in zip(specs, results, strict=True):
        assert_same_trial(member, train(s, problem), f"lr={s.lr}")
    stopped = {r.metrics["stopped_early"] for r in results}
    assert stopped == {True, False}  # members stopped early at different times, or not at all
