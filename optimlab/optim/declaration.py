"""What one algorithm module declares about each optimizer it defines (torch's ``OptimizerInfo``).

Generic code reads only this: the CLI and the docs tables (name, title, family, rule), the lab's
default sets (the registry's names), the tests (twins, option sets, convergence settings) and the
benchmarks (twins, the kernel's byte count).  The optimizer class itself carries the defaults,
ranges, flags, state, reference rule and optional fused kernel.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: a factory for a class of another library, imported only when called (keras is optional)
Twin = Callable[[], type]


def library_class(module: str, name: str) -> Twin:
    """A factory for ``module.name``, e.g. ``library_class("keras.optimizers", "Nadam")``."""

    def twin() -> type:
        return getattr(importlib.import_module(module), name)

    twin.__qualname__ = f"{module}.{name}"
    return twin


@dataclass(frozen=True)
class Convergence:
    """Settings at which the convergence tests run (picked once from a coarse log grid).

    ``quadratic_lr``: learning rate on a convex quadratic (condition number about 10);
    ``rosenbrock``: (lr, steps, distance to (1, 1) to reach).
    """

    quadratic_lr: float
    rosenbrock: tuple[float, int, float]


@dataclass(frozen=True)
class SampleRange:
    """Where property tests draw one number: uniform on [low, high], or log-uniform (``log``)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """Where property tests draw a discrete hyperparameter: one of `values`."""

    values: tuple[Any, ...]


#: what a property test draws for one hyperparameter: a number, a tuple of numbers (``betas``,
#: one range per element) or a choice
Sample = SampleRange | Choice | tuple[SampleRange, ...]


@dataclass(frozen=True)
class OptimizerInfo:
    """Everything generic code needs to know about one optimizer."""

    name: str
    cls: Any  # type[Optimizer]; Any keeps this module free of torch
    title: str
    #: how it improves on gradient descent: "none", "direction", "step size" or "both"
    family: str
    #: the update rule in one line (torch convention)
    rule: str
    #: the set it belongs to: "classic" (the textbook's nine, compare's default) or "modern"
    preset: str = "modern"
    #: the same algorithm in torch.optim and in Keras 3, as factories; None: no twin there
    torch_twin: Twin | None = None
    keras_twin: Twin | None = None
    #: for the docs table: what it improves on gradient descent ("per-parameter step size ...")
    improves: str = ""
    #: arguments that make the twin classes this optimizer (``"momentum=0.9"``)
    twin_arguments: str = ""
    #: option sets worth testing, beyond the defaults (torch convention, torch names)
    samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: option sets worth testing under convention="keras"
    keras_samples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: where the convergence tests run it
    convergence: Convergence = Convergence(0.05, (0.03, 2000, 0.05))
    #: whether each element's update depends on that element alone (False: a tensor's norm,
    #: factored moment or matrix shape enters, so a tensor's rows cannot be separate runs)
    elementwise: bool = True
    #: learning-rate-free (Prodigy, D-Adaptation: it estimates its own step size): compare runs
    #: it at its defaults with no learning-rate grid, in the spirit of AlgoPerf's self-tuning
    #: track, and reports it apart. (Schedule-Free is not: it takes a tuned lr, and compare
    #: never schedules an optimizer with train()/eval() modes.)
    learning_rate_free: bool = False
    #: where property tests draw a hyperparameter, where the rule of :func:`sampling_space`
    #: does not fit (momentum may exceed 1 but is sampled below it); None: never drawn
    sample_ranges: dict[str, Sample | None] = field(default_factory=dict)
    #: how to build it for a whole network, ``whole_model(model, **hyperparameters)``, where
    #: that differs from ``cls(model.parameters(), ...)`` (Muon: hidden matrices to Muon, the
    #: rest to AdamW); compare's trials use it when the problem has no learning-rate groups
    whole_model: Callable[..., Any] | None = None
    #: the default learning rate of that build, where it is not the class's: compare's untuned
    #: "default" runs use it (Muon's whole-network build runs at muon_for's 0.02, the class's
    #: torch default 1e-3 would put its AdamW part at 1.5e-5)
    whole_model_lr: float | None = None
    #: raise it when a change (to the rule, or to how compare builds the optimizer) makes the
    #: trials stored by earlier versions stale: it enters the trial key (`TrialSpec.key`) when
    #: it is not 0, so a resumed comparison runs them again instead of reusing them
    trial_version: int = 0
    #: the twins' class names where a twin exists but is compared by its own test rather than
    #: through the generic factories above (torch.optim.Muon takes 2-D parameters only), so the
    #: tables and `optimlab list` do not say "none"
    torch_equivalent: str | None = None
    keras_equivalent: str | None = None

    @property
    def torch_class(self) -> str | None:
        """The torch.optim class's name (for messages and tables), None without a twin."""
        return self.torch_equivalent if self.torch_twin is None else _twin_name(self.torch_twin)

    @property
    def keras_class(self) -> str | None:
        return self.keras_equivalent if self.keras_twin is None else _twin_name(self.keras_twin)


def _twin_name(twin: Twin) -> str:
    return twin.__qualname__.rsplit(".", 1)[-1]


#: option sets every algorithm is tested with
COMMON_SAMPLES: tuple[dict[str, Any], ...] = ({"weight_decay": 0.1}, {"maximize": True})
#: Keras's weight decay is the decoupled one
KERAS_DECAY: dict[str, Any] = {"weight_decay": 0.1, "decoupled_weight_decay": True}


def derived_sample(default: Any, interval: Any, flag: bool) -> Sample | None:
    """Where to draw a hyperparameter, from its default and its declared valid interval.

    * a flag (or a bool default): both values;
    * a tuple of numbers in [0, 1) (``betas``): each in [0, d + 0.9 (1 - d)] around its default d;
    * a number with a bounded interval: uniform over the interval's first 99.9 % (``alpha = 1``
      would freeze an average forever);
    * a number with an unbounded interval and a positive default d: log-uniform on [d/10, 10 d];
    * anything else (a default of 0 on an unbounded range, an integer, a string): not drawn.
    """
    if flag or isinstance(default, bool):
        return Choice((False, True))
    if isinstance(default, tuple):
        if default and all(isinstance(d, float) and 0 <= d < 1 for d in default):
            return tuple(SampleRange(0.0, d + 0.9 * (1 - d)) for d in default)
        return None
    if interval is None or not isinstance(default, float):
        return None
    low, high = float(interval.low), float(interval.high)
    if high != float("inf"):
        width = high - low
        start = low if interval.low_closed else low + 1e-3 * width
        return SampleRange(start, low + 0.999 * width)
    if default > 0:
        return SampleRange(max(default / 10, low), default * 10, log=True)
    return None


def sampling_space(info: OptimizerInfo) -> dict[str, Sample]:
    """Every hyperparameter a property test draws for `info` (torch convention), by name.

    The optimizer's own ``sample_ranges`` win; the others follow :func:`derived_sample` from
    the class's defaults, ``RANGES`` and ``FLAGS``.  Common options (weight decay, maximize) are
    the tests' own business.  A new optimizer is covered without a line in any test.
    """
    cls = info.cls
    space: dict[str, Sample] = {}
    for name, default in cls.DEFAULTS["torch"].items():
        if name in info.sample_ranges:
            sample = info.sample_ranges[name]
        elif name in cls.RANGES or name in cls.FLAGS or isinstance(default, tuple):
            sample = derived_sample(default, cls.RANGES.get(name), name in cls.FLAGS)
        else:
            sample = None
        if sample is not None:
            space[name] = sample
    return space
