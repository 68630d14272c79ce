"""Batch norm at Schedule-Free's evaluation point.

Schedule-Free evaluates the average x, but a batch-norm layer's running statistics were
collected at the gradient point y. The reference procedure (the Schedule-Free authors'
advice, written here directly with torch's own batch-norm API): put the parameters at x,
reset each layer's running statistics, make its average cumulative (momentum None), run
training batches forward in train mode without gradients, then evaluate in eval mode.
"""

from __future__ import annotations

import copy

import pytest
import torch

from optimlab.lab.train import BATCHNORM_BATCHES, batchnorm_batches, evaluate, train
from optimlab.lab.trial import TrialSpec
from optimlab.optim.modes import batchnorm_layers, evaluation_point, recompute_batchnorm
from optimlab.optim.registry import create
from optimlab.problems import get_problem

PROBLEM = "digits-mlp:batchnorm=true:width=16:depth=2"


def reference_loss(model: torch.nn.Module, problem, batches, split) -> float:
    """The reference procedure on a copy of `model` (whose parameters are at x)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for inputs in batches:
            model(inputs)
    model.eval()
    with torch.no_grad():
        return float(problem.loss_fn(model(split[0]), split[1]))


def trained(steps: int = 25):
    """A batch-norm MLP after `steps` of optimlab's Schedule-Free AdamW (parameters at y)."""
    problem = get_problem(PROBLEM)
    model = problem.build_model(0)
    optimizer = create("schedulefree-adamw", model.parameters(), lr=0.05)
    optimizer.train()
    model.train()
    x, y = problem.train
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(x), (64,), generator=generator)
        optimizer.zero_grad()
        problem.loss_fn(model(x[index]), y[index]).backward()
        optimizer.step()
    return problem, model, optimizer


def test_evaluation_point_recomputes_batchnorm_statistics_at_x():
    problem, model, optimizer = trained()
    batches = batchnorm_batches(problem.train[0], 128)
    layers = batchnorm_layers(model)
    assert len(layers) == 2
    before = [[b.clone() for b in layer.buffers()] for layer in layers]
    at_y = [p.detach().clone() for p in model.parameters()]

    with evaluation_point(optimizer):  # the switch alone: y's statistics at x
        without, _, _ = evaluate(model, problem, problem.val)
        reference = reference_loss(model, problem, batches, problem.val)
    with evaluation_point(optimizer, model, batches):
        with_recompute, _, _ = evaluate(model, problem, problem.val)

    assert abs(without - reference) > 1e-3  # the statistics at y are wrong at x
    assert with_recompute == pytest.approx(reference, rel=1e-6, abs=1e-7)
    # afterwards: parameters back at y, y's statistics back, momentum as before
    for p, q in zip(model.parameters(), at_y):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)  # x→y rounds
    for layer, buffers in zip(layers, before):
        assert layer.momentum == 0.1
        for buffer, value in zip(layer.buffers(), buffers):
            assert torch.equal(buffer, value)


def test_an_optimizer_without_modes_is_left_alone():
    problem = get_problem(PROBLEM)
    model = problem.build_model(0)
    optimizer = create("adam", model.parameters())
    layer = batchnorm_layers(model)[0]
    layer.running_mean.fill_(3.0)
    with evaluation_point(optimizer, model, batchnorm_batches(problem.train[0], 128)):
        assert torch.all(layer.running_mean == 3.0)


def test_train_reports_the_loss_at_x_with_statistics_recomputed(monkeypatch):
    """Through `train()`: the final test loss is the reference procedure's on the final x."""
    problem = get_problem(PROBLEM)
    built = []
    build = problem.build_model

    def keep(seed: int) -> torch.nn.Module:
        built.append(build(seed))
        return built[-1]

    monkeypatch.setattr(problem, "build_model", keep)
    spec = TrialSpec(PROBLEM, "schedulefree-adamw", {"lr": 0.05}, steps=30, evals=3)
    result = train(spec, problem)
    assert result.status == "ok", result.reason
    model = built[0]  # left at x by train()
    batches = batchnorm_batches(problem.train[0], problem.batch_size)
    assert len(batches) == min(BATCHNORM_BATCHES, len(problem.train[0]) // problem.batch_size)
    expected = reference_loss(model, problem, batches, problem.test)
    assert result.metrics["final_test_loss"] == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_the_recompute_leaves_the_random_state_and_flags_alone():
    """Dropout runs in train mode during the recompute: on a forked random state, so the
    training run's draws are the same whether or not it was evaluated."""
    problem = get_problem(PROBLEM + ":dropout=0.3")
    model = problem.build_model(0)
    model.eval()
    state = torch.get_rng_state()
    recompute_batchnorm(model, batchnorm_batches(problem.train[0], 128))
    assert torch.equal(torch.get_rng_state(), state)
    assert not model.training
    assert all(layer.momentum == 0.1 for layer in batchnorm_layers(model))
    # the cumulative average of the batches' statistics
    assert all(int(layer.num_batches_tracked) == 8 for layer in batchnorm_layers(model))
