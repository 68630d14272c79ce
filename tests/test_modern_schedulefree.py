"""Schedule-Free AdamW / SGD against the `schedulefree` package: float64, 120 steps, 0-D/1-D/2-D/
4-D parameters in two groups, a state_dict round trip mid-run (tests/modern_harness.py), the
train/eval switch, and a checkpoint saved in eval mode reloaded then switched to train mode."""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD
from tests import modern_harness as harness

schedulefree = pytest.importorskip("schedulefree")

PAIRS = {
    "adamw": (ScheduleFreeAdamW, schedulefree.AdamWScheduleFree, {"betas": (0.8, 0.99)}),
    "sgd": (ScheduleFreeSGD, schedulefree.SGDScheduleFree, {"momentum": 0.8}),
}
OPTIONS = [
    {},
    {"weight_decay": 0.1},
    {"warmup_steps": 20, "r": 1.0, "weight_lr_power": 1.0},
]


def _train(optimizer) -> None:
    optimizer.train()


def _lr(kind: str) -> float:
    return 1e-2 if kind == "adamw" else 2e-2


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("kind", list(PAIRS))
def test_matches_schedulefree(kind: str, options: dict) -> None:
    ours_cls, theirs_cls, second = PAIRS[kind]
    second = {**second, "lr": _lr(kind) / 2}

    def ours(params):
        return ours_cls(harness.groups(params, second), lr=_lr(kind), **options)

    def theirs(params):
        return theirs_cls(harness.groups(params, second), lr=_lr(kind), **options)

    # train() before each step, eval() after: the package's protocol, and the evaluation point
    # (x) is what is compared at the end
    mine, reference, ours_opt, theirs_opt = harness.run_parity(
        ours, theirs, before_step=_train, after_step=lambda o: o.eval()
    )
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE
    ours_opt.train(), theirs_opt.train()
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


@pytest.mark.parametrize("kind", list(PAIRS))
def test_train_eval_switch_between_y_and_x(kind: str) -> None:
    ours_cls = PAIRS[kind][0]
    params = harness.make_params()
    optimizer = ours_cls(params, lr=_lr(kind))
    for step in range(30):
        harness.set_grads(params, step)
        optimizer.step()
    y = [p.detach().clone() for p in params]
    optimizer.eval()
    x = [p.detach().clone() for p in params]
    beta = optimizer._interpolation(optimizer.param_groups[0])
    for p, y_i, x_i in zip(params, y, x):
        z = optimizer.state[p]["z"]
        # y = (1 − β) z + β x
        torch.testing.assert_close(y_i, (1 - beta) * z + beta * x_i, rtol=0, atol=1e-12)
    assert harness.max_difference(y, x) > 1e-4
    with pytest.raises(RuntimeError, match="called in eval mode"):
        optimizer.step()
    optimizer.train()
    assert harness.max_difference(params, y) <= 1e-12


@pytest.mark.parametrize("saved_in", ["eval", "train"])
@pytest.mark.parametrize("kind", list(PAIRS))
def test_checkpoint_reload_then_train_continues_alike(kind: str, saved_in: str) -> None:
    """The schedulefree bug: a state_dict reloaded into a new optimizer, then train(), must
    continue exactly as the uninterrupted run (the package's own optimizer as the witness)."""
    ours_cls, theirs_cls, _ = PAIRS[kind]
    params, witness_params = harness.make_params(), harness.make_params()
    ours = ours_cls(params, lr=_lr(kind))
    witness = theirs_cls(witness_params, lr=_lr(kind))
    witness.train()
    for step in range(20):
        harness.set_grads(params, step)
        harness.set_grads(witness_params, step)
        ours.step()
        witness.step()
    if saved_in == "eval":
        ours.eval()
    checkpoint = {"model": [p.detach().clone() for p in params]}
    new_params = [p.clone().requires_grad_() for p in checkpoint["model"]]
    reloaded = harness.round_trip(ours, lambda: ours_cls(new_params, lr=_lr(kind)))
    reloaded.train()
    for step in range(20, 40):
        harness.set_grads(new_params, step)
        harness.set_grads(witness_params, step)
        reloaded.step()
        witness.step()
    assert harness.max_difference(new_params, witness_params) <= harness.TOLERANCE


@pytest.mark.parametrize("kind", list(PAIRS))
def test_loads_the_packages_state_dict(kind: str) -> None:
    ours_cls, theirs_cls, _ = PAIRS[kind]
    params = harness.make_params()
    theirs = theirs_cls(params, lr=_lr(kind))
    theirs.train()
    for step in range(10):
        harness.set_grads(params, step)
        theirs.step()
    ours_params = [p.detach().clone().requires_grad_() for p in params]
    ours = ours_cls(ours_params, lr=_lr(kind))
    ours.load_state_dict(theirs.state_dict())
    for step in range(10, 20):
        harness.set_grads(params, step)
        harness.set_grads(ours_params, step)
        theirs.step()
        ours.step()
    assert harness.max_difference(ours_params, params) <= harness.TOLERANCE


def test_decoupled_weight_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid decoupled_weight_decay=True"):
        ScheduleFreeAdamW([torch.zeros(2, requires_grad=True)], decoupled_weight_decay=True)
