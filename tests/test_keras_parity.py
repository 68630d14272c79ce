"""Parity with Keras 3: every algorithm under ``convention="keras"``, both float dtypes.

For each optimizer in the registry, with the Keras defaults and with each option set in its
``keras_samples``, an optimlab optimizer (its reference rule, the ground truth; the fused kernel
with the defaults) and its ``keras.optimizers`` twin (Keras 3, ``KERAS_BACKEND=torch``) start
from the same matrix, vector and scalar; for 150 steps both receive the torch autograd gradient
of a non-quadratic, coupled loss at optimlab's current point, and the parameters must agree to
1e-10 (float64) or 1e-5 (float32) relative to each tensor's scale.

Every hyperparameter is resolved from the optimlab parameter group and passed explicitly to both
sides, so a default that differs between the two libraries cannot hide behind an omitted argument.
Keras keeps its learning rate in ``keras.config.floatx()``; the float64 runs set floatx to float64
so that Keras does not round the learning rate to float32.

The helpers (``keras_kwargs``, ``run_against_keras``) are also used by
``benchmarks/parity_table.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (conftest does too)

import keras
import pytest
import torch

from optimlab.optim.registry import REGISTRY, OptimizerInfo
from tests.conftest import PARITY_PROPERTY
from tests.torch_reference import loss_fn, make_params

STEPS = 150
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}

#: optimlab (torch.optim) hyperparameter name -> Keras 3 constructor argument
KERAS_NAMES = {
    "lr": "learning_rate",
    "eps": "epsilon",
    "alpha": "rho",  # RMSprop's smoothing constant is torch's alpha and Keras's rho
    "rho": "rho",  # Adadelta's
    "momentum": "momentum",
    "nesterov": "nesterov",
    "centered": "centered",
    "amsgrad": "amsgrad",
    "initial_accumulator_value": "initial_accumulator_value",
}
#: options Keras has no argument for, with the value that reproduces what Keras hard-codes
#: (Keras's NAdam schedule 0.96^t is momentum_decay = 1)
NO_KERAS_ARGUMENT = {"dampening": 0.0, "lr_decay": 0.0, "momentum_decay": 1.0, "maximize": False}
#: optimlab-only switches that do not change the update rule (or are handled with another key)
NOT_HYPERPARAMETERS = {
    *("params", "param_names", "convention", "nonfinite", "impl", "decoupled_weight_decay"),
    *("foreach", "fused", "capturable", "differentiable"),  # torch.optim's switches
}


def keras_kwargs(info: OptimizerInfo, group: dict[str, Any]) -> dict[str, Any]:
    """The Keras 3 constructor arguments equivalent to an optimlab parameter group.

    Raises ValueError for a group that Keras cannot express: the torch convention, L2 (coupled)
    weight decay, a tensor learning rate, or an option whose value Keras hard-codes otherwise.
    """
    if group["convention"] != "keras":
        raise ValueError(f"convention={group['convention']!r}: only 'keras' has a Keras twin")
    kwargs: dict[str, Any] = {}
    for key, value in group.items():
        if key in NOT_HYPERPARAMETERS:
            continue
        if key == "betas":
            kwargs["beta_1"], kwargs["beta_2"] = value
        elif key == "weight_decay":
            if value == 0:
                continue  # Keras: weight_decay=None
            if not group["decoupled_weight_decay"]:
                raise ValueError(
                    f"weight_decay={value!r} with decoupled_weight_decay=False (L2 added to the "
                    f"gradient) has no Keras counterpart; Keras's weight_decay is decoupled"
                )
            kwargs["weight_decay"] = value
        elif key in NO_KERAS_ARGUMENT:
            if value != NO_KERAS_ARGUMENT[key]:
                raise ValueError(
                    f"{key}={value!r} has no Keras counterpart; Keras behaves as "
                    f"{key}={NO_KERAS_ARGUMENT[key]!r}"
                )
        elif key in KERAS_NAMES:
            kwargs[KERAS_NAMES[key]] = value
        else:
            raise ValueError(f"hyperparameter {key!r} has no known Keras counterpart")
    lr = kwargs["learning_rate"]
    if isinstance(lr, torch.Tensor):
        raise ValueError(f"lr={lr!r}: Keras takes a Python float learning rate, not a tensor")
    kwargs["learning_rate"] = float(lr)  # Keras rejects an int learning rate
    keras_class = keras_twin(info)
    accepted = inspect.signature(keras_class).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{keras_class.__name__} has no argument {unknown}")
    return kwargs


def keras_twin(info: OptimizerInfo) -> type:
    """The Keras 3 class the optimizer declares as its twin; skip, saying why, without one."""
    if info.keras_twin is None:
        pytest.skip(f"{info.name} declares no Keras 3 twin")
    return info.keras_twin()


@contextlib.contextmanager
def keras_floatx(dtype: torch.dtype) -> Iterator[None]:
    """Keras creates its learning-rate variable in floatx: make it the dtype under test."""
    previous = keras.config.floatx()
    keras.config.set_floatx(_dtype_name(dtype))
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gradients_at(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """torch autograd gradients of the test loss at `values` (copies; the inputs are untouched)."""
    points = [v.detach().clone().requires_grad_() for v in values]
    loss_fn(points).backward()
    return [p.grad for p in points]


def run_against_keras(
    info: OptimizerInfo,
    options: dict[str, Any],
    dtype: torch.dtype,
    steps: int = STEPS,
    seed: int = 0,
) -> tuple[float, float]:
    """Run optimlab (convention="keras") and Keras side by side for `steps` steps.

    Returns (worst relative difference between the two, how far optimlab moved from the start,
    relative), both as `relative_error` measures them.
    """
    hyperparameters = {**info.cls.default_hyperparameters("keras"), **options}
    with keras_floatx(dtype):
        start = make_params(dtype, seed)
        ours_params = [p.clone().requires_grad_() for p in start]
        ours = info.cls(ours_params, **hyperparameters)
        theirs = keras_twin(info)(**keras_kwargs(info, ours.param_groups[0]))
        variables = [keras.Variable(p.clone(), dtype=_dtype_name(dtype)) for p in start]
        for _ in range(steps):
            # One gradient, at optimlab's current point, fed to both: the comparison is of the
            # update rules, not of how the loss landscape amplifies a rounding difference.
            grads = _gradients_at(ours_params)
            for param, grad in zip(ours_params, grads):
                param.grad = grad.clone()
            ours.step()
            theirs.apply_gradients(zip(grads, variables))
        their_values = [v.value.detach() for v in variables]
        if any(v.dtype != dtype for v in their_values):
            raise AssertionError(f"Keras changed the dtype to {[v.dtype for v in their_values]}")
    return relative_error(ours_params, their_values, start), relative_error(
        ours_params, start, start
    )


def relative_error(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], start: list[torch.Tensor]
) -> float:
    """max over tensors of max|ours - theirs| / (the tensor's scale: max|theirs| or max|start|).

    The scale includes the start because several tensors converge to 0 here; relative to the
    final value alone, the same absolute rounding would look ever larger as they converge.
    NaN counts as infinitely wrong.
    """
    worst = 0.0
    for a, b, s in zip(ours, theirs, start, strict=True):
        a, b = a.detach(), b.detach()
        scale = max(float(b.abs().max()), float(s.abs().max()), 1e-30)
        error = float((a - b).abs().max()) / scale
        worst = max(worst, error) if error == error else float("inf")
    return worst


CASES = [
    pytest.param(name, options, id=f"{name}-{index}")
    for name, info in REGISTRY.items()
    for index, options in enumerate(({}, *info.keras_samples))
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_reference_rule_matches_keras(
    name: str, options: dict, dtype: torch.dtype, record_property
) -> None:
    """The reference rule is the ground truth: every option set, both dtypes."""
    error, moved = run_against_keras(REGISTRY[name], {**options, "impl": "reference"}, dtype)
    record_property(PARITY_PROPERTY, (name, _dtype_name(dtype), error))
    # Adadelta at Keras's default lr 1e-3 moves least: 2.4e-4 of the largest coordinate.
    assert moved > 1e-4, "the test must move the parameters to mean anything"
    assert error <= TOLERANCE[dtype], f"{name} {options}: relative error {error:.3g}"


@pytest.mark.slow  # 1-3 s each on a quiet machine: a fused step of these tiny tensors costs ms
@pytest.mark.parametrize(
    "name", [name for name, info in REGISTRY.items() if info.cls.kernel is not None]
)
def test_fused_kernel_matches_keras(name: str) -> None:
    """What users get by default (impl="auto" runs the fused kernel on CPU float tensors).

    Keras defaults in float64, where a wrong formula shows at 1e-10; the kernel's rounding in
    every option set and float32 is tests/test_kernels.py's comparison with the reference rule.
    """
    error, moved = run_against_keras(REGISTRY[name], {"impl": "fused"}, torch.float64)
    assert moved > 1e-4, "the test must move the parameters to mean anything"
    assert error <= TOLERANCE[torch.float64], f"{name}: relative error {error:.3g}"


#: defaults optimlab chooses on purpose over Keras's SGD ones (issue 2: `momentum` and `nag` are
#: Momentum 0.9 and Nesterov out of the box; Keras spells them SGD(momentum=0.9[, nesterov=True]))
DELIBERATE_DEFAULTS = {"momentum": {"momentum"}, "nag": {"momentum", "nesterov"}}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_keras_convention_defaults_are_kerass(name: str) -> None:
    """The parity runs pass every value to both sides, so the defaults are checked here."""
    info = REGISTRY[name]
    group = info.cls.default_hyperparameters("keras")
    signature = inspect.signature(keras_twin(info)).parameters  # skips without a Keras twin
    ours = keras_kwargs(info, group)
    theirs = {key: signature[key].default for key in ours}
    for key in DELIBERATE_DEFAULTS.get(name, ()):
        del ours[key], theirs[key]
    assert ours == theirs


def test_every_registered_optimizer_is_covered() -> None:
    assert {case.values[0] for case in CASES} == set(REGISTRY)
    assert keras.backend.backend() == "torch"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("adam", {"convention": "torch"}, "convention='torch': only 'keras' has a Keras twin"),
        ("adam", {"weight_decay": 0.1}, "weight_decay=0.1 with decoupled_weight_decay=False"),
        ("sgd", {"maximize": True}, "maximize=True has no Keras counterpart"),
        ("nadam", {"momentum_decay": 4e-3}, "momentum_decay=0.004 has no Keras counterpart"),
        ("adagrad", {"lr_decay": 0.1}, "lr_decay=0.1 has no Keras counterpart"),
        ("adam", {"lr": torch.tensor(0.1)}, "Keras takes a Python float learning rate"),
    ],
)
def test_keras_kwargs_refuses_what_keras_cannot_express(
    name: str, options: dict, message: str
) -> None:
    """A sample Keras cannot express must fail loudly, not be compared against something else."""
    info = REGISTRY[name]
    optimizer = info.cls(
        [torch.zeros(2, requires_grad=True)],
        **{**info.cls.default_hyperparameters("keras"), **options},
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        keras_kwargs(info, optimizer.param_groups[0])
