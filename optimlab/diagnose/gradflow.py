"""Gradient flow: how the gradient signal survives the trip from the loss back to the input.

For every layer with a weight matrix or kernel (``Linear``, ``Conv*``; in the order the model
registers them, input side first) we train a few steps with the given optimizer and record,
averaged over the steps,

* ``grad_norm``   ‖∂L/∂W‖ (Frobenius norm),
* ``weight_norm`` ‖W‖,
* ``update_ratio`` ‖ΔW‖ / ‖W‖, the relative change one optimizer step makes (≈1e-3 is the
  usual healthy order of magnitude; ≫1e-2 says the learning rate is too large for that layer),

and, for every ``ReLU`` module, the fraction of *dead* units: units whose output is zero for every
example of the batch, so that no gradient reaches the weights feeding them.

Flags:

* **vanishing** — the gradient norm shrinks by more than `vanishing_factor` from the output layer
  to the input layer: grad_norm[last] / grad_norm[first] > factor. Saturating sigmoid/tanh units
  multiply the backpropagated signal by σ′ ≤ 1/4 (tanh′ ≤ 1) per layer, so the early layers of a
  deep sigmoid net barely learn (Glorot & Bengio 2010; Hochreiter 1991).
* **exploding** — the opposite growth by more than `exploding_factor`, or a non-finite gradient.
* **dead_relu** — some ReLU layer has more than `dead_threshold` of its units dead.

The advice names the fixes that apply to what was found and to the model's architecture (which
activations it uses, whether it has normalization layers): ReLU/Leaky ReLU instead of
sigmoid/tanh, He or Xavier initialization, batch norm, residual connections, a smaller learning
rate, gradient clipping. The model and optimizer are restored afterwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from optimlab.diagnose.common import (
    NORMALIZATION,
    Data,
    LossFn,
    NotApplicable,
    Progress,
    batches,
    check_data,
    check_scalar_loss,
    preserved,
    trainable_parameters,
)

VANISHING_FACTOR = 100.0
EXPLODING_FACTOR = 100.0
DEAD_THRESHOLD = 0.5
#: an update larger than this fraction of the weights in one step is too large
LARGE_UPDATE = 0.1

SATURATING = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softsign, nn.Hardsigmoid)
WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass
class LayerFlow:
    """The measurements of one weighted layer (means over the steps)."""

    name: str
    kind: str
    grad_norm: float
    weight_norm: float
    update_ratio: float | None
    #: the fraction of dead units of the first ReLU that follows this layer, if any
    dead_fraction: float | None = None


@dataclass
class GradFlowResult:
    layers: list[LayerFlow]
    vanishing: bool
    exploding: bool
    dead_relu: bool
    #: grad_norm of the output layer / grad_norm of the input layer (> 1: shrinking towards input)
    shrink_factor: float
    large_updates: bool
    nonfinite: bool
    advice: list[str]
    steps: int
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [
            {k: _finite_or_none(v) for k, v in asdict(layer).items()} for layer in self.layers
        ]
        out["shrink_factor"] = _finite_or_none(self.shrink_factor)
        return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers with a weight matrix or kernel that requires grad, in registration order."""
    return [
        (name or type(module).__name__, module)
        for name, module in model.named_modules()
        if isinstance(module, WEIGHTED)
        and getattr(module, "weight", None) is not None
        and module.weight.requires_grad
    ]


def gradient_flow(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int = 5,
    batch_size: int | None = 128,
    vanishing_factor: float = VANISHING_FACTOR,
    exploding_factor: float = EXPLODING_FACTOR,
    dead_threshold: float = DEAD_THRESHOLD,
    seed: int = 0,
    progress: Progress | None = None,
) -> GradFlowResult:
    """Measure gradient flow over `steps` training steps (see the module docstring).

    The model is trained in train mode with `optimizer` (its learning rate as given) on
    minibatches of `data`; afterwards the model and the optimizer are restored exactly.
    """
    trainable_parameters(model)
    check_data(data)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; allowed: an integer >= 1")
    for name, value in (
        ("vanishing_factor", vanishing_factor),
        ("exploding_factor", exploding_factor),
    ):
        if not isinstance(value, int | float) or not value > 1:
            raise ValueError(f"{name}={value!r}; allowed: a number > 1")
    if not isinstance(dead_threshold, int | float) or not 0 < dead_threshold <= 1:
        raise ValueError(f"dead_threshold={dead_threshold!r}; allowed: a number in (0, 1]")
    layers = weighted_layers(model)
    if not layers:
        raise NotApplicable(
            f"model {type(model).__name__} has no Linear or Conv layer with a trainable weight; "
            f"gradient flow is measured per such layer"
        )
    relus = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    grad_sums = [0.0] * len(layers)
    weight_sums = [0.0] * len(layers)
    update_sums = [0.0] * len(layers)
    dead_sums = {name: 0.0 for name, _ in relus}
    nonfinite = False
    generator = torch.Generator().manual_seed(seed)

    def dead_hook(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            # A unit (feature, or channel of a convolution) is dead on this batch when it is zero
            # for every example (and every position).
            alive = (output.detach() > 0).transpose(0, 1).reshape(output.shape[1], -1).any(1)
            dead_sums[name] += 1.0 - alive.float().mean().item()

        return hook

    with preserved(model, optimizer):
        model.train()
        handles = [m.register_forward_hook(dead_hook(name)) for name, m in relus]
        try:
            stream = batches(data, batch_size, generator)
            for step in range(steps):
                x, y = next(stream)
                optimizer.zero_grad()
                check_scalar_loss(loss_fn(model(x), y)).backward()
                before = [m.weight.detach().clone() for _, m in layers]
                for i, (_, module) in enumerate(layers):
                    grad = module.weight.grad
                    norm = 0.0 if grad is None else grad.detach().norm().item()
                    nonfinite |= not math.isfinite(norm)
                    grad_sums[i] += norm
                    weight_sums[i] += before[i].norm().item()
                optimizer.step()
                for i, (_, module) in enumerate(layers):
                    change = (module.weight.detach() - before[i]).norm().item()
                    update_sums[i] += change / max(before[i].norm().item(), 1e-30)
                if progress is not None:
                    progress(f"gradflow step {step + 1}/{steps}")
        finally:
            for handle in handles:
                handle.remove()

    dead_by_relu = {name: total / steps for name, total in dead_sums.items()}
    results = [
        LayerFlow(
            name=name,
            kind=type(module).__name__,
            grad_norm=grad_sums[i] / steps,
            weight_norm=weight_sums[i] / steps,
            update_ratio=update_sums[i] / steps,
        )
        for i, (name, module) in enumerate(layers)
    ]
    _attach_dead(model, layers, relus, dead_by_relu, results)

    first, last = results[0].grad_norm, results[-1].grad_norm
    # A dead input layer (zero gradient) under a live output layer is infinitely vanished.
    shrink = last / first if first > 0 else (math.inf if last > 0 else 1.0)
    vanishing = len(results) > 1 and shrink > vanishing_factor
    exploding = nonfinite or (len(results) > 1 and shrink < 1 / exploding_factor)
    dead_relu = any(fraction > dead_threshold for fraction in dead_by_relu.values())
    large_updates = any(
        r.update_ratio is not None and r.update_ratio > LARGE_UPDATE for r in results
    )
    result = GradFlowResult(
        layers=results,
        vanishing=vanishing,
        exploding=exploding,
        dead_relu=dead_relu,
        shrink_factor=shrink,
        large_updates=large_updates,
        nonfinite=nonfinite,
        advice=[],
        steps=steps,
        thresholds={
            "vanishing_factor": float(vanishing_factor),
            "exploding_factor": float(exploding_factor),
            "dead_threshold": float(dead_threshold),
            "large_update": LARGE_UPDATE,
        },
    )
    result.advice = advise(result, model)
    return result


def _attach_dead(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    relus: list[tuple[str, nn.Module]],
    dead: dict[str, float],
    results: list[LayerFlow],
) -> None:
    """Give each weighted layer the dead fraction of the first ReLU registered after it (and
    before the next weighted layer): in a Sequential-style model that is the ReLU it feeds."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    relu_positions = sorted((order[name], name) for name, _ in relus)
    layer_positions = [order.get(name, -1) for name, _ in layers]
    for i, position in enumerate(layer_positions):
        end = layer_positions[i + 1] if i + 1 < len(layer_positions) else math.inf
        for relu_position, relu_name in relu_positions:
            if position < relu_position < end:
                results[i].dead_fraction = dead[relu_name]
                break


def advise(result: GradFlowResult, model: nn.Module) -> list[str]:
    """The fixes that apply to what was measured, worded for this model."""
    modules = list(model.modules())
    saturating = sorted({type(m).__name__ for m in modules if isinstance(m, SATURATING)})
    has_norm = any(isinstance(m, NORMALIZATION) for m in modules)
    has_relu = any(isinstance(m, nn.ReLU) for m in modules)
    advice: list[str] = []
    if result.vanishing:
        if saturating:
            advice.append(
                f"Replace the saturating activations ({', '.join(saturating)}) by ReLU or Leaky "
                f"ReLU: their derivative is at most 1/4 (sigmoid) or 1 (tanh) and shrinks the "
                f"gradient at every layer."
            )
        advice.append(
            "Initialize for the activation: He (Kaiming) init for ReLU-like units, Xavier "
            "(Glorot) for tanh/sigmoid, so that the variance of the signal stays constant "
            "through the layers."
        )
        if not has_norm:
            advice.append(
                "Add batch normalization before the activations: it keeps pre-activations out "
                "of the saturated range."
            )
        advice.append(
            "Add residual (skip) connections h ← h + f(h): the identity path carries the "
            "gradient around each layer."
        )
    if result.exploding:
        advice.append(
            "Use a smaller learning rate, and clip the gradient norm "
            "(torch.nn.utils.clip_grad_norm_) to stop single large steps."
        )
        advice.append(
            "Check the initialization scale: He or Xavier init keep activations and gradients "
            "of constant variance; larger weights make them grow layer by layer."
        )
        if not has_norm:
            advice.append("Batch normalization bounds the scale of the pre-activations.")
    if result.dead_relu:
        advice.append(
            "Many ReLU units are dead (zero for every example): use Leaky ReLU, a smaller "
            "learning rate, and He init with zero biases so units start in their active range."
        )
    if result.large_updates and not result.exploding:
        advice.append(
            f"One step changes some layer's weights by more than {LARGE_UPDATE:.0%} of their "
            f"norm (healthy is ~0.1%): use a smaller learning rate or gradient clipping."
        )
    if not advice:
        kind = "the ReLU units" if has_relu else "the activations"
        advice.append(
            f"Gradient flow looks healthy: the gradient norm changes by a factor "
            f"{result.shrink_factor:.3g} from the output to the input layer and {kind} are alive."
        )
    return advice
