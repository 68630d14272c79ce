"""Optional real-data problems from torchvision's datasets (they download on first use).

``torchvision:dataset=FashionMNIST[:root=DIR][:download=false][:val=5000]``: the images are
loaded once, scaled to [0, 1] and flattened; the last `val` training images are the validation
split; the model is an MLP (options as digits-mlp). torchvision is not a dependency of
optimlab: this module imports it only when such a problem is built, and says how to install it
if it is missing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimlab.problems.base import Split

DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10")


def _require_torchvision() -> Any:
    try:
        import torchvision
    except ImportError:
        raise ValueError(
            "problem 'torchvision' needs the torchvision package, which is not installed; "
            "install the build matching your torch (pip install torchvision) or use a built-in "
            "problem"
        ) from None
    return torchvision


def _as_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    images = dataset.data
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    targets = dataset.targets
    targets = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x, targets.astype(np.int64)


@functools.cache
def load(dataset: str, root: str, download: bool, val: int) -> dict[str, Split]:
    """train/val/test splits of a torchvision dataset, cached per process."""
    torchvision = _require_torchvision()
    cls = getattr(torchvision.datasets, dataset)
    directory = str(Path(root).expanduser())
    try:
        train = cls(directory, train=True, download=download)
        test = cls(directory, train=False, download=download)
    except RuntimeError as error:  # "Dataset not found. You can use download=True …"
        raise ValueError(f"problem 'torchvision': {dataset} in {directory}: {error}") from None
    x, y = _as_arrays(train)
    x_test, y_test = _as_arrays(test)
    if not 0 < val < len(x):
        raise ValueError(
            f"problem 'torchvision': val={val} must be between 1 and {len(x) - 1} "
            f"({dataset} has {len(x)} training images)"
        )
    cut = len(x) - val
    as_split = lambda a, b: (torch.from_numpy(a), torch.from_numpy(b))  # noqa: E731
    return {
        "train": as_split(x[:cut], y[:cut]),
        "val": as_split(x[cut:], y[cut:]),
        "test": as_split(x_test, y_test),
    }
