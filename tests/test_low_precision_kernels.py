"""The low-precision kernels of AdaMax, NAdam, RMSprop and SGD/Momentum/NAG (``lowprec_rules``),
the switch back to float32 state mid-run, and ``min_quantized_size``.

Each kernel runs its float32 kernel's element loop on decoded blocks, so it must store what the
reference path (decode, the algorithm's reference rule in float32, encode) stores: every 8-bit
code, block maximum and bfloat16 state equal, the weights within float32 rounding. One exception,
measured and bounded below: RMSprop's momentum buffer, which the float32 kernel itself computes
one rounding apart from torch's ``mul_().addcdiv_()`` (``tests/test_kernels.py`` tolerates it).
"""

from __future__ import annotations

import pytest
import torch

from optimlab.optim.low_precision import quantize
from optimlab.optim.registry import get_info
from tests.test_low_precision_fused import run_optimizer

#: quantized (16 blocks), too small (stays float32), not whole blocks (float32)
SHAPES = ((32, 128), (7,), (300,))
STEPS, LR = 12, 1e-2


#: one torch thread (the fixture is in conftest.py): threads only contend on the shared cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _run(name: str, impl: str, dtype=torch.float32, steps: int = STEPS, shapes=SHAPES, **options):
    """`steps` steps of optimizer `name` (tests/test_low_precision_fused.py's runner)."""
    return run_optimizer(name, impl, dtype, steps, shapes, **options)


CASES = [
    pytest.param("adamax", {}, id="adamax"),
    pytest.param(
        "adamax",
        {"convention": "keras", "shapes": ((70_000 + 256 * 3,),)},
        id="adamax-keras-multichunk",
    ),
    pytest.param("adamax", {"maximize": True, "weight_decay": 0.1}, id="adamax-l2-maximize"),
    pytest.param("nadam", {}, id="nadam"),
    pytest.param("nadam", {"decoupled_weight_decay": True, "weight_decay": 0.1}, id="nadamw"),
    pytest.param("nadam", {"convention": "keras"}, id="nadam-keras"),
    pytest.param("rmsprop", {}, id="rmsprop"),
    pytest.param(
        "rmsprop", {"centered": True, "maximize": True, "weight_decay": 0.1}, id="rmsprop-centered"
    ),
    pytest.param("rmsprop", {"centered": True, "momentum": 0.9}, id="rmsprop-centered-momentum"),
    pytest.param(
        "rmsprop", {"convention": "keras", "centered": True, "momentum": 0.5}, id="rmsprop-keras"
    ),
    pytest.param("momentum", {"dampening": 0.1, "weight_decay": 0.1}, id="momentum-dampening"),
    pytest.param("nag", {"maximize": True}, id="nag-maximize"),
    pytest.param("nag", {"convention": "keras"}, id="nag-keras"),
]


def _rmsprop_momentum(name: str, options: dict) -> bool:
    return name == "rmsprop" and options.get("momentum", 0) > 0


@pytest.mark.parametrize("state_dtype", ["int8", "bf16", "fp8"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_kernel_stores_what_the_reference_stores(
    name: str, options: dict, state_dtype: str
) -> None:
    reference, expected = _run(name, "reference", state_dtype=state_dtype, **options)
    fused, actual = _run(name, "fused", state_dtype=state_dtype, **options)
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(reference, fused):
        # an ulp of the weight and of the update per step (RMSprop's first steps move lr·g/√v,
        # up to lr/√(1 − α) = 10 lr)
        update = 10 * LR if name == "rmsprop" else LR
        bound = STEPS * eps * (a.abs() + update)
        if _rmsprop_momentum(name, options):
            # a buffer code one level apart (below) moves the weight by lr · one level once:
            # measured 1.23× the rounding bound (int8), allowed 4×
            bound = 4 * bound
        if state_dtype == "fp8" and options.get("centered"):
            # e4m3's 3 mantissa bits cancel v − ḡ² to 0 in a few elements, which then step by
            # lr·g/ε (to −8,262 in 20 steps) and amplify float32 ordering differences: measured
            # 5.8e-4 relative there with every code and scale equal (asserted below)
            bound = bound + 1e-3 * a.detach().abs()
        assert torch.all((a - b).abs() <= bound), ((a - b).abs() / bound).max()
        mine, theirs = actual.state[b], expected.state[a]
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            other = mine[key]
            if not isinstance(value, torch.Tensor):
                assert other == value, key
                continue
            assert other.dtype == value.dtype and other.shape == value.shape, key
            if key.startswith("momentum_buffer") and _rmsprop_momentum(name, options):
                continue  # bounded below: the float32 kernel's own rounding differs
            if value.dtype == torch.float8_e4m3fn:  # (compared as bits: NaN codes included)
                other, value = other.view(torch.uint8), value.view(torch.uint8)
            if value.dtype in (torch.uint8, torch.bfloat16) or key.endswith(("_absmax", "_scale")):
                assert torch.equal(other, value), (key, (other != value).float().mean())
            else:  # float32 state of small tensors, step, mu_product: float32 rounding
                torch.testing.assert_close(other, value, rtol=1e-5, atol=1e-7)
        if _rmsprop_momentum(name, options) and mine["momentum_buffer"].dtype == torch.uint8:
            codes = (mine["momentum_buffer"], mine["momentum_buffer_absmax"])
            gap = quantize.level_gap(
                theirs["momentum_buffer"], theirs["momentum_buffer_absmax"], True
            )
            decoded = quantize.dequantize(*codes, True)
            reference_buffer = quantize.dequantize(
                theirs["momentum_buffer"], theirs["momentum_buffer_absmax"], True
            )
            assert torch.all((decoded - reference_buffer).abs() <= gap)  # one level at most
            assert (mine["momentum_buffer"] != theirs["momentum_buffer"]).float().mean() <= 0.01


@pytest.mark.parametrize("name", ["adamax", "nadam", "rmsprop", "momentum", "sgd"])
def test_bfloat16_weights_round_to_nearest_as_the_reference(name: str) -> None:
    options = {"centered": True, "momentum": 0.9} if name == "rmsprop" else {}
    reference, _ = _run(name, "reference", torch.bfloat16, steps=6, state_dtype="int8", **options)
    fused, _ = _run(name, "fused", torch.bfloat16, steps=6, state_dtype="int8", **options)
    for a, b in zip(reference, fused):
        assert b.dtype == torch.bfloat16
        # rounded from float32 results that agree to an ulp: equal but at a rounding boundary
        assert (a != b).float().mean().item() <= 1e-3


@pytest.mark.parametrize("name", ["adamax", "nadam", "rmsprop", "nag"])
def test_auto_takes_the_kernel_and_its_stochastic_rounding_is_seeded(name: str) -> None:
    def run(impl: str, seed: int = 0):
        options = {"stochastic_rounding": True, "rounding_seed": seed, "state_dtype": "int8"}
        return _run(name, impl, torch.bfloat16, steps=3, **options)[0]

    auto, fused, reference = run("auto"), run("fused"), run("reference")
    # the kernel's random bits are its own: auto equals fused bit for bit, not the reference
    assert all(torch.equal(a, f) for a, f in zip(auto, fused))
    assert not all(torch.equal(a, r) for a, r in zip(auto, reference))
    assert not all(torch.equal(a, o) for a, o in zip(auto, run("auto", seed=1)))


def test_kernel_stochastic_rounding_is_unbiased() -> None:
    """SGD's update −lr·g is a quarter ulp or less for bfloat16 weights in [0.5, 1): the mean of
    20,480 stochastically rounded updates is the float64 update within 4 standard errors, where
    round-to-nearest drops it."""
    n, lr = 20_480, 1e-3
    start = torch.linspace(0.5, 0.99, n, dtype=torch.float64).to(torch.bfloat16)
    moved = {}
    for stochastic in (False, True):
        w = torch.nn.Parameter(start.clone())
        optimizer = get_info("momentum").cls(
            [w], lr=lr, momentum=0.9, state_dtype="int8", stochastic_rounding=stochastic
        )
        w.grad = torch.full_like(w, -1.0)
        optimizer.step()  # torch's first step: buffer = g, w -= lr·g
        moved[stochastic] = w.detach().double() - (start.double() + lr)
    standard_error = moved[True].std() / n**0.5
    assert abs(moved[True].mean()) <= 4 * standard_error
    assert abs(moved[False].mean()) > 50 * standard_error


def test_fused_without_a_kernel_is_still_a_clear_error() -> None:
    adam = get_info("adam").cls

    class NoKernel(adam):  # declares low-precision state, but not the kernel
        low_precision_kernel = None

    with pytest.raises(
        ValueError,
        match=r"NoKernel: invalid impl='fused' with state_dtype='int8'; NoKernel has no fused "
        r"kernel for low-precision state",
    ):
        NoKernel([torch.nn.Parameter(torch.randn(3))], impl="fused", state_dtype="int8")


# ---- the switch back to float32 state -------------------------------------------------------------
LOW_PRECISION = ["adam", "adamw", "adamax", "nadam", "rmsprop", "momentum", "nag"]


def _options(name: str) -> dict:
    return {"centered": True, "momentum": 0.9} if name == "rmsprop" else {}


def _decoded(state: dict) -> dict:
    """The float32 state an encoded state stands for (codes × block maximum, bf16 widened)."""
    from optimlab.optim.low_precision.state import SIGNED_STATE

    out = {}
    for key, value in state.items():
        if key.endswith("_absmax"):
            continue
        if key + "_absmax" in state:
            value = quantize.dequantize(value, state[key + "_absmax"], SIGNED_STATE[key])
        elif isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
            value = value.float()
        out[key] = value.clone() if isinstance(value, torch.Tensor) else value
    return out


def _low_then_float32(name: str, state_dtype: str, switch: str):
    """Two int8/bf16 steps, then float32 state (`switch`: the group's option, or a state_dict
    loaded into a float32 optimizer), one more step with impl='auto'; and the same third step
    from the decoded state with the float32 reference rule."""
    torch.manual_seed(5)
    w = torch.nn.Parameter(torch.randn(32, 128))
    low = get_info(name).cls([w], lr=LR, state_dtype=state_dtype, **_options(name))
    for _ in range(2):
        w.grad = torch.randn_like(w)
        low.step()
    assert any(k.endswith("_absmax") for k in low.state[w]) == (state_dtype == "int8")
    start, expected_state = w.detach().clone(), _decoded(low.state[w])
    grad = torch.randn_like(w)
    if switch == "option":
        optimizer, param = low, w
        low.param_groups[0]["state_dtype"] = "float32"
    else:
        param = torch.nn.Parameter(start.clone())
        optimizer = get_info(name).cls([param], lr=LR, **_options(name))
        optimizer.load_state_dict(low.state_dict())
    param.grad = grad.clone()
    optimizer.step()  # impl="auto": the float32 fused kernel
    check = torch.nn.Parameter(start.clone())
    reference = get_info(name).cls([check], lr=LR, impl="reference", **_options(name))
    reference.state[check] = expected_state
    check.grad = grad.clone()
    reference.step()
    return param, optimizer.state[param], check, reference.state[check]


@pytest.mark.parametrize("switch", ["option", "state_dict"])
@pytest.mark.parametrize("name", LOW_PRECISION)
def test_switching_to_float32_state_dequantizes_it(name: str, switch: str) -> None:
    param, state, check, expected = _low_then_float32(name, "int8", switch)
    assert not any(k.endswith("_absmax") for k in state)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert state[key].dtype == torch.float32, key
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-7)
    # (before the fix: the float32 kernel read the codes 0..255 as the moments)
    torch.testing.assert_close(param.detach(), check.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "nag"])
def test_switching_from_bf16_to_float32_state_widens_it(name: str) -> None:
    param, state, check, _ = _low_then_float32(name, "bf16", "option")
    assert all(v.dtype != torch.bfloat16 for v in state.values() if isinstance(v, torch.Tensor))
    torch.testing.assert_close(param.detach(), check.detach(), rtol=1e-5, atol=1e-6)


# ---- min_quantized_size -----------------------------------------------------------------------------
def test_min_quantized_size_reaches_small_layers() -> None:
    from optimlab.spec import parse_optimizer_spec

    ((name, options),) = parse_optimizer_spec("momentum:state_dtype=int8:min_quantized_size=256")
    assert options["min_quantized_size"] == 256
    for size, stored in ((None, torch.float32), (256, torch.uint8)):
        w = torch.nn.Parameter(torch.randn(32, 64))  # 2,048 elements: under torchao's 4,096
        extra = {} if size is None else {"min_quantized_size": size}
        for impl in ("fused", "reference"):
            optimizer = get_info(name).cls([w], state_dtype="int8", impl=impl, **extra)
            w.grad = torch.randn_like(w)
            optimizer.step()
            assert optimizer.state[w]["momentum_buffer"].dtype == stored, (size, impl)


@pytest.mark.parametrize("value", [0, 2.5, True])
def test_bad_min_quantized_size_is_a_clear_error(value) -> None:
    with pytest.raises(ValueError, match=r"Adam: invalid min_quantized_size=.*an integer >= 1"):
        get_info("adam").cls([torch.nn.Parameter(torch.randn(3))], min_quantized_size=value)
