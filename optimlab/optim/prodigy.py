r"""Prodigy: Adam whose step size d is estimated on the fly (learning-rate free).

Mishchenko & Defazio (2024), "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML
(arXiv:2306.06101).  The rule is the ``prodigyopt`` package's ``Prodigy`` (the authors'),
operation for operation.

One estimate d of the distance to the solution, shared by *every* parameter group, grows from
d₀ (1e-6)::

    η̂ₖ   = dₖ · lr · [√(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹)]              (the bracket: use_bias_correction)
    rₖ   = β₃ rₖ₋₁ + (dₖ/d₀) η̂ₖ ⟨gₖ, x₀ − xₖ⟩                (d_numerator; β₃ = √β₂ by default)
    sₖ   = β₃ sₖ₋₁ + (dₖ/d₀) η̂ₖ gₖ                          (dₖ instead of η̂ₖ: safeguard_warmup)
    mₖ   = β₁ mₖ₋₁ + dₖ (1 − β₁) gₖ,   vₖ = β₂ vₖ₋₁ + dₖ² (1 − β₂) gₖ²
    d̂   = d_coef · rₖ / ‖sₖ‖₁,   dₖ₊₁ = min(max(dₖ, d̂), dₖ·growth_rate)
    θ    ← θ − η̂ₖ λ θ (decouple)   then   θ ← θ − η̂ₖ mₖ / (√vₖ + dₖ₊₁ ε)

(sums and norms run over every parameter of every group; d never decreases).  ``lr`` stays 1:
it scales the estimate, it is not a step size to tune.

Convention notes
----------------
* **d is shared by all parameter groups**, as in the package: one numerator, one denominator,
  one d.  ``betas``, ``beta3``, ``d0``, ``d_coef``, ``growth_rate``, ``use_bias_correction`` and
  ``decouple`` are therefore one value for the whole optimizer: a group giving another value is
  refused (the package silently uses the first group's, and the *last* group's ``d0`` in one
  comparison).  ``weight_decay``, ``eps``, ``safeguard_warmup`` and ``slice_p`` are per group.
  ``lr`` may differ between groups: a group's lr scales its own η̂ = d·lr (the package refuses
  unequal lrs other than 0; with equal lrs the two rules are one), so every lr_scheduler works.
* **A group with lr 0 is frozen** here.  The package leaves its moments at 0 but still applies
  the step of the shared η̂ to it: with ``decouple`` its weights decay, and with β₁ = 0 they move
  by the raw gradient (docs/conventions.md has a reproduction).
* ``weight_decay`` is L2 (added to the gradient) with ``decouple=False``, and θ ← θ(1 − η̂λ)
  with ``decouple=True`` (the default) — scaled by the adapted step η̂, not by ``lr``, so
  optimlab's shared ``decoupled_weight_decay`` is refused in favour of ``decouple``.
* ``maximize`` (the package has none) negates the gradient; the package also adds the L2 term
  to the user's ``p.grad`` in place, optimlab leaves ``p.grad`` as it was.  No Keras Prodigy:
  ``convention="keras"`` runs the same rule.  ``fsdp_in_use`` (a sharded all-reduce of the two
  sums) is not offered.
* When every gradient is 0 (‖s‖₁ = 0) the step does nothing, not even count (the package's).

State: ``step`` (an int), ``s``, ``p0``, ``exp_avg`` (absent when β₁ = 0), ``exp_avg_sq``; the
group bookkeeping ``d``, ``d_max``, ``d_numerator``, ``k`` (and ``d_denom``, ``d_hat``) lives in
each group under the package's names, so its state_dicts load both ways.
"""

from __future__ import annotations

import math
from typing import Any, Unpack

import torch

from optimlab.optim.base import (
    LOW_PRECISION,
    CommonOptions,
    Optimizer,
    Params,
    _all_finite,
    _kernels,
    selected_impl,
)
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.hyperparameters import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_HALF_OPEN,
    Interval,
    _fail,
    check_number,
)

_DEFAULTS: dict[str, Any] = {
    "lr": 1.0,
    "betas": (0.9, 0.999),
    "beta3": None,
    "eps": 1e-8,
    "decouple": True,
    "use_bias_correction": False,
    "safeguard_warmup": False,
    "d0": 1e-6,
    "d_coef": 1.0,
    "growth_rate": math.inf,
    "slice_p": 1,
}
#: one value for the whole optimizer (d is shared): every group must agree with the first
SHARED = ("betas", "beta3", "d0", "d_coef", "growth_rate", "use_bias_correction", "decouple")
#: the group bookkeeping of the d estimate, initial values (d and d_max start at d0)
GROUP_STATE = {"d_numerator": 0.0, "k": 0}


def step_size(d: float, lr: float, betas: tuple[float, float], k: int, bias_correction: bool):
    """η̂ = d · lr · [√(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹)] for the step after `k` completed steps."""
    beta1, beta2 = betas
    correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) if bias_correction else 1
    return d * lr * correction


def next_d(
    d: float,
    d_max: float,
    d_hat: float,
    d0: float,
    growth_rate: float,
) -> tuple[float, float]:
    """(d, d_max) after the estimate d̂: d jumps to d̂ once while at d₀, then grows to the
    running maximum of d̂ at most by `growth_rate` per step."""
    if d == d0:
        d = max(d, d_hat)
    d_max = max(d_max, d_hat)
    return min(d_max, d * growth_rate), d_max


class Prodigy(Optimizer):
    """Prodigy (learning-rate-free Adam), as prodigyopt.Prodigy."""

    name = "prodigy"
    DEFAULTS = {"torch": dict(_DEFAULTS), "keras": dict(_DEFAULTS)}
    RANGES = {
        "lr": NON_NEGATIVE,
        "eps": POSITIVE,
        "d0": POSITIVE,
        "d_coef": POSITIVE,
        "slice_p": Interval(1.0),
    }
    FLAGS = ("decouple", "use_bias_correction", "safeguard_warmup")
    STATE = ("step", "s", "p0", "exp_avg", "exp_avg_sq")
    COUNTS_STEPS = False

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        betas: tuple[float, float] | None = None,
        beta3: float | None = None,
        eps: float | None = None,
        weight_decay: float = 0.0,
        decouple: bool | None = None,
        use_bias_correction: bool | None = None,
        safeguard_warmup: bool | None = None,
        d0: float | None = None,
        d_coef: float | None = None,
        growth_rate: float | None = None,
        slice_p: int | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        hyperparameters = {
            "lr": lr,
            "betas": betas,
            "beta3": beta3,
            "eps": eps,
            "decouple": decouple,
            "use_bias_correction": use_bias_correction,
            "safeguard_warmup": safeguard_warmup,
            "d0": d0,
            "d_coef": d_coef,
            "growth_rate": growth_rate,
            "slice_p": slice_p,
        }
        super().__init__(params, hyperparameters, weight_decay=weight_decay, **options)

    # ----------------------------------------------------------------------------------------
    # configuration
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key, value in GROUP_STATE.items():
            group.setdefault(key, value)
        group.setdefault("d", group["d0"])
        group.setdefault("d_max", group["d0"])
        first = self.param_groups[0]
        for key in SHARED:
            if group[key] != first[key]:
                raise _fail(
                    "Prodigy",
                    key,
                    group[key],
                    f"{first[key]!r} as in the first parameter group: the d estimate is shared "
                    f"by all groups, so {key} is one value for the whole optimizer",
                )

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        if isinstance(group["lr"], torch.Tensor):
            raise _fail(owner, "lr", group["lr"], "a Python number (it scales the shared d)")
        if group["decoupled_weight_decay"]:
            raise _fail(
                owner,
                "decoupled_weight_decay",
                True,
                "False: Prodigy's decoupled decay is `decouple=True` (the default), scaled by "
                "the adapted step d·lr, not by lr",
            )
        if group["beta3"] is not None:
            check_number(owner, "beta3", group["beta3"], UNIT_HALF_OPEN)
        growth_rate = group["growth_rate"]
        if not (
            isinstance(growth_rate, (int, float)) and not isinstance(growth_rate, bool)
        ) or not (
            growth_rate >= 1  # inf (the default) is allowed: no limit on the growth
        ):
            raise _fail(owner, "growth_rate", growth_rate, "in [1, inf] (inf: no limit)")
        if not isinstance(group["slice_p"], int) or isinstance(group["slice_p"], bool):
            raise _fail(owner, "slice_p", group["slice_p"], "an integer ≥ 1")

    # ----------------------------------------------------------------------------------------
    # the step
    @torch.no_grad()
    def step(self, closure: Any = None) -> float | None:  # type: ignore[override]
        """One Prodigy step over all groups: update the moments and the shared d, then move."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._gather()
        if work is None:
            return loss
        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        lr = max(group["lr"] for group in self.param_groups)
        d, d_max, d0 = first["d"], first["d_max"], first["d0"]
        # η̂ of each group: its own lr scales the shared d (the package insists on one lr, or 0)
        dlrs = [
            step_size(d, group["lr"], (beta1, beta2), first["k"], first["use_bias_correction"])
            for group in self.param_groups
        ]
        d_numerator = first["d_numerator"] * beta3
        delta_numerator, d_denom = 0.0, 0.0
        for group, dlr, items in zip(self.param_groups, dlrs, work):
            for _, param, grad, state in items:
                self._init_state(param, state, group["slice_p"], beta1)
                if group["lr"] == 0.0:
                    continue
                sliced = grad.flatten()[:: group["slice_p"]]
                shift = state["p0"] - param.flatten()[:: group["slice_p"]]
                delta_numerator += (d / d0) * dlr * torch.dot(sliced, shift).item()
                if beta1 > 0:
                    state["exp_avg"].mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
                scale = d if group["safeguard_warmup"] else dlr
                state["s"].mul_(beta3).add_(sliced, alpha=(d / d0) * scale)
                d_denom += state["s"].abs().sum().item()
        if d_denom == 0:
            return loss  # every gradient is 0: nothing to learn from, nothing moves
        d_hat = d
        if lr > 0.0:
            d_numerator += delta_numerator
            d_hat = first["d_coef"] * d_numerator / d_denom
            d, d_max = next_d(d, d_max, d_hat, d0, first["growth_rate"])
        for group, dlr, items in zip(self.param_groups, dlrs, work):
            group.update(d_numerator=d_numerator, d_denom=d_denom, d=d, d_max=d_max, d_hat=d_hat)
            for _, param, grad, state in items:
                state["step"] += 1
                if group["lr"] == 0.0:
                    continue  # frozen (the package would still decay it: see the docstring)
                denominator = state["exp_avg_sq"].sqrt().add_(d * group["eps"])
                if group["weight_decay"] != 0 and group["decouple"]:
                    param.add_(param, alpha=-group["weight_decay"] * dlr)
                if beta1 > 0:
                    param.addcdiv_(state["exp_avg"], denominator, value=-dlr)
                else:
                    param.addcdiv_(grad, denominator, value=-dlr * d)
            group["k"] += 1
        self._write_back(work)
        return loss

    def _gather(self) -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]] | None:
        """Per group, (parameter, working copy, adjusted gradient, state) of each parameter with a
        gradient; None when no group has one.  A group with a non-finite gradient under
        nonfinite="skip" sits this step out (as if it had no gradients: it adds nothing to d)."""
        work, any_grad = [], False
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for grad in grads:
                if grad.is_sparse:
                    raise RuntimeError(
                        "Prodigy does not support sparse gradients; use dense gradients "
                        "(e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam"
                    )
            if params and selected_impl(group) == "fused":  # no kernel: the shared message
                _kernels(required=True).fused_step(self, None, group, params, grads, required=True)
            if params and group["nonfinite"] == "skip" and not _all_finite(grads):
                for param in params:
                    state = self.state[param]
                    state["nonfinite_skipped"] = state.get("nonfinite_skipped", 0) + 1
                params, grads = [], []
            items = []
            for param, grad in zip(params, grads):
                value = param.float() if param.dtype in LOW_PRECISION else param
                grad = grad.to(value.dtype)
                if group["maximize"]:
                    grad = -grad
                if group["weight_decay"] != 0 and not group["decouple"]:
                    grad = grad.add(value, alpha=group["weight_decay"])
                items.append((param, value, grad, self.state[param]))
            any_grad = any_grad or bool(items)
            work.append(items)
        return work if any_grad else None

    @staticmethod
    def _init_state(param: torch.Tensor, state: dict[str, Any], slice_p: int, beta1: float):
        if "step" in state:
            return
        state["step"] = 0
        state["s"] = torch.zeros_like(param.flatten()[::slice_p])
        if param.any():
            state["p0"] = param.flatten()[::slice_p].clone()
        else:  # the package's: a 0-D zero (x₀ = 0 broadcasts)
            state["p0"] = torch.tensor(0, device=param.device, dtype=param.dtype)
        if beta1 > 0:
            state["exp_avg"] = torch.zeros_like(param)
        state["exp_avg_sq"] = torch.zeros_like(param)

    @staticmethod
    def _write_back(work: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]]):
        """Copy float32 working copies back into half-precision parameters."""
        for items in work:
            for param, value, _, _ in items:
                if value is not param:
                    param.copy_(value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an optimlab or a ``prodigyopt.Prodigy`` state_dict (``fsdp_in_use`` dropped)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            if group.pop("fsdp_in_use", False):
                raise ValueError(
                    "Prodigy: invalid fsdp_in_use=True in the loaded state_dict; optimlab's "
                    "Prodigy does not all-reduce the d estimate across shards"
                )


PRODIGY_INFO = OptimizerInfo(
    name="prodigy",
    cls=Prodigy,
    title="Prodigy",
    family="both",
    rule="Adam scaled by d (a running estimate of ‖x₀ − x*‖, shared by all groups); lr stays 1",
    improves="both (Adam whose step size is estimated during training: no learning rate to tune)",
    learning_rate_free=True,
    samples=(
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decouple": False},
        {"maximize": True},
        {"use_bias_correction": True, "safeguard_warmup": True},
        {"growth_rate": 1.02},
    ),
    convergence=Convergence(1.0, (1.0, 3000, 0.05)),
    # d is estimated from every parameter at once: an element's step depends on all the others
    elementwise=False,
)

#: what this module registers
DECLARATIONS = (PRODIGY_INFO,)
