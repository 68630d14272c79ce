"""Dropout and DropConnect (issue 14, points 1 and 4): a trial's masks come from a stream seeded
by its own seed, so a trial is reproducible, and a population draws each member's masks from
that member's stream — every member's curve is its single trial's (float64, 1e-8 relative).

The references are `optimlab.lab.train.train` on each spec alone (same process) and, for the
masks themselves, a Bernoulli draw from ``torch.Generator(mask_seed(seed))`` written out here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optimlab.lab.population import BatchedModel, check_problem, train_population
from optimlab.lab.train import train
from optimlab.optim.modes import recompute_batchnorm
from optimlab.problems import get_problem
from optimlab.problems.masks import mask_seed
from tests.test_population import assert_same_trial, float64, specs_for

#: (lr, seed): members with different seeds (different masks), one rate large for Adam
MEMBERS = [(1e-2, 0), (0.1, 1), (0.03, 2), (1.0, 3)]


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "spec",
    [
        "digits-mlp:width=16:dropout=0.3",
        "digits-mlp:width=16:dropconnect=0.4",
        "deep-mlp:depth=3:width=8:dropout=0.2:dropconnect=0.2:batchnorm=true:residual=true",
    ],
)
def test_members_with_dropout_equal_their_single_trials(spec):
    problem = float64(get_problem(spec))
    check_problem(problem)  # batched: no fallback
    specs = specs_for(problem, "adam", MEMBERS, steps=12, evals=4)
    members = train_population(specs, problem)
    statuses = set()
    for spec_, member in zip(specs, members, strict=True):
        assert member.metrics["population_size"] == len(specs)
        assert_same_trial(member, train(spec_, problem), f"{spec} lr={spec_.lr}")
        statuses.add(member.status)
    assert "ok" in statuses


def test_a_trial_with_dropout_run_twice_gives_the_same_curve():
    problem = get_problem("digits-mlp:width=16:dropout=0.5:dropconnect=0.3")
    spec = specs_for(problem, "sgd", [(0.1, 7)], steps=10, evals=4)[0]
    first, second = train(spec, problem), train(spec, problem)
    torch.rand(3)  # another draw of the global generator between runs changes nothing
    third = train(spec, problem)
    assert first.status == "ok"
    assert first.metrics["curve"] == second.metrics["curve"] == third.metrics["curve"]
    other = train(specs_for(problem, "sgd", [(0.1, 8)], steps=10, evals=4)[0], problem)
    assert other.metrics["curve"]["train_loss"][1:] != first.metrics["curve"]["train_loss"][1:]


def test_the_masks_are_bernoulli_draws_from_the_seeded_stream():
    """A dropout layer in training multiplies by M/(1 − p), M the keep-mask drawn from
    ``torch.Generator(mask_seed(seed))``; a population supplies member i exactly those."""
    p, seed = 0.25, 5
    model = get_problem(f"digits-mlp:width=6:dropout={p}").build_model(seed).double()
    x = torch.randn(3, 64, dtype=torch.float64)
    hidden = model[0].body[:2](x)  # linear → ReLU, before the dropout
    generator = torch.Generator().manual_seed(mask_seed(seed))
    keep = torch.empty(3, 6, dtype=torch.float64).bernoulli_(1 - p, generator=generator)
    assert torch.equal(model[0](x), hidden * keep / (1 - p))
    assert 0 < keep.sum() < keep.numel()
    batched = BatchedModel(
        [get_problem(f"digits-mlp:width=6:dropout={p}").build_model(s) for s in (seed, 9)]
    )
    masks = batched.masks(x.float())
    assert [tuple(m.shape) for m in masks] == [(2, 3, 6)]
    generator.manual_seed(mask_seed(seed))
    assert torch.equal(masks[0][0], torch.empty(3, 6).bernoulli_(1 - p, generator=generator))


def test_recomputing_batchnorm_does_not_shift_the_masks():
    """Schedule-Free's evaluation recomputes batch-norm statistics with forwards in train mode:
    they must not consume the training run's mask stream (else the evaluation schedule would
    change the training)."""
    model = get_problem("digits-mlp:width=8:batchnorm=true:dropout=0.3").build_model(0)
    x = torch.randn(16, 64)
    stream = model[0].body[3].masks
    state = stream.generator.get_state()
    recompute_batchnorm(model, [x, x])
    assert torch.equal(stream.generator.get_state(), state)


def test_schedule_free_with_dropout_and_batchnorm_trains_the_same_whatever_the_evaluations():
    problem = get_problem("digits-mlp:width=8:batchnorm=true:dropout=0.3")
    few, many = (
        train(specs_for(problem, "schedulefree-adamw", [(1e-2, 0)], steps=8, evals=e)[0], problem)
        for e in (1, 8)
    )
    assert few.status == many.status == "ok", (few.reason, many.reason)
    assert few.metrics["final_train_loss"] == many.metrics["final_train_loss"]


TINY_LM = "tiny-lm:width=8:depth=1:heads=2:context=6:vocab=6:branching=2:batch_size=8"


def test_a_tiny_lm_trial_with_dropout_run_twice_gives_the_same_curve():
    """tiny-lm's dropout (attention weights and residual branches) draws from the trial's
    seeded stream, not torch's global generator."""
    problem = get_problem(f"{TINY_LM}:dropout=0.3")
    spec = specs_for(problem, "adam", [(1e-2, 4)], steps=8, evals=4)[0]
    first = train(spec, problem)
    torch.rand(3)  # another draw of the global generator between runs changes nothing
    second = train(spec, problem)
    assert first.status == "ok", first.reason
    assert first.metrics["curve"] == second.metrics["curve"]
    other = train(specs_for(problem, "adam", [(1e-2, 5)], steps=8, evals=4)[0], problem)
    assert other.metrics["curve"]["train_loss"][1:] != first.metrics["curve"]["train_loss"][1:]
    # and the masks act: without dropout the same seed trains differently
    plain = get_problem(TINY_LM)
    undropped = train(specs_for(plain, "adam", [(1e-2, 4)], steps=8, evals=4)[0], plain)
    assert undropped.metrics["curve"]["train_loss"][1:] != first.metrics["curve"]["train_loss"][1:]


def test_tiny_lm_members_with_dropout_equal_their_single_trials():
    problem = dataclasses.replace(get_problem(f"{TINY_LM}:dropout=0.2"))
    build = problem.build_model
    problem.build_model = lambda seed: build(seed).double()  # float64 (the tokens stay integers)
    check_problem(problem)  # batched now: its masks come from the seeded stream
    specs = specs_for(problem, "adam", [(1e-2, 0), (3e-2, 1)], steps=6, evals=3)
    for spec_, member in zip(specs, train_population(specs, problem), strict=True):
        assert_same_trial(member, train(spec_, problem), f"tiny-lm lr={spec_.lr}")
