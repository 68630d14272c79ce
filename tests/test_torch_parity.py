"""Parity with torch.optim: every algorithm, every torch option in scope, both float dtypes.

Each optimlab optimizer and its torch.optim twin start from the same parameters and take 150 steps
on a non-quadratic loss, in two parameter groups with different hyperparameters, and must agree to
1e-10 (float64) or 1e-5 (float32) relative.

``impl="reference"`` follows torch's sequence of operations, so each side computes its own gradient
at its own point and the two trajectories stay together (in practice bit for bit).  The fused
kernels round a few operations differently from torch's CPU ops (torch's vectorized float32 sqrt
is not correctly rounded; the kernels' is), a difference of an ulp that some settings (Adam with
betas (0.5, 0.9), say) amplify along a trajectory.  So the fused path receives torch's gradient at
torch's point every step ("teacher forcing"): what is compared is the update rule, not the chaos
of the loss surface.
"""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.registry import REGISTRY
from tests.torch_reference import (
    default_dtype,
    has_torch_counterpart,
    make_params,
    max_relative_error,
    set_grads,
    torch_kwargs,
    torch_twin,
)

STEPS = 150
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}

CASES = [
    pytest.param(name, options, id=f"{name}-{i}")
    for name, info in REGISTRY.items()
    for i, options in enumerate(({}, *info.samples))
    if has_torch_counterpart(info, options)
]


def _lr_for(name: str) -> float:
    # Large enough to move far from the start in 150 steps, small enough to stay stable.
    return {"sgd": 0.01, "momentum": 0.01, "nag": 0.01, "adadelta": 0.5}.get(name, 0.01)


@pytest.mark.parametrize("impl", ["reference", "auto"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_matches_torch_optim(name: str, options: dict, dtype: torch.dtype, impl: str) -> None:
    info = REGISTRY[name]
    with default_dtype(dtype):
        ours_params = [p.requires_grad_() for p in make_params(dtype)]
        theirs_params = [p.detach().clone().requires_grad_() for p in ours_params]
        lr = _lr_for(name)
        ours = info.cls(
            [{"params": ours_params[:1]}, {"params": ours_params[1:], "lr": lr / 2}],
            lr=lr,
            impl=impl,
            **options,
        )
        kwargs = torch_kwargs(info, ours.param_groups[0])
        theirs = torch_twin(info)(
            [{"params": theirs_params[:1]}, {"params": theirs_params[1:], "lr": lr / 2}],
            **kwargs,
        )
        for _ in range(STEPS):
            set_grads(theirs_params, options.get("maximize", False))
            if impl == "reference":
                set_grads(ours_params, options.get("maximize", False))
            else:
                for mine, torchs in zip(ours_params, theirs_params):
                    mine.grad = torchs.grad.clone()
            ours.step()
            theirs.step()
        moved = max_relative_error(ours_params, make_params(dtype))
        assert moved > 1e-3, "the test must move the parameters to mean anything"
        error = max_relative_error(ours_params, theirs_params, start=make_params(dtype))
        assert error <= TOLERANCE[dtype], f"{name} {options}: relative error {error:.3g}"


def test_every_registered_optimizer_is_covered() -> None:
    assert {case.values[0] for case in CASES} == set(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_decoupled_weight_decay_is_a_multiplicative_shrink(name: str) -> None:
    """Decoupled weight decay = shrink p by (1 - lr·wd), then the undecayed rule (AdamW)."""
    info = REGISTRY[name]
    if name == "adafactor":
        pytest.skip("torch.optim.Adafactor takes RMS(θ) before its decay (test_modern_adafactor)")
    if name == "muon":
        pytest.skip("Muon's non-matrix tensors decay with adamw_weight_decay (test_modern_muon)")
    torch.manual_seed(0)
    decayed = [p.requires_grad_() for p in make_params(torch.float64)]
    manual = [p.detach().clone().requires_grad_() for p in decayed]
    lr, wd = 0.01, 0.3
    try:
        ours = info.cls(decayed, lr=lr, weight_decay=wd, decoupled_weight_decay=True)
    except ValueError as error:
        if "invalid decoupled_weight_decay=True" not in str(error):
            raise
        pytest.skip(f"{name} refuses decoupled_weight_decay (its weight_decay is its own rule)")
    plain = info.cls(manual, lr=lr, weight_decay=0.0)
    for _ in range(50):
        set_grads(decayed)
        set_grads(manual)  # the gradient is taken before the shrink, as in AdamW
        with torch.no_grad():
            for p in manual:
                p.mul_(1 - lr * wd)
        ours.step()
        plain.step()
    assert max_relative_error(decayed, manual) <= 1e-12


@pytest.mark.parametrize(("name", "options"), CASES)
def test_reference_is_bit_for_bit_torch_optim_under_the_default_dtype(
    name: str, options: dict
) -> None:
    """impl="reference" performs torch.optim's operations in torch's order: under torch's default
    dtype (float32) parameters and every state tensor are *equal* to torch.optim's, step by step
    (NAdam's running product included, which torch keeps in float32)."""
    info = REGISTRY[name]
    assert torch.get_default_dtype() == torch.float32
    ours_params = [p.requires_grad_() for p in make_params(torch.float32)]
    theirs_params = [p.detach().clone().requires_grad_() for p in ours_params]
    lr = 2e-2 if name == "nadam" else _lr_for(name)
    groups = lambda params: [{"params": params[:1]}, {"params": params[1:], "lr": lr / 2}]  # noqa: E731
    ours = info.cls(groups(ours_params), lr=lr, impl="reference", **options)
    theirs = torch_twin(info)(groups(theirs_params), **torch_kwargs(info, ours.param_groups[0]))
    for step in range(60):
        set_grads(theirs_params, options.get("maximize", False))
        set_grads(ours_params, options.get("maximize", False))
        ours.step()
        theirs.step()
        for a, b in zip(ours_params, theirs_params, strict=True):
            assert torch.equal(a, b), f"step {step}: parameters differ"
            for key, value in theirs.state[b].items():
                mine = ours.state[a][key]
                assert mine.dtype == value.dtype, (step, key)
                assert torch.equal(mine, value), (step, key)
    assert max_relative_error(ours_params, make_params(torch.float32)) > 1e-3
