"""Drop-in behaviour: param groups, closures, schedulers, dtypes, non-finite gradients, tensor lr."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.optim import lr_scheduler

import optimlab
from optimlab.optim.registry import REGISTRY
from tests.torch_reference import (
    make_params,
    max_relative_error,
    set_grads,
    torch_kwargs,
    torch_twin,
)

NAMES = list(REGISTRY)


def test_public_classes_and_registry() -> None:
    # Every registered optimizer is public under its class name, at the top and in optimlab.optim.
    classes = [getattr(optimlab, REGISTRY[name].cls.__name__) for name in NAMES]
    assert [c.name for c in classes] == optimlab.list_optimizers() == NAMES
    assert all(getattr(optimlab.optim, c.__name__) is c for c in classes)
    for cls in classes:
        assert issubclass(cls, torch.optim.Optimizer)
    assert optimlab.Momentum([torch.zeros(1)]).defaults["momentum"] == 0.9
    nag = optimlab.NAG([torch.zeros(1)])
    assert nag.defaults["momentum"] == 0.9 and nag.defaults["nesterov"] is True


def test_a_registered_optimizer_is_public_under_its_class_name() -> None:
    """The public class names come from the registry's declarations, not a hand-kept list: an
    optimizer registered at run time is ``optimlab.X`` and ``optimlab.optim.X``, is listed by
    dir() and ``__all__``, and is gone again when unregistered."""
    from optimlab.optim.declaration import OptimizerInfo
    from optimlab.optim.registry import registered

    class HalfStepSGD(optimlab.SGD):
        name = "half-step-sgd"

    info = OptimizerInfo(
        name="half-step-sgd", cls=HalfStepSGD, title="t", family="none", rule="θ ← θ − η·g"
    )
    assert not hasattr(optimlab, "HalfStepSGD")
    with registered(info):
        assert optimlab.HalfStepSGD is HalfStepSGD is optimlab.optim.HalfStepSGD
        assert "HalfStepSGD" in dir(optimlab) and "HalfStepSGD" in optimlab.__all__
        assert "HalfStepSGD" in dir(optimlab.optim)
    assert not hasattr(optimlab, "HalfStepSGD") and not hasattr(optimlab.optim, "HalfStepSGD")
    assert "HalfStepSGD" not in dir(optimlab)


@pytest.mark.parametrize("name", NAMES)
def test_create_builds_the_registered_class_with_hyperparameters(name: str) -> None:
    optimizer = optimlab.create(name, [torch.zeros(2, requires_grad=True)], lr=0.125)
    assert type(optimizer) is REGISTRY[name].cls
    assert optimizer.param_groups[0]["lr"] == 0.125


@pytest.mark.parametrize("name", NAMES)
def test_defaults_follow_the_convention(name: str) -> None:
    cls = REGISTRY[name].cls
    for convention in ("torch", "keras"):
        optimizer = cls([torch.zeros(1, requires_grad=True)], convention=convention)
        for key, value in cls.DEFAULTS[convention].items():
            assert optimizer.defaults[key] == value


@pytest.mark.parametrize("name", NAMES)
def test_torch_defaults_equal_torch_optim_defaults(name: str) -> None:
    """Independent check of the torch column: read the defaults off torch.optim's signature."""
    import inspect

    info = REGISTRY[name]
    signature = inspect.signature(torch_twin(info)).parameters
    for key, value in info.cls.DEFAULTS["torch"].items():
        if key in signature and not (
            info.name in ("momentum", "nag") and key in ("momentum", "nesterov")
        ):
            assert signature[key].default == value, key


@pytest.mark.parametrize("name", NAMES)
def test_closure_add_param_group_zero_grad_and_params_without_grad(name: str) -> None:
    a = torch.tensor([1.0, -2.0], requires_grad=True)
    frozen = torch.tensor([3.0], requires_grad=True)
    optimizer = optimlab.create(name, [a, frozen], lr=0.1)
    late = torch.tensor([0.5, 0.5], requires_grad=True)
    optimizer.add_param_group({"params": [late], "lr": 0.01})

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (a**2).sum() + (late**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx(5.5)
    if name == "soap":  # SOAP's first step only gathers its preconditioner's statistics
        optimizer.step(closure)
    assert frozen.grad is None and float(frozen) == 3.0
    assert len(optimizer.state[frozen]) == 0 or name == "adagrad"  # adagrad creates state eagerly
    assert not torch.equal(a.detach(), torch.tensor([1.0, -2.0]))
    assert not torch.equal(late.detach(), torch.tensor([0.5, 0.5]))
    optimizer.zero_grad()
    assert a.grad is None


SCHEDULERS = {
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.9**e),
    "MultiplicativeLR": lambda o: lr_scheduler.MultiplicativeLR(o, lambda e: 0.95),
    "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[3, 8], gamma=0.3),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=4),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=6),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=10, power=2.0),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=4),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(
        o, base_lr=0.001, max_lr=0.02, step_size_up=3, cycle_momentum=False
    ),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(
        o, max_lr=0.02, total_steps=20, cycle_momentum=False
    ),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o,
        [
            lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
            lr_scheduler.ExponentialLR(o, 0.9),
        ],
        milestones=[3],
    ),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=3), lr_scheduler.ExponentialLR(o, 0.9)]
    ),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.5),
}


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("name", ["momentum", "adagrad", "adam", "nadam"])
def test_every_lr_scheduler_drives_optimlab_like_torch_optim(name: str, scheduler: str) -> None:
    info = REGISTRY[name]
    ours_params = [p.requires_grad_() for p in make_params(torch.float64)]
    theirs_params = [p.detach().clone().requires_grad_() for p in ours_params]
    ours = info.cls(ours_params, lr=0.01)
    theirs = torch_twin(info)(theirs_params, **torch_kwargs(info, ours.defaults))
    schedulers = [SCHEDULERS[scheduler](ours), SCHEDULERS[scheduler](theirs)]
    for step in range(20):
        for params, optimizer, sched in zip(
            (ours_params, theirs_params), (ours, theirs), schedulers
        ):
            set_grads(params)
            optimizer.step()
            if scheduler == "ReduceLROnPlateau":
                sched.step(1.0)  # a flat metric: the lr must be cut
            else:
                sched.step()
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"], step
    assert max_relative_error(ours_params, theirs_params) <= 1e-10


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_keep_float32_state(name: str, dtype: torch.dtype) -> None:
    """The update is computed in float32 from float32 state and rounded once into the parameter."""
    reference = [p.requires_grad_() for p in make_params(torch.float32)]
    half = [p.detach().to(dtype).requires_grad_() for p in reference]
    ours = optimlab.create(name, half, lr=0.01)
    for _ in range(3):
        set_grads(half)
        ours.step()
    for p in half:
        assert p.dtype == dtype
        for key, value in ours.state[p].items():
            if isinstance(value, torch.Tensor) and key not in ("step", "mu_product"):
                assert value.dtype == torch.float32, key
    # One float32 step from the same half-precision point, rounded to `dtype`, is what we do.
    start = [p.detach().clone() for p in half]
    set_grads(half)
    expected_params = [p.detach().float().clone().requires_grad_() for p in start]
    shadow = optimlab.create(name, expected_params, lr=0.01)
    shadow.load_state_dict(ours.state_dict())
    for e, h in zip(expected_params, half):
        e.grad = h.grad.float()
    shadow.step()
    ours.step()
    for e, h in zip(expected_params, half):
        assert torch.equal(e.detach().to(dtype), h.detach())


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_default_propagates_like_torch(name: str) -> None:
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    optimizer = optimlab.create(name, [p], lr=0.1)
    p.grad = torch.tensor([math.nan, 1.0])
    optimizer.step()
    assert math.isnan(float(p[0]))


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_skip_leaves_group_untouched_and_counts(name: str) -> None:
    good = torch.tensor([1.0, 2.0], requires_grad=True)
    bad = torch.tensor([3.0], requires_grad=True)
    other = torch.tensor([4.0], requires_grad=True)
    optimizer = optimlab.create(
        name, [{"params": [good, bad]}, {"params": [other]}], lr=0.1, nonfinite="skip"
    )
    for p in (good, bad, other):
        p.grad = torch.ones_like(p)
    optimizer.step()
    before = {id(p): p.detach().clone() for p in (good, bad)}
    state_before = {
        id(p): {
            k: v.clone() if isinstance(v, torch.Tensor) else v
            for k, v in optimizer.state[p].items()
        }
        for p in (good, bad)
    }
    other_before = other.detach().clone()
    bad.grad = torch.tensor([math.inf])
    optimizer.step()
    for p in (good, bad):
        assert torch.equal(p.detach(), before[id(p)])
        state = optimizer.state[p]
        assert state.pop("nonfinite_skipped") == 1
        for key, value in state_before[id(p)].items():
            assert (
                torch.equal(state[key], value)
                if isinstance(value, torch.Tensor)
                else state[key] == value
            )
        state["nonfinite_skipped"] = 1
    assert not torch.equal(other.detach(), other_before), "the finite group still steps"
    assert optimizer.state_dict()["state"][0]["nonfinite_skipped"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_gives_each_row_its_own_learning_rate(name: str) -> None:
    """One step with lr of shape [N, 1] equals N separate runs with scalar learning rates."""
    if not REGISTRY[name].elementwise:
        pytest.skip(f"{name} is not element-wise: a tensor lr must have one element")
    lrs = torch.tensor([[0.001], [0.01], [0.1]], dtype=torch.float64)
    start = torch.tensor([[1.0, -2.0], [0.5, 0.25], [-1.5, 3.0]], dtype=torch.float64)
    batched = start.clone().requires_grad_()
    rows = [start[i].clone().requires_grad_() for i in range(3)]
    try:
        ours = optimlab.create(name, [batched], lr=lrs)
    except ValueError as error:  # rules that couple the elements (Prodigy's d, SOAP's bases)
        if "lr must be a Python number" not in str(error):
            raise
        pytest.skip(f"{name} couples the elements of a tensor, so it takes no tensor lr")
    singles = [optimlab.create(name, [row], lr=float(lr)) for row, lr in zip(rows, lrs)]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (x.pow(4) / 4 + x.sin() * x).sum()

    for _ in range(30):
        batched.grad = None
        loss(batched).backward()
        ours.step()
        for row, optimizer in zip(rows, singles):
            row.grad = None
            loss(row).backward()
            optimizer.step()
    assert max_relative_error([batched], [torch.stack([r.detach() for r in rows])]) <= 1e-12


# --------------------------------------------------------------------------------------------
# torch.optim's implementation switches and named parameters: code written for torch.optim runs.

TORCH_SWITCHES = ("foreach", "fused", "capturable", "differentiable")
SWITCH_VALUES = [
    {},
    {"foreach": False},
    {"foreach": None, "fused": None},
    {"fused": False},
    {"foreach": True},
    {"fused": True},
    {"capturable": False, "differentiable": False},
]


def _torch_twin(name: str, params, **kwargs):
    info = REGISTRY[name]
    accepted = inspect.signature(torch_twin(info)).parameters
    # torch.optim's classes take a subset of the four switches (RMSprop has no `fused`, SGD no
    # `capturable`); optimlab's take all four, so the twin gets the ones its class knows.
    given = {**info.cls.DEFAULTS["torch"], **kwargs}
    return torch_twin(info)(params, **{k: v for k, v in given.items() if k in accepted})


@pytest.mark.parametrize("switches", SWITCH_VALUES, ids=lambda s: str(s) or "none")
@pytest.mark.parametrize("name", NAMES)
def test_torch_implementation_switches_are_accepted_and_recorded(name: str, switches) -> None:
    """foreach/fused/capturable/differentiable are taken as torch.optim takes them and kept in
    each param group with torch.optim's values (torch records some per class). fused=True on
    an optimizer without a kernel is refused when it is built, as torch refuses it for its
    classes without a fused CPU kernel."""
    if switches.get("fused") and REGISTRY[name].cls.kernel is None:
        with pytest.raises(ValueError, match="declares no fused kernel"):
            optimlab.create(name, [torch.zeros(3, requires_grad=True)], **switches)
        return
    ours = optimlab.create(name, [torch.zeros(3, requires_grad=True)], **switches)
    try:
        theirs = _torch_twin(name, [torch.zeros(3, requires_grad=True)], **switches)
    except RuntimeError as error:  # torch.optim has no fused CPU kernel for this class
        assert switches.get("fused") and "fused" in str(error)
        theirs = None
    group = ours.param_groups[0]
    for key in TORCH_SWITCHES:
        assert group[key] == switches.get(key, None if key in ("foreach", "fused") else False)
        if theirs is not None and key in theirs.param_groups[0]:
            assert group[key] == theirs.param_groups[0][key], key


@pytest.mark.parametrize("name", NAMES)
def test_foreach_true_is_the_reference_rule_and_fused_true_the_kernel(name: str) -> None:
    """foreach=True steps exactly like impl="reference", fused=True exactly like impl="fused";
    fused=True on a group the kernel cannot take (float16) says so, as impl="fused" does; an
    optimizer without a kernel says that."""
    has_kernel = REGISTRY[name].cls.kernel is not None
    variants = {"foreach": {"foreach": True}, "reference": {"impl": "reference"}}
    if has_kernel:
        variants.update({"fused": {"fused": True}, "impl-fused": {"impl": "fused"}})
    runs = {}
    for key, options in variants.items():
        params = [p.requires_grad_() for p in make_params(torch.float32)]
        optimizer = optimlab.create(name, params, lr=0.01, **options)
        for _ in range(20):
            set_grads(params)
            optimizer.step()
        runs[key] = params
    for a, b in zip(runs["foreach"], runs["reference"]):
        assert torch.equal(a, b)
    if has_kernel:
        for a, b in zip(runs["fused"], runs["impl-fused"]):
            assert torch.equal(a, b)
    half = torch.ones(3, dtype=torch.float16, requires_grad=True)
    if not has_kernel:  # said when it is built, not at the first step
        with pytest.raises(ValueError, match="no fused kernel"):
            optimlab.create(name, [half], fused=True)
        return
    optimizer = optimlab.create(name, [half], fused=True)
    half.grad = torch.ones_like(half)
    with pytest.raises(TypeError, match=r"fused=True.*float16"):
        optimizer.step()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"capturable": True},
            r"invalid capturable=True; capturable must be False: .*torch\.optim",
        ),
        (
            {"differentiable": True},
            r"invalid differentiable=True; differentiable must be False: .*torch\.optim",
        ),
        ({"fused": True, "foreach": True}, r"invalid fused=True; fused must be False or None"),
        ({"fused": True, "impl": "reference"}, r"invalid fused=True.*impl='reference'"),
        ({"foreach": True, "impl": "fused"}, r"invalid foreach=True.*impl='fused'"),
        ({"fused": "yes"}, r"invalid fused='yes'; fused must be None, True or False"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_unsupported_torch_switches_say_what_optimlab_supports(
    name: str, options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        optimlab.create(name, [torch.zeros(2, requires_grad=True)], **options)
    # the same check guards a param group added later
    optimizer = optimlab.create(name, [torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=message):
        optimizer.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **options})


def _named_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


def _train(model: torch.nn.Module, optimizer, steps: int) -> None:
    x = torch.linspace(-1, 1, 32).reshape(8, 4)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters_like_torch_optim(name: str) -> None:
    """model.named_parameters() (torch >= 2.7): names kept in param_names, in the state_dict,
    and carried both ways between optimlab and torch.optim."""
    ours_model, theirs_model = _named_model(0), _named_model(0)
    ours = optimlab.create(name, ours_model.named_parameters(), lr=0.01)
    theirs = _torch_twin(name, theirs_model.named_parameters(), lr=0.01)
    names = [n for n, _ in ours_model.named_parameters()]
    assert ours.param_groups[0]["param_names"] == names == theirs.param_groups[0]["param_names"]
    _train(ours_model, ours, 5)
    _train(theirs_model, theirs, 5)
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        assert max_relative_error([a], [b]) <= 1e-5
    saved = ours.state_dict()
    assert saved["param_groups"][0]["param_names"] == names
    # optimlab -> torch.optim
    into_torch = _torch_twin(name, _named_model(1).named_parameters(), lr=0.5)
    into_torch.load_state_dict(saved)
    assert into_torch.param_groups[0]["param_names"] == names
    assert into_torch.param_groups[0]["lr"] == 0.01
    # torch.optim -> optimlab, into an optimizer built from plain parameters: the names come along
    plain = optimlab.create(name, _named_model(2).parameters(), lr=0.5)
    plain.load_state_dict(theirs.state_dict())
    assert plain.param_groups[0]["param_names"] == names
    assert plain.state_dict()["param_groups"][0]["param_names"] == names


def test_named_and_unnamed_parameters_do_not_mix() -> None:
    model = _named_model(0)
    named = list(model.named_parameters())
    with pytest.raises(ValueError, match="have names"):
        optimlab.Adam([named[0], named[1][1]])
    optimizer = optimlab.Adam(named[:2])
    with pytest.raises(ValueError, match="with/without names"):
        optimizer.add_param_group({"params": [named[2][1]]})


def test_adamw_is_torch_optim_adamw() -> None:
    """optimlab.AdamW / "adamw": torch.optim.AdamW's defaults, and its trajectory."""
    probe = [torch.zeros(1, requires_grad=True)]
    theirs_defaults = torch.optim.AdamW(probe).defaults
    ours_defaults = optimlab.AdamW([torch.zeros(1, requires_grad=True)]).defaults
    for key, value in theirs_defaults.items():
        assert ours_defaults[key] == value, key
    assert optimlab.create("adamw", probe).defaults["weight_decay"] == 1e-2
    ours_model, theirs_model = _named_model(0), _named_model(0)
    ours = optimlab.AdamW(ours_model.parameters(), lr=0.05, impl="reference")
    theirs = torch.optim.AdamW(theirs_model.parameters(), lr=0.05)
    _train(ours_model, ours, 30)
    _train(theirs_model, theirs, 30)
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# generated documentation


@pytest.mark.parametrize("table", ["optimizers", "arguments"])
def test_docs_tables_are_generated_from_the_registry(table: str) -> None:
    """README.md's and docs/optimizers.md's optimizer tables are the registry's; a registry
    change without `python -m optimlab.optim.doc_tables` leaves them stale and fails here."""
    from pathlib import Path

    from optimlab.optim import doc_tables

    root = Path(__file__).resolve().parents[1]
    text = (root / doc_tables.FILES[table]).read_text(encoding="utf-8")
    current = doc_tables.current_block(text, table)
    assert current is not None, f"{doc_tables.FILES[table]} lost its {table} table markers"
    assert current == doc_tables.block(table), (
        f"{doc_tables.FILES[table]}: the {table} table is stale; run "
        f"`python -m optimlab.optim.doc_tables`"
    )
    for name in NAMES:  # an independent check that the generator covers every optimizer
        assert f"`{name}`" in current


def test_doc_tables_update_rewrites_a_stale_table(tmp_path, capsys) -> None:
    from optimlab.cli import main
    from optimlab.optim import doc_tables

    for table, relative in doc_tables.FILES.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        stale = f"{doc_tables.begin_marker(table)}\n| old |\n{doc_tables.end_marker(table)}"
        path.write_text(f"# title\n\n{stale}\n\ntext after\n", encoding="utf-8")
    assert sorted(doc_tables.update(tmp_path)) == sorted(doc_tables.FILES.values())
    assert doc_tables.update(tmp_path) == []  # now current
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# title\n\n") and readme.endswith("\n\ntext after\n")
    assert main(["list", "--markdown"]) == 0
    out = capsys.readouterr().out
    for table in doc_tables.FILES:
        assert doc_tables.block(table) in out
    (tmp_path / "README.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no optimizers table markers"):
        doc_tables.update(tmp_path)
