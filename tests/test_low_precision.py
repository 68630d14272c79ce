"""Low-precision optimizer state (int8, bf16) and stochastic rounding of bfloat16 weights.

The 8-bit scheme is checked against torchao's AdamW8bit (the peer it follows) and against a
brute-force nearest-code search; stochastic rounding against the float64 update it must equal
in expectation; state_dicts by round trips through torch.save.
"""

from __future__ import annotations

import io

import pytest
import torch

from optimlab.optim.adagrad import Adagrad
from optimlab.optim.adam import Adam, AdamW
from optimlab.optim.low_precision import quantize
from optimlab.optim.registry import get_info
from optimlab.optim.sgd import SGD

SHAPE = (32, 128)  # 4,096 elements: the smallest tensor that is quantized (16 blocks)


#: one torch thread (the fixture is in conftest.py): threads only contend on the shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _torchao_adamw8bit(monkeypatch: pytest.MonkeyPatch):
    """torchao's AdamW8bit, its single-tensor step run eagerly (torch.compile needs a compiler)."""
    torchao_adam = pytest.importorskip("torchao.optim.adam")
    monkeypatch.setattr(torchao_adam.torch, "compile", lambda fn, **_: fn)
    return torchao_adam.AdamW8bit


def test_dynamic_maps_are_torchaos() -> None:
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    for signed in (True, False):
        theirs = torch.tensor(quant_utils.create_dynamic_map(signed=signed), dtype=torch.float32)
        assert torch.equal(quantize.dynamic_map(signed), theirs)


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_picks_the_nearest_code(signed: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(4096) * torch.logspace(-6, 1, 4096)  # seven decades, as Adam's states span
    x = x if signed else x.abs()
    codes, absmax = quantize.quantize(x, signed)
    table = quantize.dynamic_map(signed)
    scaled = (x.view(-1, quantize.BLOCK_SIZE) / absmax.unsqueeze(1)).reshape(-1)
    distance = (scaled.unsqueeze(1) - table.unsqueeze(0)).abs()
    nearest = distance.min(dim=1).values
    chosen = distance.gather(1, codes.long().reshape(-1, 1)).squeeze(1)
    assert torch.equal(chosen, nearest)  # ties may go either way, distances may not
    assert absmax.shape == (4096 // quantize.BLOCK_SIZE,)
    decoded = quantize.dequantize(codes, absmax, signed)
    assert torch.all((decoded - x).abs() <= quantize.level_gap(codes, absmax, signed) / 2 * 1.0001)


def test_adamw_int8_agrees_with_torchao_after_100_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    amsgrad = False  # torchao 0.18's eager AdamW8bit lacks aten.maximum for amsgrad
    AdamW8bit = _torchao_adamw8bit(monkeypatch)
    torch.manual_seed(0)
    weight, bias = torch.randn(SHAPE), torch.randn(7)
    theirs = [torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())]
    ours = [torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())]
    lr, steps = 1e-2, 100
    peer = AdamW8bit(theirs, lr=lr, weight_decay=0.01, amsgrad=amsgrad)
    mine = AdamW(ours, lr=lr, weight_decay=0.01, amsgrad=amsgrad, state_dtype="int8")
    column_scale = torch.logspace(-2, 0.5, SHAPE[1])  # gradients over 2.5 decades
    eps = torch.finfo(torch.float32).eps
    bound = [torch.zeros(SHAPE), torch.zeros(7)]
    for _ in range(steps):
        grads = [torch.randn(SHAPE) * column_scale, torch.randn(7)]
        before = [a.detach().clone() for a in theirs]
        for a, b, g in zip(theirs, ours, grads):
            a.grad, b.grad = g, g.clone()
        peer.step()
        mine.step()
        # the two compute each update in a different order of float32 operations: each step
        # may differ by a few ulps of the update and one of the parameter, and no more
        for total, a, old in zip(bound, theirs, before):
            total += 4 * eps * (a.detach().abs() + (a.detach() - old).abs())
    for a, b, total in zip(theirs, ours, bound):
        assert torch.all((a.detach() - b.detach()).abs() <= total)
    keys = [("exp_avg", True), ("exp_avg_sq", False)] + [("max_exp_avg_sq", False)] * amsgrad
    for key, signed in keys:
        state = mine.state[ours[0]]
        assert state[key].dtype == torch.uint8
        decoded = quantize.dequantize(state[key], state[key + "_absmax"], signed)
        level = quantize.level_gap(state[key], state[key + "_absmax"], signed)
        assert torch.all((peer.state[theirs[0]][key].dequantize() - decoded).abs() <= level)
        # the small tensor (< 4,096 elements) keeps float32 state, as torchao's does
        small = mine.state[ours[1]][key]
        assert small.dtype == torch.float32
        assert torch.allclose(small, peer.state[theirs[1]][key], rtol=1e-5, atol=1e-7)


def _quadratic_run(
    name: str, steps: int = 30, **options
) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    """`steps` of `name` on f(w) = ½ Σ c_i w_i², curvatures over a decade, w₀ in [1, 2].

    (Gradients within three decades of each other: an element whose second moment falls below
    the map's smallest step, 1e-7 of its block's maximum, is stored as 0 and then takes steps
    larger than float32 Adam's, in torchao's scheme as here; that is not what this test is about.)
    """
    torch.manual_seed(3)
    w = torch.nn.Parameter(1 + torch.rand(SHAPE))
    curvature = torch.logspace(-0.5, 0.5, SHAPE[1])
    info = get_info(name)
    optimizer = info.cls([w], lr=1e-2, **options)
    for _ in range(steps):
        w.grad = curvature * w.detach()
        optimizer.step()
    return w.detach(), optimizer


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax", "nadam", "rmsprop", "momentum", "nag"])
@pytest.mark.parametrize("state_dtype", ["bf16", "int8"])
def test_low_precision_state_tracks_float32(name: str, state_dtype: str) -> None:
    reference, _ = _quadratic_run(name, impl="reference")
    low, optimizer = _quadratic_run(name, state_dtype=state_dtype)
    stored = {"bf16": torch.bfloat16, "int8": torch.uint8}[state_dtype]
    tensors = [v for k, v in optimizer.state[next(iter(optimizer.state))].items() if k != "step"]
    element_wise = [t for t in tensors if isinstance(t, torch.Tensor) and t.shape == SHAPE]
    assert element_wise and all(t.dtype == stored for t in element_wise)
    moved = (reference - _quadratic_run(name, steps=0)[0]).abs()
    # the low-precision run moves the weights as the float32 one does, to within 10 % of the way
    # (measured: bf16 state ≤ 1 %, int8 4-7 %; a rule that lost its state would be far off)
    assert (low - reference).abs().max() <= 0.10 * moved.max()


def test_impl_auto_runs_the_low_precision_kernel_not_the_float32_one() -> None:
    w = torch.nn.Parameter(torch.randn(SHAPE))
    optimizer = get_info("rmsprop").cls([w], impl="auto", state_dtype="int8")
    w.grad = torch.randn(SHAPE)
    optimizer.step()
    assert optimizer.state[w]["square_avg"].dtype == torch.uint8
    assert not optimizer.fused_layouts  # the (float32) fused kernel did not take the group


def test_stochastic_rounding_is_unbiased() -> None:
    """Mean of 20,000 rounded updates = the float64 update, within 4 standard errors."""
    n, lr = 20_000, 1e-3
    start = torch.linspace(0.5, 0.99, n, dtype=torch.float64).to(torch.bfloat16)
    exact = start.double() + lr  # gradient −1: an update of +lr, a quarter of an ulp or less
    moved = {}
    for stochastic in (False, True):
        w = torch.nn.Parameter(start.clone())
        optimizer = SGD([w], lr=lr, stochastic_rounding=stochastic, rounding_seed=7)
        w.grad = torch.full_like(w, -1.0)
        optimizer.step()
        moved[stochastic] = w.detach().double() - exact
    error = moved[True]
    standard_error = error.std() / n**0.5
    assert abs(error.mean()) <= 4 * standard_error
    assert abs(moved[False].mean()) > 50 * standard_error  # round-to-nearest drops the update


def test_round_to_nearest_stalls_a_bf16_weight_that_stochastic_rounding_moves() -> None:
    steps, lr = 20, 1e-3
    finals = {}
    for stochastic in (False, True):
        w = torch.nn.Parameter(torch.full((1000,), 0.5, dtype=torch.bfloat16))
        optimizer = Adam([w], lr=lr, stochastic_rounding=stochastic)
        for _ in range(steps):
            w.grad = torch.full_like(w, -1.0)  # Adam steps of ≈ lr upwards; ulp(0.5) = 2⁻⁸
            optimizer.step()
        finals[stochastic] = w.detach().double()
    assert torch.all(finals[False] == 0.5)
    # Adam on a constant gradient steps by lr·(1 − ε-terms): about 0.52 in float64
    assert abs(finals[True].mean().item() - (0.5 + steps * lr)) < 2e-3


def test_stochastic_rounding_is_seeded_and_resumes_bit_for_bit() -> None:
    def run(seed: int, steps: int, state: dict | None = None, start: torch.Tensor | None = None):
        w = torch.nn.Parameter(
            torch.full((512,), 0.75, dtype=torch.bfloat16) if start is None else start.clone()
        )
        optimizer = Adam([w], stochastic_rounding=True, rounding_seed=seed)
        if state is not None:
            optimizer.load_state_dict(state)
        for _ in range(steps):
            w.grad = torch.full_like(w, -0.1)
            optimizer.step()
        return w.detach(), optimizer

    once, _ = run(1, 6)
    assert torch.equal(once, run(1, 6)[0])
    assert not torch.equal(once, run(2, 6)[0])
    half, optimizer = run(1, 3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    resumed, _ = run(1, 3, torch.load(buffer, weights_only=True), start=half)
    assert torch.equal(resumed, once)


# ---- state_dict --------------------------------------------------------------------------------
def _trained(state_dtype: str, steps: int = 3) -> tuple[torch.nn.Parameter, Adam]:
    torch.manual_seed(5)
    w = torch.nn.Parameter(torch.randn(SHAPE))
    optimizer = Adam([w], lr=1e-2, state_dtype=state_dtype, amsgrad=True, impl="reference")
    for _ in range(steps):
        w.grad = torch.randn(SHAPE)
        optimizer.step()
    return w, optimizer


def _saved(optimizer: torch.optim.Optimizer) -> dict:
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("state_dtype", ["bf16", "int8", "fp8"])
def test_low_precision_state_saves_and_loads_bit_for_bit(state_dtype: str) -> None:
    w, optimizer = _trained(state_dtype)
    clone = torch.nn.Parameter(w.detach().clone())
    loaded = Adam([clone], lr=1e-2, state_dtype=state_dtype, amsgrad=True)
    loaded.load_state_dict(_saved(optimizer))
    before = optimizer.state[w]
    after = loaded.state[clone]
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype
        bits = (lambda t: t.view(torch.uint8)) if before[key].dtype == torch.float8_e4m3fn else None
        assert torch.equal(*(bits(t) if bits else t for t in (before[key], after[key])))
    grad = torch.randn(SHAPE)  # and the next step is the same step
    w.grad, clone.grad = grad, grad.clone()
    optimizer.step()
    loaded.step()
    assert torch.equal(w, clone)


def test_float32_state_is_quantized_on_load_and_dequantized_back() -> None:
    w, fp32 = _trained("float32")
    int8 = Adam([w], lr=1e-2, state_dtype="int8", amsgrad=True)
    int8.load_state_dict(_saved(fp32))
    signs = {"exp_avg": True, "exp_avg_sq": False, "max_exp_avg_sq": False}
    for key, signed in signs.items():
        codes, absmax = quantize.quantize(fp32.state[w][key], signed)
        assert torch.equal(int8.state[w][key], codes)
        assert torch.equal(int8.state[w][key + "_absmax"], absmax)
    back = Adam([w], lr=1e-2, amsgrad=True)
    back.load_state_dict(_saved(int8))
    for key, signed in signs.items():
        assert back.state[w][key].dtype == torch.float32
        assert key + "_absmax" not in back.state[w]
        expected = quantize.dequantize(int8.state[w][key], int8.state[w][key + "_absmax"], signed)
        assert torch.equal(back.state[w][key], expected)
    assert back.param_groups[0].get("state_dtype", "float32") == "float32"  # the loader's choice


def test_8bit_state_that_does_not_fit_the_parameter_is_a_clear_error() -> None:
    _, optimizer = _trained("int8")
    saved = _saved(optimizer)
    saved["state"][0]["exp_avg_absmax"] = saved["state"][0]["exp_avg_absmax"][:-1]
    target = Adam([torch.nn.Parameter(torch.randn(SHAPE))], state_dtype="int8")
    with pytest.raises(ValueError, match=r"cannot load 8-bit state 'exp_avg'.*15 maxima"):
        target.load_state_dict(saved)


# ---- bad input ---------------------------------------------------------------------------------
def test_unsupported_state_dtype_is_a_clear_error() -> None:
    w = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(
        ValueError,
        match=r"Adagrad: invalid state_dtype='int8'; state_dtype must be 'float32' \(Adagrad has no low-precision state yet\)",
    ):
        Adagrad(w, state_dtype="int8")
    with pytest.raises(
        ValueError,
        match=r"Adam: invalid state_dtype='fp16'; state_dtype must be 'float32' or 'bf16' or 'int8' or 'fp8'",
    ):
        Adam(w, state_dtype="fp16")


def test_stochastic_rounding_on_float32_parameters_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"Adam: invalid stochastic_rounding=True; stochastic_rounding must be False for parameter 0 of dtype torch.float32; stochastic rounding applies to torch.bfloat16 parameters only",
    ):
        Adam([torch.nn.Parameter(torch.randn(3))], stochastic_rounding=True)
    with pytest.raises(
        ValueError, match=r"invalid rounding_seed=-1; rounding_seed must be an integer >= 0"
    ):
        Adam(
            [torch.nn.Parameter(torch.randn(3, dtype=torch.bfloat16))],
            stochastic_rounding=True,
            rounding_seed=-1,
        )


def test_fused_implementation_with_int8_state_is_accepted_where_a_kernel_exists() -> None:
    # every optimizer with low-precision state has its kernel (tests/test_low_precision_kernels.py
    # checks it against the reference, and the error of a class without one)
    for name in ("adamax", "nadam", "rmsprop", "sgd"):
        w = [torch.nn.Parameter(torch.randn(3))]
        get_info(name).cls(w, impl="fused", state_dtype="int8")
    get_info("nadam").cls(
        [torch.nn.Parameter(torch.randn(3, dtype=torch.bfloat16))],
        fused=True,
        stochastic_rounding=True,
    )
