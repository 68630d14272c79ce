"""SOAP against pytorch-optimizer's SOAP: float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two
groups, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import math

import pytest
import torch

from optimlab.optim.soap import SOAP, merged_shape
from tests import modern_harness as harness

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
reference_module = pytest.importorskip("pytorch_optimizer.optimizer.soap")

#: the second group: its own lr and betas, weight decay, and a basis refresh every 4 steps (29
#: QR refreshes in the run)
SECOND = {"lr": 5e-3, "betas": (0.9, 0.99), "weight_decay": 0.05, "precondition_frequency": 4}
OPTIONS = [
    {},
    {"precondition_1d": True, "shampoo_beta": 0.9, "correct_bias": False, "maximize": True},
    {
        "merge_dims": True,
        "max_precondition_dim": 8,
        "normalize_gradient": True,
        "data_format": "channels_last",
    },
]


def _without_the_merge_bug(monkeypatch) -> None:
    """pytorch-optimizer's merge_small_dims returns [1] when every dimension merges into one
    (docs/conventions.md): keep the merged dimension instead."""
    original = reference_module.merge_small_dims

    def merge_small_dims(shape, max_dim):
        merged, size = original(shape, max_dim), math.prod(shape)
        return [size] if merged == [1] and size != 1 else merged

    monkeypatch.setattr(reference_module, "merge_small_dims", merge_small_dims)


@pytest.mark.parametrize("options", OPTIONS, ids=["defaults", "1d,shampoo_beta,maximize", "merge"])
def test_matches_pytorch_optimizer_soap(options: dict, monkeypatch) -> None:
    _without_the_merge_bug(monkeypatch)
    reference_options = {k: v for k, v in options.items() if k != "data_format"}

    def ours(params):
        return SOAP(harness.groups(params, SECOND), lr=1e-2, **options)

    def theirs(params):
        # the reference takes data_format for the whole optimizer, as an attribute
        reference = pytorch_optimizer.SOAP(
            harness.groups(params, SECOND), lr=1e-2, **reference_options
        )
        reference.data_format = options.get("data_format", "channels_first")
        return reference

    mine, reference, ours_optimizer, _ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    conv_state = ours_optimizer.state[mine[3]]
    assert any(len(q) > 0 for q in conv_state["Q"])  # the 4-D kernel is preconditioned
    assert harness.max_difference(mine, reference) <= harness.TOLERANCE


def test_reference_merge_dims_crashes_when_everything_merges() -> None:
    # the reproduction of docs/conventions.md; optimlab keeps the merged dimension
    assert reference_module.merge_small_dims([3, 5], 10000) == [1]
    assert merged_shape(torch.Size([3, 5]), 10000) == [15]
    param = torch.ones(3, 5, dtype=torch.float64, requires_grad=True)
    param.grad = torch.ones_like(param)
    with pytest.raises(RuntimeError, match="shape '\\[1\\]' is invalid"):
        pytorch_optimizer.SOAP([param], merge_dims=True).step()
    SOAP([param], merge_dims=True).step()


def test_eigenbasis_of_a_rank_one_statistic_after_the_first_step() -> None:
    # step 1 builds L = (1 − β)·g gᵀ per dimension and Q = eigh(L), descending: for
    # g = a bᵀ the first columns are ±a/|a| and ±b/|b|; the parameter does not move
    a, b = torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0])
    param = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    param.grad = torch.outer(a, b.double())
    optimizer = SOAP([param])
    optimizer.step()
    left, right = optimizer.state[param]["Q"]
    assert torch.allclose(left[:, 0].abs(), a / 5)
    assert torch.allclose(right[:, 0].abs(), b.double())
    assert torch.equal(param.detach(), torch.zeros(2, 3, dtype=torch.float64))


def test_loads_pytorch_optimizer_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    theirs = pytorch_optimizer.SOAP(twin_params, lr=1e-2, precondition_frequency=3)
    for step in range(10):
        harness.set_grads(twin_params, step)
        theirs.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = SOAP(params, lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        theirs.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


def test_bad_hyperparameters_name_argument_value_and_range() -> None:
    param = [torch.zeros(2, 2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"SOAP: invalid precondition_frequency=0; .*\[1, inf\)"):
        SOAP(param, precondition_frequency=0)
    with pytest.raises(ValueError, match=r"invalid max_precondition_dim=2\.5; .*an integer"):
        SOAP(param, max_precondition_dim=2.5)
    with pytest.raises(ValueError, match=r"invalid data_format='nhwc'; .*'channels_last'"):
        SOAP(param, data_format="nhwc")
    with pytest.raises(ValueError, match=r"invalid decoupled_weight_decay=True"):
        SOAP(param, decoupled_weight_decay=True)
    with pytest.raises(ValueError, match=r"lr must be a Python number"):
        SOAP(param, lr=torch.tensor([0.1]))
