"""A user's own optimizer (a file, or an importable module's class): `optimlab.lab.custom_optimizers`.

The reference is torch.optim in the same process: the optimizer written here is SGD with
momentum, so it must follow `torch.optim.SGD` step for step; ``torch.optim:AdamW`` and
``RAdam`` built through the loader must follow the ones built directly.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from optimlab.lab import custom_optimizers
from optimlab.lab.custom_optimizers import (
    CustomOptimizer,
    check_custom,
    create_optimizer,
    looks_custom,
    parse_custom_item,
    parse_custom_spec,
)
from optimlab.optim.adam import Adam

#: SGD with heavy-ball momentum as torch.optim.SGD does it (buffer b ← μ·b + g; p ← p − η·b),
#: and a factory over it: what a user would write
MINE = """
import torch


class MyOpt(torch.optim.Optimizer):
    def __init__(self, params, lr=0.05, momentum=0.9):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"Invalid momentum value: {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "buffer" not in state:
                    state["buffer"] = p.grad.clone()
                else:
                    state["buffer"].mul_(group["momentum"]).add_(p.grad)
                p.add_(state["buffer"], alpha=-group["lr"])


def plain(params, lr=0.1):
    return MyOpt(params, lr=lr, momentum=0.0)


NOT_CALLABLE = 3
"""


def write(tmp_path: Path, text: str, name: str = "mine.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def trajectory(make: object, steps: int = 30) -> list[torch.Tensor]:
    """The parameters of a small least-squares fit after each of `steps` steps."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=generator), torch.randn(32, generator=generator)
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    optimizer = make([w])
    out = []
    for _ in range(steps):
        optimizer.zero_grad()
        ((x.double() @ w - y.double()) ** 2).mean().backward()
        optimizer.step()
        out.append(w.detach().clone())
    return out


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))


def test_looks_custom_tells_files_and_modules_from_built_in_names() -> None:
    for name in (
        "mine.py",
        "x/y.py",
        "./opt.py",
        "torch.optim",
        "my_pkg.optim.fast",
        "mine.py:MyOpt:lr=1",
    ):
        assert looks_custom(name), name
    for name in ("adam", "sgd", "nadam", "momentum", "adam:lr=0.1", "adam:betas=0.9/0.99"):
        assert not looks_custom(name), name


def test_an_optimizer_written_in_a_file_follows_torch_sgd(tmp_path: Path) -> None:
    path = write(tmp_path, MINE)
    optimizer = parse_custom_item(str(path), "MyOpt", {"momentum": 0.5})
    assert optimizer.label == "mine.py:MyOpt"
    assert optimizer.name == f"{path.resolve()}:MyOpt"
    assert optimizer.file_text == MINE
    assert optimizer.default_lr() == 0.05
    check_custom(optimizer, {"momentum": 0.5})
    mine = trajectory(lambda p: optimizer.build(p, lr=0.02, momentum=0.5))
    reference = trajectory(lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.5))
    assert same(mine, reference)
    # a factory function works the same way, and the trial's name builds it again
    factory = parse_custom_item(str(path), "plain", {})
    assert factory.default_lr() == 0.1
    assert same(
        trajectory(lambda p: create_optimizer(factory.name, p, lr=0.03)),
        trajectory(lambda p: torch.optim.SGD(p, lr=0.03)),
    )


def test_torch_optim_adamw_and_radam_decoupled(tmp_path: Path) -> None:
    adamw, options = parse_custom_spec("torch.optim:AdamW:weight_decay=0.1")
    assert (adamw.label, adamw.name, adamw.file_text) == ("torch.optim:AdamW", adamw.label, None)
    assert options == {"weight_decay": 0.1}
    assert adamw.default_lr() == 1e-3
    check_custom(adamw, options)
    assert same(
        trajectory(lambda p: adamw.build(p, lr=0.01, **options)),
        trajectory(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    )
    radam, options = parse_custom_spec(
        "torch.optim:RAdam:decoupled_weight_decay=true:weight_decay=0.1"
    )
    assert options == {"decoupled_weight_decay": True, "weight_decay": 0.1}
    check_custom(radam, options)
    built = trajectory(lambda p: create_optimizer("torch.optim:RAdam", p, lr=0.01, **options))
    direct = trajectory(
        lambda p: torch.optim.RAdam(p, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    )
    coupled = trajectory(lambda p: torch.optim.RAdam(p, lr=0.01, weight_decay=0.1))
    assert same(built, direct) and not same(built, coupled)


def test_a_built_in_name_goes_through_the_registry() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    optimizer = create_optimizer("adam", [w], lr=0.1)
    assert type(optimizer) is Adam and optimizer.param_groups[0]["lr"] == 0.1


BAD_FILES = {
    "syntax": ("def broken(:\n", "Opt", "is not valid Python"),
    "raises when run": (
        "raise RuntimeError('no GPU here')\n",
        "Opt",
        "fails when run: RuntimeError: no GPU here",
    ),
    "attribute missing": (MINE, "Missing", "has no 'Missing'.*callables found: MyOpt, plain"),
    "not callable": (MINE, "NOT_CALLABLE", "is a int, not a class or function"),
    "no lr": ("def opt(params, momentum=0.9):\n    pass\n", "opt", "does not take lr"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, case: str) -> None:
    text, attribute, message = BAD_FILES[case]
    path = write(tmp_path, text, f"{case.replace(' ', '_')}.py")
    with pytest.raises(ValueError, match=message):
        parse_custom_item(str(path), attribute, {})


def test_missing_and_non_python_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"optimizer file '.*nowhere.py' does not exist"):
        parse_custom_item(str(tmp_path / "nowhere.py"), "MyOpt", {})
    text = write(tmp_path, MINE, "mine.txt")
    with pytest.raises(ValueError, match=r"is not a .py file"):
        parse_custom_item(str(text), "MyOpt", {})


def test_an_unknown_module_or_source(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"optimizer module 'no_such_pkg.optim' cannot be imported"
    ):
        parse_custom_item("no_such_pkg.optim", "Fast", {})
    with pytest.raises(ValueError, match=r"module 'torch.optim' has no 'AdamWW'"):
        parse_custom_spec("torch.optim:AdamWW")
    with pytest.raises(ValueError, match=r"custom optimizer is path/to/file.py:ClassOrFactory"):
        parse_custom_spec("torch.optim")
    with pytest.raises(ValueError, match=r"custom optimizer is path/to/file.py:ClassOrFactory"):
        parse_custom_spec("torch.optim:lr=0.1")
    with pytest.raises(ValueError, match=r"gives option 'lr' twice"):
        parse_custom_spec("torch.optim:AdamW:lr=0.1:lr=0.2")


def test_options_and_values_the_class_rejects(tmp_path: Path) -> None:
    path = write(tmp_path, MINE)
    with pytest.raises(
        ValueError,
        match=r"unknown option 'beta' for optimizer mine.py:MyOpt; valid options: lr, momentum",
    ):
        parse_custom_item(str(path), "MyOpt", {"beta": 0.9})
    optimizer = parse_custom_item(str(path), "MyOpt", {"momentum": 1.5})
    # the class's own message, with what was given
    with pytest.raises(
        ValueError,
        match=r"does not build from \(params, lr=0.05, momentum=1.5\): ValueError: Invalid momentum value: 1.5",
    ):
        check_custom(optimizer, {"momentum": 1.5})
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1"):
        check_custom(optimizer, {"lr": -1})
    adamw, options = parse_custom_spec("torch.optim:AdamW:betas=0.9/1.5")
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: 1.5"):
        check_custom(adamw, options)
    with pytest.raises(
        ValueError, match=r"unknown option 'momentum' for optimizer torch.optim:AdamW"
    ):
        parse_custom_spec("torch.optim:AdamW:momentum=0.9")


STEP_FAILS = """
import torch

class Broken(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):
        raise RuntimeError("not implemented yet")

class Explodes(Broken):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.div_(0.0)

class Chatty(Broken):
    def step(self, closure=None):
        return "done"

class Reshapes(Broken):
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data = p.data.double()

def not_an_optimizer(params, lr=0.1):
    return [lr]
"""


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("Broken", r"step\(\) fails: RuntimeError: not implemented yet"),
        ("Explodes", r"step\(\) with lr=0.1 made parameter 0 non-finite"),
        ("Chatty", r"step\(\) returned str"),
        ("Reshapes", "parameter 0 is no longer a torch.float32 tensor of shape"),
        ("not_an_optimizer", "returned list; it must build a torch.optim.Optimizer"),
    ],
)
def test_an_optimizer_that_does_not_step(tmp_path: Path, attribute: str, message: str) -> None:
    optimizer = parse_custom_item(str(write(tmp_path, STEP_FAILS, "steps.py")), attribute, {})
    with pytest.raises(ValueError, match=message):
        check_custom(optimizer, {})


def test_pickles_and_builds_from_its_text_after_the_file_is_deleted(tmp_path: Path) -> None:
    path = write(tmp_path, MINE, "gone.py")
    optimizer = parse_custom_item(str(path), "MyOpt", {})
    path.unlink()
    copy = pickle.loads(pickle.dumps(optimizer))
    assert copy == optimizer and copy.file_text == MINE
    assert same(
        trajectory(lambda p: copy.build(p, lr=0.02)),
        trajectory(lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)),
    )
    module = pickle.loads(pickle.dumps(CustomOptimizer("torch.optim", "AdamW")))
    assert type(module.build([torch.nn.Parameter(torch.zeros(1))], lr=0.1)) is torch.optim.AdamW


def _worker_steps(sources: dict[str, str], name: str) -> list[torch.Tensor]:
    """In a fresh (spawned) process, as a pool or Ray worker: only the handed-over texts."""
    custom_optimizers.import_sources(sources)
    return trajectory(lambda p: create_optimizer(name, p, lr=0.02, momentum=0.5))


def test_a_worker_builds_a_trial_optimizer_from_the_handed_over_text(tmp_path: Path) -> None:
    """What the executors do for ``--problem`` files: the command reads the file, the worker
    gets `export_sources()` and a trial's optimizer name; the file is gone meanwhile."""
    path = write(tmp_path, MINE, "travels.py")
    optimizer = parse_custom_item(str(path), "MyOpt", {})
    sources = custom_optimizers.export_sources()
    assert sources[str(path.resolve())] == MINE
    path.unlink()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(_worker_steps, sources, optimizer.name).result(timeout=120)
    assert same(there, trajectory(lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.5)))
    # without the texts, a process where the file is gone cannot build it, and says so
    custom_optimizers._SOURCES.pop(str(path.resolve()))
    with pytest.raises(ValueError, match=r"does not exist"):
        create_optimizer(optimizer.name, [torch.nn.Parameter(torch.zeros(1))], lr=0.1)
