"""Problems: the contract other layers rely on, checked against closed forms and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optimlab.problems import Problem, get_problem, list_problems, registry
from optimlab.problems.models import DropConnectLinear
from optimlab.problems.registry import shift_and_noise

FAST = ["quadratic-deep", "digits-logreg", "digits-mlp", "deep-mlp"]


def test_registered_names() -> None:
    assert list_problems() == [
        "quadratic-deep",
        "digits-logreg",
        "digits-mlp",
        "mnist1d-mlp",
        "mnist1d-cnn",
        "deep-mlp",
        "mnist1d-transfer",
        "tiny-lm",
        "torchvision",
    ]


@pytest.mark.parametrize("name", FAST)
def test_contract(name: str) -> None:
    problem = get_problem(name)
    assert problem.name == name and isinstance(problem.options, dict)
    assert problem.task in ("classification", "regression")
    assert isinstance(problem.batch_size, int) and problem.batch_size > 0
    for split in (problem.train, problem.val, problem.test):
        x, y = split
        assert len(x) == len(y) > 0
    model = problem.build_model(3)
    x, y = problem.train
    loss = problem.loss_fn(model(x[:7]), y[:7])
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", FAST)
def test_build_model_is_deterministic_and_leaves_global_rng(name: str) -> None:
    problem = get_problem(name)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = problem.build_model(5)
    after = torch.rand(3)
    b = problem.build_model(5)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    if name != "quadratic-deep":  # θ starts at ones whatever the seed (DeepOBS)
        c = problem.build_model(6)
        assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_quadratic_hessian_spectrum() -> None:
    hessian = get_problem("quadratic-deep").hessian()
    assert hessian.shape == (100, 100) and hessian.dtype == torch.float64
    assert torch.equal(hessian, hessian.T)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert eigenvalues.max().item() == pytest.approx(53.13, abs=0.005)
    assert eigenvalues.min().item() == pytest.approx(0.0055, abs=0.00005)
    assert hessian.trace().item() == pytest.approx(477.6, abs=0.05)
    # 90 eigenvalues in (0, 1) and 10 in (30, 60)
    assert int((eigenvalues < 1).sum()) == 90 and int((eigenvalues > 30).sum()) == 10


def test_quadratic_loss_is_the_closed_form() -> None:
    problem = get_problem("quadratic-deep")
    model = problem.build_model(0)
    with torch.no_grad():
        model.theta.copy_(torch.linspace(-1, 1, 100))
    x, y = problem.train
    loss = problem.loss_fn(model(x[:16]), y[:16]).item()
    q = problem.hessian().numpy()
    d = np.linspace(-1, 1, 100, dtype=np.float32)[None, :] - x[:16].numpy()
    expected = np.mean([0.5 * row @ q @ row for row in d.astype(np.float64)])
    assert loss == pytest.approx(expected, rel=1e-5)
    # its gradient is Q(θ − mean x)
    model.zero_grad()
    problem.loss_fn(model(x[:16]), y[:16]).backward()
    expected_grad = q @ d.astype(np.float64).mean(0)
    np.testing.assert_allclose(model.theta.grad.numpy(), expected_grad, rtol=1e-4, atol=1e-4)


def test_only_quadratic_has_a_hessian() -> None:
    with pytest.raises(ValueError, match=r"digits-mlp.*no closed-form Hessian"):
        get_problem("digits-mlp").hessian()


def test_digits_split_is_fixed() -> None:
    a, b = get_problem("digits-mlp"), get_problem("digits-logreg")
    assert [len(s[0]) for s in (a.train, a.val, a.test)] == [1078, 359, 360]
    assert torch.equal(a.test[0], b.test[0])
    assert a.train[0].min() >= 0 and a.train[0].max() <= 1


@pytest.mark.slow
def test_mnist1d_splits() -> None:
    problem = get_problem("mnist1d-mlp")
    assert [len(s[0]) for s in (problem.train, problem.val, problem.test)] == [3500, 500, 1000]
    published = get_problem("mnist1d-cnn:validation=false")
    assert len(published.train[0]) == 4000
    assert torch.equal(published.test[0], problem.test[0])
    assert problem.train[0].shape[1] == 40
    model = published.build_model(0)
    assert model(published.test[0][:3]).shape == (3, 10)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("nope", r"unknown problem 'nope'; valid names: quadratic-deep, digits-logreg"),
        ("digits-mlp:widht=3", r"unknown option 'widht' for problem 'digits-mlp'; valid options:"),
        ("digits-mlp:dropout=1.5", r"dropout=1.5 is not allowed; allowed: a number in \[0, 1\)"),
        ("deep-mlp:activation=swish", r"activation='swish'.*allowed: sigmoid, tanh, relu"),
        ("deep-mlp:depth=2.5", r"depth=2.5 is not allowed; allowed: an integer >= 1"),
        ("deep-mlp:residual=3", r"residual=3 is not allowed; allowed: false, true"),
        ("deep-mlp:init=glorot", r"init='glorot'.*allowed: default, xavier, he"),
        ("digits-mlp:batch_size=0", r"batch_size=0 is not allowed; allowed: an integer >= 1"),
        ("digits-mlp,deep-mlp", r"more than one problem"),
        ("", r"non-empty string"),
        ("deep-mlp:data=mnist1d:augment=true", r"augment=true applies to data=digits only"),
    ],
)
def test_bad_specs(spec: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        get_problem(spec)


def test_options_are_resolved_and_label_is_short() -> None:
    problem = get_problem("deep-mlp:depth=4:activation=tanh:residual=true")
    assert problem.options["depth"] == 4 and problem.options["width"] == 32
    assert problem.label == "deep-mlp:activation=tanh:depth=4:residual=true"
    blocks = list(problem.build_model(0))[:-1]
    assert len(blocks) == 4 and all(block.residual for block in blocks[1:])
    assert isinstance(blocks[0].body[1], torch.nn.Tanh)


def test_residual_block_adds_its_input() -> None:
    problem = get_problem("deep-mlp:depth=3:residual=true")
    block = list(problem.build_model(0))[1]
    h = torch.randn(5, 32)
    assert torch.allclose(block(h), h + block.body(h))


def test_he_and_xavier_variances() -> None:
    he = get_problem("deep-mlp:depth=3:width=400:init=he:activation=relu").build_model(0)
    xavier = get_problem("deep-mlp:depth=3:width=400:init=xavier").build_model(0)
    # hidden-to-hidden layers: fan_in = fan_out = 400
    w_he = list(he)[1].body[0].weight
    w_xa = list(xavier)[1].body[0].weight
    assert w_he.var().item() == pytest.approx(2 / 400, rel=0.02)
    assert w_xa.var().item() == pytest.approx(2 / 800, rel=0.02)
    assert torch.count_nonzero(list(he)[1].body[0].bias) == 0


def test_regularizers_build_the_right_layers() -> None:
    model = get_problem("digits-mlp:dropout=0.3:dropconnect=0.2:batchnorm=true").build_model(0)
    kinds = [type(m).__name__ for m in model.modules()]
    assert "Dropout" in kinds and "BatchNorm1d" in kinds and "DropConnectLinear" in kinds


def test_penalty_is_l1_plus_half_l2_of_weights() -> None:
    problem = get_problem("digits-mlp:l1=0.01:weight_decay=0.1:width=8")
    model = problem.build_model(0)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    expected = sum(0.01 * w.abs().sum().item() + 0.05 * (w**2).sum().item() for w in weights)
    assert problem.penalty(model).item() == pytest.approx(expected, rel=1e-5)
    assert get_problem("digits-mlp").penalty is None


def test_dropconnect_is_unbiased_and_plain_in_eval() -> None:
    torch.manual_seed(0)
    layer = DropConnectLinear(20, 3, p=0.4)
    plain = torch.nn.functional.linear
    x = torch.randn(4, 20)
    layer.eval()
    assert torch.equal(layer(x), plain(x, layer.weight, layer.bias))
    layer.train()
    mean = torch.stack([layer(x) for _ in range(1000)]).mean(0)
    assert torch.allclose(mean, plain(x, layer.weight, layer.bias), atol=0.1)


def test_augmentation_shifts_like_numpy() -> None:
    augment = shift_and_noise(8, noise=0.0)
    x = torch.rand(50, 64)
    out = augment(x, torch.Generator().manual_seed(0)).view(50, 8, 8).numpy()
    images = x.view(50, 8, 8).numpy()
    for image, shifted in zip(images, out):
        candidates = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                padded = np.pad(image, 1)
                candidates.append(padded[1 + dy : 9 + dy, 1 + dx : 9 + dx])
        assert any(np.array_equal(shifted, c) for c in candidates)
    noisy = shift_and_noise(8, noise=0.05)(x, torch.Generator().manual_seed(0))
    assert 0.03 < (noisy.view(50, 8, 8) - torch.tensor(out)).std().item() < 0.07


USER_FILE = """
import torch
from optimlab.problems import Problem

def make(n=64, noise=0.1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + noise * torch.randn(n, generator=g)
    split = (x, y.unsqueeze(1))
    return Problem(
        name="mine", options={}, train=split, val=split, test=split,
        build_model=lambda seed: torch.nn.Linear(3, 1), loss_fn=torch.nn.functional.mse_loss,
        batch_size=16, task="regression",
    )

def not_a_problem():
    return 42
"""


def test_user_problem(tmp_path) -> None:
    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    problem = get_problem(f"{path}:make:n=32")
    assert isinstance(problem, Problem)
    assert problem.name == f"{path.resolve()}:make" and problem.options == {"n": 32}
    assert len(problem.train[0]) == 32 and problem.task == "regression"
    with pytest.raises(ValueError, match="does not exist"):
        get_problem(f"{tmp_path / 'missing.py'}:make")
    with pytest.raises(ValueError, match=r"has no function 'nope'; callables found: .*make"):
        get_problem(f"{path}:nope")
    with pytest.raises(
        ValueError, match=r"returned int; it must return optimlab\.problems\.Problem"
    ):
        get_problem(f"{path}:not_a_problem")
    with pytest.raises(ValueError, match="rejected options"):
        get_problem(f"{path}:make:colour=red")


def test_a_problem_file_is_read_once_and_its_text_travels_to_workers(tmp_path) -> None:
    """The executors hand the text of the files the command read to their workers: a worker
    (a Ray node) where the file does not exist, or differs, builds the command's problem."""
    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    here = get_problem(f"{path}:make:n=32")
    sources = registry.export_sources()
    assert sources[str(path.resolve())] == USER_FILE
    # edited on disk after the command read it: the command's version stays
    path.write_text(USER_FILE.replace("noise=0.1", "noise=5.0"))
    assert torch.equal(get_problem(f"{path}:make:n=32").train[1], here.train[1])
    # a worker without the file: the text it was handed stands in for it
    elsewhere = tmp_path / "node" / "mine.py"  # never written
    registry.import_sources({str(elsewhere.resolve()): USER_FILE})
    there = get_problem(f"{elsewhere}:make:n=32")
    assert torch.equal(there.train[0], here.train[0]) and torch.equal(there.train[1], here.train[1])
    broken = tmp_path / "broken.py"
    broken.write_text("def make(:\n")
    with pytest.raises(ValueError, match="is not valid Python"):
        get_problem(f"{broken}:make")


def test_problem_validates_its_fields() -> None:
    split = (torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="task='ranking'; allowed: classification, regression"):
        Problem(
            "p",
            {},
            split,
            split,
            split,
            lambda s: torch.nn.Linear(2, 1),
            torch.nn.functional.mse_loss,
            4,
            task="ranking",
        )
    with pytest.raises(ValueError, match="batch_size=0"):
        Problem(
            "p",
            {},
            split,
            split,
            split,
            lambda s: torch.nn.Linear(2, 1),
            torch.nn.functional.mse_loss,
            0,
        )
    with pytest.raises(ValueError, match="val must be a non-empty"):
        Problem(
            "p",
            {},
            split,
            (torch.zeros(0), torch.zeros(0)),
            split,
            lambda s: torch.nn.Linear(2, 1),
            torch.nn.functional.mse_loss,
            4,
        )


def _has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


@pytest.mark.skipif(_has_torchvision(), reason="torchvision is installed")
def test_torchvision_problem_without_torchvision_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match=r"needs the torchvision package.*pip install torchvision"):
        get_problem("torchvision:dataset=MNIST:download=false")


def _write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.skipif(not _has_torchvision(), reason="torchvision is not installed (optional)")
def test_torchvision_loader_on_a_local_fixture(tmp_path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    train_x, test_x = rng.randint(0, 256, (30, 28, 28)), rng.randint(0, 256, (10, 28, 28))
    train_y, test_y = np.arange(30) % 10, np.arange(10)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    problem = get_problem(f"torchvision:dataset=MNIST:root={tmp_path}:download=false:val=5")
    x, y = problem.train
    assert x.shape == (25, 784) and len(problem.val[0]) == 5 and len(problem.test[0]) == 10
    np.testing.assert_allclose(x[0].numpy(), train_x[0].reshape(-1) / 255.0, rtol=1e-6)
    assert y.tolist() == train_y[:25].tolist()
    assert problem.build_model(0)(x[:2]).shape == (2, 10)
