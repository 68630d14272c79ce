"""The `Problem`: everything the lab needs to train and evaluate one model on one data set.

A problem is data (train/val/test splits held in memory as tensors), a model factory that is
deterministic for a seed, a loss, and the regularization the problem's options asked for (an
L1/L2 penalty added to the training loss, a data augmentation applied to training minibatches,
early stopping on the validation loss). The lab never looks inside: it only calls the fields
below, so a user's own problem is any `Problem` built by a factory function (docs/compare.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Split = tuple[torch.Tensor, torch.Tensor]
TASKS = ("classification", "regression", "language-model")


@dataclass
class Problem:
    """One training problem.

    Attributes:
        name: registry name (``"digits-mlp"``) or, for a user problem, ``"path.py:factory"``.
        options: every option with its resolved value (defaults filled in).
        train, val, test: the full splits as ``(inputs, targets)`` tensors.
        build_model: ``seed -> torch.nn.Module``; the same seed gives the same initial weights.
        loss_fn: ``(output, target) -> scalar tensor``, the mean loss over the batch.
        batch_size: minibatch size for training.
        task: ``"classification"`` (outputs are logits; accuracy is reported) or
            ``"regression"`` (no accuracy) or ``"language-model"`` (outputs are next-token
            logits, the loss is nats per token: perplexity = exp(loss) is reported).
        penalty: optional ``model -> scalar tensor`` added to the training loss (L1/L2); the
            reported losses are the data losses without it.
        augment: optional ``(inputs, generator) -> inputs`` applied to each training minibatch.
        early_stopping: patience in evaluations (0 = off): training stops when the validation
            loss has not improved for that many evaluations and the best weights are restored.
        default_steps: a step budget that trains this problem reasonably (used when a suite does
            not say otherwise).
        hessian_fn: for problems with a closed-form, constant Hessian (``quadratic-deep``).
        lr_groups: optional ``model -> [(parameters, lr factor), ...]``: the parameters to
            train, one param group each, with learning rate factor × the trial's (fine-tuning's
            discriminative rates); parameters left out are not trained. None: every parameter
            of the model, one group. Use `build_optimizer` to honour it.
    """

    name: str
    options: dict[str, Any]
    train: Split
    val: Split
    test: Split
    build_model: Callable[[int], torch.nn.Module]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int
    task: str = "classification"
    penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    early_stopping: int = 0
    default_steps: int = 500
    hessian_fn: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    lr_groups: Callable[[torch.nn.Module], list[tuple[list[torch.nn.Parameter], float]]] | None = (
        field(default=None, repr=False)
    )
    #: short display name: the name and the options that differ from the defaults
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name
        if self.task not in TASKS:
            raise ValueError(
                f"problem {self.name!r}: task={self.task!r}; allowed: {', '.join(TASKS)}"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"problem {self.name!r}: batch_size={self.batch_size!r}; allowed: an integer >= 1"
            )
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if (
                not isinstance(split, tuple)
                or len(split) != 2
                or not all(isinstance(t, torch.Tensor) for t in split)
                or len(split[0]) != len(split[1])
                or len(split[0]) == 0
            ):
                raise ValueError(
                    f"problem {self.name!r}: {split_name} must be a non-empty (inputs, targets) "
                    f"tuple of tensors of equal length"
                )

    @property
    def spec(self) -> str:
        """The canonical ``name:key=value:...`` text of this problem (every option, sorted)."""
        return format_spec(self.name, self.options)

    def build_optimizer(
        self,
        model: torch.nn.Module,
        make: Callable[[Any], torch.optim.Optimizer],
    ) -> torch.optim.Optimizer:
        """``make(params)`` on this problem's parameters of `model`: all of them, or one param
        group per entry of `lr_groups` with that group's learning rate multiplied by its
        factor after construction (so the optimizer's own default or the trial's ``lr`` is the
        base, and schedules, which start from each group's rate, keep the ratio)."""
        if self.lr_groups is None:
            return make(model.parameters())
        groups = self.lr_groups(model)
        optimizer = make([{"params": params} for params, _ in groups])
        for group, (_, factor) in zip(optimizer.param_groups, groups):
            group["lr"] = group["lr"] * factor
        return optimizer

    def hessian(self) -> torch.Tensor:
        """The constant Hessian of the loss in the parameters (quadratic problems only)."""
        if self.hessian_fn is None:
            raise ValueError(f"problem {self.name!r} has no closed-form Hessian")
        return self.hessian_fn()


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "/".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_spec(name: str, options: dict[str, Any]) -> str:
    """``("deep-mlp", {"depth": 10})`` -> ``"deep-mlp:depth=10"``; keys sorted for stable hashes."""
    return ":".join([name, *(f"{k}={format_value(v)}" for k, v in sorted(options.items()))])
