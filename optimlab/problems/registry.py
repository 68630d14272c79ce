"""The named problems and their options: ``get_problem("deep-mlp:depth=10:activation=sigmoid")``.

Each entry declares its options (default, type, allowed values) and a builder that turns the
resolved options into a `Problem`. Unknown names or options, or values out of range, raise
ValueError naming the argument, the value and what is allowed. A user's own problem is
``path/to/file.py:factory[:key=value...]``: the factory is called with the options as keyword
arguments and must return a `Problem` (docs/compare.md).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimlab.problems import data, models, tiny_lm, transfer
from optimlab.problems.base import Problem, Split, format_spec
from optimlab.spec import parse_item


@dataclass(frozen=True)
class Option:
    """One problem option: its default, and the values allowed (a tuple of choices, or a numeric
    interval ``[low, high]`` / ``[low, high)`` for int/float)."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    high_open: bool = False

    def allowed(self) -> str:
        if isinstance(self.default, str) and self.choices is None:
            return "a non-empty text"
        if self.choices is not None:
            return ", ".join(
                str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices
            )
        kind = "an integer" if type(self.default) is int else "a number"
        if self.low is None:
            return kind
        if self.high is None:
            return f"{kind} >= {self.low:g}"
        right = ")" if self.high_open else "]"
        return f"{kind} in [{self.low:g}, {self.high:g}{right}"

    def check(self, problem: str, key: str, value: Any) -> Any:
        error = ValueError(
            f"problem {problem!r}: option {key}={value!r} is not allowed; allowed: {self.allowed()}"
        )
        if self.choices is not None:
            if value not in self.choices or type(value) is not type(self.default):
                raise error
            return value
        if isinstance(self.default, str):  # a free-form text option (a directory)
            if not isinstance(value, str) or not value:
                raise error
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error
        if type(self.default) is int:
            if value != int(value):
                raise error
            value = int(value)
        else:
            value = float(value)
        if not math.isfinite(value):
            raise error
        if self.low is not None and value < self.low:
            raise error
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise error
        return value


def _prob(help_: str, default: float = 0.0) -> Option:
    return Option(default, help_, low=0.0, high=1.0, high_open=True)


BATCH = Option(128, "minibatch size", low=1)
L1 = Option(0.0, "L1 penalty λ₁·Σ|w| added to the training loss (weights, not biases)", low=0.0)
L2 = Option(
    0.0,
    "L2 penalty ½·λ₂·Σw² added to the training loss (weights, not biases), the same for every "
    "optimizer",
    low=0.0,
)
EARLY = Option(0, "early stopping patience in evaluations of the validation loss (0 = off)", low=0)
DROPOUT = _prob("dropout probability after each hidden activation")
DROPCONNECT = _prob("DropConnect probability on each hidden layer's weights")
BATCHNORM = Option(False, "batch norm before each hidden activation", choices=(False, True))
AUGMENT = Option(
    False, "random ±1-pixel shifts and Gaussian noise (σ=0.05) on training images", (False, True)
)
ACTIVATION = Option("relu", "hidden activation", choices=tuple(models.ACTIVATIONS))
INIT = Option("default", "weight init: xavier (Glorot), he (Kaiming) or PyTorch's", models.INITS)

REGULARIZATION = {"l1": L1, "weight_decay": L2, "early_stopping": EARLY}
MLP_OPTIONS = {
    "dropout": DROPOUT,
    "dropconnect": DROPCONNECT,
    "batchnorm": BATCHNORM,
    "activation": ACTIVATION,
    "init": INIT,
}


@dataclass(frozen=True)
class ProblemInfo:
    name: str
    description: str
    options: dict[str, Option]
    build: Callable[[dict[str, Any]], Problem]


# ------------------------------------------------------------------------------------------------
# pieces shared by the builders


def penalty_fn(l1: float, l2: float) -> Callable[[nn.Module], torch.Tensor] | None:
    """λ₁·Σ|w| + ½·λ₂·Σw² over weight matrices/kernels (parameters with ≥ 2 dimensions):
    biases and batch-norm scales are conventionally not penalized."""
    if l1 == 0 and l2 == 0:
        return None

    def penalty(model: nn.Module) -> torch.Tensor:
        weights = [p for p in model.parameters() if p.dim() >= 2]
        total = torch.zeros(())
        if l1:
            total = total + l1 * sum(w.abs().sum() for w in weights)
        if l2:
            total = total + 0.5 * l2 * sum(w.square().sum() for w in weights)
        return total

    return penalty


def shift_and_noise(
    side: int, noise: float = 0.05
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Augmentation for flattened side×side images: each image moves by a random offset in
    {−1, 0, 1}² (zero fill) and gets N(0, noise²) pixel noise."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        images = nn.functional.pad(x.view(n, side, side), (1, 1, 1, 1))
        dy, dx = torch.randint(0, 3, (2, n, 1), generator=generator)
        index = torch.arange(side)
        rows = (index + dy)[:, :, None]
        cols = (index + dx)[:, None, :]
        shifted = images[torch.arange(n)[:, None, None], rows, cols].reshape(n, side * side)
        return shifted + noise * torch.randn(shifted.shape, generator=generator)

    return augment


def classification(
    name: str,
    options: dict[str, Any],
    splits: dict[str, Split],
    builder: Callable[[], nn.Module],
    *,
    default_steps: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> Problem:
    return Problem(
        name=name,
        options=options,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        build_model=lambda seed: models.seeded(builder, seed),
        loss_fn=nn.functional.cross_entropy,
        batch_size=options["batch_size"],
        task="classification",
        penalty=penalty_fn(options.get("l1", 0.0), options.get("weight_decay", 0.0)),
        augment=augment,
        early_stopping=options.get("early_stopping", 0),
        default_steps=default_steps,
    )


def _mlp_kwargs(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "activation": o["activation"],
        "init": o["init"],
        "batchnorm": o["batchnorm"],
        "dropout": o["dropout"],
        "dropconnect": o["dropconnect"],
    }


# ------------------------------------------------------------------------------------------------
# the problems


def quadratic_loss(hessian: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(q) = mean over the batch of ½·qᵀQq, where q = θ − x is the model's output."""

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((output @ hessian) * output).sum(dim=1).mean()

    return loss_fn


def _quadratic_deep(o: dict[str, Any]) -> Problem:
    hessian = data.quadratic_hessian()
    splits = data.quadratic(noise=o["noise"])
    return Problem(
        name="quadratic-deep",
        options=o,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        build_model=lambda seed: models.seeded(
            lambda: models.QuadraticModel(data.QUADRATIC_DIM), seed
        ),
        loss_fn=quadratic_loss(hessian.float()),
        batch_size=o["batch_size"],
        task="regression",
        default_steps=500,
        hessian_fn=lambda: hessian.clone(),
    )


def _digits_logreg(o: dict[str, Any]) -> Problem:
    return classification(
        "digits-logreg",
        o,
        data.digits(),
        lambda: nn.Linear(64, 10),
        default_steps=300,
        augment=shift_and_noise(8) if o["augment"] else None,
    )


def _digits_mlp(o: dict[str, Any]) -> Problem:
    return classification(
        "digits-mlp",
        o,
        data.digits(),
        lambda: models.mlp(64, [o["width"]] * o["depth"], 10, **_mlp_kwargs(o)),
        default_steps=300,
        augment=shift_and_noise(8) if o["augment"] else None,
    )


def _mnist1d_mlp(o: dict[str, Any]) -> Problem:
    return classification(
        "mnist1d-mlp",
        o,
        data.mnist1d(validation=o["validation"]),
        lambda: models.mlp(40, [o["width"]] * o["depth"], 10, **_mlp_kwargs(o)),
        default_steps=1000,
    )


def _mnist1d_cnn(o: dict[str, Any]) -> Problem:
    return classification(
        "mnist1d-cnn",
        o,
        data.mnist1d(validation=o["validation"]),
        lambda: models.CNN1d(channels=o["channels"], batchnorm=o["batchnorm"]),
        default_steps=1000,
    )


def _deep_mlp(o: dict[str, Any]) -> Problem:
    if o["data"] == "digits":
        splits, features, augment = data.digits(), 64, shift_and_noise(8) if o["augment"] else None
    else:
        if o["augment"]:
            raise ValueError("problem 'deep-mlp': option augment=true applies to data=digits only")
        splits, features, augment = data.mnist1d(), 40, None
    return classification(
        "deep-mlp",
        o,
        splits,
        lambda: models.mlp(
            features, [o["width"]] * o["depth"], 10, residual=o["residual"], **_mlp_kwargs(o)
        ),
        default_steps=500,
        augment=augment,
    )


def _mnist1d_transfer(o: dict[str, Any]) -> Problem:
    if o["freeze"] and o["backbone_lr"] != 1.0:
        raise ValueError(
            f"problem 'mnist1d-transfer': backbone_lr={o['backbone_lr']!r} with freeze=true; a "
            f"frozen backbone has no learning rate (give one of the two)"
        )
    backbone = None
    if o["pretrained"]:
        stored = transfer.pretrained_backbone(
            o["arch"], o["width"], o["pretrain_steps"], o["cache"]
        )
        backbone = stored["backbone"]
    problem = classification(
        "mnist1d-transfer",
        o,
        transfer.splits(o["examples"]),
        transfer.model_builder(o["arch"], o["width"], backbone, o["freeze"]),
        default_steps=300,
    )
    problem.lr_groups = transfer.lr_groups(o["freeze"], o["backbone_lr"])
    return problem


def _tiny_lm(o: dict[str, Any]) -> Problem:
    return tiny_lm.build(o, penalty_fn(o["l1"], o["weight_decay"]))


def _torchvision(o: dict[str, Any]) -> Problem:
    from optimlab.problems import torchvision_data

    splits = torchvision_data.load(o["dataset"], o["root"], o["download"], o["val"])
    features = splits["train"][0].shape[1]
    classes = int(splits["train"][1].max()) + 1
    return classification(
        "torchvision",
        o,
        splits,
        lambda: models.mlp(features, [o["width"]] * o["depth"], classes, **_mlp_kwargs(o)),
        default_steps=2000,
    )


VALIDATION = Option(
    True,
    "hold out the last 500 training sequences for validation (false: train on all 4,000 as "
    "published; validation = test)",
    choices=(True, False),
)

PROBLEMS: dict[str, ProblemInfo] = {
    info.name: info
    for info in [
        ProblemInfo(
            "quadratic-deep",
            "DeepOBS's 100-D noisy quadratic ½(θ−x)ᵀQ(θ−x), Hessian spectrum like a deep net's",
            {"batch_size": BATCH, "noise": Option(0.6, "std of the data x", low=0.0)},
            _quadratic_deep,
        ),
        ProblemInfo(
            "digits-logreg",
            "logistic regression on scikit-learn's 8×8 digits",
            {"batch_size": BATCH, **REGULARIZATION, "augment": AUGMENT},
            _digits_logreg,
        ),
        ProblemInfo(
            "digits-mlp",
            "MLP (64-128-10, ReLU) on scikit-learn's 8×8 digits",
            {
                "batch_size": BATCH,
                "width": Option(128, "hidden width", low=1),
                "depth": Option(1, "number of hidden layers", low=1),
                **MLP_OPTIONS,
                **REGULARIZATION,
                "augment": AUGMENT,
            },
            _digits_mlp,
        ),
        ProblemInfo(
            "mnist1d-mlp",
            "MLP (40-100-100-10, ReLU) on MNIST-1D, as in the MNIST-1D paper",
            {
                "batch_size": Option(100, "minibatch size", low=1),
                "width": Option(100, "hidden width", low=1),
                "depth": Option(2, "number of hidden layers", low=1),
                **MLP_OPTIONS,
                **REGULARIZATION,
                "validation": VALIDATION,
            },
            _mnist1d_mlp,
        ),
        ProblemInfo(
            "mnist1d-cnn",
            "1-D CNN (3 conv layers of 25 channels) on MNIST-1D, as in the MNIST-1D paper",
            {
                "batch_size": Option(100, "minibatch size", low=1),
                "channels": Option(25, "channels of each convolution", low=1),
                "batchnorm": BATCHNORM,
                **REGULARIZATION,
                "validation": VALIDATION,
            },
            _mnist1d_cnn,
        ),
        ProblemInfo(
            "deep-mlp",
            "deep narrow MLP on digits: the vanishing/exploding-gradient setting",
            {
                "batch_size": BATCH,
                "depth": Option(10, "number of hidden layers", low=1),
                "width": Option(32, "hidden width", low=1),
                **MLP_OPTIONS,
                "activation": Option("sigmoid", "hidden activation", tuple(models.ACTIVATIONS)),
                "residual": Option(False, "skip connections h ← h + f(h)", choices=(False, True)),
                "data": Option("digits", "data set", choices=("digits", "mnist1d")),
                "augment": AUGMENT,
                **REGULARIZATION,
            },
            _deep_mlp,
        ),
        ProblemInfo(
            "mnist1d-transfer",
            "fine-tune on MNIST-1D digits 5-9 a network pretrained on digits 0-4 (fresh head)",
            {
                "batch_size": Option(50, "minibatch size", low=1),
                "examples": Option(
                    50, "training sequences per target class (0: all, about 350)", low=0
                ),
                "pretrained": Option(
                    True, "start from the pretrained backbone (false: from scratch)", (True, False)
                ),
                "freeze": Option(False, "train the head only", choices=(False, True)),
                "backbone_lr": Option(
                    1.0,
                    "the backbone's learning rate as a factor of the head's",
                    low=0.0,
                    high=10.0,
                ),
                "arch": Option(
                    "mlp", "network: mlp (2 hidden layers) or cnn (3 convolutions)", ("mlp", "cnn")
                ),
                "width": Option(100, "hidden width (mlp) or channels (cnn)", low=1),
                "pretrain_steps": Option(2000, "Adam steps of pretraining on digits 0-4", low=1),
                "cache": Option(transfer.DEFAULT_CACHE, "directory of the pretrained backbones"),
                **REGULARIZATION,
            },
            _mnist1d_transfer,
        ),
        ProblemInfo(
            "tiny-lm",
            "small causal transformer language model on a seeded order-2 Markov language",
            {
                "batch_size": Option(32, "sequences per minibatch", low=1),
                "width": Option(32, "model width (embedding size)", low=1),
                "depth": Option(2, "number of transformer blocks", low=1),
                "heads": Option(4, "attention heads per block (must divide width)", low=1),
                "context": Option(32, "tokens per sequence (the attention window)", low=3),
                "vocab": Option(16, "tokens of the synthetic language", low=2),
                "branching": Option(4, "tokens allowed after each two-token context", low=1),
                "dropout": _prob("dropout probability after attention and MLP"),
                **REGULARIZATION,
            },
            _tiny_lm,
        ),
        ProblemInfo(
            "torchvision",
            "MLP on a torchvision dataset (optional: needs torchvision; downloads on first use)",
            {
                "dataset": Option(
                    "FashionMNIST",
                    "torchvision dataset",
                    ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10"),
                ),
                "root": Option("~/.cache/optimlab/torchvision", "download/cache directory"),
                "download": Option(True, "download if missing", choices=(True, False)),
                "val": Option(5000, "training images held out for validation", low=1),
                "batch_size": BATCH,
                "width": Option(256, "hidden width", low=1),
                "depth": Option(2, "number of hidden layers", low=1),
                **MLP_OPTIONS,
                **REGULARIZATION,
            },
            _torchvision,
        ),
    ]
}


USER_SPEC = re.compile(r"^(?P<path>[^:]+\.py):(?P<factory>[A-Za-z_]\w*)(?::(?P<rest>.*))?$")


def list_problems() -> list[str]:
    """The names of the registered problems."""
    return list(PROBLEMS)


def problem_options(name: str) -> dict[str, Option]:
    """The options of the registered problem `name` (ValueError listing the valid names)."""
    return _info(name).options


def _info(name: str) -> ProblemInfo:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown problem {name!r}; valid names: {', '.join(PROBLEMS)} "
            f"(or path/to/file.py:factory for your own)"
        ) from None


def resolve_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Check `given` against the options of problem `name` and fill in the defaults."""
    options = problem_options(name)
    resolved = {key: option.default for key, option in options.items()}
    for key, value in given.items():
        if key not in options:
            raise ValueError(
                f"unknown option {key!r} for problem {name!r}; valid options: {', '.join(options)}"
            )
        resolved[key] = options[key].check(name, key, value)
    return resolved


def full_label(spec: str, label: str) -> str:
    """The problem's display name: the spec as the user gave it, options included
    (``deep-mlp:depth=10:activation=sigmoid``, not ``deep-mlp``, whose own label drops the
    options equal to their defaults); a file problem keeps its own label (the file's name, not
    its path)."""
    name = spec.strip().split(":", 1)[0]
    is_file = name.endswith(".py") or "/" in name or "\\" in name
    return label if is_file else spec.strip()


def get_problem(spec: str) -> Problem:
    """Build the problem described by `spec`: ``"name[:key=value...]"`` for a registered problem
    or ``"path/to/file.py:factory[:key=value...]"`` for a user's own.

    Raises ValueError naming the problem, the option or the value that is wrong, and listing the
    valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"problem spec must be a non-empty string, got {spec!r}")
    if "," in spec:
        raise ValueError(f"problem spec {spec!r} names more than one problem; give one")
    user = USER_SPEC.match(spec.strip())
    if user:
        return load_user_problem(user["path"], user["factory"], user["rest"])
    name, given = parse_item(spec)
    resolved = resolve_options(name, given)
    problem = _info(name).build(resolved)
    defaults = {key: option.default for key, option in problem_options(name).items()}
    problem.label = format_spec(name, {k: v for k, v in resolved.items() if v != defaults[k]})
    return problem


#: The source text of every problem file this process loaded, by absolute path. The executors
#: hand it to their workers (`export_sources` / `import_sources`), so a worker runs the code the
#: command read, even on a Ray node where the file does not exist or differs.
_SOURCES: dict[str, str] = {}


def export_sources() -> dict[str, str]:
    """The problem files' source texts this process loaded, to pass to `import_sources`."""
    return dict(_SOURCES)


def import_sources(sources: dict[str, str]) -> None:
    """Use problem files read by another process (see `export_sources`) in place of the disk."""
    _SOURCES.update(sources)


def load_user_problem(path: str, factory: str, rest: str | None = None) -> Problem:
    """Import `path` and call ``factory(**options)``; it must return a `Problem`.

    The problem's name becomes ``"<absolute path>:<factory>"`` so that worker processes and
    resumed runs find the same file. The file is read once per process; its text travels to the
    executors' workers with the trials (one self-contained file: what it imports must be
    installed wherever the trials run).
    """
    _, options = parse_item("user" + (":" + rest if rest else ""))
    file = Path(path).expanduser().resolve()
    key = str(file)
    if key not in _SOURCES:
        if not file.is_file():
            raise ValueError(f"problem file {path!r} does not exist (from spec {path}:{factory})")
        _SOURCES[key] = file.read_text(encoding="utf-8")
    module = _import_source(key, _SOURCES[key])
    function = getattr(module, factory, None)
    if not callable(function):
        found = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise ValueError(
            f"problem file {path!r} has no function {factory!r}; callables found: "
            f"{', '.join(found) or 'none'}"
        )
    try:
        problem = function(**options)
    except TypeError as error:
        raise ValueError(
            f"problem factory {path}:{factory} rejected options {options}: {error}"
        ) from error
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem factory {path}:{factory} returned {type(problem).__name__}; it must return "
            f"optimlab.problems.Problem"
        )
    problem.name = f"{file}:{factory}"
    problem.options = dict(options)
    problem.label = format_spec(f"{Path(path).name}:{factory}", options)
    return problem


@functools.cache
def _import_source(path: str, source: str) -> Any:
    """The module of a problem file's text, as importing `path` would make it."""
    digest = hashlib.sha1(path.encode()).hexdigest()[:12]
    module = types.ModuleType(f"optimlab_user_problem_{digest}")
    module.__file__ = path
    try:
        code = compile(source, path, "exec")
    except SyntaxError as error:
        raise ValueError(f"problem file {path!r} is not valid Python: {error}") from error
    exec(code, module.__dict__)  # running the user's own problem file is the point
    return module
