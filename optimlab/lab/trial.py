"""A trial: one training run, fully described by a `TrialSpec`, and its result.

The spec is the identity of the run: its hash is the key under which the result is stored, so
a resumed comparison recognizes work that is already done, and two roles that need the same run
(the best point of the learning-rate grid and seed 0 of the repeats) share one trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("ok", "diverged", "failed", "pruned")

#: the largest x whose exp(x) is a finite float64
MAX_EXP_ARGUMENT = math.log(sys.float_info.max)


def perplexity(loss: float) -> float:
    """exp(loss) of a loss in nats per token; inf where that overflows (a finite loss above
    ≈ 709.8, as an exploding run reaches, raised OverflowError and failed the trial)."""
    return math.exp(loss) if loss < MAX_EXP_ARGUMENT else math.inf


@dataclass(frozen=True)
class TrialSpec:
    """problem: canonical problem spec (every option); optimizer: registry name;
    hyperparameters: keyword arguments of the optimizer (``lr`` included); schedule: schedule
    spec; seed: model init and minibatch order; steps: optimizer steps; evals: evaluations of
    the full train and validation sets along the way (the loss curve's points)."""

    problem: str
    optimizer: str
    hyperparameters: dict[str, Any]
    schedule: str = "constant"
    seed: int = 0
    steps: int = 500
    evals: int = 20
    #: display name of the problem (not part of the identity)
    problem_label: str = field(default="", compare=False)
    #: the user's optimizer (`optimlab.lab.custom_optimizers.CustomOptimizer`) when `optimizer`
    #: is its label (``mine.py:MyOpt``) rather than a registry name; it travels to the workers
    custom: Any = field(default=None, compare=False)

    def identity(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("problem_label", "custom")}
        data["hyperparameters"] = jsonable(self.hyperparameters)
        if self.custom is not None and self.custom.file_text is not None:
            # an edited optimizer file is another optimizer: its results are not reused
            data["optimizer_file"] = hashlib.sha256(self.custom.file_text.encode()).hexdigest()
        version = trial_version(self.optimizer)
        if version:  # 0 (most optimizers) leaves the keys of every stored trial as they were
            data["trial_version"] = version
        return data

    @property
    def key(self) -> str:
        """sha256 of the canonical JSON of the spec (first 20 hex digits)."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def lr(self) -> float:
        return float(self.hyperparameters.get("lr", math.nan))


def trial_version(optimizer: str) -> int:
    """The registry's `OptimizerInfo.trial_version` of `optimizer` (0 for a user's own)."""
    from optimlab.optim.registry import REGISTRY

    info = REGISTRY.get(optimizer)
    return 0 if info is None else info.trial_version


@dataclass
class TrialResult:
    """status: ``ok``, ``diverged`` (a non-finite loss; metrics up to that point) or ``failed``
    (an exception; `reason` says which). metrics: see `optimlab.lab.train`. predictions: the
    test-set class probabilities (float16 bytes) for ensembles, classification only."""

    status: str
    metrics: dict[str, Any]
    reason: str = ""
    predictions: bytes | None = None


def jsonable(value: Any) -> Any:
    """Tuples → lists and non-finite floats → None, recursively (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
