r"""Muon: momentum orthogonalized by Newton–Schulz for weight matrices, AdamW for the rest.

Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks"
(https://kellerjordan.github.io/posts/muon/); Liu et al. (2025), "Muon is Scalable for LLM
Training" (Moonlight; the ``match_rms_adamw`` scale).  For a weight matrix W (m × n):

.. math::

    B_t = \mu B_{t-1} + (1 - \mu) g_t, \qquad
    \tilde B_t = (1 - \mu) g_t + \mu B_t \;\text{(nesterov; else } B_t)

    X_0 = \tilde B_t / \max(\lVert\tilde B_t\rVert_F, \epsilon), \qquad
    X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^\top \quad (k < 5)

    W_t = W_{t-1}(1 - \eta\lambda) - \eta\, s(m, n)\, X_5, \qquad
    s = \sqrt{\max(1, m/n)} \;\text{("original")} \;\text{or}\; 0.2\sqrt{\max(m, n)}
    \;\text{("match\_rms\_adamw")}

(a, b, c) = (3.4445, −4.7750, 2.0315) push every singular value of X towards 1 (into about
[0.7, 1.2]): the update is the nearest semi-orthogonal matrix to the momentum, U Vᵀ, whose RMS is
1/√max(m, n); ``match_rms_adamw`` scales it to RMS ≈ 0.2, AdamW's typical update RMS, so AdamW's
η and λ carry over.

**Which parameters.**  Muon is for hidden weight matrices.  A parameter with fewer than two
dimensions (bias, gain, scalar) is updated by AdamW inside the same optimizer (as Keras's Muon
does), with the group's ``lr`` and its ``adamw_betas``, ``adamw_eps`` and ``adamw_weight_decay``
(torch.optim.AdamW's 1e-2, or Keras's ``adam_weight_decay`` 0.004); a group's
``use_muon`` (None: by dimension; True; False) overrides that, and :func:`muon_for` (also
``Muon.for_model``) splits a whole network by the documented rule — embeddings, the output head
and biases/gains to AdamW, hidden matrices to Muon — into ONE optimizer with one state_dict.

**Conv kernels** (out, in, kh, kw) are the matrix (out, in·kh·kw): the momentum is reshaped, the
iteration and the scale s(m, n) use m = out, n = in·kh·kw, and the update is reshaped back — so a
conv kernel's update is exactly that of the same numbers as a 2-D matrix.  (timm's AdaMuon took
(out, in) from the 4-D shape and scaled conv updates 5.7×–512× too small; the test that catches
that class of bug is in tests/test_modern_muon.py.)

Convention notes
----------------
* ``convention="torch"`` is torch.optim.Muon: the iteration runs in **bfloat16** whatever the
  parameters' dtype (torch's choice, ~3 significant digits), ``eps`` clamps the norm,
  ``adjust_lr_fn`` None means "original", weight_decay 0.1, lr 1e-3; the AdamW part is
  torch.optim.AdamW's rule (eps 1e-8).  ``ns_bfloat16=False`` runs the iteration in the
  parameter's dtype (float32 for half-precision parameters).
* ``convention="keras"`` is keras.optimizers.Muon: the momentum is the sum
  B ← μB + g (not the average; the iteration's normalization makes the two equal up to ε), the
  norm gets ε added (X₀ = B̃/(‖B̃‖ + ε)), ``adjust_lr_fn="match_rms_adamw"`` (Keras's
  ``rms_rate=0.2``), the iteration in the parameter's dtype, weight_decay 0.004 for both parts,
  and Keras's Adam rule for the AdamW part (adamw_eps 1e-7, adamw_weight_decay 0.004).  Keras sends every tensor that is
  not exactly 2-D (conv kernels included) to AdamW, and decays AdamW's tensors with the base
  learning rate even when ``adam_lr_ratio`` ≠ 1; here conv kernels go to Muon unless
  ``use_muon=False``, and each group decays with its own lr.
* Weight decay is decoupled in both (W ← W(1 − ηλ), η before the shape scale).

State: ``momentum_buffer`` (B; Muon tensors, torch.optim.Muon's name) or ``step``,
``exp_avg``, ``exp_avg_sq`` (AdamW tensors, torch.optim.AdamW's names).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Unpack

import torch
from torch import nn

from optimlab.optim.adam import Adam
from optimlab.optim.base import CommonOptions, Optimizer, Params, as_float
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.hyperparameters import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_HALF_OPEN,
    Interval,
    check_choice,
    check_number,
)
from optimlab.optim.scalar_lr import check_scalar_lr

#: the quintic's coefficients (Jordan et al.), torch's and Keras's default
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
#: Moonlight's target update RMS (Keras's rms_rate)
MATCHED_RMS = 0.2
#: :func:`muon_for`'s default rate for the hidden matrices (the Muon NanoGPT speedrun's)
MUON_FOR_LR = 0.02

_COMMON = {
    "lr": 1e-3,
    "momentum": 0.95,
    "nesterov": True,
    "ns_coefficients": NS_COEFFICIENTS,
    "eps": 1e-7,
    "ns_steps": 5,
    "use_muon": None,
    "adamw_betas": (0.9, 0.999),
    "decoupled_weight_decay": True,
}


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """The matrix a ≥ 2-D tensor is treated as: (first dimension, product of the others)."""
    return shape[0], math.prod(shape[1:])


def shape_scale(adjust_lr_fn: str | None, rows: int, cols: int) -> float:
    """s(m, n): the factor on η for an m × n matrix (torch.optim.Muon's ``_adjust_lr``)."""
    if adjust_lr_fn == "match_rms_adamw":
        return MATCHED_RMS * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def newton_schulz(
    matrix: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    *,
    bfloat16: bool,
    eps_added: bool = False,
) -> torch.Tensor:
    """The quintic Newton–Schulz iteration: ≈ U Vᵀ of ``matrix`` = U S Vᵀ (2-D).

    ``bfloat16``: iterate in bfloat16 (torch.optim.Muon) and return bfloat16, else in the
    matrix's dtype.  ``eps_added``: X₀ = M/(‖M‖ + ε) (Keras) instead of M/max(‖M‖, ε) (torch).
    The wide orientation is iterated (X Xᵀ is the smaller Gram matrix) and transposed back.
    """
    a, b, c = coefficients
    x = matrix.bfloat16() if bfloat16 else matrix.clone()
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    if eps_added:
        x = x / (x.norm() + eps)
    else:
        x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def routes_to_muon(param: torch.Tensor, group: dict[str, Any]) -> bool:
    """Whether `param` of `group` gets the Muon update (else AdamW): ``use_muon``, or ≥ 2-D."""
    use_muon = group["use_muon"]
    return param.dim() >= 2 if use_muon is None else use_muon


class Muon(Optimizer):
    """Muon (torch.optim.Muon or keras.optimizers.Muon) with AdamW for non-matrix parameters."""

    name = "muon"
    DEFAULTS = {
        "torch": {
            **_COMMON,
            "weight_decay": 0.1,
            "adjust_lr_fn": None,
            "ns_bfloat16": True,
            "adamw_eps": 1e-8,
            "adamw_weight_decay": 1e-2,
        },
        "keras": {
            **_COMMON,
            "weight_decay": 0.004,
            "adjust_lr_fn": "match_rms_adamw",
            "ns_bfloat16": False,
            "adamw_eps": 1e-7,
            "adamw_weight_decay": 0.004,
        },
    }
    RANGES = {
        "lr": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,  # torch.optim.Muon's check
        "eps": POSITIVE,
        "adamw_eps": POSITIVE,
        "adamw_weight_decay": NON_NEGATIVE,
    }
    FLAGS = ("nesterov", "ns_bfloat16")
    STATE = ("step", "momentum_buffer", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Params,
        lr: float | torch.Tensor | None = None,
        weight_decay: float | None = None,
        momentum: float | None = None,
        nesterov: bool | None = None,
        ns_coefficients: tuple[float, float, float] | None = None,
        eps: float | None = None,
        ns_steps: int | None = None,
        adjust_lr_fn: str | None = None,
        *,
        ns_bfloat16: bool | None = None,
        use_muon: bool | None = None,
        adamw_betas: tuple[float, float] | None = None,
        adamw_eps: float | None = None,
        adamw_weight_decay: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        hyperparameters = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
            "ns_bfloat16": ns_bfloat16,
            "use_muon": use_muon,
            "adamw_betas": adamw_betas,
            "adamw_eps": adamw_eps,
            "adamw_weight_decay": adamw_weight_decay,
        }
        super().__init__(params, hyperparameters, weight_decay=weight_decay, **options)

    @classmethod
    def for_model(cls, model: nn.Module, **kwargs: Any) -> Muon:
        """:func:`muon_for`: hidden matrices to Muon, the rest to AdamW, one optimizer."""
        return muon_for(model, **kwargs)

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_scalar_lr(owner, group)
        check_choice(owner, "adjust_lr_fn", group["adjust_lr_fn"], ADJUST_LR_FNS)
        _check_adamw_betas(owner, group)
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps < 100:
            raise ValueError(
                f"{owner}: invalid ns_steps={steps!r}; ns_steps must be an integer in [1, 99]"
            )
        coefficients = group["ns_coefficients"]
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError(
                f"{owner}: invalid ns_coefficients={coefficients!r}; ns_coefficients must be "
                f"three real numbers (a, b, c)"
            )
        for index, value in enumerate(coefficients):
            check_number(owner, f"ns_coefficients[{index}]", value, _REAL)
        use_muon = group["use_muon"]
        if use_muon not in (None, True, False):
            raise ValueError(
                f"{owner}: invalid use_muon={use_muon!r}; use_muon must be None (by dimension: "
                f"≥ 2-D to Muon), True or False"
            )
        if use_muon:
            for index, param in enumerate(group.get("params", ())):
                if param.dim() < 2:
                    raise ValueError(
                        f"{owner}: parameter {index} has shape {tuple(param.shape)}; "
                        f"use_muon=True needs parameters with at least 2 dimensions"
                    )

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        # the base class applies the group's weight decay: AdamW's tensors take adamw_weight_decay
        if not routes_to_muon(param, group):
            group = {**group, "weight_decay": group["adamw_weight_decay"]}
        super()._reference_step(param, grad, state, group)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        if not routes_to_muon(param, group):
            adamw = {
                "lr": group["lr"],
                "betas": group["adamw_betas"],
                "eps": group["adamw_eps"],
                "amsgrad": False,
                "convention": group["convention"],
            }
            Adam.reference_rule(param, grad, state, adamw, step)
            return
        keras = group["convention"] == "keras"
        momentum = group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buffer = state["momentum_buffer"]
        if keras:  # the sum B ← μB + g, and g + μB
            buffer.add_(grad + buffer * (momentum - 1))
            direction = grad + momentum * buffer if group["nesterov"] else buffer
        else:  # the average B ← μB + (1 − μ)g, and (1 − μ)g + μB
            buffer.lerp_(grad, 1 - momentum)
            direction = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
        rows, cols = matrix_shape(param.shape)
        orthogonal = newton_schulz(
            direction.reshape(rows, cols),
            group["ns_coefficients"],
            group["ns_steps"],
            group["eps"],
            bfloat16=group["ns_bfloat16"],
            eps_added=keras,
        ).view(param.shape)
        lr = as_float(group["lr"])
        param.add_(orthogonal, alpha=-lr * shape_scale(group["adjust_lr_fn"], rows, cols))


#: any finite real number
_REAL = Interval(-math.inf, low_closed=False)


def _check_adamw_betas(owner: str, group: dict[str, Any]) -> None:
    betas = group["adamw_betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(
            f"{owner}: invalid adamw_betas={betas!r}; adamw_betas must be a pair "
            f"(beta1, beta2), each in {UNIT_HALF_OPEN}"
        )
    for index, beta in enumerate(betas):
        check_number(owner, f"adamw_betas[{index}]", beta, UNIT_HALF_OPEN)


# ------------------------------------------------------------------------------------------
# the whole-network helper

#: module types whose weights are lookup tables, not linear maps: AdamW
EMBEDDINGS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


def split_for_muon(
    model: nn.Module,
    *,
    exclude: Iterable[str] = (),
    head: str | None = "auto",
) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """Split `model`'s trainable parameters into (Muon's, AdamW's) named lists.

    The rule: a parameter goes to Muon iff it has ≥ 2 dimensions (a matrix, or a conv kernel
    treated as (out, in·kh·kw)) and none of these holds —

    * it belongs to an ``nn.Embedding``/``nn.EmbeddingBag`` (a lookup table: its rows see
      sparse, unequal gradients);
    * it belongs to the output head: the module named `head`, or with ``head="auto"`` the
      ``nn.Linear`` registered last in the model (its outputs are logits, not features);
      ``head=None``: no head;
    * its name matches one of the `exclude` regular expressions (``re.search``).

    Everything else (biases, norm gains, scalars, embeddings, the head) goes to AdamW.  A
    parameter shared by several modules (tied embedding and head) goes to AdamW if any owner
    says so.
    """
    patterns = []
    for pattern in exclude:
        try:
            patterns.append(re.compile(pattern))
        except (re.error, TypeError) as error:
            raise ValueError(
                f"split_for_muon: invalid exclude pattern {pattern!r} ({error}); exclude must be "
                f"regular expressions matched against parameter names (re.search)"
            ) from None
    modules = dict(model.named_modules())
    if head == "auto":
        linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
        head = linears[-1] if linears else None
    elif head is not None and head not in modules:
        raise ValueError(
            f"muon_for: invalid head={head!r}; head must be 'auto', None or the name of a "
            f"module of the model (e.g. {', '.join(repr(n) for n in list(modules)[1:4])})"
        )
    to_adamw: set[int] = set()
    for name, module in modules.items():
        if isinstance(module, EMBEDDINGS) or (head is not None and name == head):
            to_adamw.update(id(p) for p in module.parameters(recurse=False))
    muon, adamw = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        excluded = id(param) in to_adamw or any(p.search(name) for p in patterns)
        (muon if param.dim() >= 2 and not excluded else adamw).append((name, param))
    return muon, adamw


def muon_for(
    model: nn.Module,
    lr: float = MUON_FOR_LR,
    adamw_lr: float = 3e-4,
    *,
    weight_decay: float | None = None,
    adamw_weight_decay: float = 0.01,
    exclude: Iterable[str] = (),
    head: str | None = "auto",
    **options: Any,
) -> Muon:
    """One optimizer for a whole network: hidden matrices under Muon (lr `lr`), everything else
    under AdamW (lr `adamw_lr`, weight decay `adamw_weight_decay`), split by
    :func:`split_for_muon` (`exclude`, `head`).  Two parameter groups (``use_muon`` True /
    False), named parameters, one state_dict; `options` go to :class:`Muon` (``momentum``,
    ``adjust_lr_fn``, ``convention``, ...).  lr 0.02 with the "original" scale and AdamW's
    3e-4 are the values of the Muon NanoGPT speedrun records; with
    ``adjust_lr_fn="match_rms_adamw"`` use AdamW's lr for both.
    """
    muon, adamw = split_for_muon(model, exclude=exclude, head=head)
    groups: list[dict[str, Any]] = []
    if muon:
        group: dict[str, Any] = {"params": muon, "use_muon": True, "lr": lr}
        if weight_decay is not None:
            group["weight_decay"] = weight_decay
        groups.append(group)
    if adamw:
        groups.append(
            {
                "params": adamw,
                "use_muon": False,
                "lr": adamw_lr,
                "adamw_weight_decay": adamw_weight_decay,
            }
        )
    if not groups:
        raise ValueError("muon_for: the model has no trainable parameters")
    return Muon(groups, lr=lr, **options)


#: AdamW's rate over Muon's in :func:`muon_for`'s defaults (3e-4 / 0.02, the speedrun values)
ADAMW_LR_RATIO = 3e-4 / 0.02


def for_comparison(model: nn.Module, lr: float | None = None, **hyperparameters: Any) -> Muon:
    """Muon as compare runs it on a whole network: :func:`muon_for`'s split, with AdamW's rate
    kept at the defaults' ratio to Muon's (``adamw_lr = lr × 3e-4/0.02``) as the learning-rate
    grid moves ``lr`` — so the grid tunes one rate, and at Muon's default 0.02 both parts run
    at the speedrun's values."""
    lr = MUON_FOR_LR if lr is None else lr
    return muon_for(model, lr=lr, adamw_lr=lr * ADAMW_LR_RATIO, **hyperparameters)


MUON_INFO = OptimizerInfo(
    name="muon",
    cls=Muon,
    title="Muon",
    family="direction",
    rule="B ← μB + (1−μ)g; W ← W − η·s(m,n)·NS₅(g + μB) (≈ UVᵀ); non-matrices: AdamW",
    # torch.optim.Muon takes 2-D parameters only and Keras's Muon has other argument names:
    # tests/test_modern_muon.py compares with both directly
    torch_twin=None,
    keras_twin=None,
    torch_equivalent="Muon",
    keras_equivalent="Muon",
    improves="direction (momentum orthogonalized: every direction of a weight matrix moves alike)",
    samples=(
        {"weight_decay": 0.0, "nesterov": False},
        {"maximize": True},
        {"adjust_lr_fn": "match_rms_adamw", "ns_bfloat16": False},
    ),
    keras_samples=({"nesterov": False},),
    # the convergence problems are 1-D: Muon runs its AdamW part there (adamw_weight_decay 1e-2
    # moves the fixed point off the minimum, as for AdamW)
    convergence=Convergence(0.03, (0.03, 3000, 0.1)),
    elementwise=False,
    whole_model=for_comparison,
    whole_model_lr=MUON_FOR_LR,
    # 1: compare builds Muon for the whole network (muon_for) — before, Muon(model.parameters())
    # also ran the embeddings and the head, and those stored trials must not be reused
    trial_version=1,
)

#: what this module registers
DECLARATIONS = (MUON_INFO,)
