"""Adding an optimizer: a throwaway one, defined and registered here, with no other edit.

It mirrors the walkthrough of docs/contributing.md.  Sign descent (signSGD, Bernstein et al.
2018, θ ← θ − η·sign(g)) has no torch.optim or Keras twin and no fused kernel: once registered it
appears in `optimlab list`, `list_optimizers()` (so in the lab's and compare's default sets) and
the generated docs tables, and the generic tests run on it — those that need a torch.optim twin
skip with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import pytest
import torch

import optimlab
import tests.test_api as api
import tests.test_convergence as convergence
import tests.test_state_dict as state_dict
import tests.test_torch_parity as torch_parity
import tests.test_validation as validation
from optimlab.cli import main
from optimlab.optim import doc_tables
from optimlab.optim.base import Optimizer, scaled_sub_
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.hyperparameters import NON_NEGATIVE
from optimlab.optim.kernels.common import decayed_gradient
from optimlab.optim.kernels.skeleton import (
    coefficient_layout,
    flag_layout,
    fused_kernel,
    indices,
    prologue,
)
from optimlab.optim.kernels.spec import KernelSpec, common_coefficients, common_flags
from optimlab.optim.registry import registered

NAME = "sign-descent"


class SignDescent(Optimizer):
    """θ ← θ − η·sign(g)."""

    name = NAME
    DEFAULTS = {"torch": {"lr": 1e-2}, "keras": {"lr": 1e-2}}
    RANGES = {"lr": NON_NEGATIVE}
    COUNTS_STEPS = False

    def __init__(self, params, lr=None, weight_decay=0.0, **options: Any) -> None:
        super().__init__(params, {"lr": lr}, weight_decay=weight_decay, **options)

    @staticmethod
    def reference_rule(param, grad, state, group, step) -> None:
        # torch.sign(nan) is 0: keep the NaN, so a non-finite gradient propagates as in
        # torch.optim (the generic nonfinite test caught this)
        scaled_sub_(param, torch.where(grad.isnan(), grad, grad.sign()), group["lr"])


INFO = OptimizerInfo(
    name=NAME,
    cls=SignDescent,
    title="Sign descent",
    family="direction",
    rule="θ ← θ − η·sign(g)",
    improves="direction (the gradient's sign only)",
    samples=({"maximize": True},),
    convergence=Convergence(3e-3, (1e-3, 3000, 0.1)),
)

#: the generic tests (test function, its arguments besides the name); each takes a registry name
GENERIC: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
    (api.test_create_builds_the_registered_class_with_hyperparameters, ()),
    (api.test_defaults_follow_the_convention, ()),
    (api.test_closure_add_param_group_zero_grad_and_params_without_grad, ()),
    (api.test_half_precision_parameters_keep_float32_state, (torch.bfloat16,)),
    (api.test_nonfinite_default_propagates_like_torch, ()),
    (api.test_nonfinite_skip_leaves_group_untouched_and_counts, ()),
    (api.test_tensor_lr_gives_each_row_its_own_learning_rate, ()),
    (api.test_foreach_true_is_the_reference_rule_and_fused_true_the_kernel, ()),
    (validation.test_bad_value_in_a_param_group_is_rejected, ()),
    (validation.test_empty_parameter_list, ()),
    (validation.test_parameter_given_twice, ()),
    (validation.test_sparse_gradients_are_refused, ()),
    (validation.test_param_group_without_params_gets_the_class_value_error, ()),
    (state_dict.test_resume_is_bit_for_bit, ({}, torch.float32)),
    (torch_parity.test_decoupled_weight_decay_is_a_multiplicative_shrink, ()),
    (convergence.test_convex_quadratic_reaches_its_minimum, ()),
]
#: generic tests against torch.optim: they skip, saying why
NEED_A_TORCH_TWIN: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
    (api.test_torch_defaults_equal_torch_optim_defaults, ()),
    (api.test_named_parameters_like_torch_optim, ()),
    (torch_parity.test_matches_torch_optim, ({}, torch.float64, "reference")),
    (torch_parity.test_reference_is_bit_for_bit_torch_optim_under_the_default_dtype, ({},)),
    (state_dict.test_torch_state_dict_loads_and_continues_like_torch, ()),
    (state_dict.test_optimlab_state_dict_loads_into_torch_optim, ()),
]


@pytest.fixture
def sign_descent():
    with registered(INFO) as info:
        yield info
    assert NAME not in optimlab.list_optimizers()  # unregistered again


def test_registering_lists_it_everywhere(sign_descent, capsys) -> None:
    assert optimlab.list_optimizers()[-1] == NAME
    # in `--optimizers all` and `modern` (compare's and the lab's), not in the classic default
    from optimlab.lab.protocol import contenders
    from optimlab.landscapes.experiment import build_configs
    from optimlab.optim.registry import preset_optimizers

    assert NAME in preset_optimizers("modern") and NAME not in preset_optimizers("classic")
    assert NAME in [c.name for c in contenders("all")]
    assert NAME in {config.name for config in build_configs("all")}
    assert type(optimlab.create(NAME, [torch.zeros(1, requires_grad=True)])) is SignDescent
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == NAME)
    assert row["torch_equivalent"] is None and row["rule"] == INFO.rule
    assert main(["list"]) == 0
    assert NAME in capsys.readouterr().out
    assert f"`{NAME}`" in doc_tables.block("optimizers")
    assert f"`{NAME}`" in doc_tables.block("arguments")


@pytest.mark.parametrize(("test", "arguments"), GENERIC, ids=[test.__name__ for test, _ in GENERIC])
def test_generic_tests_cover_it(sign_descent, test, arguments) -> None:
    test(NAME, *arguments)


@pytest.mark.parametrize(
    ("test", "arguments"), NEED_A_TORCH_TWIN, ids=[test.__name__ for test, _ in NEED_A_TORCH_TWIN]
)
def test_tests_against_torch_optim_skip_saying_why(sign_descent, test, arguments) -> None:
    with pytest.raises(pytest.skip.Exception, match=f"{NAME} declares no torch.optim twin"):
        test(NAME, *arguments)


def test_the_rule_is_sign_descent(sign_descent) -> None:
    """An independent check of the throwaway rule itself (closed form)."""
    p = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    optimizer = optimlab.create(NAME, [p], lr=0.25)
    p.grad = torch.tensor([3.0, -0.001, 0.0])
    optimizer.step()
    assert p.tolist() == [0.75, -0.75, 0.5]


def test_without_a_kernel_fused_says_so(sign_descent) -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="declares no fused kernel; allowed: impl='auto'"):
        optimlab.create(NAME, [p], impl="fused")  # at construction, not at the first step


# The walkthrough's optional kernel (docs/contributing.md, step 2): the element loop only, the
# skeleton and the named layouts do the rest.
Coefficients = coefficient_layout("sign_descent", "lr")
Flags = flag_layout("sign_descent")
C = indices(Coefficients)


@numba.njit(inline="always")
def _sign_descent(p, g, state, start, stop, k, flags, first):
    maximize, l2, decoupled, wd, decay = prologue(k, flags)
    minus_lr = -k[C.lr]
    for j in range(p.shape[0]):
        pj, gj = decayed_gradient(p[j], g[j], maximize, l2, decoupled, wd, decay)
        p[j] = pj + minus_lr * np.sign(gj)


SIGN_DESCENT_SPEC = KernelSpec(
    kernel=fused_kernel(_sign_descent, "sign_descent"),
    tensor_state=lambda group: (),
    coefficients=lambda group, scalars: Coefficients(*common_coefficients(group), lr=group["lr"]),
    flags=lambda group: Flags(*common_flags(group)),
)


class FusedSignDescent(SignDescent):
    kernel = staticmethod(lambda: SIGN_DESCENT_SPEC)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"maximize": True},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_kernel_is_its_element_loop_only(options, dtype) -> None:
    """The skeleton-built kernel steps exactly as the reference rule (sign(g) η is exact)."""
    torch.manual_seed(0)
    start = torch.randn(3000, dtype=dtype)
    fused_p = start.clone().requires_grad_()
    reference_p = start.clone().requires_grad_()
    fused = FusedSignDescent([fused_p], lr=0.25, impl="fused", **options)
    reference = FusedSignDescent([reference_p], lr=0.25, impl="reference", **options)
    for _ in range(3):
        grad = torch.randn(3000, dtype=dtype)
        fused_p.grad, reference_p.grad = grad.clone(), grad.clone()
        fused.step()
        reference.step()
    assert torch.equal(fused_p, reference_p)
    # and the closed form
    p = torch.tensor([1.0, -1.0, 0.5], dtype=dtype, requires_grad=True)
    p.grad = torch.tensor([3.0, -0.001, 0.0], dtype=dtype)
    FusedSignDescent([p], lr=0.25, impl="fused").step()
    assert p.tolist() == [0.75, -0.75, 0.5]
