"""A population's forward written out by hand for the built-in models: batched matmuls over
stacked weights, no ``vmap``, no ``functional_call``.

`explicit_forward(module)` walks a model built from the layers the built-in problems use
(``Sequential``, `optimlab.problems.models.Block`, ``Linear``, `DropConnectLinear`, ``Conv1d``,
``BatchNorm1d``, the activations, `Dropout`, `CNN1d`, `QuadraticModel`) and returns a function
that runs M members at once on stacked parameters (name → (M, *shape)); any other layer returns
None and the population runs under ``vmap`` (`optimlab.lab.population.BatchedModel`).

Member i computes what its single trial computes, in the same order of layers and with the same
masks; only the grouping of the arithmetic differs (float rounding):

- ``Linear`` (`BatchedLinear`): h (M, B, I) ↦ bias + h Wᵀ as one ``baddbmm`` over the
  members, each product of the forward and backward in its faster orientation; consecutive
  linear layers (with ReLUs between them) are one autograd node, `BatchedLinearChain`.
- ``Conv1d`` (`BatchedConv1d`): activations are position-major, (M, C, L, B), the minibatch
  innermost; out (O × T·B) = W (O × C·k) @ cols (C·k × T·B) per member (the product with the
  weight on the left is the wide one, docs/compare.md "Speed"), cols the input's windows,
  copied as k runs of B contiguous numbers. Its backward is written out: ∂W = ∂out · colsᵀ
  and, for the input, ∂cols = Wᵀ · ∂out written back once per input position — no
  ``unfold`` backward (a scatter into zero-filled buffers) and no layout copies, which were
  60 % of the vmap'd formulation's CPU time.
- A ReLU is fused into the layer after it (a convolution, a linear layer, the CNN's head
  `BatchedHead`): applied in that layer's forward, its mask put in place on the input gradient
  the layer computes (`_compile_sequence`; ``Block``s without a skip connection are flattened
  into their sequence, so the ReLU that ends one block meets the next block's layer).
- ``BatchNorm1d`` in training: each member's batch statistics over its own minibatch (and, for
  convolutions, positions), its running statistics updated in place as torch does
  (r ← (1 − m)·r + m·stat, the variance unbiased).
- Dropout / DropConnect: the masks are the members' own (`BatchedModel.masks`), taken in the
  order the single trial's forward draws them.

The loss is not part of the forward: `optimlab.lab.population_loss` (torch's cross-entropy,
classes-major, where it rounds as torch's own) or the problem's own function under ``vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optimlab.problems.models import Block, CNN1d, DropConnectLinear, Dropout, QuadraticModel

#: a member-batched forward: (params name → (M, *shape), buffers name → (M, *shape), inputs
#: (M, B, …), masks in draw order (consumed), training) → outputs (M, B, …)
Forward = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, list, bool], torch.Tensor
]

_ACTIVATIONS: dict[type, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda m, h: torch.relu(h),
    nn.Sigmoid: lambda m, h: torch.sigmoid(h),
    nn.Tanh: lambda m, h: torch.tanh(h),
    nn.LeakyReLU: lambda m, h: nn.functional.leaky_relu(h, m.negative_slope),
}


class _Context:
    """What one batched forward reads: the stacked tensors, the masks, the mode."""

    def __init__(
        self, params: dict, buffers: dict, masks: list[torch.Tensor], training: bool
    ) -> None:
        self.params, self.buffers, self.masks, self.training = params, buffers, masks, training

    def mask(self) -> torch.Tensor:
        if not self.masks:
            raise RuntimeError("the forward drew more masks than were supplied")
        return self.masks.pop(0)


Layer = Callable[[_Context, torch.Tensor], torch.Tensor]


def explicit_forward(module: nn.Module) -> Forward | None:
    """The member-batched forward of `module` (None: a layer this module does not write out)."""
    layer = _compile(module, "")
    if layer is None:
        return None

    def forward(
        params: dict, buffers: dict, x: torch.Tensor, masks: list, training: bool
    ) -> torch.Tensor:
        context = _Context(params, buffers, list(masks), training)
        out = layer(context, x)
        if context.masks:
            raise RuntimeError(f"the forward left {len(context.masks)} supplied masks")
        return out

    return forward


def _name(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def _compile(module: nn.Module, prefix: str) -> Layer | None:
    kind = type(module)
    if kind is nn.Sequential:
        return _compile_sequence(list(module.named_children()), prefix)
    if kind is Block:
        body = _compile(module.body, f"{prefix}body.")
        if body is None:
            return None
        residual = module.residual
        return lambda c, h: h + body(c, h) if residual else body(c, h)
    if kind in (nn.Linear, DropConnectLinear):
        return _linear(module, prefix)
    if kind is nn.Conv1d:
        return _conv(module, prefix)
    if kind is nn.BatchNorm1d:
        return _batchnorm(module, prefix)
    if kind in _ACTIVATIONS:
        act = _ACTIVATIONS[kind]
        return lambda c, h: act(module, h)
    if kind is Dropout:
        p = module.p
        if p == 0:
            return lambda c, h: h
        return lambda c, h: h * c.mask() / (1 - p) if c.training else h
    if kind is CNN1d:
        return _cnn(module, prefix)
    if kind is QuadraticModel:
        name = _name(prefix, "theta")
        return lambda c, x: c.params[name].unsqueeze(1) - x
    return None


def _flatten(children: list[tuple[str, nn.Module]], prefix: str) -> list[tuple[str, nn.Module]]:
    """A ``Sequential``'s layers as (parameter prefix, module), with the layers of a plain
    (non-residual) `Block` and of a nested ``Sequential`` in its place: the same function,
    and a ReLU at the end of one block next to the linear layer that starts the next."""
    flat: list[tuple[str, nn.Module]] = []
    for name, child in children:
        if type(child) is Block and not child.residual and type(child.body) is nn.Sequential:
            flat += _flatten(list(child.body.named_children()), f"{prefix}{name}.body.")
        elif type(child) is nn.Sequential:
            flat += _flatten(list(child.named_children()), f"{prefix}{name}.")
        else:
            flat.append((f"{prefix}{name}.", child))
    return flat


def _compile_sequence(children: list[tuple[str, nn.Module]], prefix: str) -> Layer | None:
    """A ``Sequential``'s layers in order, with two fusions:

    - a ReLU followed by a convolution is one layer, `BatchedConv1d` with ``relu_input`` (the
      ReLU applied while it copies its windows, its mask on the input gradient in place),
      and so is a ReLU followed by a `DropConnectLinear` (`BatchedLinear`);
    - consecutive linear layers (``nn.Linear``), each after a ReLU or not, are one
      `BatchedLinearChain`."""
    flat = _flatten(children, prefix)
    layers: list[Layer | None] = []
    chain: list[tuple[str, nn.Linear, bool]] = []  # (prefix, layer, after a ReLU)
    i = 0
    while i < len(flat):
        name, child = flat[i]
        relu = type(child) is nn.ReLU and i + 1 < len(flat)
        after_name, after = flat[i + 1] if relu else (name, child)
        if type(after) is nn.Linear:
            chain.append((after_name, after, relu))
            i += 2 if relu else 1
            continue
        if chain:
            layers.append(_linear_chain(chain))
            chain = []
        if relu and type(after) is DropConnectLinear:
            layers.append(_linear(after, after_name, relu_input=True))
            i += 2
            continue
        if relu and type(after) is nn.Conv1d:
            fused = _conv(after, after_name, relu_input=True)
            if fused is not None:
                layers.append(fused)
                i += 2
                continue
        layers.append(_compile(child, name))
        i += 1
    if chain:
        layers.append(_linear_chain(chain))
    if any(layer is None for layer in layers):
        return None
    return _sequence(layers)  # type: ignore[arg-type]


def _linear_chain(chain: list[tuple[str, nn.Linear, bool]]) -> Layer:
    """Consecutive linear layers as one `BatchedLinearChain` (one layer: `BatchedLinear`)."""
    if len(chain) == 1:
        name, module, relu = chain[0]
        return _linear(module, name, relu)
    names = [
        (_name(p, "weight"), _name(p, "bias") if m.bias is not None else None) for p, m, _ in chain
    ]
    relus = tuple(relu for _, _, relu in chain)

    def run(c: _Context, h: torch.Tensor) -> torch.Tensor:
        tensors = [c.params[n] if n is not None else None for pair in names for n in pair]
        return BatchedLinearChain.apply(h, relus, *tensors)

    return run


def _sequence(layers: list[Layer]) -> Layer:
    def run(c: _Context, h: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(c, h)
        return h

    return run


def _linear(module: nn.Linear, prefix: str, relu_input: bool = False) -> Layer:
    weight, bias = _name(prefix, "weight"), _name(prefix, "bias")
    has_bias = module.bias is not None
    p = module.p if isinstance(module, DropConnectLinear) else 0.0

    def run(c: _Context, h: torch.Tensor) -> torch.Tensor:
        w = c.params[weight]  # (M, O, I)
        if p > 0 and c.training:
            w = w * c.mask() / (1 - p)
        return BatchedLinear.apply(h, w, c.params[bias] if has_bias else None, relu_input)

    return run


def _linear_forward(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """bias + h Wᵀ over the members, (M, B, O), in the faster orientation (`BatchedLinear`)."""
    batch, inputs, outputs = h.shape[1], h.shape[2], weight.shape[1]
    if outputs < inputs and outputs < batch:  # the wide product: (O × I) @ (I × B)
        if bias is None:
            return torch.bmm(weight, h.transpose(1, 2)).transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(2), weight, h.transpose(1, 2)).transpose(1, 2)
    if bias is None:
        return torch.bmm(h, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


def _linear_backward(
    grad: torch.Tensor,
    h: torch.Tensor,
    weight: torch.Tensor,
    needs: tuple[bool, bool, bool],
    relu_input: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(∂h, ∂W, ∂b) of `_linear_forward` where `needs` says so (`BatchedLinear`); with
    ``relu_input`` h is relu(input) and ∂h gets the ReLU's mask, in place."""
    grad_h = grad_weight = grad_bias = None
    if needs[0]:
        grad_h = torch.bmm(grad, weight)
        if relu_input:
            _relu_mask(grad_h, h, out=grad_h)
    if needs[1]:
        if h.shape[2] >= weight.shape[1]:
            grad_weight = torch.bmm(grad.transpose(1, 2), h)
        else:
            grad_weight = torch.bmm(h.transpose(1, 2), grad).transpose(1, 2)
    if needs[2]:
        grad_bias = grad.sum(1)
    return grad_h, grad_weight, grad_bias


class BatchedLinear(torch.autograd.Function):
    """``linear`` of M members at once: h (M, B, I), weight (M, O, I), bias (M, O) or None →
    (M, B, O), each product oriented so that its result's rows are the long ones.

    torch's small matrix products run several times faster when the result's last axis is
    long (measured, one thread, 36 members: ∂W of a 128 → 10 layer as ``hᵀ ∂out``, a
    (128 × 10) result, 1.2 ms; as ``∂outᵀ h``, (10 × 128), 0.2 ms). So:

    - forward: a narrow layer (O < I and O < B: a classifier's head) computes outᵀ = W hᵀ + b,
      (M, O, B), and returns its (M, B, O) view; the others h Wᵀ + b.
    - backward: ∂h = ∂out W; ∂W = ∂outᵀ h when I ≥ O, else (hᵀ ∂out)ᵀ; ∂b = Σ_b ∂out.
    - ``relu_input``: the layer of relu(h) (the ReLU before it, fused): its backward puts the
      ReLU's mask (relu(h) > 0) on ∂h in place, the tensor it has just computed, instead of a
      separate ReLU backward writing a new one.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        relu_input: bool = False,
    ) -> torch.Tensor:
        if relu_input:
            h = torch.relu(h)
        ctx.save_for_backward(h, weight)
        ctx.has_bias, ctx.relu_input = bias is not None, relu_input
        return _linear_forward(h, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        h, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        return (
            *_linear_backward(
                grad, h, weight, (needs[0], needs[1], ctx.has_bias and needs[2]), ctx.relu_input
            ),
            None,
        )


class BatchedLinearChain(torch.autograd.Function):
    """Consecutive linear layers of M members, each optionally after a ReLU, as one autograd
    node: h ↦ L_n(…L_1(h)), L_i(h) = bias_i + act_i(h) W_iᵀ with act_i the ReLU or nothing
    (``relus``), each layer's products those of `BatchedLinear`.

    One node instead of one per layer and one per ReLU: the deep-mlp nets' layers are small
    products (36 × (128 × 32) · (32 × 32)) for which autograd's per-node work (a Python
    ``Function`` call forward and backward, the ReLU's own node and its new tensor) was a
    measured ≈ 9 % of a forward and backward (docs/compare.md "Speed"). ``tensors`` are the
    layers' (weight, bias or None) in order."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, relus: tuple[bool, ...], *tensors: torch.Tensor | None
    ) -> torch.Tensor:
        inputs = []
        for i, relu in enumerate(relus):
            if relu:
                h = torch.relu(h)
            inputs.append(h)
            h = _linear_forward(h, tensors[2 * i], tensors[2 * i + 1])  # type: ignore[arg-type]
        ctx.save_for_backward(*inputs, *(t for t in tensors if t is not None))
        ctx.relus, ctx.biased = relus, [t is not None for t in tensors[1::2]]
        return h

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        layers = len(ctx.relus)
        saved = list(ctx.saved_tensors)
        inputs, rest = saved[:layers], saved[layers:]
        weights: list[torch.Tensor] = []
        for biased in ctx.biased:  # (weight, bias) pairs back from the saved tensors
            weights.append(rest.pop(0))
            if biased:
                rest.pop(0)
        needs = ctx.needs_input_grad
        grads: list[torch.Tensor | None] = [None] * (2 * layers)
        for i in reversed(range(layers)):
            grad_h, grads[2 * i], grads[2 * i + 1] = _linear_backward(
                grad,
                inputs[i],
                weights[i],
                (i > 0 or needs[0], needs[2 + 2 * i], ctx.biased[i] and needs[3 + 2 * i]),
                ctx.relus[i],
            )
            if grad_h is None:
                break
            grad = grad_h
        return (grad if needs[0] else None, None, *grads)


def _batchnorm(module: nn.BatchNorm1d, prefix: str) -> Layer | None:
    """Batch norm on (M, B, F) (after a linear layer) or (M, C, T, B) (after a convolution)."""
    if not module.track_running_stats or module.momentum is None:
        return None
    eps, momentum, affine = module.eps, module.momentum, module.affine
    weight, bias = _name(prefix, "weight"), _name(prefix, "bias")
    mean_name, var_name = _name(prefix, "running_mean"), _name(prefix, "running_var")
    count_name = _name(prefix, "num_batches_tracked")

    def run(c: _Context, h: torch.Tensor) -> torch.Tensor:
        conv = h.dim() == 4  # (M, C, T, B): a channel's statistics over (T, B)
        dims = (2, 3) if conv else (1,)

        def per_channel(v: torch.Tensor) -> torch.Tensor:  # (M, F) broadcast over h
            return v[:, :, None, None] if conv else v[:, None, :]

        if c.training:
            mean = h.mean(dims)
            var = h.var(dims, unbiased=False)
            n = h.numel() // (h.shape[0] * mean.shape[1])
            with torch.no_grad():
                running_mean, running_var = c.buffers[mean_name], c.buffers[var_name]
                running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                unbiased = var.detach() * (n / (n - 1)) if n > 1 else var.detach()
                running_var.mul_(1 - momentum).add_(momentum * unbiased)
                c.buffers[count_name].add_(1)
        else:
            mean, var = c.buffers[mean_name], c.buffers[var_name]
        out = (h - per_channel(mean)) * per_channel(torch.rsqrt(var + eps))
        if affine:
            out = out * per_channel(c.params[weight]) + per_channel(c.params[bias])
        return out

    return run


# ------------------------------------------------------------------------------------------------
# convolutions


def _taps(
    kernel: int, stride: int, padding: int, length: int, positions: int
) -> list[tuple[int, int, int, int, int]]:
    """Per kernel tap j: output positions t ∈ [first, last] read input position s·t + j − p
    inside the input (the others read the zero padding); (j, first, last, start, stop) with
    the input positions start:stop:s."""
    taps = []
    for j in range(kernel):
        first = max(0, -((j - padding) // stride))  # the first t with s·t + j ≥ p
        last = min(positions - 1, (length - 1 + padding - j) // stride)
        if last >= first:
            start = stride * first + j - padding
            taps.append((j, first, last, start, stride * last + j - padding + 1))
    return taps


#: a run of a col2im: input positions l0, l0 + s, … (count of them) and the taps that read
#: them, (j, t0): tap j's output positions t0, t0 + 1, …
_Run = tuple[int, int, tuple[tuple[int, int], ...]]


@functools.lru_cache(maxsize=64)
def _col2im_plan(
    kernel: int, stride: int, padding: int, length: int, positions: int
) -> tuple[_Run, ...]:
    """How the windows' gradients go back into the input's, written once per input position
    (no zero-filled buffer, no read-modify-write where one tap reads a position): the input
    positions of each residue class mod s, in runs that the same taps read. Input position l
    is read by tap j at output position t = (l + p − j) / s when that is a whole number in
    [0, T)."""

    def readers(position: int) -> tuple[tuple[int, int], ...]:
        return tuple(
            (j, (position + padding - j) // stride)
            for j in range(kernel)
            if (position + padding - j) % stride == 0
            and 0 <= (position + padding - j) // stride < positions
        )

    runs: list[_Run] = []
    for residue in range(stride):
        members = list(range(residue, length, stride))
        i = 0
        while i < len(members):
            taps = readers(members[i])
            end = i
            while end + 1 < len(members) and [j for j, _ in readers(members[end + 1])] == [
                j for j, _ in taps
            ]:
                end += 1
            runs.append((members[i], end - i + 1, taps))
            i = end + 1
    return tuple(runs)


#: a layer whose windows hold at least this many numbers (C·k) computes its bias in the
#: product, its windows padded to a multiple of 8 rows (docs/compare.md "Speed")
PAD_FROM = 32


def _relu_mask(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = grad · (x > 0): the gradient through relu(x) (torch's own ReLU backward; ``out``
    may be ``grad``)."""
    torch.ops.aten.threshold_backward.grad_input(grad, x, 0, grad_input=out)


class BatchedConv1d(torch.autograd.Function):
    """``conv1d`` of M members at once, position-major: x (M, C, L, B), weight (M, O, C, k),
    bias (M, O) or None → (M, O, T, B), T = (L + 2p − k) // s + 1, with a written-out backward;
    ``relu_input``: the convolution of relu(x) (the ReLU of the layer before, fused).

    Position-major (the minibatch innermost) makes every window copy and every gradient
    addition a run of B contiguous numbers, and the output of one layer the next one's input
    without a copy: cols[(c, j), (t, b)] = x[c, s·t + j − p, b] (0 on the padding) is k slice
    copies, no padded copy of the input and no ``unfold``.

    - The ReLU before the layer is applied while the windows are copied (``clamp_min`` into
      them, no activation tensor), and its mask (x > 0) on the input's gradient, in place.
    - With C·k ≥ `PAD_FROM` the windows get a row of ones and zero rows up to a multiple of 8,
      the weight the bias as a column: out = [W | b] @ [cols; 1], and the weight's gradient
      ∂out · [cols; 1; 0]ᵀ holds the bias's as its column C·k. torch's ∂W product of
      mnist1d-cnn's second layer took 3.00 ms with 75 rows (25 channels × 3 taps) and 2.27 ms
      with 80 (36 members, one thread; docs/compare.md "Speed").
    - The input's gradient: ∂cols = Wᵀ ∂out, put back once per input position (`_col2im_plan`:
      a copy where one tap reads a run of positions, the sum of the taps' where several do),
      no zero-filled buffer. (The ReLU's mask fused into those strided copies measured slower
      than one pass over the contiguous gradient: 0.34 against 0.17 + 0.09 ms.)"""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        relu_input: bool = False,
    ) -> torch.Tensor:
        members, channels, length, batch = x.shape
        out_channels, kernel = weight.shape[1], weight.shape[3]
        positions = (length + 2 * padding - kernel) // stride + 1
        taps = _taps(kernel, stride, padding, length, positions)
        window = channels * kernel
        fused_bias = bias is not None and window >= PAD_FROM
        rows = -(-(window + 1) // 8) * 8 if fused_bias else window
        cols = x.new_empty(members, rows, positions * batch)
        windows = cols[:, :window].view(members, channels, kernel, positions, batch)
        for j, first, last, start, stop in taps:
            source, target = x[:, :, start:stop:stride], windows[:, :, j, first : last + 1]
            if relu_input:
                torch.clamp_min(source, 0, out=target)
            else:
                target.copy_(source)
            if first > 0:
                windows[:, :, j, :first] = 0
            if last + 1 < positions:
                windows[:, :, j, last + 1 :] = 0
        for j in set(range(kernel)) - {tap[0] for tap in taps}:  # taps only on the padding
            windows[:, :, j] = 0
        flat_weight = weight.reshape(members, out_channels, window)
        if fused_bias:
            cols[:, window] = 1
            cols[:, window + 1 :] = 0
            out = torch.bmm(torch.cat([flat_weight, bias.unsqueeze(2)], 2), cols[:, : window + 1])
        elif bias is None:
            out = torch.bmm(flat_weight, cols)
        else:
            out = torch.baddbmm(bias.unsqueeze(2), flat_weight, cols)
        ctx.save_for_backward(cols, flat_weight, x if relu_input else None)
        ctx.geometry = (channels, length, kernel, stride, padding, positions, batch)
        ctx.fused_bias, ctx.has_bias, ctx.relu_input = fused_bias, bias is not None, relu_input
        return out.view(members, out_channels, positions, batch)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        cols, flat_weight, x = ctx.saved_tensors
        channels, length, kernel, stride, padding, positions, batch = ctx.geometry
        members, out_channels = grad.shape[:2]
        window = channels * kernel
        grad = grad.reshape(members, out_channels, positions * batch)
        grad_x = grad_weight = grad_bias = None
        if ctx.fused_bias:
            both = torch.bmm(grad, cols.transpose(1, 2))  # (M, O, rows): [∂W | ∂b | 0]
            grad_weight = both[:, :, :window].reshape(members, out_channels, channels, kernel)
            grad_bias = both[:, :, window]
        else:
            if ctx.needs_input_grad[1]:
                grad_weight = torch.bmm(grad, cols.transpose(1, 2)).view(
                    members, out_channels, channels, kernel
                )
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = grad.sum(2)
        if ctx.needs_input_grad[0]:
            # ∂cols = Wᵀ ∂out; tap j's position t goes to input position s·t + j − p
            grad_cols = torch.bmm(flat_weight.transpose(1, 2), grad).view(
                members, channels, kernel, positions, batch
            )
            grad_x = grad.new_empty(members, channels, length, batch)
            for first, count, taps in _col2im_plan(kernel, stride, padding, length, positions):
                where = slice(first, first + stride * (count - 1) + 1, stride)
                target = grad_x[:, :, where]
                pieces = [grad_cols[:, :, j, t0 : t0 + count] for j, t0 in taps]
                if not pieces:
                    target.zero_()
                elif len(pieces) == 1:
                    target.copy_(pieces[0])
                else:
                    torch.add(pieces[0], pieces[1], out=target)
                    for piece in pieces[2:]:
                        target.add_(piece)
            if ctx.relu_input:  # relu's mask, in place over the whole (contiguous) gradient
                _relu_mask(grad_x, x, out=grad_x)
        return grad_x, grad_weight, grad_bias, None, None, None


def _conv(module: nn.Conv1d, prefix: str, relu_input: bool = False) -> Layer | None:
    if (
        module.groups != 1
        or module.dilation != (1,)
        or module.padding_mode != "zeros"
        or isinstance(module.padding, str)
    ):
        return None
    weight, bias = _name(prefix, "weight"), _name(prefix, "bias")
    stride, padding = module.stride[0], int(module.padding[0])
    has_bias = module.bias is not None

    def run(c: _Context, h: torch.Tensor) -> torch.Tensor:
        b = c.params[bias] if has_bias else None
        return BatchedConv1d.apply(h, c.params[weight], b, stride, padding, relu_input)

    return run


class BatchedHead(torch.autograd.Function):
    """The CNN's head on position-major features, after their ReLU (fused): z (M, C, T, B),
    weight (M, K, C·T), bias (M, K) → logits (M, B, K) as a view of
    (M, K, B) = bias + W (K × C·T) @ relu(z) (C·T × B), the features flattened in (channel,
    position) order as ``flatten(1)`` of the single trial's (B, C, T), without a copy.

    Backward: ∂W = ∂logitsᵀ · hᵀ, ∂b = Σ_b ∂logits, ∂z = (Wᵀ ∂logitsᵀ) · (h > 0), the ReLU's
    mask in place on the product just computed (no separate ReLU node and tensor)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, relu_input: bool
    ) -> torch.Tensor:
        h = torch.relu(z) if relu_input else z
        flat = h.reshape(h.shape[0], -1, h.shape[3])  # (M, C·T, B)
        ctx.save_for_backward(flat, weight)
        ctx.shape, ctx.relu_input = z.shape, relu_input
        return torch.baddbmm(bias.unsqueeze(2), weight, flat).transpose(1, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        flat, weight = ctx.saved_tensors
        grad = grad.transpose(1, 2)  # (M, K, B)
        grad_z = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_z = torch.bmm(weight.transpose(1, 2), grad)
            if ctx.relu_input:
                _relu_mask(grad_z, flat, out=grad_z)
            grad_z = grad_z.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad, flat.transpose(1, 2))
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(2)
        return grad_z, grad_weight, grad_bias, None


def _cnn(module: CNN1d, prefix: str) -> Layer | None:
    """`CNN1d`: x (M, B, L) → position-major (M, 1, L, B) → the features (M, C, T, B) → the
    head (`BatchedHead`, with the features' last ReLU fused into it), logits (M, B, K)."""
    if type(module.features) is not nn.Sequential:
        return None
    layers = list(module.features.named_children())
    relu_input = bool(layers) and type(layers[-1][1]) is nn.ReLU
    if relu_input:
        layers = layers[:-1]
    features = _compile_sequence(layers, f"{prefix}features.")
    if features is None or type(module.head) is not nn.Linear or module.head.bias is None:
        return None
    weight, bias = _name(prefix, "head.weight"), _name(prefix, "head.bias")

    def run(c: _Context, x: torch.Tensor) -> torch.Tensor:
        z = features(c, x.transpose(1, 2).unsqueeze(1))  # (M, C, T, B)
        return BatchedHead.apply(z, c.params[weight], c.params[bias], relu_input)

    return run
