r"""Adafactor: a relative step size and a factored second moment (sublinear memory).

Shazeer & Stern (2018), "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML.
The rule is torch.optim.Adafactor's (``convention="torch"``) or keras.optimizers.Adafactor's
(``convention="keras"``); both follow the paper's Algorithm 4 without first moment.

.. math::

    \hat\beta_{2,t} = 1 - t^{c}, \qquad
    \rho_t = \min(\eta, 1/\sqrt t), \qquad
    \alpha_t = \max\big(\epsilon_2, \operatorname{RMS}(\theta_{t-1})\big)\,\rho_t

A tensor with two or more dimensions keeps a row factor R and a column factor C of its second
moment over its **last two** dimensions (a conv kernel (out, in, kh, kw) keeps R of shape
(out, in, kh, 1) and C of shape (out, in, 1, kw), as torch.optim and Keras both do); a 0-D or
1-D tensor keeps the full V:

.. math::

    R_t = \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,\operatorname{mean}_{-1}(g_t^2), \quad
    C_t = \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,\operatorname{mean}_{-2}(g_t^2), \quad
    \hat V_t = R_t C_t / \operatorname{mean}_{-2}(R_t)

    U_t = g_t / \sqrt{\hat V_t}, \qquad
    \theta_t = \theta_{t-1} - \alpha_t\, U_t / \max\big(1, \operatorname{RMS}(U_t)/d\big)

c is ``beta2_decay`` (−0.8), d the clipping threshold; the step is 1 at t = 1, so the moment
starts at g² (no bias correction is needed).  Memory: n + m numbers for an n×m matrix instead of
Adam's 2nm.

Convention notes
----------------
* **ε₁ (``eps[0]``).**  torch clamps the factored estimate's row mean at ε₁ and the estimate
  V̂ at ε₁² (ε₁ = None: the dtype's machine epsilon, 2.2e-16 in float64); Keras adds ε₁ (1e-30)
  to g² before averaging.
* **Weight decay** is decoupled in both (θ ← θ(1 − ηλ), η the ``lr`` argument, not ρ_t), but
  torch measures RMS(θ) for α_t *before* the decay and Keras (whose base class decays first)
  *after* it.  ``decoupled_weight_decay=False`` gives optimlab's L2 (λθ added to g) instead.
* **Defaults.** torch: lr 1e-2, beta2_decay −0.8, eps (None, 1e-3), d 1, weight_decay 0.
  Keras: lr 1e-3 (``learning_rate``), beta_2_decay −0.8, epsilon_1 1e-30, epsilon_2 1e-3,
  clip_threshold 1.  Keras's ``relative_step`` changes nothing for a constant learning rate
  (ρ_t = min(η, 1/√t) either way) and is not offered.
* **Keras quirk.**  Keras computes min(η, 1/√t) with ``ops.minimum`` on its learning-rate
  variable, which Keras keeps in float32 unless ``keras.config.floatx()`` is float64: η = 1e-2
  becomes 0.009999999776.  optimlab uses η as given (docs/conventions.md has a reproduction).
* Keras keeps the full V̂ as a state variable for every factored tensor; optimlab stores only
  R and C, as torch does.

State: ``step``, and ``row_var`` / ``col_var`` (R, C; ≥ 2-D) or ``variance`` (V; 0-D, 1-D) —
torch.optim.Adafactor's names and shapes, so its state_dicts load.
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, as_float
from optimlab.optim.declaration import Convergence, OptimizerInfo, library_class
from optimlab.optim.hyperparameters import NON_NEGATIVE, Interval, check_number
from optimlab.optim.scalar_lr import check_scalar_lr

_COMMON = {"beta2_decay": -0.8, "d": 1.0, "weight_decay": 0.0, "decoupled_weight_decay": True}
#: the key under which `_reference_step` hands the decoupled decay to the rule (see there)
_DECAY_IN_RULE = "_adafactor_decay"


def relative_step_size(lr: float, step: int, param_rms: float, eps2: float) -> float:
    """α_t = max(ε₂, RMS(θ)) · min(η, 1/√t): the step scales with the parameter's own size."""
    return max(eps2, param_rms) * min(lr, 1 / (step**0.5))


def _rms(tensor: torch.Tensor, keras: bool) -> float:
    """RMS(x), rounded as the convention computes it (‖x‖/√n in torch, √mean(x²) in Keras)."""
    if keras:
        return float(tensor.square().mean().sqrt())
    return tensor.norm(2).item() / (tensor.numel() ** 0.5)


class Adafactor(Optimizer):
    """Adafactor, as torch.optim.Adafactor or keras.optimizers.Adafactor."""

    name = "adafactor"
    DEFAULTS = {
        "torch": {"lr": 1e-2, "eps": (None, 1e-3), **_COMMON},
        "keras": {"lr": 1e-3, "eps": (1e-30, 1e-3), **_COMMON},
    }
    RANGES = {
        "lr": NON_NEGATIVE,
        # c ∈ [−1, 0]: −1 is the plain average of every g² so far; below it the early gradients
        # outweigh the recent ones (torch accepts any c ≤ 0, Keras any value)
        "beta2_decay": Interval(-1.0, 0.0),
        "d": Interval(1.0),
    }
    STATE = ("step", "row_var", "col_var", "variance")

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        beta2_decay: float | None = None,
        eps: tuple[float | None, float] | None = None,
        d: float | None = None,
        weight_decay: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d},
            weight_decay=weight_decay,
            **options,
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_scalar_lr(owner, group)
        eps = group["eps"]
        allowed = "a pair (eps1, eps2): eps1 None or in (0, inf), eps2 in [0, inf)"
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"{owner}: invalid eps={eps!r}; eps must be {allowed}")
        if eps[0] is not None:
            check_number(owner, "eps[0]", eps[0], Interval(0.0, low_closed=False))
        check_number(owner, "eps[1]", eps[1], NON_NEGATIVE)

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        # The base class decays θ before the rule runs, but torch.optim measures RMS(θ) before
        # its decay: the rule applies the decoupled decay itself, where its convention puts it.
        if group["decoupled_weight_decay"] and group["weight_decay"] != 0:
            group = {**group, "weight_decay": 0.0, _DECAY_IN_RULE: group["weight_decay"]}
        super()._reference_step(param, grad, state, group)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        keras = group["convention"] == "keras"
        lr = as_float(group["lr"])
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = torch.finfo(param.dtype).eps
        decay = group.get(_DECAY_IN_RULE, 0.0)
        factored = grad.dim() > 1
        if factored and "row_var" not in state:
            state["row_var"] = grad.new_zeros((*grad.shape[:-1], 1))
            state["col_var"] = grad.new_zeros((*grad.shape[:-2], 1, grad.shape[-1]))
        elif not factored and "variance" not in state:
            state["variance"] = torch.zeros_like(grad)

        if decay and keras:  # Keras: decay first, then RMS(θ)
            param.mul_(1 - lr * decay)
        alpha = relative_step_size(lr, step, _rms(param, keras), eps2)
        if decay and not keras:  # torch: RMS(θ) first, then decay
            param.mul_(1 - lr * decay)
        weight = step ** group["beta2_decay"]  # 1 − β̂₂,t

        if keras:
            # Keras's operations: ε₁ inside the average, r/mean(r) times c, v = EMA of g² + ε₁
            squared = grad.square().add_(eps1)
            if factored:
                row_var, col_var = state["row_var"], state["col_var"]
                row_var.mul_(1 - weight).add_(squared.mean(dim=-1, keepdim=True) * weight)
                col_var.mul_(1 - weight).add_(squared.mean(dim=-2, keepdim=True) * weight)
                estimate = row_var / row_var.mean(dim=-2, keepdim=True) * col_var
            else:
                estimate = state["variance"]
                estimate.mul_(1 - weight).add_(squared * weight)
            update = grad / estimate.sqrt()
        else:
            # torch's operations: lerp, R C / mean(R) clamped at ε₁, V̂ clamped at ε₁²
            if factored:
                row_var, col_var = state["row_var"], state["col_var"]
                # mean(g², dim) as torch computes it: ‖g‖² along dim / its length
                row_mean = torch.norm(grad, dim=-1, keepdim=True).square_().div_(grad.size(-1))
                col_mean = torch.norm(grad, dim=-2, keepdim=True).square_().div_(grad.size(-2))
                row_var.lerp_(row_mean, weight)
                col_var.lerp_(col_mean, weight)
                estimate = row_var @ col_var
                estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            else:
                state["variance"].lerp_(grad * grad, weight)
                estimate = state["variance"].clone()
            update = estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad)
        if keras:
            clip = max(1.0, _rms(update, keras) / group["d"])
        else:  # torch's rounding: ‖U‖ / (√n·d)
            clip = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * group["d"]))
        param.add_(update, alpha=-alpha / clip)


ADAFACTOR_INFO = OptimizerInfo(
    name="adafactor",
    cls=Adafactor,
    title="Adafactor",
    family="step size",
    rule="R, C ← EMAs of row/column means of g²; θ ← θ − max(ε₂, RMS θ)·min(η, 1/√t)·clip(g/√(RC/mean R))",
    torch_twin=library_class("torch.optim", "Adafactor"),
    # keras.optimizers.Adafactor's arguments have other names and shapes (eps is two arguments
    # there): tests/test_modern_adafactor.py compares with it directly
    keras_twin=None,
    improves="step size (relative to the parameter's RMS; factored second moment, sublinear memory)",
    samples=(
        {"weight_decay": 0.1},
        {"maximize": True},
        {"beta2_decay": -0.5, "d": 2.0},
        {"eps": (1e-3, 1e-2)},
    ),
    keras_samples=({"weight_decay": 0.1}, {"beta2_decay": -0.5, "d": 2.0}),
    # Rosenbrock: the step is ~ min(η, 1/√t)·RMS(θ), 0.018 after 3000 steps: it ends 0.15 away
    convergence=Convergence(0.01, (0.1, 3000, 0.2)),
    elementwise=False,
)

#: what this module registers
DECLARATIONS = (ADAFACTOR_INFO,)
