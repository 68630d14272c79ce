"""The fused kernels with a learning rate per member (issue 14, point 3).

A population's parameters are stacked (M, n) tensors and its rate an (M, 1) tensor
(``optimlab.optim.kernels.members``).  The independent reference for a member is the same kernel
stepping that member's row alone with its Python-number rate: the population must reproduce it
bit for bit (``torch.equal``), since each row runs the very element loop on the very
coefficients (float64 arithmetic on the rate rounds as Python's floats do) — every optimizer
with a kernel, every option set of the registry under both conventions, float32 and float64.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optimlab.cli import main
from optimlab.lab.population import steps_fused, train_population
from optimlab.lab.protocol import SUITES
from optimlab.optim.adam import Adam
from optimlab.optim.kernels import dispatch
from optimlab.optim.kernels.layout import CHUNK
from optimlab.optim.registry import REGISTRY, create, preset_optimizers
from optimlab.problems import get_problem
from tests.test_population import assert_same_trial, float64, specs_for

RATES = (1e-3, 3e-2, 0.7)
#: row sizes (a row spanning several chunks: test_rows_spanning_several_chunks)
ROWS = (12, 40)
STEPS = 4

FUSED_WITH_RATES = [
    name
    for name, info in REGISTRY.items()
    if info.cls.kernel is not None and info.cls.kernel().member_rates
]

CASES = [
    pytest.param(name, convention, options, id=f"{name}-{convention}-{i}")
    for name in FUSED_WITH_RATES
    for convention, samples in (
        ("torch", REGISTRY[name].samples),
        ("keras", REGISTRY[name].keras_samples),
    )
    for i, options in enumerate(({}, *samples))
]


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def draws(dtype: torch.dtype, rows=ROWS) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Start values (M, n) and gradients of each stacked parameter."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(len(RATES), n) for n in rows]
    start = [torch.randn(s, generator=generator, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=generator, dtype=dtype) for s in shapes] for _ in range(3)]
    return start, grads


def step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads, row=None) -> None:
    """STEPS steps; at step 2 the second parameter has no gradient (a subset of the group)."""
    for t in range(STEPS):
        for i, (p, g) in enumerate(zip(params, grads[t % len(grads)])):
            p.grad = None if (t == 2 and i == 1) else (g if row is None else g[row]).clone()
        optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "convention", "options"), CASES)
def test_a_population_steps_each_member_as_the_kernel_steps_it_alone(
    name, convention, options, dtype
):
    assert_members_step_alone(name, convention, options, dtype, ROWS)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_rows_spanning_several_chunks(name, monkeypatch):
    """A row longer than a chunk is cut into chunks within the row (the population runs the
    parallel kernel, each row alone the serial twin here: the same chunk function)."""
    monkeypatch.setattr(dispatch, "PARALLEL_FROM", 1 << 40)
    assert_members_step_alone(
        name, "torch", {"momentum": 0.9} if name == "sgd" else {}, torch.float32, (CHUNK + 17, 5)
    )


def assert_members_step_alone(name, convention, options, dtype, rows) -> None:
    start, grads = draws(dtype, rows)
    options = {**options, "convention": convention}
    stacked = [s.clone().requires_grad_() for s in start]
    rates = torch.tensor(RATES, dtype=torch.float64).view(-1, 1)
    # impl="fused": the kernel or an error (before per-member rates: "lr is a tensor")
    population = create(name, stacked, lr=rates, impl="fused", **options)
    step(population, stacked, grads)
    for r, lr in enumerate(RATES):
        alone = [s[r].clone().requires_grad_() for s in start]
        single = create(name, alone, lr=lr, impl="fused", **options)
        step(single, alone, grads, row=r)
        for i, (member, own) in enumerate(zip(stacked, alone)):
            assert torch.equal(member[r], own), (name, options, r, i)
            for key, value in single.state[own].items():
                if value.dim() > 0:  # step, NAdam's mu_product: shared scalars
                    assert torch.equal(population.state[member][key][r], value), (key, r, i)


def test_the_coefficients_are_computed_once_per_step_for_any_population_size():
    """No Python loop over members: one call of the coefficient function per step, M = 2 or 64."""
    calls = []
    spec = Adam.kernel()

    def counted(group, scalars):
        calls.append(1)
        return spec.coefficients(group, scalars)

    class CountedAdam(Adam):
        kernel = staticmethod(lambda: dataclasses.replace(spec, coefficients=counted))

    for members in (2, 64):
        calls.clear()
        param = torch.zeros(members, 5, requires_grad=True)
        rates = torch.linspace(1e-3, 1e-1, members, dtype=torch.float64).view(-1, 1)
        optimizer = CountedAdam([param], lr=rates, impl="fused")
        for _ in range(3):
            param.grad = torch.ones_like(param)
            optimizer.step()
        assert len(calls) == 3, members
        # and the rates reached the rows: the first step of Adam moves each by its rate
        assert torch.allclose(param[:, 0], -3 * rates.flatten().float(), rtol=1e-5)


@pytest.mark.parametrize(
    ("lr", "shape", "message"),
    [
        (torch.ones(4), (3, 4), "lr is a tensor of shape (4,) and parameter 0 has shape (3, 4)"),
        (torch.ones(3, 1), (4, 4), "lr is a tensor of shape (3, 1) and parameter 0 has shape"),
        (torch.ones(()), (3, 4), "lr is a tensor of shape ()"),
    ],
)
def test_a_rate_tensor_the_kernels_cannot_take_says_why(lr, shape, message):
    param = torch.zeros(shape, requires_grad=True)
    param.grad = torch.ones(shape)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create("adam", [param], lr=lr, impl="fused").step()


def test_which_populations_step_fused():
    leaves = [torch.zeros(3, 4, requires_grad=True)]
    rates = torch.ones(3, 1, dtype=torch.float64)
    assert steps_fused(create("adam", leaves, lr=rates))
    assert not steps_fused(create("adam", leaves, lr=rates, impl="reference"))
    # Schedule-Free's averaging weights depend on lr: its rates per member are the reference's
    assert not steps_fused(create("schedulefree-adamw", leaves, lr=rates))
    with pytest.raises(ValueError, match="takes a Python-number lr only"):
        param = torch.zeros(3, 4, requires_grad=True)
        param.grad = torch.ones(3, 4)
        create("schedulefree-adamw", [param], lr=rates, impl="fused").step()


@pytest.mark.parametrize("optimizer", preset_optimizers("classic"))
def test_a_population_with_kernels_equals_the_reference_population(optimizer):
    """Every classic optimizer, float64, a quick-suite problem: the population stepped by the
    kernels (impl="auto") and by the reference rule agree within rounding (1e-8 relative at
    every evaluation, as a member and its single trial do)."""
    problem = float64(get_problem(SUITES["quick"].problems[1][0]))
    reference = specs_for(problem, optimizer)
    fused = [dataclasses.replace(s, hyperparameters={"lr": s.lr}) for s in reference]
    for member, expected in zip(
        train_population(fused, problem), train_population(reference, problem), strict=True
    ):
        assert_same_trial(member, expected, optimizer)


def test_the_fallback_says_why_in_one_readable_line_per_reason(tmp_path, capsys):
    """An optimizer the registry declares not element-wise is named as such (no trial step
    needed); a class that rejects the rate tensor gets its error on one line, the tensor by its
    shape (its printout spilled the rates over several lines)."""
    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "soap,torch.optim:SGD"]
    args += ["--steps", "2", "--seeds", "1", "--grid-points", "2", "--workers", "1"]
    assert main([*args, "--population", "auto", "--out", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "population" in line]
    assert lines == [
        "population: single trials for optimizer soap: SOAP is not element-wise (a tensor's "
        "norm, factored moment or matrix shape enters each update, so a stacked tensor's rows "
        "cannot be separate members)",
        "population: single trials for optimizer torch.optim:SGD: it does not take a learning "
        "rate per member: its class refuses a tensor of rates (ValueError: Tensor lr must be "
        "1-element)",
    ]
