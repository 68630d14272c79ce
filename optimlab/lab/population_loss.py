"""Each member's mean cross-entropy over (M, B, C) logits at once, without ``vmap``.

The built-in classification problems train on ``torch.nn.functional.cross_entropy`` (the mean
over the minibatch of −log softmax(z)[y]). Under ``vmap`` that is torch's log-softmax along the
last axis, C = 10 numbers a row: ≈ 150–350 ns a row, the MLPs' largest cost after the matmuls.
Here the logits are laid out classes-major, (C, N) with N = M·B rows, and the same log-softmax
runs along the first axis (torch's kernel for a reduction over an outer axis: the rows sit side
by side in vector registers), ≈ 10× faster:

    forward   out = log_softmax(zᵀ, dim 0)        (max, Σ exp(z − max), log: torch's kernel)
              loss_m = −(1/B) Σ_b out[y_mb, (m, b)]
    backward  ∂out = −(g_m / B) at the targets, 0 elsewhere    (nll_loss's gradient, as torch)
              ∂z = ∂out − exp(out) · Σ_c ∂out                  (torch's log-softmax backward)

Rounding. The gradient is what training sees. torch's kernels for the two axes differ in how
they sum Σ exp over the classes (vector lanes, tree or sequential, and Sleef or libm ``exp`` on
the tail of a vector), so whether they round alike depends on C, the dtype and the machine's
vector width: `rounds_like_torch` checks it once per (C, dtype) on a probe, and `applies` uses
this formulation in float32 only where the probe's loss gradients equal
``cross_entropy``'s bit for bit (on AVX-512 with C < 16 they do); float64 uses it always (its
rounding differences are ~1e-16, far inside the 1e-8 parity). The rows are padded to a
multiple of 64 so that every row runs through the kernel's vector loop, none through its
scalar tail. The loss value itself sums the B picked log-probabilities in another order than
``nll_loss`` (a rounding difference in the value only; training reads its gradient, and the
value only for "is it finite").
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

#: rows padded to a multiple of this: every vector width's main loop covers them all
_PAD = 64


def cross_entropy_of_members(loss_fn: Any, tensor: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether the problem's loss is torch's plain ``cross_entropy`` on per-member rows: `tensor`
    (M, B, ·), the targets (M, B) classes."""
    return (
        loss_fn is nn.functional.cross_entropy
        and tensor.dim() == 3
        and targets.shape == tensor.shape[:2]
        and targets.dtype == torch.long
    )


def applies(loss_fn: Any, outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether a population's loss can run as `member_cross_entropy`: the problem's loss is
    torch's plain ``cross_entropy``, the outputs (M, B, C) logits, the targets (M, B) classes,
    and in float32 this layout rounds like torch's own on this machine."""
    if not cross_entropy_of_members(loss_fn, outputs, targets):
        return False
    if outputs.dtype == torch.float64:
        return True
    return outputs.dtype == torch.float32 and rounds_like_torch(outputs.shape[2], outputs.dtype)


def member_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per member m: ``cross_entropy(logits[m], targets[m])`` (mean over its B rows): (M,)."""
    return _MemberCrossEntropy.apply(logits, targets)


class _MemberCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        members, batch, classes = logits.shape
        rows = members * batch
        padded = rows + (-rows) % _PAD
        columns = logits.new_empty(classes, padded)
        columns[:, :rows].view(classes, members, batch).copy_(logits.permute(2, 0, 1))
        columns[:, rows:] = 0
        out = torch.log_softmax(columns, 0)
        picked = out[:, :rows].gather(0, targets.reshape(1, rows)).view(members, batch)
        ctx.save_for_backward(out, targets)
        ctx.shape = (members, batch, classes)
        return -picked.sum(1) / batch

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        out, targets = ctx.saved_tensors
        members, batch, classes = ctx.shape
        rows = members * batch
        # nll_loss's gradient: −(g / total weight) at each row's target
        scale = -(grad / batch)
        grad_out = torch.zeros_like(out)
        grad_out[:, :rows].scatter_(
            0, targets.reshape(1, rows), scale.repeat_interleave(batch).view(1, rows)
        )
        grad_columns = torch.ops.aten._log_softmax_backward_data(grad_out, out, 0, out.dtype)
        # a view (M, B, C) of the classes-major gradient: the layers before read it as it is
        return grad_columns[:, :rows].view(classes, members, batch).permute(1, 2, 0), None


@functools.cache
def rounds_like_torch(classes: int, dtype: torch.dtype) -> bool:
    """Whether `member_cross_entropy`'s loss gradients equal ``cross_entropy``'s bit for bit
    on a probe of 4 members × 100 rows of `classes` logits (a different order of summation
    shows in a few percent of such rows)."""
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(4, 100, classes, generator=generator, dtype=torch.float64)).to(dtype)
    targets = torch.randint(0, classes, (4, 100), generator=generator)
    with torch.enable_grad():
        batched = logits.clone().requires_grad_()
        member_cross_entropy(batched, targets).sum().backward()
    return bool(torch.equal(batched.grad, cross_entropy_gradients(logits, targets)))


def cross_entropy_gradients(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The reference of the float32 probes: ∂cross_entropy(logits[m], targets[m])/∂logits[m]
    by torch's own autograd, member by member, stacked (M, B, C)."""
    with torch.enable_grad():
        single = []
        for z, y in zip(logits, targets):
            z = z.clone().requires_grad_()
            nn.functional.cross_entropy(z, y).backward()
            single.append(z.grad)
    return torch.stack(single)
