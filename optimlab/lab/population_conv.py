"""Convolutions for populations: a ``Conv1d`` written as one matrix product per member, laid out
so that the product is wide, which ``vmap`` turns into one batched matmul over the members.

``vmap`` over ``torch.nn.functional.conv1d`` with a weight per member gains nothing per member
(docs/compare.md, "Speed"): the convolution runs as a grouped convolution, no faster than M
separate ones. The same convolution as a matrix product (im2col):

    out[o, b, t] = bias[o] + Σ_{c, j} W[o, c, j] · x_pad[b, c, s·t + j]

i.e. out (O × B·T) = W (O × C·k) @ cols (C·k × B·T), cols[(c, j), (b, t)] = x_pad[b, c, s·t + j]
(the padded input unfolded into its windows). Per member that is one matmul whose long axis
(B·T, the minibatch's positions) is the output's columns; under ``vmap`` the M of them are one
``bmm``. The layout matters: with the weight on the left the product is (25 × 75)·(75 × 1000)
for mnist1d-cnn's middle layer, and BLAS runs it ≈ 3× faster than the transposed
(1000 × 75)·(75 × 25) (measured batched over 36 members, one thread: 26 against 7.8 GFLOP/s;
docs/compare.md, "Speed"). So activations are kept
channel-major, (C, B, T) in memory, and handed between layers as (B, C, T) views: the next
convolution's ``transpose`` is free, and elementwise layers in between (ReLU) keep the layout.

`batchable(module)` is a copy of a module whose ``Conv1d`` layers (zero padding, no dilation or
groups) compute this way, with the same parameter names: ``functional_call`` with a population's
stacked parameters runs it as it runs the original. Single trials keep ``torch.nn.Conv1d``; the
two agree to rounding (tests/test_population_conv.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv1d_as_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int
) -> torch.Tensor:
    """``conv1d(x, weight, bias, stride, padding)`` for x (B, C, L), weight (O, C, k), as
    W (O × C·k) @ cols (C·k × B·T); the result (B, O, T) is a view of a (O, B, T) tensor."""
    out_channels, _, kernel = weight.shape
    batch = x.shape[0]
    padded = nn.functional.pad(x.transpose(0, 1), (padding, padding))  # (C, B, L + 2p)
    patches = padded.unfold(
        -1, kernel, stride
    )  # (C, B, T, k): [c, b, t, j] = padded[c, b, s·t + j]
    positions = patches.shape[-2]
    # cols[(c, j), (b, t)]: (c, j) in the weight's (C, k) order (unfold, not k strided slices:
    # its backward is one scatter, where slices' is k zero-filled copies; measured faster)
    cols = patches.permute(0, 3, 1, 2).reshape(-1, batch * positions)
    out = weight.reshape(out_channels, -1) @ cols
    if bias is not None:
        out = out + bias.unsqueeze(1)
    return out.view(out_channels, batch, positions).transpose(0, 1)


class MatmulConv1d(nn.Module):
    """A ``Conv1d`` (same ``weight`` and ``bias`` parameters) that computes as
    `conv1d_as_matmul`."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = conv.stride[0]
        self.padding = int(conv.padding[0])  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # an unbatched (C, L) input, as Conv1d accepts
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return conv1d_as_matmul(x, self.weight, self.bias, self.stride, self.padding)


def supported(conv: nn.Conv1d) -> bool:
    """Whether `MatmulConv1d` computes `conv` (zero padding given as a number, no dilation, one
    group)."""
    return (
        conv.groups == 1
        and conv.dilation == (1,)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def batchable(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose supported ``Conv1d`` layers are `MatmulConv1d` (the same
    parameter and buffer names; objects other than tensors and modules, such as a mask
    stream, are shared with `module`, not copied). `module` itself is returned when it has no
    such layer."""
    if not any(isinstance(m, nn.Conv1d) and supported(m) for m in module.modules()):
        return module
    # share every non-module attribute object (a MaskStream) with the original
    memo: dict[int, object] = {}
    for m in module.modules():
        for value in vars(m).values():
            if not isinstance(value, nn.Module | torch.Tensor | dict | list | tuple | set):
                memo[id(value)] = value
    copied = copy.deepcopy(module, memo)
    for parent in copied.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv1d) and supported(child):
                parent._modules[name] = MatmulConv1d(child)
    return copied
