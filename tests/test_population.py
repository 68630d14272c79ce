"""Populations (issue 14): M trials that differ only in learning rate and seed, trained as one
batched model, give each member the single trial's numbers.

The reference is `optimlab.lab.train.train` run on each spec alone (same process, float64):
every evaluation of every member's curve agrees to 1e-8 relative, statuses and the step a run
diverged at are equal. Budgets are shrunk from the quick suite's (test time), the evaluation
schedule is the same function.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from optimlab.lab.population import (
    Unbatchable,
    check_population,
    group_populations,
    population_key,
    train_population,
)
from optimlab.lab.protocol import SUITES
from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.optim.registry import preset_optimizers
from optimlab.problems import Problem, get_problem, registry
from optimlab.problems.data import quadratic_hessian
from optimlab.problems.models import DropConnectLinear

CLASSIC = preset_optimizers("classic")
QUICK_PROBLEMS = [spec for spec, _ in SUITES["quick"].problems]
#: (lr, seed) of the members: a small and a middle rate, and one that is large for most rules
MEMBERS = [(1e-3, 0), (3e-2, 1), (1.0, 2)]
STEPS, EVALS = 16, 6


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def float64(problem: Problem) -> Problem:
    """`problem` with float64 data, model and loss (rounding is then far below the tolerance)."""
    copy = dataclasses.replace(problem)

    def cast(split):
        x, y = split
        return x.double(), y.double() if y.is_floating_point() else y

    copy.train, copy.val, copy.test = cast(problem.train), cast(problem.val), cast(problem.test)
    build = problem.build_model
    copy.build_model = lambda seed: build(seed).double()
    if problem.name == "quadratic-deep":
        copy.loss_fn = registry.quadratic_loss(quadratic_hessian())
    return copy


def specs_for(problem: Problem, optimizer: str, members=MEMBERS, **extra) -> list[TrialSpec]:
    """The members' specs. ``impl="reference"``: the single trials run the reference rule (the
    fused kernels' parity with it is test_kernels.py's job, and compiling their float64
    versions would cost this file more than its budget on a cold cache)."""
    fields = {"steps": STEPS, "evals": EVALS, **extra}
    return [
        TrialSpec(problem.spec, optimizer, {"lr": lr, "impl": "reference"}, seed=seed, **fields)
        for lr, seed in members
    ]


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def assert_same_trial(member: TrialResult, single: TrialResult, what: str) -> None:
    """The member's result is the single trial's: status, steps, divergence, every curve point
    and final metric within 1e-8 relative."""
    assert member.status == single.status, (what, member.reason, single.reason)
    assert member.reason == single.reason, what
    for key in ("steps_run", "diverged_at", "stopped_early", "pruned"):
        assert member.metrics.get(key) == single.metrics.get(key), (what, key)
    a, b = member.metrics["curve"], single.metrics["curve"]
    assert a["step"] == b["step"], what
    for key in ("train_loss", "val_loss", "val_accuracy"):
        for x, y in zip(a[key], b[key], strict=True):
            if y is None or (isinstance(y, float) and not math.isfinite(y)):
                assert x is None or not math.isfinite(x), (what, key)
                continue
            assert relative(x, y) <= 1e-8, (what, key, x, y)
    for key, value in single.metrics.items():
        if key.startswith("final_") or key.endswith("_accuracy") or key == "best_val_loss":
            assert relative(member.metrics[key], value) <= 1e-8, (what, key)


@pytest.mark.parametrize("problem_spec", QUICK_PROBLEMS)
def test_members_equal_single_trials_for_every_classic_optimizer(problem_spec):
    problem = float64(get_problem(problem_spec))
    statuses = set()
    for optimizer in CLASSIC:
        specs = specs_for(problem, optimizer)
        members = train_population(specs, problem)
        for spec, member in zip(specs, members, strict=True):
            single = train(spec, problem)
            assert_same_trial(member, single, f"{problem_spec} {optimizer} lr={spec.lr}")
            statuses.add(member.status)
            assert member.metrics["population_size"] == len(specs)
    assert "ok" in statuses


def test_regularization_options_schedules_and_early_stopping_are_batched():
    """Batch norm (running statistics per member), the L1/L2 penalty, augmentation (from the
    member's own generator), early stopping per member, and the cosine and plateau schedules."""
    spec = "digits-mlp:width=16:batchnorm=true:weight_decay=0.001:l1=0.0001:augment=true"
    problem = float64(get_problem(spec + ":early_stopping=1"))
    members = [(1e-3, 0), (0.3, 1), (0.05, 2), (3.0, 3)]
    stopped = []
    for optimizer, schedule in (("adam", "plateau:patience=0"), ("momentum", "cosine")):
        specs = specs_for(problem, optimizer, members, schedule=schedule, steps=40, evals=12)
        for s, member in zip(specs, train_population(specs, problem), strict=True):
            assert_same_trial(member, train(s, problem), f"{optimizer} lr={s.lr}")
            stopped.append(member.metrics["stopped_early"])
    assert True in stopped and False in stopped  # members stopped at different times


def test_a_diverging_member_stops_alone():
    """The member whose rate explodes is `diverged` at the single trial's step; the others are
    bit for bit a population without it."""
    problem = float64(get_problem("quadratic-deep"))
    calm = [(1e-2, 0), (3e-2, 1)]  # λmax = 53: lr = 1e8 multiplies the error by ~5e9 a step
    specs = specs_for(problem, "sgd", [calm[0], (1e8, 5), calm[1]], steps=30)
    with_it = train_population(specs, problem)
    without = train_population([specs[0], specs[2]], problem)
    single = train(specs[1], problem)
    assert with_it[1].status == "diverged" == single.status
    assert with_it[1].metrics["diverged_at"] == single.metrics["diverged_at"] < 30
    assert_same_trial(with_it[1], single, "the diverging member")
    for a, b in zip([with_it[0], with_it[2]], without, strict=True):
        assert a.status == b.status == "ok"
        timing = {"seconds", "cpu_seconds", "seconds_per_step", "warmup_seconds"}
        timing |= {"curve_seconds", "population_size"}
        # bit-identical, not merely close: every curve point and final metric
        assert {k: v for k, v in a.metrics.items() if k not in timing} == {
            k: v for k, v in b.metrics.items() if k not in timing
        }


def test_pruning_applies_per_member():
    """A tuner's `stop_if` ends only the member it names, with the reason the single run gets."""
    from optimlab.lab.pruning import explosion

    problem = float64(get_problem("quadratic-deep"))
    specs = specs_for(problem, "sgd", [(1e-3, 0), (0.045, 0)], steps=40, evals=16)
    members = train_population(specs, problem, stop_if=explosion)
    for spec, member in zip(specs, members, strict=True):
        assert_same_trial(member, train(spec, problem, stop_if=explosion), f"lr={spec.lr}")
    assert [m.status for m in members] == ["ok", "diverged"]
    assert members[1].metrics["pruned"] is True


def test_populations_group_by_everything_but_lr_and_seed():
    a = TrialSpec("digits-mlp", "adam", {"lr": 0.1, "betas": [0.9, 0.99]}, seed=0)
    b = dataclasses.replace(a, hyperparameters={"lr": 0.01, "betas": [0.9, 0.99]}, seed=3)
    c = dataclasses.replace(a, hyperparameters={"lr": 0.1, "betas": [0.8, 0.99]})
    d = dataclasses.replace(a, steps=10)
    assert population_key(a) == population_key(b)
    assert len({population_key(s) for s in (a, c, d)}) == 3
    assert group_populations([a, c, b, a, d]) == [[a, b], [c], [d]]


@pytest.mark.parametrize(
    ("problem_spec", "optimizer", "options", "reason"),
    [
        # the kernels take a rate per member (test_population_kernels.py), but not Schedule-Free's
        ("digits-mlp", "schedulefree-sgd", {"impl": "fused"}, "learning rate per member"),
        ("mnist1d-transfer:pretrained=false:backbone_lr=0.5", "adam", {}, "learning-rate groups"),
        # 8-bit state's blocks would span the members (a newcomer measured a different loss)
        # named as the spec entry reads (plain adam in the same run is batched)
        ("digits-mlp", "adam", {"state_dtype": "int8"}, "optimizer adam:state_dtype=int8: "),
        ("digits-mlp", "adamw", {"state_dtype": "bf16"}, "state_dtype='bf16' quantizes blocks"),
    ],
)
def test_what_cannot_be_batched_says_why(problem_spec, optimizer, options, reason):
    problem = get_problem(problem_spec)
    specs = [
        TrialSpec(problem.spec, optimizer, {**options, "lr": lr}, seed=0, steps=5)
        for lr in (0.1, 0.01)
    ]
    with pytest.raises(Unbatchable, match=reason):
        check_population(specs, problem)


@pytest.mark.parametrize(
    ("layer", "reason"),
    [(torch.nn.Dropout(0.2), "Dropout"), (DropConnectLinear(4, 4, 0.2), "DropConnectLinear")],
)
def test_dropout_from_the_global_generator_is_not_batched(layer, reason):
    """A user's model whose layers draw masks from torch's global generator (no seeded
    `MaskStream`: the built-in problems' layers have one, tests/test_population_dropout.py)."""
    x = torch.randn(32, 4)
    split = (x, (x[:, 0] > 0).long())
    problem = Problem(
        name="mine",
        options={},
        train=split,
        val=split,
        test=split,
        build_model=lambda seed: torch.nn.Sequential(torch.nn.Linear(4, 4), layer),
        loss_fn=torch.nn.functional.cross_entropy,
        batch_size=8,
    )
    specs = [TrialSpec("mine", "adam", {"lr": lr}, seed=0, steps=5) for lr in (0.1, 0.01)]
    with pytest.raises(Unbatchable, match=f"{reason}.*global generator"):
        check_population(specs, problem)


class Elementwise(torch.optim.Optimizer):
    """p ← p − lr·g, or with ``normalize`` p ← p − lr·g/‖g‖ (the norm couples the elements)."""

    def __init__(self, params, lr=0.1, normalize=False):
        super().__init__(params, {"lr": lr, "normalize": normalize})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                scale = p.grad.norm() if group["normalize"] else 1.0
                p.sub_(group["lr"] * p.grad / scale)


class Custom:
    """What `TrialSpec.custom` carries: how to build the user's class."""

    @staticmethod
    def build(params, **options):
        return Elementwise(params, **options)


def test_an_optimizer_that_couples_elements_is_not_batched():
    """The check is behavioural: an elementwise rule that takes a tensor rate is batched, the
    same rule normalized by the tensor's norm is not, nor is torch.optim.SGD (a tensor lr must
    have one element there)."""
    from optimlab.lab.population import check_optimizer

    spec = TrialSpec("digits-mlp", "mine.py:Elementwise", {"lr": 0.1}, custom=Custom())
    check_optimizer(spec)
    normalized = dataclasses.replace(spec, hyperparameters={"lr": 0.1, "normalize": True})
    with pytest.raises(Unbatchable, match="couples the elements"):
        check_optimizer(normalized)

    class TorchSGD:
        build = staticmethod(lambda params, **options: torch.optim.SGD(params, **options))

    torch_sgd = dataclasses.replace(spec, optimizer="torch.optim:SGD", custom=TorchSGD())
    with pytest.raises(Unbatchable, match="learning rate per member"):
        check_optimizer(torch_sgd)


def test_a_model_that_cannot_be_built_fails_every_member_with_the_reason():
    """As `train` fails a trial (status failed, the exception's last line), never a crash."""
    problem = dataclasses.replace(get_problem("quadratic-deep"))

    def broken(seed):
        raise RuntimeError("this model cannot be built")

    problem.build_model = broken
    specs = specs_for(problem, "sgd", [(0.1, 0), (0.2, 1)])
    results = train_population(specs, problem)
    assert (
        [r.status for r in results]
        == ["failed", "failed"]
        == [train(s, problem).status for s in specs]
    )
    assert all("this model cannot be built" in r.reason for r in results)


def test_a_members_seconds_to_target_leave_out_the_first_steps_warm_up() -> None:
    # population members counted the first step's warm-up (a kernel load, 2-3 s) in their
    # curve's seconds while single trials did not: "time to target" made batched optimizers
    # look 10x slower in the same table. At step 1 the clock after the warm-up reads 0.
    problem = get_problem("quadratic-deep")
    specs = [TrialSpec(problem.spec, "adam", {"lr": lr}, steps=10, evals=2) for lr in (1e-3, 1e-2)]
    for single in (train(specs[0], problem),):
        assert single.metrics["curve"]["step"][:2] == [0, 1]
        assert single.metrics["curve_seconds"][:2] == [0.0, 0.0]
    for member in train_population(specs, problem):
        assert member.metrics["curve"]["step"][:2] == [0, 1]
        assert member.metrics["curve_seconds"][:2] == [0.0, 0.0]
        assert member.metrics["curve_seconds"][-1] > 0.0
