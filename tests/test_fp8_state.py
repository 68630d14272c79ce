"""fp8 (float8_e4m3fn) optimizer state: torchao's AdamWFp8 scheme, its reference and its kernel.

Checked against torchao's AdamWFp8 (the peer it follows: parameters, codes and scales after 100
steps), against torch's own float8 cast (the kernel's bit-level coding), and by state_dict round
trips and conversions.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from optimlab.optim.adam import Adam, AdamW
from optimlab.optim.kernels import lowprec_fp8
from optimlab.optim.low_precision import fp8

SHAPE = (32, 128)  # 4,096 elements: the smallest tensor that is quantized (16 blocks)

pytestmark = pytest.mark.usefixtures("one_thread")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


@numba.njit
def _encode(values, scale, codes):
    for b in range(0, values.shape[0], 256):
        lowprec_fp8.encode_fp8_divided(values[b : b + 256], scale, codes[b : b + 256], 256)


def test_the_kernels_fp8_code_is_torchs_cast() -> None:
    # every 4,099th float32 bit pattern (1.05 million: all exponents, NaN, ±inf, subnormals)
    # and every quotient within 4 ulps of an e4m3 rounding midpoint (ties to even, saturation)
    patterns = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
    values = patterns.view(np.float32)
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    grid = np.unique(np.abs(every[np.isfinite(every)]))  # (torch's decoding, not the kernel's)
    middles = np.append((grid[:-1] + grid[1:]) / 2, np.float32(464.0)).astype(np.float32)
    near = (middles.view(np.uint32)[:, None].astype(np.int64) + np.arange(-4, 5)).astype(np.uint32)
    values = np.concatenate([values, near.reshape(-1).view(np.float32)])
    values = np.concatenate([values, -values])
    values = np.concatenate([values, np.zeros(-len(values) % 256, np.float32)])
    for scale in (np.float32(1.0), np.float32(1e-12 / 448), np.float32(0.0123)):
        codes = np.empty(len(values), np.uint8)
        with np.errstate(all="ignore"):
            _encode(values, scale, codes)
        quotient = torch.from_numpy(values) / torch.tensor(scale)
        expected = quotient.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        assert np.array_equal(codes, expected), np.count_nonzero(codes != expected)


@numba.njit
def _encode_block(values, scale, codes):
    for b in range(0, values.shape[0], 256):
        lowprec_fp8.encode_fp8_block(values[b : b + 256], scale, codes[b : b + 256], 256)


@numba.njit
def _decode_block(codes, scale, out):
    for b in range(0, codes.shape[0], 256):
        lowprec_fp8.decode_fp8_block(codes[b : b + 256], scale, out[b : b + 256], 256)


def _torch_codes(values: np.ndarray, scale: np.float32) -> np.ndarray:
    quotient = torch.from_numpy(values) / torch.tensor(scale)
    return quotient.to(torch.float8_e4m3fn).view(torch.uint8).numpy()


@pytest.mark.parametrize("flush", [False, True], ids=["ieee", "flush-denormal"])
def test_the_kernels_block_coding_without_division_is_torchs_cast(flush: bool) -> None:
    # x · fl(1/scale) · 2⁻¹²⁰ rounded at bit 20, near-midpoint lanes divided: the codes of
    # torch's fl(x / scale) on every 4,099th float32 pattern (NaN, ±inf, subnormals) and on
    # x = fl(q · scale) for every q within 12 ulps of a rounding midpoint, both signs, for
    # scales whose reciprocal rounds, the smallest scale, and one above 64 (divided whole);
    # also in a thread that flushes subnormals (the kernel's y is subnormal for small codes)
    patterns = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    grid = np.unique(np.abs(every[np.isfinite(every)]))
    middles = np.append((grid[:-1] + grid[1:]) / 2, np.float32(464.0)).astype(np.float32)
    offsets = np.arange(-12, 13)
    near = (middles.view(np.uint32)[:, None].astype(np.int64) + offsets).astype(np.uint32)
    near = near.reshape(-1).view(np.float32)
    differences = {}
    for scale in map(np.float32, (1.0, 1e-12 / 448, 0.7310585 / 448, 0.0123, 63.9, 100.0)):
        with np.errstate(all="ignore"):
            values = np.concatenate([patterns, near * scale, -near * scale]).astype(np.float32)
            if flush:  # (a subnormal x is 0 to the arithmetic of such a thread: torch's too)
                values = values[(np.abs(values) >= np.float32(2.0**-126)) | (values == 0)]
            values = np.concatenate([values, np.zeros(-len(values) % 256, np.float32)])
            expected = _torch_codes(values, scale)
        codes = np.empty(len(values), np.uint8)
        assert torch.set_flush_denormal(flush) or not flush
        try:
            with np.errstate(all="ignore"):
                _encode_block(values, scale, codes)
        finally:
            torch.set_flush_denormal(False)
        differences[float(scale)] = int(np.count_nonzero(codes != expected))
    assert set(differences.values()) == {0}, differences


@pytest.mark.parametrize("flush", [False, True], ids=["ieee", "flush-denormal"])
def test_the_kernels_decoding_is_torchs_float_times_the_scale(flush: bool) -> None:
    codes = np.tile(np.arange(256, dtype=np.uint8), 2)
    for scale in map(np.float32, (1.0, 1e-12 / 448, 0.0123, 3.0e30)):
        expected = (
            torch.from_numpy(codes).view(torch.float8_e4m3fn).float() * torch.tensor(scale)
        ).numpy()
        out = np.empty(len(codes), np.float32)
        assert torch.set_flush_denormal(flush) or not flush
        try:
            _decode_block(codes, scale, out)
        finally:
            torch.set_flush_denormal(False)
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(out), nan)
        assert np.array_equal(out[~nan].view(np.uint32), expected[~nan].view(np.uint32))


def test_the_code_check_of_the_benchmark_finds_no_difference(capsys) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import low_precision
    finally:
        sys.path.pop(0)
    assert low_precision.check_fp8_codes(count=1 << 20, chunk=1 << 18) == 0
    assert "0 differences" in capsys.readouterr().out


def test_quantize_is_torchaos_and_within_half_a_level() -> None:
    subclass = pytest.importorskip("torchao.optim.subclass_fp8")
    torch.manual_seed(1)
    x = torch.randn(4096) * torch.logspace(-6, 1, 4096)
    codes, scale = fp8.quantize(x)
    theirs_codes, theirs_scale = subclass.quantize_fp8(x, 256)
    assert torch.equal(_bits(codes), _bits(theirs_codes)) and torch.equal(scale, theirs_scale)
    decoded = fp8.dequantize(codes, scale)
    assert torch.all((decoded - x).abs() <= fp8.level_gap(codes, scale) / 2 * 1.0001)


def _torchao_adamwfp8(monkeypatch: pytest.MonkeyPatch):
    torchao_adam = pytest.importorskip("torchao.optim.adam")
    monkeypatch.setattr(torchao_adam.torch, "compile", lambda fn, **_: fn)
    return torchao_adam.AdamWFp8


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_adamw_fp8_agrees_with_torchao_after_100_steps(
    impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    AdamWFp8 = _torchao_adamwfp8(monkeypatch)
    torch.manual_seed(0)
    shapes = [SHAPE, (40, 256), (7,)]  # two quantized tensors, one below the threshold
    start = [torch.randn(s) for s in shapes]
    theirs = [torch.nn.Parameter(w.clone()) for w in start]
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    lr = 1e-2
    peer = AdamWFp8(theirs, lr=lr, weight_decay=0.01)
    mine = AdamW(ours, lr=lr, weight_decay=0.01, state_dtype="fp8", impl=impl)
    eps = torch.finfo(torch.float32).eps
    bound = [torch.zeros(s) for s in shapes]
    for step in range(1, 101):
        grads = [torch.randn(s) * torch.logspace(-2, 0.5, s[-1]) for s in shapes]
        before = [a.detach().clone() for a in theirs]
        for a, b, g in zip(theirs, ours, grads):
            a.grad, b.grad = g, g.clone()
        peer.step()
        mine.step()
        # a few ulps of the weight and of the update per step, and torchao's float32 bias
        # correction 1 − β₂ᵗ (ours is float64): its rounding, eps / (1 − β₂ᵗ) relative (6e-5 at
        # t = 2), moves updates made large by a second moment coded as 0 (measured: 5.7e-5 at
        # t = 2 on a weight of 10,240 elements, int8 and AdamW8bit alike)
        relative = 4 * eps + eps / (1 - 0.999**step)
        for total, a, old in zip(bound, theirs, before):
            total += 4 * eps * a.detach().abs() + relative * (a.detach() - old).abs()
    for a, b, total in zip(theirs, ours, bound):
        assert torch.all((a.detach() - b.detach()).abs() <= total)
    for a, b in zip(theirs[:2], ours[:2]):
        for key in ("exp_avg", "exp_avg_sq"):
            state, peer_state = mine.state[b], peer.state[a][key]
            assert state[key].dtype == torch.float8_e4m3fn
            decoded = fp8.dequantize(state[key], state[key + "_scale"])
            level = fp8.level_gap(state[key], state[key + "_scale"])
            assert torch.all((peer_state.dequantize() - decoded).abs() <= level)
            # measured: codes and scales bit for bit the same; allowed: 0.1 % of codes apart
            differ = (_bits(state[key]) != _bits(peer_state.codes)).float().mean().item()
            assert differ <= 1e-3, (key, differ)
    small = mine.state[ours[2]]["exp_avg_sq"]
    assert small.dtype == torch.float32
    assert torch.allclose(small, peer.state[theirs[2]]["exp_avg_sq"], rtol=1e-5, atol=1e-7)


def _saved(optimizer: torch.optim.Optimizer) -> dict:
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _trained(state_dtype: str) -> tuple[torch.nn.Parameter, Adam]:
    torch.manual_seed(5)
    w = torch.nn.Parameter(torch.randn(SHAPE))
    optimizer = Adam([w], lr=1e-2, state_dtype=state_dtype, amsgrad=True, impl="reference")
    for _ in range(3):
        w.grad = torch.randn(SHAPE)
        optimizer.step()
    return w, optimizer


KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def test_float32_state_is_quantized_to_fp8_on_load_and_dequantized_back() -> None:
    w, fp32 = _trained("float32")
    low = Adam([w], lr=1e-2, state_dtype="fp8", amsgrad=True)
    low.load_state_dict(_saved(fp32))
    for key in KEYS:
        codes, scale = fp8.quantize(fp32.state[w][key])
        assert torch.equal(_bits(low.state[w][key]), _bits(codes))
        assert torch.equal(low.state[w][key + "_scale"], scale)
    back = Adam([w], lr=1e-2, amsgrad=True)
    back.load_state_dict(_saved(low))
    for key in KEYS:
        assert back.state[w][key].dtype == torch.float32 and key + "_scale" not in back.state[w]
        expected = fp8.dequantize(low.state[w][key], low.state[w][key + "_scale"])
        assert torch.equal(back.state[w][key], expected)


def test_int8_state_loads_into_an_fp8_optimizer_through_floats() -> None:
    w, int8 = _trained("int8")
    low = Adam([w], lr=1e-2, state_dtype="fp8", amsgrad=True)
    low.load_state_dict(_saved(int8))
    float32 = Adam([w], lr=1e-2, amsgrad=True)
    float32.load_state_dict(_saved(int8))
    for key in KEYS:
        assert key + "_absmax" not in low.state[w]
        codes, scale = fp8.quantize(float32.state[w][key])
        assert torch.equal(_bits(low.state[w][key]), _bits(codes))
        assert torch.equal(low.state[w][key + "_scale"], scale)


def test_fp8_state_that_does_not_fit_is_a_clear_error() -> None:
    _, optimizer = _trained("fp8")
    saved = _saved(optimizer)
    saved["state"][0]["exp_avg_scale"] = saved["state"][0]["exp_avg_scale"][:-1]
    target = Adam([torch.nn.Parameter(torch.randn(SHAPE))], state_dtype="fp8")
    with pytest.raises(ValueError, match=r"cannot load fp8 state 'exp_avg'.*15 scales"):
        target.load_state_dict(saved)
    saved = _saved(optimizer)
    saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"].float() + 0.01
    with pytest.raises(ValueError, match=r"cannot load fp8 state 'exp_avg': its codes are not"):
        target.load_state_dict(saved)
