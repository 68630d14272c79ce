"""Every invalid input raises a clear error that names the argument, the value and what is allowed."""

from __future__ import annotations

import math

import pytest
import torch

import optimlab
from optimlab.optim.registry import REGISTRY


def _param() -> list[torch.Tensor]:
    return [torch.zeros(3, requires_grad=True)]


def _accepts(name: str, argument: str) -> bool:
    return argument in REGISTRY[name].cls.default_hyperparameters()


# (argument, bad value, fragment of the allowed range in the message)
BAD_VALUES = [
    ("lr", -0.1, "[0, inf)"),
    ("lr", math.nan, "[0, inf)"),
    ("lr", math.inf, "[0, inf)"),
    ("lr", "0.1", "a real number"),
    ("lr", torch.tensor([0.1, -1.0]), "every value"),
    ("betas", (0.9, 1.0), "[0, 1)"),
    ("betas", (-0.1, 0.999), "[0, 1)"),
    ("betas", (0.9,), "a pair"),
    ("betas", (math.nan, 0.9), "[0, 1)"),
    ("eps", 0.0, "(0, inf)"),
    ("eps", -1e-8, "(0, inf)"),
    ("alpha", 1.5, "[0, 1]"),
    ("alpha", -0.1, "[0, 1]"),
    ("rho", 1.01, "[0, 1]"),
    ("rho", math.nan, "[0, 1]"),
    ("momentum", -0.9, "[0, inf)"),
    ("dampening", -0.1, "[0, 1]"),
    ("weight_decay", -1e-4, "[0, inf)"),
    ("lr_decay", -0.01, "[0, inf)"),
    ("initial_accumulator_value", -0.1, "[0, inf)"),
    ("momentum_decay", -0.004, "[0, inf)"),
    ("centered", "yes", "True or False"),
    ("amsgrad", 1, "True or False"),
    ("maximize", None, "True or False"),
    ("convention", "tensorflow", "'torch', 'keras'"),
    ("nonfinite", "ignore", "'propagate', 'skip'"),
    ("impl", "cuda", "'auto', 'fused', 'reference'"),
]

#: (optimizer, argument) whose range differs from the table's
ALLOWED_ELSEWHERE = {
    ("schedulefree-sgd", "momentum"): "(0, 1)",
    # three betas (beta1, beta2, beta3): "a triple ..., each in [0, 1)"
    ("adan", "betas"): "[0, 1)",
    ("ademamix", "betas"): "[0, 1)",
    ("ademamix", "alpha"): "[0, inf)",
}
#: (optimizer, argument, value) that are valid there: AdEMAMix's alpha is a weight in [0, inf)
VALID_ELSEWHERE = {("ademamix", "alpha", 1.5)}

CASES = [
    pytest.param(name, argument, value, allowed, id=f"{name}-{argument}-{value!r}")
    for name in REGISTRY
    for argument, value, allowed in BAD_VALUES
    if argument in ("weight_decay", "maximize", "convention", "nonfinite", "impl")
    or _accepts(name, argument)
    if (name, argument, value) not in VALID_ELSEWHERE
]


@pytest.mark.parametrize(("name", "argument", "value", "allowed"), CASES)
def test_bad_hyperparameter_names_argument_value_and_range(
    name: str, argument: str, value: object, allowed: str
) -> None:
    with pytest.raises(ValueError) as error:
        optimlab.create(name, _param(), **{argument: value})
    message = str(error.value)
    assert argument in message
    # Schedule-Free SGD's momentum must lie in (0, 1) (the interpolation divides by it)
    allowed = ALLOWED_ELSEWHERE.get((name, argument), allowed)
    assert allowed in message
    assert REGISTRY[name].cls.__name__ in message


@pytest.mark.parametrize("name", list(REGISTRY))
def test_bad_value_in_a_param_group_is_rejected(name: str) -> None:
    optimizer = optimlab.create(name, _param())
    with pytest.raises(ValueError, match=r"lr=-1"):
        optimizer.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0})


def test_unknown_optimizer_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        optimlab.create("adamw2", _param())
    for name in optimlab.list_optimizers():
        assert name in str(error.value)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_empty_parameter_list(name: str) -> None:
    with pytest.raises(ValueError, match="empty parameter list"):
        optimlab.create(name, [])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_parameter_given_twice(name: str) -> None:
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="given twice"):
        optimlab.create(name, [p, p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optimlab.create(name, [{"params": [p]}, {"params": [p]}])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_parameter(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=f"dtype {dtype}"):
        optimlab.Adam([torch.zeros(3, dtype=dtype)])


def test_single_tensor_instead_of_iterable() -> None:
    with pytest.raises(TypeError, match=r"pass \[tensor\]"):
        optimlab.SGD(torch.zeros(3, requires_grad=True), lr=0.1)


@pytest.mark.parametrize("name", ["nag"])
def test_nesterov_needs_momentum_and_no_dampening(name: str) -> None:
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        optimlab.create(name, _param(), momentum=0.0)
    with pytest.raises(ValueError, match=r"dampening=0\.5"):
        optimlab.create(name, _param(), dampening=0.5)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_sparse_gradients_are_refused(name: str) -> None:
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = optimlab.create(name, embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        optimizer.step()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_param_group_without_params_gets_the_class_value_error(name: str) -> None:
    """A Python param group with no 'params' key: the class's own ValueError, not KeyError."""
    cls = REGISTRY[name].cls
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: parameter group 0 has no 'params'"):
        cls([{"lr": 0.1}])
    optimizer = cls([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match=r"parameter group 1 has no 'params' key \(keys: 'lr'\)"):
        optimizer.add_param_group({"lr": 0.1})
