"""Lion against lion-pytorch and Keras 3 Lion: float64, 120 steps, 0-D/1-D/2-D/4-D parameters
in two groups, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from optimlab.optim.lion import Lion
from tests import modern_harness as harness
from tests.test_keras_parity import keras_floatx

lion_pytorch = pytest.importorskip("lion_pytorch")
keras = pytest.importorskip("keras")

OPTIONS = [{}, {"weight_decay": 0.5}, {"betas": (0.5, 0.9)}]
SECOND = {"lr": 1e-3, "betas": (0.95, 0.98), "weight_decay": 0.2}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_lion_pytorch(options: dict) -> None:
    def ours(params):
        return Lion(harness.groups(params, SECOND), lr=3e-3, **options)

    def theirs(params):
        return lion_pytorch.Lion(harness.groups(params, SECOND), lr=3e-3, **options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_maximize_is_lion_pytorch_on_the_negated_gradient() -> None:
    def ours(params):
        return Lion(harness.groups(params, SECOND), lr=3e-3, maximize=True)

    class Negated(lion_pytorch.Lion):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.neg_()
            return super().step(closure)

    mine, reference, *_ = harness.run_parity(
        ours, lambda params: Negated(harness.groups(params, SECOND), lr=3e-3)
    )
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_keras_lion(options: dict) -> None:
    def keras_lion(lr: float, betas=(0.9, 0.99), weight_decay=0.0):
        return keras.optimizers.Lion(
            learning_rate=lr,
            beta_1=betas[0],
            beta_2=betas[1],
            weight_decay=weight_decay or None,
        )

    def ours(params):
        return Lion(harness.groups(params, SECOND), lr=3e-3, convention="keras", **options)

    def theirs(params):
        first = {"betas": options.get("betas", (0.9, 0.99))}
        first["weight_decay"] = options.get("weight_decay", 0.0)
        return harness.KerasGroups(
            [(params[:2], keras_lion(3e-3, **first)), (params[2:], keras_lion(**SECOND))]
        )

    with keras_floatx(torch.float64):
        mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_loads_lion_pytorch_state_dict() -> None:
    params = harness.make_params()
    theirs = lion_pytorch.Lion(params, lr=3e-3)
    for step in range(5):
        harness.set_grads(params, step)
        theirs.step()
    ours = Lion(harness.make_params(), lr=3e-3)
    ours.load_state_dict(theirs.state_dict())
    saved = theirs.state_dict()["state"]
    assert all(
        torch.equal(ours.state_dict()["state"][i]["exp_avg"], saved[i]["exp_avg"]) for i in saved
    )


def test_weight_decay_is_decoupled_and_scaled_by_lr_by_default() -> None:
    # a zero gradient: m stays 0, sign(0) = 0, so the only change is θ(1 − ηλ)
    param = torch.tensor([2.0, -4.0], dtype=torch.float64, requires_grad=True)
    optimizer = Lion([param], lr=0.1, weight_decay=0.5)
    param.grad = torch.zeros_like(param)
    optimizer.step()
    assert param.detach().tolist() == [2.0 * 0.95, -4.0 * 0.95]
