"""Transfer learning on MNIST-1D: pretrain on one half of the classes, fine-tune on the other.

The *source* task is MNIST-1D's digits 0–4, the *target* task its digits 5–9 (relabelled 0–4).
One network — a backbone (the hidden layers) and a head (the last linear layer) — is first
trained on the source task's training sequences, once and deterministically; the problem is
then the target task: the pretrained backbone with a fresh, seeded head of 5 outputs, trained on
`examples` sequences per target class. The options are the choices of fine-tuning practice:

- ``freeze=true``: only the head trains (feature extraction); the backbone's parameters are
  not given to the optimizer and keep ``requires_grad=False``.
- ``backbone_lr=F``: discriminative learning rates (fastai's ``fine_tune``, ULMFiT): the
  backbone's parameters form their own param group whose learning rate is F × the trial's
  (`optimlab.problems.Problem.build_optimizer`), so every optimizer, and every schedule, handles
  it through torch's param groups.
- ``pretrained=false``: the same network and data from a random initialization — the baseline
  that fine-tuning must beat.

The pretraining run (torch.optim.Adam, lr 1e-3, minibatches of 100, seed 0, one thread, so the
same weights on every run of the same torch) is stored in the user's cache directory
(``cache``, default ``~/.cache/optimlab/pretrained``) under a name that hashes everything that
determines it (network, widths, steps, optimizer, data split, torch version, the file format):
it is computed once per machine and reused by every comparison and worker, whatever their
``--out`` — which is why it lives in the user's cache and not in a run's directory. It is
written to a temporary file and renamed into place (atomic), under a file lock, so concurrent
workers compute it once and never read half a file. The weights also travel to the executors'
workers with the generated data sets (`optimlab.problems.data.export_cache`), so a Ray node uses
the driver's backbone without recomputing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimlab.problems import data, models
from optimlab.problems.base import Split

#: the digits of the source task (pretraining) and of the target task (the problem)
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
#: how the backbone is pretrained (part of its cache key)
PRETRAIN = {"optimizer": "torch.optim.Adam", "lr": 1e-3, "batch_size": 100, "seed": 0}
#: bump when the pretraining procedure or the file's contents change
CACHE_FORMAT = 1
DEFAULT_CACHE = "~/.cache/optimlab/pretrained"


class TransferNet(nn.Module):
    """``backbone`` (features) → ``head`` (a linear layer on them)."""

    def __init__(self, backbone: nn.Module, features: int, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class _CNNFeatures(nn.Module):
    """`models.CNN1d`'s convolutions, flattened: the CNN's backbone."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.features = models.CNN1d(channels=channels).features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.unsqueeze(1)).flatten(1)


def build_network(arch: str, width: int, classes: int) -> TransferNet:
    """The network, randomly initialized (torch's global generator): ``mlp``, two ReLU layers of
    `width` (the MNIST-1D paper's MLP); ``cnn``, `models.CNN1d`'s three convolutions of `width`
    channels (5 positions left)."""
    if arch == "mlp":
        backbone: nn.Module = nn.Sequential(*models.mlp(40, [width, width], 1)[:-1])
        return TransferNet(backbone, width, classes)
    return TransferNet(_CNNFeatures(width), 5 * width, classes)


def task(split: Split, classes: tuple[int, ...], per_class: int = 0) -> Split:
    """The sequences of `split` whose label is in `classes`, relabelled 0…len−1; ``per_class``
    > 0 keeps the first that many of each class (the split's own order: deterministic)."""
    x, y = split
    keep = torch.zeros(len(y), dtype=torch.bool)
    labels = torch.full_like(y, -1)
    for new, old in enumerate(classes):
        members = (y == old).nonzero().flatten()
        if per_class:
            members = members[:per_class]
        keep[members] = True
        labels[members] = new
    return x[keep], labels[keep]


# ------------------------------------------------------------------------------------------------
# pretraining and its cache


def cache_key(arch: str, width: int, steps: int) -> dict[str, Any]:
    """Everything that determines the pretrained backbone."""
    return {
        "format": CACHE_FORMAT,
        "data": "mnist1d(make_dataset(get_dataset_args()), validation=True)",
        "source_classes": list(SOURCE_CLASSES),
        "arch": arch,
        "width": width,
        "steps": steps,
        **PRETRAIN,
        "torch": str(torch.__version__),
    }


def cache_path(directory: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(directory).expanduser() / f"mnist1d-transfer-{key['arch']}-{digest}.pt"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path.lock`` (POSIX advisory): one process pretrains at a time."""
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrain(arch: str, width: int, steps: int) -> dict[str, Any]:
    """Train the whole network on the source task; the backbone's weights and the source test
    accuracy. Deterministic: seed 0, one torch thread, minibatch order from its own generator."""
    splits = data.mnist1d(validation=True)
    x, y = task(splits["train"], SOURCE_CLASSES)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = models.seeded(
            lambda: build_network(arch, width, len(SOURCE_CLASSES)), PRETRAIN["seed"]
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN["lr"])
        generator = torch.Generator().manual_seed(PRETRAIN["seed"])
        batch, order, position = (
            PRETRAIN["batch_size"],
            torch.randperm(len(x), generator=generator),
            0,
        )
        for _ in range(steps):
            if position + batch > len(x):
                order, position = torch.randperm(len(x), generator=generator), 0
            index = order[position : position + batch]
            position += batch
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            x_test, y_test = task(splits["test"], SOURCE_CLASSES)
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    finally:
        torch.set_num_threads(previous)
    return {"backbone": model.backbone.state_dict(), "source_test_accuracy": accuracy}


def _load(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached backbone at `path` if it is one for `key`; None if missing, unreadable (a
    file from elsewhere) or for another key: it is a cache, so it is then computed again."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception:
        return None
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


def pretrained_backbone(arch: str, width: int, steps: int, directory: str) -> dict[str, Any]:
    """The pretrained backbone: from this process's memory (or what the driver handed over),
    else from the cache file, else pretrained now and written there atomically."""
    key = cache_key(arch, width, steps)
    path = cache_path(directory, key)
    remembered = data.recall(path.name)
    if remembered is not None:
        return remembered
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        stored = _load(path, key)
        if stored is None:
            stored = {"key": key, **pretrain(arch, width, steps)}
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(handle, "wb") as file:
                    torch.save(stored, file)
                os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from other users
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
    data.remember(path.name, stored)
    return stored


# ------------------------------------------------------------------------------------------------
# the problem's pieces


def splits(examples: int) -> dict[str, Split]:
    """The target task: `examples` training sequences per class (0: all), and every validation
    and test sequence of the target classes."""
    full = data.mnist1d(validation=True)
    return {
        "train": task(full["train"], TARGET_CLASSES, examples),
        "val": task(full["val"], TARGET_CLASSES),
        "test": task(full["test"], TARGET_CLASSES),
    }


def model_builder(
    arch: str, width: int, backbone: dict[str, torch.Tensor] | None, freeze: bool
) -> Any:
    """The network's builder (the problem seeds it: the head is fresh from the seed) with the
    pretrained backbone loaded, its parameters frozen when asked."""

    def build() -> TransferNet:
        model = build_network(arch, width, len(TARGET_CLASSES))
        if backbone is not None:
            model.backbone.load_state_dict(backbone)
        if freeze:
            model.backbone.requires_grad_(False)
        return model

    return build


def lr_groups(freeze: bool, backbone_lr: float) -> Any:
    """``model -> [(parameters, lr factor)]`` for `Problem.lr_groups`: the head at the trial's
    rate; the backbone at `backbone_lr` × it, or left out when frozen."""

    def groups(model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        head = list(model.head.parameters())
        if freeze:
            return [(head, 1.0)]
        return [(list(model.backbone.parameters()), backbone_lr), (head, 1.0)]

    return groups
