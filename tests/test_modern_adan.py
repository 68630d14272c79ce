"""Adan against pytorch-optimizer's Adan: float64, 120 steps, 0-D/1-D/2-D/4-D parameters in two
groups, a state_dict round trip mid-run (tests/modern_harness.py)."""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.adan import Adan, step_scalars
from tests import modern_harness as harness

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
reference_module = pytest.importorskip("pytorch_optimizer.optimizer.adan")

SECOND = {"lr": 5e-3, "betas": (0.9, 0.9, 0.95), "weight_decay": 0.05}
#: the second group always decays (Adan's proximal rule); the first here by each convention
OPTIONS = [
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "weight_decouple": True, "betas": (0.5, 0.8, 0.9), "eps": 1e-6},
]


def _parity(options: dict, reference_class: type | None = None) -> float:
    """The worst difference; a custom `reference_class` gets the options but `maximize`."""
    reference_options = dict(options)
    if reference_class is not None:
        reference_options.pop("maximize", None)
    reference_class = reference_class or pytorch_optimizer.Adan

    def ours(params):
        return Adan(harness.groups(params, SECOND), lr=1e-2, **options)

    def theirs(params):
        return reference_class(harness.groups(params, SECOND), lr=1e-2, **reference_options)

    mine, reference, *_ = harness.run_parity(ours, theirs)
    assert harness.moved(mine) > 1e-2
    return harness.max_difference(mine, reference)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_matches_pytorch_optimizer_adan(options: dict) -> None:
    assert _parity(options) <= harness.TOLERANCE


def test_gradient_clipping_matches_with_the_norm_in_float64(monkeypatch) -> None:
    # pytorch-optimizer's global norm is a float32 tensor of shape [1]: it crashes on a 0-D
    # parameter (docs/conventions.md) and rounds the clip factor to float32 (4e-9 here). The
    # workaround: the same squared norm, in the gradients' dtype and 0-D.
    def squared_norm(groups, *args, **kwargs):
        grads = [p.grad for g in groups for p in g["params"] if p.grad is not None]
        return torch.stack([g.norm() for g in grads]).square().sum()

    monkeypatch.setattr(reference_module, "get_global_gradient_norm", squared_norm)
    assert _parity({"max_grad_norm": 0.05}) <= harness.TOLERANCE


def test_maximize_is_the_reference_on_the_negated_gradient() -> None:
    # pytorch-optimizer's own maximize=True records the previous gradient before negating it, so its
    # first gradient difference is −2g₁, not 0 (docs/conventions.md): compare with the
    # reference minimizing −loss instead
    class Negated(pytorch_optimizer.Adan):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.neg_()
            return super().step(closure)

    assert _parity({"maximize": True}, Negated) <= harness.TOLERANCE


def test_reference_maximize_first_difference_is_not_zero() -> None:
    # the reproduction of docs/conventions.md: one step, then the reference's difference state
    param = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    theirs = pytorch_optimizer.Adan([param], maximize=True)
    param.grad = torch.tensor([2.0], dtype=torch.float64)
    theirs.step()
    assert theirs.state[param]["exp_avg_diff"].item() == pytest.approx(-2 * 2.0 * (1 - 0.92))
    ours_param = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    ours = Adan([ours_param], maximize=True)
    ours_param.grad = torch.tensor([2.0], dtype=torch.float64)
    ours.step()
    assert ours.state[ours_param]["exp_avg_diff"].item() == 0.0
    assert ours_param.grad.item() == 2.0  # the user's gradient is left alone


def test_loads_pytorch_optimizer_state_dict_and_continues_alike() -> None:
    params, twin_params = harness.make_params(), harness.make_params()
    theirs = pytorch_optimizer.Adan(twin_params, lr=1e-2, weight_decay=0.1, weight_decouple=True)
    for step in range(10):
        harness.set_grads(twin_params, step)
        theirs.step()
    with torch.no_grad():
        for p, q in zip(params, twin_params):
            p.copy_(q)
    ours = Adan(params, lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["decoupled_weight_decay"] is True
    for step in range(10, 30):
        harness.set_grads(params, step)
        harness.set_grads(twin_params, step)
        ours.step()
        theirs.step()
    assert harness.max_difference(params, twin_params) <= harness.TOLERANCE


def test_step_scalars_closed_form() -> None:
    step_size, diff_step_size, root = step_scalars(0.1, (0.5, 0.5, 0.75), 2)
    assert (step_size, diff_step_size, root) == (0.1 / 0.75, 0.1 * 0.5 / 0.75, 0.4375**0.5)


def test_bad_hyperparameters_name_argument_value_and_range() -> None:
    param = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"Adan: invalid betas=\(0\.9, 0\.9\); .*a triple"):
        Adan(param, betas=(0.9, 0.9))
    with pytest.raises(ValueError, match=r"Adan: invalid betas\[2\]=1\.0; .*\[0, 1\)"):
        Adan(param, betas=(0.9, 0.9, 1.0))
    with pytest.raises(ValueError, match=r"Adan: invalid max_grad_norm=-1"):
        Adan(param, max_grad_norm=-1)
    with pytest.raises(ValueError, match=r"weight_decouple=True with decoupled_weight_decay"):
        Adan(param, weight_decouple=True, decoupled_weight_decay=False)


def test_a_skipped_group_does_not_poison_the_others_clip() -> None:
    good = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    bad = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = Adan(
        [{"params": [good]}, {"params": [bad]}], lr=0.1, max_grad_norm=1.0, nonfinite="skip"
    )
    good.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)  # norm 5: clipped to 1
    bad.grad = torch.tensor([float("nan")], dtype=torch.float64)
    optimizer.step()
    assert torch.isfinite(good).all() and bad.item() == 1.0
    # the first Adan step of a clipped gradient c·g: θ − η·sign-like m̂/(√n̂ + ε) ≈ θ − η
    assert torch.allclose(good.detach(), torch.tensor([2.9, 3.9], dtype=torch.float64))
