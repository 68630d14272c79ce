r"""Schedule-Free AdamW and SGD: no learning-rate schedule, an average of the iterates instead.

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky (2024), "The Road Less Scheduled", NeurIPS
(winner of the self-tuning track of AlgoPerf 2024).  The rule is the ``schedulefree`` package's
(AdamWScheduleFree, SGDScheduleFree; Facebook Research), operation for operation.

Three sequences: z (the base SGD / Adam iterate), x (the weighted average of the z's, the point to
*evaluate*) and y (the point where the gradient is taken, an interpolation of the two)::

    y_t = (1 - β) z_t + β x_t                                   (β: momentum, or betas[0])
    z_{t+1} = z_t - γ_t d_t                                     (d: the (normalized) gradient at y)
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

with γ_t = lr·min(1, (t+1)/warmup_steps), weights w_t = (t+1)^r · (max_{s≤t} γ_s)^weight_lr_power
and c_{t+1} = w_t / Σ_{s≤t} w_s.  Only y and z are stored: the parameters hold y in train mode,
and x is recovered as x = (y − (1 − β) z)/β.  AdamW's direction is
d = g / (√(v/(1 − β₂^{t+1})) + ε) + λ y with v ← β₂ v + (1 − β₂) g² (the weight decay λ y is added
to the *normalized* gradient, at y: neither torch's L2 nor AdamW's decoupled shrink); SGD's is
d = g + λ y.

Train and eval
--------------
``optimizer.train()`` puts y in the parameters (step only in train mode), ``optimizer.eval()``
puts x (evaluate, checkpoint).  optimlab's trainer, lr-find and diagnose call them for any
optimizer that has them.  A batch-norm network's running statistics were gathered at y: recompute
them at x before evaluating (optimlab's trainer does).

Convention notes
----------------
* The package raises when ``step()`` runs before ``train()``; here a new optimizer starts in
  train mode (before the first step y = z = x, so ``train()`` would change nothing) and ``step()``
  in eval mode raises.  The group bookkeeping (``k``, ``train_mode``, ``weight_sum``, ``lr_max``,
  ``scheduled_lr``) lives in each parameter group under the package's names, so state_dicts move
  between the two, and a state_dict saved in either mode reloads and switches mode correctly.
* ``weight_decay`` is the package's (see above); ``decoupled_weight_decay`` is refused.
* Keras 3 ``ScheduleFreeAdamW`` on the torch backend aliases ``momentum_old = momentum.value``
  with the tensor updated on the next line (docs/conventions.md has a reproduction); optimlab
  follows the corrected rule, the package's.
* Defaults: AdamW lr 0.0025, betas (0.9, 0.999), eps 1e-8; SGD lr 1.0, momentum 0.9; both
  weight_decay 0, warmup_steps 0, r 0, weight_lr_power 2.  ``convention="keras"`` uses the same.

State: ``z`` and (AdamW) ``exp_avg_sq``, the package's names.

Fused kernels: ``optimlab.optim.kernels.schedulefree`` runs the training step (28 bytes per
float32 parameter for AdamW, 20 for SGD); ``train()``/``eval()`` stay here and work on the same
state.  The step's scalars (γ_t, c_{t+1}, y's step, 1 − β₂^{t+1}) come from
:func:`step_scalars`, shared with the reference rule.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Unpack

import torch

from optimlab.optim.base import (
    LOW_PRECISION,
    CommonOptions,
    Optimizer,
    Params,
    _kernels,
    selected_impl,
    state_dtype,
)
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.hyperparameters import NON_NEGATIVE, POSITIVE, Interval

#: the per-group bookkeeping of the schedule-free average, with its initial values (the package's)
GROUP_STATE: dict[str, Any] = {
    "k": 0,
    "train_mode": True,
    "weight_sum": 0.0,
    "lr_max": -1.0,
    "scheduled_lr": 0.0,
}
_AVERAGING = {"warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0}
_AVERAGING_RANGES = {
    "warmup_steps": NON_NEGATIVE,
    "r": NON_NEGATIVE,
    "weight_lr_power": NON_NEGATIVE,
}


class StepScalars(NamedTuple):
    """The scalars of one Schedule-Free step of a group, and its bookkeeping after the step."""

    step: int  # t + 1: the group's ``k`` after this step
    lr: float | torch.Tensor  # γ_t = lr·min(1, (t+1)/warmup_steps)
    ckp1: float  # c_{t+1} = w_t / Σ_{s≤t} w_s
    y_scale: float | torch.Tensor  # γ_t (β (1 − c_{t+1}) − 1): y's step along the direction
    bias_correction2: float  # 1 − β₂^{t+1} (AdamW's second moment; 1.0 for SGD)
    lr_max: float  # max_{s≤t} γ_s
    weight_sum: float  # Σ_{s≤t} w_s


def step_scalars(
    k: int,
    lr: float | torch.Tensor,
    warmup_steps: int,
    r: float,
    weight_lr_power: float,
    lr_max: float,
    weight_sum: float,
    beta: float,
    beta2: float | None,
) -> StepScalars:
    """Step t = k's scalars, from the group's bookkeeping before it: the one place the reference
    rule and the kernel get them (pure; :func:`advance` stores the bookkeeping).

    γ_t = lr·min(1, (k+1)/warmup_steps); w = (k+1)^r · (max γ)^weight_lr_power; c = w / Σw;
    β is the interpolation (betas[0] or momentum), β₂ AdamW's second-moment decay (None: SGD).
    """
    schedule = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    scheduled_lr = lr * schedule
    # a tensor lr (one per element) weighs the average by its largest value
    largest = float(scheduled_lr.max()) if isinstance(scheduled_lr, torch.Tensor) else scheduled_lr
    lr_max = max(float(largest), lr_max)
    weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
    weight_sum = weight_sum + weight
    ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
    return StepScalars(
        step=k + 1,
        lr=scheduled_lr,
        ckp1=ckp1,
        y_scale=scheduled_lr * (beta * (1 - ckp1) - 1),
        bias_correction2=1.0 if beta2 is None else 1 - beta2 ** (k + 1),
        lr_max=lr_max,
        weight_sum=weight_sum,
    )


def advance(group: dict[str, Any], beta: float, beta2: float | None) -> StepScalars:
    """Advance the group's averaging bookkeeping by one step; return the step's scalars."""
    scalars = step_scalars(
        group["k"],
        group["lr"],
        group["warmup_steps"],
        group["r"],
        group["weight_lr_power"],
        group["lr_max"],
        group["weight_sum"],
        beta,
        beta2,
    )
    group["k"] = scalars.step
    group["scheduled_lr"] = scalars.lr
    group["lr_max"] = scalars.lr_max
    group["weight_sum"] = scalars.weight_sum
    return scalars


@functools.cache  # one dict lookup per step instead of an import statement
def _adamw_kernel() -> Any:
    """The fused kernel (optimlab.optim.kernels.schedulefree), imported on first use; it takes
    the per-step scalars from here (the kernel never imports this module)."""
    from optimlab.optim.kernels import schedulefree as kernel

    return kernel.make_adamw_spec(ScheduleFreeAdamW.advance)


@functools.cache
def _sgd_kernel() -> Any:
    """The fused Schedule-Free SGD kernel (see :func:`_adamw_kernel`)."""
    from optimlab.optim.kernels import schedulefree as kernel

    return kernel.make_sgd_spec(ScheduleFreeSGD.advance)


class _ScheduleFree(Optimizer):
    """The shared machinery: group bookkeeping, train/eval, the step over a group."""

    COUNTS_STEPS = False

    def _interpolation(self, group: dict[str, Any]) -> float:
        """β of y = (1 − β) z + β x."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict) and "params" in param_group:
            param_group = {**GROUP_STATE, **param_group}  # the caller's dict stays as given
        super().add_param_group(param_group)

    def _check_group(self, group: dict[str, Any]) -> None:
        if group["decoupled_weight_decay"]:
            raise ValueError(
                f"{type(self).__name__}: invalid decoupled_weight_decay=True; Schedule-Free's "
                f"weight_decay is its own rule (λ·y added to the direction), so it must be False"
            )

    @torch.no_grad()
    def train(self) -> None:
        """Put the gradient point y = (1 − β) z + β x in the parameters (before training steps)."""
        for group in self.param_groups:
            if not group["train_mode"]:
                beta = self._interpolation(group)
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(end=self.state[p]["z"].to(p.device, p.dtype), weight=1 - beta)
                group["train_mode"] = True

    @torch.no_grad()
    def eval(self) -> None:
        """Put the average x in the parameters (before evaluating or saving a checkpoint)."""
        for group in self.param_groups:
            if group["train_mode"]:
                beta = self._interpolation(group)
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(end=self.state[p]["z"].to(p.device, p.dtype), weight=1 - 1 / beta)
                group["train_mode"] = False

    def step(self, closure: Any = None) -> float | None:  # type: ignore[override]
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__}.step() called in eval mode: the parameters hold the "
                f"average x; call optimizer.train() before training steps"
            )
        return super().step(closure)

    @staticmethod
    def advance(group: dict[str, Any]) -> StepScalars:
        """Advance the group's bookkeeping by one step (:func:`advance` with its betas)."""
        raise NotImplementedError

    def _update_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        for param in params:
            state = self.state[param]
            if "z" not in state:  # z_1 = y_1 (= x_1), in the dtype the rule works in
                state["z"] = param.to(state_dtype(param), copy=True)
        impl = selected_impl(group)
        if impl != "reference":
            # the kernel's coefficients advance the group's bookkeeping (once) when it runs
            required = impl == "fused"
            kernels = _kernels(required)
            if kernels is not None and kernels.fused_step(
                self, self.kernel(), group, params, grads, required=required
            ):
                return
        scalars = self.advance(group)
        for param, grad in zip(params, grads):
            work = param.float() if param.dtype in LOW_PRECISION else param
            grad = grad.to(work.dtype)
            if group["maximize"]:
                grad = -grad
            self.reference_rule(work, grad, self.state[param], group, scalars.step, scalars)
            if work is not param:
                param.copy_(work)

    @staticmethod
    def _move(
        y: torch.Tensor, z: torch.Tensor, direction: torch.Tensor, scalars: StepScalars
    ) -> None:
        """y ← (1 − c) y + c z − γ(1 − β(1 − c)) d;  z ← z − γ d (the package's operations)."""
        y.lerp_(end=z, weight=scalars.ckp1)
        if isinstance(scalars.lr, torch.Tensor):
            y.add_(direction * scalars.y_scale)
            z.sub_(direction * scalars.lr)
        else:
            y.add_(direction, alpha=scalars.y_scale)
            z.sub_(direction, alpha=scalars.lr)


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-Free AdamW, as schedulefree.AdamWScheduleFree."""

    name = "schedulefree-adamw"
    DEFAULTS = {
        convention: {"lr": 0.0025, "betas": (0.9, 0.999), "eps": 1e-8, **_AVERAGING}
        for convention in ("torch", "keras")
    }
    RANGES = {"lr": NON_NEGATIVE, "eps": POSITIVE, **_AVERAGING_RANGES}
    STATE = ("z", "exp_avg_sq")
    kernel = staticmethod(_adamw_kernel)

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int | None = None,
        r: float | None = None,
        weight_lr_power: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "warmup_steps": warmup_steps,
                "r": r,
                "weight_lr_power": weight_lr_power,
            },
            weight_decay=weight_decay,
            **options,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if group["betas"][0] == 0:
            raise ValueError(
                f"{type(self).__name__}: invalid betas={group['betas']!r}; betas[0] must be in "
                f"(0, 1): eval() divides by it"
            )

    def _interpolation(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    @staticmethod
    def advance(group: dict[str, Any]) -> StepScalars:
        beta1, beta2 = group["betas"]
        return advance(group, beta1, beta2)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
        scalars: StepScalars | None = None,
    ) -> None:
        """One parameter's step, given the group's `scalars` (:meth:`advance`, once per step)."""
        assert scalars is not None, "Schedule-Free steps a group: see _ScheduleFree._update_group"
        beta2 = group["betas"][1]
        if "exp_avg_sq" not in state:
            state["exp_avg_sq"] = torch.zeros_like(param)
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.div(scalars.bias_correction2).sqrt_().add_(group["eps"])
        direction = grad.div(denom)
        if group["weight_decay"] != 0:
            direction.add_(param, alpha=group["weight_decay"])
        _ScheduleFree._move(param, state["z"], direction, scalars)


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-Free SGD, as schedulefree.SGDScheduleFree."""

    name = "schedulefree-sgd"
    DEFAULTS = {
        convention: {"lr": 1.0, "momentum": 0.9, **_AVERAGING} for convention in ("torch", "keras")
    }
    RANGES = {
        "lr": NON_NEGATIVE,
        "momentum": Interval(0.0, 1.0, low_closed=False, high_closed=False),
        **_AVERAGING_RANGES,
    }
    STATE = ("z",)
    kernel = staticmethod(_sgd_kernel)

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        momentum: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int | None = None,
        r: float | None = None,
        weight_lr_power: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "warmup_steps": warmup_steps,
                "r": r,
                "weight_lr_power": weight_lr_power,
            },
            weight_decay=weight_decay,
            **options,
        )

    def _interpolation(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    @staticmethod
    def advance(group: dict[str, Any]) -> StepScalars:
        return advance(group, group["momentum"], None)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
        scalars: StepScalars | None = None,
    ) -> None:
        """One parameter's step, given the group's `scalars` (:meth:`advance`, once per step)."""
        assert scalars is not None, "Schedule-Free steps a group: see _ScheduleFree._update_group"
        direction = grad
        if group["weight_decay"] != 0:
            direction = grad.add(param, alpha=group["weight_decay"])
        _ScheduleFree._move(param, state["z"], direction, scalars)


SCHEDULEFREE_ADAMW_INFO = OptimizerInfo(
    name="schedulefree-adamw",
    cls=ScheduleFreeAdamW,
    title="Schedule-Free AdamW",
    family="both",
    rule="z ← z − γ·d (Adam-normalized g at y); x ← (1−c)x + c·z; y = (1−β₁)z + β₁x",
    improves="both (Adam's step size; averaging replaces the learning-rate schedule)",
    samples=({"weight_decay": 0.1}, {"maximize": True}, {"warmup_steps": 10, "r": 1.0}),
    convergence=Convergence(0.05, (0.03, 5000, 0.05)),
)
SCHEDULEFREE_SGD_INFO = OptimizerInfo(
    name="schedulefree-sgd",
    cls=ScheduleFreeSGD,
    title="Schedule-Free SGD",
    family="direction",
    rule="z ← z − γ·g (at y); x ← (1−c)x + c·z; y = (1−β)z + βx",
    improves="direction (momentum through the interpolation; averaging replaces the schedule)",
    samples=({"weight_decay": 0.1}, {"maximize": True}, {"warmup_steps": 10, "r": 1.0}),
    convergence=Convergence(0.05, (0.01, 5000, 0.05)),
)

#: what this module registers
DECLARATIONS = (SCHEDULEFREE_ADAMW_INFO, SCHEDULEFREE_SGD_INFO)
