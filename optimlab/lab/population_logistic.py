"""A population of logistic regressions (one ``Linear`` layer trained on ``cross_entropy``, e.g.
digits-logreg) as one autograd node: the linear layer and the loss fused.

Per member m, on its own minibatch X_m (B × I) with targets y_m, weight W_m (C × I), bias b_m:

    forward   Z_m = W_m X_mᵀ + b_m                 (C × B: classes-major, the minibatch the long
                                                    axis; one ``baddbmm`` over the members)
              out = log_softmax(Z_m, over the C classes)   (torch's kernel for an outer axis)
              L_m = −(1/B) Σ_b out[y_mb, b]
    backward  ∂out = −(g_m / B) at the targets, 0 elsewhere     (g_m = ∂(total)/∂L_m)
              G_m = ∂out − exp(out) · Σ_c ∂out              (C × B: torch's log-softmax backward)
              ∂W_m = G_m X_m    (one ``bmm``: (C × B)(B × I), the fast orientation)
              ∂b_m = Σ_b G_m

Why one node. Written as a `BatchedLinear` followed by `population_loss.member_cross_entropy`
the logits go (M, C, B) → a padded (C, M·B) copy → log-softmax → a zero-filled gradient
buffer, a scatter, torch's log-softmax backward → a strided (M, B, C) view that the weight's
product reads. Here the logits stay (M, C, B) from the product to the weight's gradient: no padded
copy and no strided view in the products.

Rounding. The gradient is computed by torch's own kernels (``nll_loss``'s gradient through
``_log_softmax_backward_data``, which rounds its target entry once, a fused multiply-add: an
exp(out)·s − s written out in two operations differs from it in most target entries), so it
equals cross-entropy's wherever the log-softmax does. The log-softmax's sum over the classes runs in another order than torch's last-axis kernel: in float64 a
difference of ~1e-16 (far inside the populations' 1e-8 parity); in float32 the population uses
this node where `rounds_like_torch` finds its loss gradients bit for bit cross-entropy's on a
probe (as `population_loss` does for its own layout), else the unfused layers.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from optimlab.lab.population_loss import cross_entropy_gradients, cross_entropy_of_members


def names(module: nn.Module) -> tuple[str, str | None] | None:
    """(weight name, bias name or None) if `module` is one plain ``nn.Linear``, else None."""
    if type(module) is not nn.Linear:
        return None
    return "weight", "bias" if module.bias is not None else None


def applies(loss_fn: Any, inputs: torch.Tensor, targets: torch.Tensor, classes: int) -> bool:
    """Whether `member_logistic_loss` computes the population's loss: the problem's loss is
    torch's plain ``cross_entropy``, the inputs (M, B, I), the targets (M, B) classes, and in
    float32 its gradients round like torch's on this machine."""
    if not cross_entropy_of_members(loss_fn, inputs, targets):
        return False
    if inputs.dtype == torch.float64:
        return True
    return inputs.dtype == torch.float32 and rounds_like_torch(classes, inputs.shape[1])


def member_logistic_loss(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """Per member m: ``cross_entropy(linear(inputs[m], weight[m], bias[m]), targets[m])``.

    inputs (M, B, I), weight (M, C, I), bias (M, C) or None, targets (M, B) → losses (M,)."""
    return _MemberLogisticLoss.apply(inputs, weight, bias, targets)


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the classes of classes-major logits (M, C, B)."""
    return torch.log_softmax(logits, 1)


def logit_gradient(out: torch.Tensor, targets: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """∂(Σ_m g_m L_m)/∂Z for log-probabilities out (M, C, B), targets (M, B), g (M,):
    (g_m / B)·(exp(out) − onehot(y_m)), computed as torch's cross-entropy computes it —
    ``nll_loss``'s gradient (−g_m/B at the targets) through torch's log-softmax backward
    (∂out − exp(out)·Σ_c ∂out, a fused multiply-add), here along the classes axis 1."""
    at = targets.unsqueeze(1)
    grad_out = torch.zeros_like(out)
    grad_out.scatter_(1, at, (grad / -out.shape[2]).view(-1, 1, 1).expand(at.shape))
    return torch.ops.aten._log_softmax_backward_data(grad_out, out, 1, out.dtype)


class _MemberLogisticLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        columns = inputs.transpose(1, 2)  # (M, I, B): a view, the product reads it transposed
        if bias is None:
            logits = torch.bmm(weight, columns)
        else:
            logits = torch.baddbmm(bias.unsqueeze(2), weight, columns)
        out = log_probabilities(logits)  # (M, C, B)
        picked = out.gather(1, targets.unsqueeze(1))  # (M, 1, B)
        ctx.save_for_backward(inputs, weight, out, targets)
        ctx.has_bias = bias is not None
        return picked.sum((1, 2)).div_(-inputs.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        inputs, weight, out, targets = ctx.saved_tensors
        gradient = logit_gradient(out, targets, grad)  # (M, C, B)
        needs = ctx.needs_input_grad
        grad_inputs = torch.bmm(gradient.transpose(1, 2), weight) if needs[0] else None
        grad_weight = torch.bmm(gradient, inputs) if needs[1] else None
        grad_bias = gradient.sum(2) if ctx.has_bias and needs[2] else None
        return grad_inputs, grad_weight, grad_bias, None


@functools.cache
def rounds_like_torch(classes: int, batch: int) -> bool:
    """Whether the gradient with respect to the logits (`logit_gradient`) equals
    ``cross_entropy``'s bit for bit in float32, on a probe of 4 members × `batch` rows of
    `classes` logits (a different order of summation over the classes shows in a few percent
    of such rows)."""
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, batch, classes, generator=generator)
    targets = torch.randint(0, classes, (4, batch), generator=generator)
    out = log_probabilities(logits.transpose(1, 2).contiguous())
    gradient = logit_gradient(out, targets, torch.ones(4))
    return bool(torch.equal(gradient.transpose(1, 2), cross_entropy_gradients(logits, targets)))
