"""Schedule-Free's evaluation point in optimlab's trainer, lr-find and diagnose.

Each fails without the switch: the trainer would report the loss at the gradient point y
(not the average x the reference evaluates), lr-find / the landscape path would refuse to step a
Schedule-Free optimizer a user left in eval mode (the schedulefree package raises there).
"""

from __future__ import annotations

import math

import pytest
import torch

from optimlab.diagnose.lr_find import lr_find
from optimlab.lab.train import evaluate, train
from optimlab.lab.trial import TrialSpec
from optimlab.problems.registry import get_problem

schedulefree = pytest.importorskip("schedulefree")

STEPS, LR, SEED, PROBLEM = 60, 0.01, 3, "digits-mlp"


def _reference_run(problem) -> torch.nn.Module:
    """The trainer's loop, with the schedulefree package's optimizer (left in train mode)."""
    model = problem.build_model(SEED)
    model.train()
    optimizer = problem.build_optimizer(
        model, lambda params: schedulefree.AdamWScheduleFree(params, lr=LR)
    )
    optimizer.train()
    generator = torch.Generator().manual_seed(SEED)
    x_train, y_train = problem.train
    n, batch = len(x_train), min(problem.batch_size, len(x_train))
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(STEPS):
        if position + batch > n:
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position : position + batch]
        position += batch
        inputs, targets = x_train[index], y_train[index]
        if problem.augment is not None:
            inputs = problem.augment(inputs, generator)
        loss = problem.loss_fn(model(inputs), targets)
        if problem.penalty is not None:
            loss = loss + problem.penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, optimizer


def test_trainer_evaluates_schedulefree_at_the_average() -> None:
    problem = get_problem(PROBLEM)
    spec = TrialSpec(PROBLEM, "schedulefree-adamw", {"lr": LR}, seed=SEED, steps=STEPS, evals=4)
    result = train(spec, problem)
    assert result.status == "ok", result.reason
    model, optimizer = _reference_run(problem)
    at_y, _, _ = evaluate(model, problem, problem.val)
    optimizer.eval()
    at_x, _, _ = evaluate(model, problem, problem.val)
    reported = result.metrics["final_val_loss"]
    assert abs(at_x - at_y) > 1e-4, "the two points must differ for the test to mean anything"
    assert reported == pytest.approx(at_x, rel=1e-6, abs=0)


def test_lr_find_steps_a_schedulefree_optimizer_left_in_eval_mode() -> None:
    problem = get_problem(PROBLEM)
    model = problem.build_model(0)
    optimizer = schedulefree.AdamWScheduleFree(model.parameters(), lr=1e-3)
    optimizer.train()
    loss = problem.loss_fn(model(problem.train[0][:32]), problem.train[1][:32])
    loss.backward()
    optimizer.step()
    optimizer.eval()  # the user evaluated last
    before = [p.detach().clone() for p in model.parameters()]
    result = lr_find(model, problem.train, problem.loss_fn, optimizer, num_iter=20, batch_size=32)
    assert len(result.losses) > 1 and all(math.isfinite(v) for v in result.losses[:2])
    # restored exactly, in the mode the user left it
    assert not optimizer.param_groups[0]["train_mode"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
