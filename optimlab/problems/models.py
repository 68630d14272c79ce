"""Models and the regularizers that live inside them (dropout, DropConnect, batch norm).

Everything is a plain `torch.nn.Module`; `seeded` makes any builder deterministic for a seed
without disturbing the caller's global random state: the initial weights come from torch's
generator seeded to the seed, and the dropout and DropConnect masks drawn in training from the
model's own `MaskStream` seeded by it (`optimlab.problems.masks`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from optimlab.problems.masks import MaskStream, attach_masks

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
}
INITS = ("default", "xavier", "he")


def seeded(builder: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Call `builder` with torch's global generator seeded to `seed`, restoring it afterwards;
    the model's dropout/DropConnect masks then come from a `MaskStream` seeded by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return attach_masks(builder(), seed)


class _Masked:
    """A layer that draws keep-masks in training: from ``masks`` (its model's `MaskStream`, set
    by `attach_masks`), or from torch's global generator when it has none (a layer built
    alone)."""

    masks: MaskStream | None

    def _keep(self, like: torch.Tensor, p: float) -> torch.Tensor:
        if self.masks is None:
            return torch.empty_like(like).bernoulli_(1 - p)
        return self.masks.keep(like, p)

    @property
    def generator(self) -> torch.Generator | None:
        """The generator the masks come from (`optimlab.optim.modes.recompute_batchnorm` keeps
        its state: an evaluation does not shift the training run's masks)."""
        return None if self.masks is None else self.masks.generator


class Dropout(_Masked, nn.Dropout):
    """Dropout (Srivastava et al. 2014): in training x ⊙ M / (1 − p), M ~ Bernoulli(1 − p)
    per element, the mask from the model's `MaskStream`; at evaluation x unchanged."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.masks = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self._keep(x, self.p) / (1 - self.p)


class DropConnectLinear(_Masked, nn.Linear):
    """A linear layer whose weights are dropped with probability p while training (Wan et al.
    2013, "Regularization of Neural Networks using DropConnect"): W̃ = W ⊙ M / (1 − p),
    M ~ Bernoulli(1 − p), one mask per minibatch (from the model's `MaskStream`); at
    evaluation W is used unchanged (the scaling keeps the expected pre-activation equal)."""

    def __init__(self, in_features: int, out_features: int, p: float) -> None:
        super().__init__(in_features, out_features)
        self.p = p
        self.masks = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        mask = self._keep(self.weight, self.p)
        return nn.functional.linear(x, self.weight * mask / (1 - self.p), self.bias)


def linear(in_features: int, out_features: int, dropconnect: float) -> nn.Linear:
    if dropconnect > 0:
        return DropConnectLinear(in_features, out_features, dropconnect)
    return nn.Linear(in_features, out_features)


def initialize(module: nn.Module, init: str, activation: str) -> None:
    """Re-initialize every linear/conv weight: ``xavier`` (Glorot & Bengio 2010,
    Var w = 2/(fan_in + fan_out)), ``he`` (He et al. 2015, Var w = 2/fan_in, for ReLU-like units),
    ``default`` (PyTorch's own). Biases are zeroed for xavier and he."""
    if init == "default":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear | nn.Conv1d):
            if init == "xavier":
                nn.init.xavier_normal_(layer.weight)
            else:
                nonlinearity = "leaky_relu" if activation == "leaky_relu" else "relu"
                nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlinearity)
            nn.init.zeros_(layer.bias)


class Block(nn.Module):
    """linear → [batch norm] → activation → [dropout], optionally with a skip connection
    h ← h + block(h) (He et al. 2016) that gives gradients a path around the nonlinearity."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str,
        *,
        batchnorm: bool = False,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [linear(in_features, out_features, dropconnect)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(out_features))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.residual = residual and in_features == out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


def mlp(
    in_features: int,
    hidden: list[int],
    out_features: int,
    *,
    activation: str = "relu",
    init: str = "default",
    batchnorm: bool = False,
    dropout: float = 0.0,
    dropconnect: float = 0.0,
    residual: bool = False,
) -> nn.Sequential:
    """A multilayer perceptron: len(hidden) `Block`s, then a linear output layer (logits)."""
    widths = [in_features, *hidden]
    blocks: list[nn.Module] = [
        Block(
            widths[i],
            widths[i + 1],
            activation,
            batchnorm=batchnorm,
            dropout=dropout,
            dropconnect=dropconnect,
            residual=residual,
        )
        for i in range(len(hidden))
    ]
    model = nn.Sequential(*blocks, nn.Linear(widths[-1], out_features))
    initialize(model, init, activation)
    return model


class CNN1d(nn.Module):
    """A small 1-D convolutional net for MNIST-1D's length-40 sequences: three ReLU
    convolutions with stride 2 (40 → 19 → 10 → 5 positions, `channels` each), then a linear
    layer on the flattened features — the size of the network in the MNIST-1D paper."""

    def __init__(
        self, length: int = 40, classes: int = 10, channels: int = 25, batchnorm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for kernel, padding in ((5, 1), (3, 1), (3, 1)):
            layers.append(nn.Conv1d(in_channels, channels, kernel, stride=2, padding=padding))
            if batchnorm:
                layers.append(nn.BatchNorm1d(channels))
            layers.append(nn.ReLU())
            in_channels = channels
            length = (length + 2 * padding - kernel) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


class QuadraticModel(nn.Module):
    """The "model" of the noisy quadratic: parameter θ (initialized to ones, as DeepOBS) and
    output θ − x, so that the loss ½(θ − x)ᵀQ(θ − x) is computed by the problem's loss_fn."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta - x
