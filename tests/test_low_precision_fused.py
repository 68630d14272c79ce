"""The fused low-precision kernel (``kernels.lowprec_adam``) against the reference path.

The reference path (decode the state, run Adam's reference rule in float32, encode again; round
bfloat16 weights) is itself tested against torchao's AdamW8bit (``test_low_precision.py``). The
kernel must agree with it to float32 rounding: measured, every 8-bit code, every block maximum and
every bfloat16 state equal after 20 steps, and the weights within 2 ulps. Stochastic rounding draws
other random bits than the reference (a counter-based hash instead of torch.Generator): tested
for being unbiased, seeded, and the same for every thread count.
"""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.adam import Adam
from optimlab.optim.kernels.layout import CHUNK
from optimlab.optim.low_precision import quantize
from optimlab.optim.registry import get_info

#: quantized (16 blocks), too small (stays float32), not whole blocks (float32)
SHAPES = ((32, 128), (7,), (300,))
#: and one tensor of several parallel chunks
LARGE = (*SHAPES, (2 * CHUNK + 3 * quantize.BLOCK_SIZE,))
STEPS, LR = 20, 1e-2


#: one torch thread (the fixture is in conftest.py): threads only contend on the shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


def run_optimizer(name: str, impl: str, dtype, steps: int, shapes, **options):
    """`steps` steps of optimizer `name` on gradients spanning 2.5 decades per tensor;
    (params, optimizer). tests/test_low_precision_kernels.py runs the other optimizers with it."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape).to(dtype)) for shape in shapes]
    optimizer = get_info(name).cls(params, lr=options.pop("lr", LR), impl=impl, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            scale = torch.logspace(-2, 0.5, p.shape[-1])
            p.grad = (torch.randn(p.shape, generator=generator) * scale).to(dtype)
        optimizer.step()
    return params, optimizer


def _run(impl: str, dtype=torch.float32, steps: int = STEPS, shapes=SHAPES, **options):
    """`steps` AdamW steps (see `run_optimizer`)."""
    return run_optimizer("adamw", impl, dtype, steps, shapes, **options)


OPTIONS = [
    pytest.param({"shapes": LARGE}, id="adamw-multichunk"),
    pytest.param({"amsgrad": True}, id="amsgrad"),
    pytest.param({"convention": "keras"}, id="keras"),
    pytest.param(
        {"maximize": True, "decoupled_weight_decay": False, "weight_decay": 0.1}, id="l2-maximize"
    ),
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("state_dtype", ["int8", "bf16", "fp8"])
def test_fused_low_precision_state_matches_the_reference(state_dtype: str, options) -> None:
    reference, expected = _run("reference", state_dtype=state_dtype, **options)
    fused, actual = _run("fused", state_dtype=state_dtype, **options)
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(reference, fused):
        # the parameter update in another order of float32 operations: an ulp of the weight
        # and of the update per step at most (measured: 2 ulps of the weight after 20 steps)
        bound = STEPS * eps * (a.abs() + LR)
        assert torch.all((a - b).abs() <= bound), ((a - b).abs() / bound).max()
        mine, theirs = actual.state[b], expected.state[a]
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            other = mine[key]
            assert other.dtype == value.dtype and other.shape == value.shape, key
            if value.dtype == torch.float8_e4m3fn:  # (compared as bits)
                other, value = other.view(torch.uint8), value.view(torch.uint8)
            if value.dtype in (torch.uint8, torch.bfloat16) or key.endswith(("_absmax", "_scale")):
                # the stored form: measured equal everywhere; allowed: 0.1 % one level apart
                differ = (other != value).float().mean().item()
                assert differ <= 1e-3, (key, differ)
        for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
            if mine[key].dtype == torch.uint8:
                gap = quantize.level_gap(theirs[key], theirs[key + "_absmax"], signed)
                decoded = [
                    quantize.dequantize(s[key], s[key + "_absmax"], signed) for s in (mine, theirs)
                ]
                assert torch.all((decoded[0] - decoded[1]).abs() <= gap)
            elif mine[key].dtype == torch.float32:  # small tensors: float32 state
                torch.testing.assert_close(mine[key], theirs[key], rtol=1e-4, atol=1e-7)
        assert int(mine["step"]) == int(theirs["step"]) == STEPS


@pytest.mark.parametrize("state_dtype", ["int8", "bf16"])
def test_fused_bfloat16_weights_round_to_nearest_as_the_reference(state_dtype: str) -> None:
    reference, _ = _run("reference", torch.bfloat16, steps=8, state_dtype=state_dtype)
    fused, _ = _run("fused", torch.bfloat16, steps=8, state_dtype=state_dtype)
    for a, b in zip(reference, fused):
        assert b.dtype == torch.bfloat16
        # weights rounded to bfloat16 from float32 results that agree to an ulp of float32:
        # equal but where a float32 result lies at a bfloat16 rounding boundary
        assert (a != b).float().mean().item() <= 1e-3


def test_auto_takes_the_kernel_and_fused_is_no_longer_an_error() -> None:
    fused, _ = _run("fused", torch.bfloat16, steps=3, stochastic_rounding=True)
    auto, optimizer = _run("auto", torch.bfloat16, steps=3, stochastic_rounding=True)
    reference, _ = _run("reference", torch.bfloat16, steps=3, stochastic_rounding=True)
    # the kernel's random bits are its own: auto equals fused bit for bit, not the reference
    assert all(torch.equal(a, f) for a, f in zip(auto, fused))
    assert not all(torch.equal(a, r) for a, r in zip(auto, reference))
    assert optimizer.param_groups[0]["impl"] == "auto"


def test_a_state_dtype_changed_between_steps_is_converted_as_the_reference_does() -> None:
    runs = []
    for impl in ("reference", "fused"):
        torch.manual_seed(2)
        w = torch.nn.Parameter(torch.randn(SHAPES[0]))
        optimizer = Adam([w], lr=1e-2, state_dtype="int8", impl=impl)
        torch.manual_seed(3)
        for step in range(4):
            if step == 2:
                optimizer.param_groups[0]["state_dtype"] = "bf16"
            w.grad = torch.randn(SHAPES[0])
            optimizer.step()
        runs.append((w.detach(), optimizer.state[w]))
    (a, state_a), (b, state_b) = runs
    assert state_b["exp_avg"].dtype == torch.bfloat16 and "exp_avg_absmax" not in state_b
    assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---- stochastic rounding in the kernel --------------------------------------------------------
def test_fused_stochastic_rounding_is_unbiased() -> None:
    """Mean of 20,000 rounded SGD-like updates = the float64 update, within 4 standard errors.

    Adam's first step moves every weight by lr (sign of the gradient): a quarter of an ulp or
    less for weights in [0.5, 1), which round-to-nearest drops.
    """
    n, lr = 20_480, 1e-3
    start = torch.linspace(0.5, 0.99, n, dtype=torch.float64).to(torch.bfloat16)
    moved = {}
    for stochastic in (False, True):
        w = torch.nn.Parameter(start.clone())
        impl = "fused" if stochastic else "auto"  # (round-to-nearest: the reference)
        optimizer = Adam([w], lr=lr, stochastic_rounding=stochastic, impl=impl)
        w.grad = torch.full_like(w, -1.0)
        optimizer.step()
        exact = start.double() + lr / (1 + 1e-8)  # Adam's first step: −lr·g / (|g| + ε)
        moved[stochastic] = w.detach().double() - exact
    error = moved[True]
    standard_error = error.std() / n**0.5
    assert abs(error.mean()) <= 4 * standard_error
    assert abs(moved[False].mean()) > 50 * standard_error  # round-to-nearest drops the update


def test_fused_stochastic_rounding_is_seeded_and_the_same_on_every_thread_count() -> None:
    def run(seed: int, threads: int) -> torch.Tensor:
        torch.set_num_threads(threads)
        w = torch.nn.Parameter(torch.full((3 * CHUNK + 5,), 0.75, dtype=torch.bfloat16))
        optimizer = Adam([w], stochastic_rounding=True, rounding_seed=seed, impl="fused")
        for _ in range(3):
            w.grad = torch.full_like(w, -0.1)
            optimizer.step()
        return w.detach()

    once = run(1, 1)
    assert torch.equal(once, run(1, 2))  # the bits hash (key, element), not a thread's stream
    assert not torch.equal(once, run(2, 1))
    assert 0.75 < once.double().mean().item() < 0.76  # three steps of ≈ lr each, in expectation


# ---- bad input -----------------------------------------------------------------------------------
def test_fused_on_a_group_the_kernel_cannot_take_says_why() -> None:
    w = torch.nn.Parameter(torch.randn(SHAPES[0], dtype=torch.float64))
    optimizer = Adam([w], state_dtype="int8", impl="fused")
    w.grad = torch.randn_like(w)
    with pytest.raises(
        TypeError,
        match=r"Adam\(impl='fused'\): parameter 0 has dtype torch.float64; the low-precision kernels take float32",
    ):
        optimizer.step()
    auto = Adam([w], state_dtype="int8")  # auto: the reference rule
    auto.step()
    assert auto.state[w]["exp_avg"].dtype == torch.uint8


# ---- the 8-bit code tables ----------------------------------------------------------------------
def _code_cases(signed: bool):
    """(blocks, expected codes): every map entry, every threshold and one float32 below it (and
    their negatives for the signed map), values over nine decades, ±0 and 1, in blocks whose
    first value is 1.0 (``quantize.quantize`` divides by the block's largest |x|: x kept as is)."""
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec

    table = quantize.dynamic_map(signed).numpy()
    thresholds, _ = lowprec_codec.code_tables(signed)
    torch.manual_seed(4)
    spread = (torch.rand(2**14) * torch.logspace(-9, 0, 2**14)).numpy()
    edges = np.concatenate([table, thresholds[:-1], np.nextafter(thresholds[:-1], -np.inf)])
    mirrored = -edges if signed else edges
    values = np.concatenate([edges, mirrored, spread, -spread if signed else spread])
    values = np.concatenate([values, [0.0, -0.0, 1.0]])
    values = np.clip(values, -1.0 if signed else 0.0, 1.0).astype(np.float32)
    padded = np.concatenate([values, np.zeros(-len(values) % 256, np.float32)])
    blocks = padded.reshape(-1, 256).copy()
    blocks[:, 0] = 1.0
    expected, _ = quantize.quantize(torch.from_numpy(blocks), signed)
    return blocks.reshape(-1), expected.numpy().reshape(-1)


@pytest.mark.parametrize("signed", [True, False])
def test_the_kernels_code_lookup_is_the_references_nearest_code(signed: bool) -> None:
    """At every map entry, at every threshold and one float32 below it, and on values over nine
    decades, the kernel's lookup gives ``quantize.quantize``'s code (searchsorted + tie rule)."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec

    @numba.njit
    def encode_all(values, thresholds, bucket, out):
        for i in range(values.shape[0]):
            out[i] = lowprec_codec.encode8(values[i], thresholds, bucket)

    thresholds, bucket = lowprec_codec.code_tables(signed)
    values, expected = _code_cases(signed)
    codes = np.empty(values.size, np.uint8)
    encode_all(values, thresholds, bucket, codes)
    assert np.array_equal(codes, expected)
    nan = np.empty(1, np.uint8)
    encode_all(np.array([np.nan], np.float32), thresholds, bucket, nan)
    assert nan[0] == 255  # where torch.searchsorted sorts NaN


@pytest.mark.parametrize("scalar", [False, True], ids=["vector", "scalar-fallback"])
def test_the_kernels_vector_encoding_is_the_references_nearest_code(
    scalar: bool, monkeypatch
) -> None:
    """``encode8_many`` (16 codes at a time by the per-decade arithmetic, the flagged ones by the
    table) gives ``quantize.quantize``'s code on the same values, NaN included; without AVX-512
    (forced here) every value takes the table lookup."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec

    monkeypatch.setattr(lowprec_codec, "FORCE_SCALAR_ENCODE", scalar)

    @numba.njit  # compiled here, after the flag is set: codegen reads it
    def encode_all(values, thresholds, bucket, linear, out):
        lowprec_codec.encode8_many(values, out, thresholds, bucket, linear)

    for signed in (True, False):
        thresholds, bucket = lowprec_codec.code_tables(signed)
        linear = lowprec_codec.linear_code_tables(signed)
        values, expected = _code_cases(signed)
        values[-5] = np.nan
        expected[-5] = 255  # where torch.searchsorted sorts NaN
        codes = np.empty(values.size, np.uint8)
        encode_all(values, thresholds, bucket, linear, codes)
        assert np.array_equal(codes, expected)


@pytest.mark.parametrize("portable", [False, True], ids=["native", "portable"])
def test_the_kernels_block_decoding_is_the_table_lookup(portable: bool, monkeypatch) -> None:
    """``decode8_block`` (VBMI byte permutes where the CPU has them, else a masked gather) gives
    ``map[code] · a_b`` bit for bit: every code of both maps, in blocks of shuffled codes, with
    block maxima over 40 decades (subnormal products included) and 1e-12 (the smallest)."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec

    monkeypatch.setattr(lowprec_codec, "FORCE_PORTABLE_DECODE", portable)

    @numba.njit  # compiled here, after the flag is set: codegen reads it
    def decode_blocks(table, codes, scales, out):
        for b in range(scales.shape[0]):
            lowprec_codec.decode8_block(
                table, codes[256 * b : 256 * b + 256], scales[b], out[256 * b : 256 * b + 256]
            )

    rng = np.random.default_rng(7)
    scales = np.concatenate([10.0 ** rng.uniform(-38, 2, 14), [1e-12, 1.0]]).astype(np.float32)
    codes = np.concatenate([rng.permutation(256) for _ in scales]).astype(np.uint8)
    for signed in (True, False):
        table = quantize.dynamic_map(signed).numpy()
        out = np.empty(codes.size, np.float32)
        decode_blocks(table, codes, scales, out)
        expected = table[codes] * np.repeat(scales, 256)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_the_code_check_of_the_benchmark_finds_no_difference(capsys) -> None:
    """``benchmarks/low_precision.py --check-codes`` (run with stride 7 for the docs) on a
    coarse stride: it runs, compares both maps, and finds the kernel's codes equal."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "low_precision.py"
    spec = importlib.util.spec_from_file_location("low_precision_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main(["--check-codes", "1000003"]) == 0
    out = capsys.readouterr().out
    assert "signed map: 2,147 values, 0 differences" in out
    assert "unsigned map: 2,147 values, 0 differences" in out


@pytest.mark.parametrize("scalar", [False, True], ids=["vector", "scalar-fallback"])
def test_the_kernels_block_coding_without_division_is_the_references_code(
    scalar: bool, monkeypatch
) -> None:
    """``encode8_block_exact`` codes x · fl(1/max) and divides only the flagged vectors: on
    ``_code_cases``'s values scaled by maxima whose reciprocal rounds (x = fl(s·M), so x / M
    and x · fl(1/M) differ in the last bits near every threshold), by a huge maximum (2¹¹⁰:
    all divided) and by 1e-12, and on a block holding NaN, its codes and ``largest_magnitude_bits``'
    maximum are ``quantize.quantize``'s on the same blocks."""
    import numba
    import numpy as np

    from optimlab.optim.kernels import lowprec_codec

    monkeypatch.setattr(lowprec_codec, "FORCE_SCALAR_ENCODE", scalar)

    @numba.njit  # compiled here, after the flag is set: codegen reads it
    def encode_blocks(blocks, thresholds, bucket, linear, signed, codes, maxima):
        for b in range(blocks.shape[0]):
            scale = lowprec_codec.bits_float(lowprec_codec.largest_magnitude_bits(blocks[b]))
            scale = max(scale, np.float32(1e-12)) if scale == scale else scale
            maxima[b] = scale
            lowprec_codec.encode8_block_exact(
                blocks[b], scale, codes[b], thresholds, bucket, linear, signed
            )

    for signed in (True, False):
        thresholds, bucket = lowprec_codec.code_tables(signed)
        linear = lowprec_codec.linear_code_tables(signed)
        values, _ = _code_cases(signed)
        parts = []
        for peak in (0.7310585, 3.1415927e-3, 123.456, 2.0**110, 1e-12):
            top = np.float32(peak)
            parts.append(np.clip(values * top, -top, top).reshape(-1, 256))
        blocks = np.concatenate(parts)
        blocks[-1, 3] = np.nan  # the whole block's maximum is NaN: every code 255
        codes = np.empty(blocks.shape, np.uint8)
        maxima = np.empty(len(blocks), np.float32)
        encode_blocks(blocks, thresholds, bucket, linear, signed, codes, maxima)
        expected, expected_maxima = quantize.quantize(torch.from_numpy(blocks), signed)
        assert np.array_equal(maxima, expected_maxima.numpy(), equal_nan=True)
        assert np.array_equal(codes, expected.numpy())
