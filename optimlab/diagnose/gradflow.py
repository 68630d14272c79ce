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

The advice names the fixes that apply to what was found and never one already in place. It
reads the model's settings (`Architecture`, from `describe_architecture`): its activations and
normalization layers (from the modules), its residual connections (a module with
``residual=True``, as optimlab's `Block`), and its initialization, recognised from the initial
weights' standard deviation per layer against each scheme's (`infer_init`); a problem's own
options (``activation``, ``init``, ``batchnorm``, ``residual``), when given, take precedence.
Fixes: ReLU/Leaky ReLU instead of sigmoid/tanh, He or Xavier initialization matched to the
activation, batch norm, residual connections, a smaller learning rate, gradient clipping. The
model and optimizer are restored afterwards.
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
from optimlab.optim.modes import to_train_point

VANISHING_FACTOR = 100.0
EXPLODING_FACTOR = 100.0
DEAD_THRESHOLD = 0.5
#: an update larger than this fraction of the weights in one step is too large
LARGE_UPDATE = 0.1

SATURATING = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softsign, nn.Hardsigmoid)
RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish)
WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
#: a layer's weight std within this factor of a scheme's std is recognised as that scheme
INIT_TOLERANCE = 1.15
INIT_NAMES = {"xavier": "Xavier (Glorot)", "he": "He (Kaiming)", "default": "PyTorch's default"}


@dataclass
class Architecture:
    """What the advice needs to know about a model.

    Attributes:
        activations: the activation module types, sorted (``["Sigmoid"]``).
        saturating: it has sigmoid/tanh-like units; relu_like: it has ReLU-like units.
        init: ``"xavier"``, ``"he"``, ``"default"`` (PyTorch's) or ``"unknown"``.
        normalization: it has a batch/layer/group/instance-norm layer.
        residual: it has skip connections.
    """

    activations: list[str]
    saturating: bool
    relu_like: bool
    init: str
    normalization: bool
    residual: bool

    @property
    def matching_init(self) -> str:
        """The init its activations call for: Xavier for saturating units only, He otherwise."""
        return "xavier" if self.saturating and not self.relu_like else "he"


def _init_stds(fan_in: int, fan_out: int) -> dict[str, float]:
    """Each scheme's weight standard deviation for a layer (normal and uniform variants alike):
    Xavier √(2/(fan_in+fan_out)), He √(2/fan_in), PyTorch's default U(±1/√fan_in) → 1/√(3·fan_in).
    """
    return {
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "he": math.sqrt(2.0 / fan_in),
        "default": 1.0 / math.sqrt(3.0 * fan_in),
    }


def infer_init(model: nn.Module) -> str:
    """The initialization scheme of the model's weighted layers, recognised from their weights:
    the scheme whose standard deviation is within `INIT_TOLERANCE` of the measured one, agreed
    on by at least two thirds of the layers; ``"unknown"`` otherwise. Meaningful on initial
    weights (training moves them away)."""
    votes: list[str] = []
    for _, module in weighted_layers(model):
        weight = module.weight.detach()
        if weight.dim() < 2 or weight.numel() < 16:
            continue
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        std = weight.float().std().item()
        if not std > 0:
            votes.append("unknown")
            continue
        ratios = {k: abs(math.log(std / v)) for k, v in _init_stds(fan_in, fan_out).items()}
        best = min(ratios, key=ratios.get)
        votes.append(best if ratios[best] < math.log(INIT_TOLERANCE) else "unknown")
    if not votes:
        return "unknown"
    winner = max(set(votes), key=votes.count)
    return winner if votes.count(winner) * 3 >= 2 * len(votes) else "unknown"


def describe_architecture(model: nn.Module, settings: dict[str, Any] | None = None) -> Architecture:
    """The model's settings, read from its modules and weights; `settings` (a problem's options:
    ``activation``, ``init``, ``batchnorm``, ``residual``) override what they name."""
    modules = list(model.modules())
    activations = sorted(
        {type(m).__name__ for m in modules if isinstance(m, SATURATING + RELU_LIKE)}
    )
    saturating = any(isinstance(m, SATURATING) for m in modules)
    relu_like = any(isinstance(m, RELU_LIKE) for m in modules)
    init = infer_init(model)
    normalization = any(isinstance(m, NORMALIZATION) for m in modules)
    residual = any(getattr(m, "residual", False) is True for m in modules)
    settings = settings or {}
    if settings.get("activation") in ("sigmoid", "tanh"):
        saturating, relu_like = True, False
    elif settings.get("activation") in ("relu", "leaky_relu"):
        saturating, relu_like = False, True
    if settings.get("init") in INIT_NAMES:
        init = settings["init"]
    if isinstance(settings.get("batchnorm"), bool):
        normalization = normalization or settings["batchnorm"]
    if isinstance(settings.get("residual"), bool):
        residual = residual or settings["residual"]
    return Architecture(activations, saturating, relu_like, init, normalization, residual)


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
    #: the model's settings the advice read (`Architecture` as a dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    #: the fixes recommended, as codes: relu, xavier_init, he_init, batchnorm, residual,
    #: smaller_lr, leaky_relu
    fixes: list[str] = field(default_factory=list)
    #: the fixes that would apply but are already in place
    in_place: list[str] = field(default_factory=list)

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
    settings: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> GradFlowResult:
    """Measure gradient flow over `steps` training steps (see the module docstring).

    The model is trained in train mode with `optimizer` (its learning rate as given) on
    minibatches of `data`; afterwards the model and the optimizer are restored exactly.
    `settings` (a problem's options) tell the advice what the model already has.
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
    # Read before the steps: the init is recognised from the initial weights.
    architecture = describe_architecture(model, settings)
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
        to_train_point(optimizer)  # Schedule-Free steps only in train mode
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
    result.advice = advise(result, model, architecture)
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


def advise(
    result: GradFlowResult, model: nn.Module, architecture: Architecture | None = None
) -> list[str]:
    """The fixes that apply to what was measured, worded for this model, leaving out those
    already in place (`architecture`, read from `model` when not given). Also fills
    `result.fixes`, `result.in_place` and `result.architecture`."""
    arch = architecture or describe_architecture(model)
    result.architecture = asdict(arch)
    saturating = [a for a in arch.activations if a in {c.__name__ for c in SATURATING}]
    current_init = INIT_NAMES.get(arch.init, "not recognised")
    advice: list[str] = []
    fixes: list[str] = []
    in_place: list[str] = []

    def recommend(code: str, text: str) -> None:
        if code not in fixes:
            fixes.append(code)
            advice.append(text)

    def init_fix(why: str) -> None:
        wanted = arch.matching_init
        if arch.init == wanted:
            in_place.append(f"{INIT_NAMES[wanted]} init")
            return
        activation = "sigmoid/tanh units" if wanted == "xavier" else "ReLU-like units"
        recommend(
            f"{wanted}_init",
            f"Initialize for the activation: {INIT_NAMES[wanted]} init for {activation} "
            f"(this model's init: {current_init}), {why}.",
        )

    if result.vanishing:
        if arch.saturating:
            names = ", ".join(saturating) or "sigmoid/tanh"
            recommend(
                "relu",
                f"Replace the saturating activations ({names}) by ReLU or Leaky ReLU, with He "
                f"init: their derivative is at most 1/4 (sigmoid) or 1 (tanh) and shrinks the "
                f"gradient at every layer.",
            )
        init_fix("so that the variance of the signal stays constant through the layers")
        if arch.normalization:
            in_place.append("normalization layers")
        else:
            recommend(
                "batchnorm",
                "Add batch normalization before the activations: it keeps pre-activations out "
                "of the saturated range.",
            )
        if arch.residual:
            in_place.append("residual connections")
        else:
            recommend(
                "residual",
                "Add residual (skip) connections h ← h + f(h): the identity path carries the "
                "gradient around each layer.",
            )
    if result.exploding:
        recommend(
            "smaller_lr",
            "Use a smaller learning rate, and clip the gradient norm "
            "(torch.nn.utils.clip_grad_norm_) to stop single large steps.",
        )
        init_fix("as larger weights make activations and gradients grow layer by layer")
        if arch.normalization:
            in_place.append("normalization layers")
        else:
            recommend("batchnorm", "Batch normalization bounds the scale of the pre-activations.")
    if result.dead_relu:
        he = "" if arch.init == "he" else ", and He init with zero biases"
        if "LeakyReLU" in arch.activations:
            in_place.append("Leaky ReLU")
            recommend(
                "smaller_lr",
                f"Many ReLU units are dead (zero for every example): use Leaky ReLU in their "
                f"place too, or a smaller learning rate{he}.",
            )
        else:
            recommend(
                "leaky_relu",
                f"Many ReLU units are dead (zero for every example): use Leaky ReLU or a "
                f"smaller learning rate{he}, so units start in their active range.",
            )
        if he and "he_init" not in fixes:
            fixes.append("he_init")
        elif not he:
            in_place.append("He (Kaiming) init")
    if result.large_updates and not result.exploding:
        recommend(
            "smaller_lr",
            f"One step changes some layer's weights by more than {LARGE_UPDATE:.0%} of their "
            f"norm (healthy is ~0.1%): use a smaller learning rate or gradient clipping.",
        )
    in_place = list(dict.fromkeys(in_place))
    if in_place and (result.vanishing or result.exploding or result.dead_relu):
        advice.append(
            f"Already in place, so not the fix: {', '.join(in_place)}."
            + (" The remaining levers are the depth and the learning rate." if not fixes else "")
        )
    if not advice:
        kind = "the ReLU units" if any(isinstance(m, nn.ReLU) for m in model.modules()) else (
            "the activations"
        )  # fmt: skip
        advice.append(
            f"Gradient flow looks healthy: the gradient norm changes by a factor "
            f"{result.shrink_factor:.3g} from the output to the input layer and {kind} are alive."
        )
    result.fixes = fixes
    result.in_place = in_place
    return advice
