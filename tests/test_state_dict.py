"""state_dict: resuming continues bit for bit; torch.optim state_dicts load and continue alike."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from optimlab.optim.registry import REGISTRY
from tests.torch_reference import (
    default_dtype,
    make_params,
    max_relative_error,
    set_grads,
    torch_kwargs,
    torch_twin,
)

CASES = [
    pytest.param(name, options, id=f"{name}-{i}")
    for name, info in REGISTRY.items()
    for i, options in enumerate(({}, {"convention": "keras"}, *info.samples[:3]))
]


def _roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _run(optimizer, params, steps: int, maximize: bool) -> None:
    for _ in range(steps):
        set_grads(params, maximize)
        optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_resume_is_bit_for_bit(name: str, options: dict, dtype: torch.dtype) -> None:
    info = REGISTRY[name]
    maximize = options.get("maximize", False)
    straight = [p.to(dtype).requires_grad_() for p in make_params(torch.float32)]
    resumed = [p.detach().clone().requires_grad_() for p in straight]

    uninterrupted = info.cls(straight, lr=0.01, **options)
    _run(uninterrupted, straight, 40, maximize)

    first = info.cls(resumed, lr=0.01, **options)
    _run(first, resumed, 25, maximize)
    saved = _roundtrip(first.state_dict())
    second = info.cls(resumed, lr=0.5, **options)  # hyperparameters come from the state_dict
    second.load_state_dict(saved)
    _run(second, resumed, 15, maximize)

    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight, resumed, strict=True):
        for key, value in uninterrupted.state[a].items():
            other = second.state[b][key]
            # SOAP keeps lists of matrices (one per dimension, [] where there is none)
            values, others = (value, other) if isinstance(value, list) else ([value], [other])
            assert len(values) == len(others), key
            for value, other in zip(values, others):
                if isinstance(value, torch.Tensor):
                    assert value.dtype == other.dtype, key
                    assert torch.equal(value, other), key
                else:
                    assert value == other, key
    if dtype == torch.bfloat16:
        state = second.state[resumed[0]]
        assert all(
            v.dtype == torch.float32
            for k, v in state.items()
            if k not in ("step", "mu_product") and isinstance(v, torch.Tensor)
        )


@pytest.mark.parametrize("name", list(REGISTRY))
def test_torch_state_dict_loads_and_continues_like_torch(name: str) -> None:
    """Run torch.optim 30 steps, load its state into optimlab, continue both 30 more steps."""
    info = REGISTRY[name]
    with default_dtype(torch.float64):
        theirs_params = [p.requires_grad_() for p in make_params(torch.float64)]
        probe = info.cls([torch.zeros(1, requires_grad=True)], lr=0.01)
        kwargs = torch_kwargs(info, probe.param_groups[0])
        theirs = torch_twin(info)(theirs_params, **kwargs)
        _run(theirs, theirs_params, 30, False)

        ours_params = [p.detach().clone().requires_grad_() for p in theirs_params]
        ours = info.cls(ours_params)
        ours.load_state_dict(_roundtrip(theirs.state_dict()))
        assert ours.param_groups[0]["lr"] == 0.01
        _run(theirs, theirs_params, 30, False)
        _run(ours, ours_params, 30, False)
        assert max_relative_error(ours_params, theirs_params) <= 1e-12


@pytest.mark.parametrize("name", list(REGISTRY))
def test_optimlab_state_dict_loads_into_torch_optim(name: str) -> None:
    """The state layout is torch.optim's, so the way back works too."""
    info = REGISTRY[name]
    with default_dtype(torch.float64):
        ours_params = [p.requires_grad_() for p in make_params(torch.float64)]
        ours = info.cls(ours_params, lr=0.01)
        _run(ours, ours_params, 20, False)
        theirs_params = [p.detach().clone().requires_grad_() for p in ours_params]
        theirs = torch_twin(info)(theirs_params, **torch_kwargs(info, ours.param_groups[0]))
        theirs.load_state_dict(_roundtrip(ours.state_dict()))
        _run(theirs, theirs_params, 20, False)
        _run(ours, ours_params, 20, False)
        assert max_relative_error(ours_params, theirs_params) <= 1e-12


@pytest.mark.parametrize("name", list(REGISTRY))
def test_a_deep_copy_continues_like_the_original(name: str) -> None:
    """copy.deepcopy of (parameters, optimizer) mid-run, as checkpointing code does, steps on
    bit for bit like the original (the copy once lost its fused bookkeeping and raised)."""
    info = REGISTRY[name]
    params = [p.requires_grad_() for p in make_params(torch.float32)]
    optimizer = info.cls(params, lr=0.01)
    _run(optimizer, params, 5, False)
    copied_params, copied = copy.deepcopy((params, optimizer))
    _run(optimizer, params, 5, False)
    _run(copied, copied_params, 5, False)
    for a, b in zip(params, copied_params, strict=True):
        assert torch.equal(a, b)
