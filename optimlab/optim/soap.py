r"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade (2025), "SOAP: Improving and
Stabilizing Shampoo using Adam", ICLR (arXiv:2409.11321).  The rule is
``pytorch_optimizer.SOAP``'s (the reference named by the issue), operation for operation.

For a parameter with k dimensions (after ``merge_dims``), each dimension i of size ≤
``max_precondition_dim`` keeps a Shampoo statistic Lᵢ (``GG``) and its eigenbasis Qᵢ (``Q``);
``project`` multiplies every such dimension by Qᵢᵀ (``project_back`` by Qᵢ).  At step t ≥ 2
(step 1 only builds L from g₁ and Q = eigh(L))::

    g' = project(g)
    m  ← β₁ m + (1 − β₁) g                       (exp_avg, kept in the original basis)
    v  ← β₂ v + (1 − β₂) g'²                     (exp_avg_sq, in the eigenbasis)
    u  = project_back(project(m) / (√v + ε))     (normalize_gradient: u /= (rms(u) + ε))
    θ  ← θ − η √(1 − β₂ᵗ⁻¹)/(1 − β₁ᵗ⁻¹) · u      (correct_bias; else θ ← θ − η u)
    θ  ← θ (1 − η λ)                              (decoupled weight decay, *after* the step)
    Lᵢ ← β_s Lᵢ + (1 − β_s) g₍ᵢ₎ g₍ᵢ₎ᵀ            (β_s: shampoo_beta, or β₂)

and every ``precondition_frequency`` steps Q is refreshed by one power iteration plus QR:
Qᵢ ← qr(Lᵢ Qᵢ) with the columns sorted by the estimated eigenvalues (v's axes re-ordered alike).
1-D parameters (unless ``precondition_1d``), 0-D ones and dimensions above
``max_precondition_dim`` are left in the original basis: there SOAP is Adam.

Convention notes
----------------
* Where pytorch-optimizer's SOAP differs from the official implementation (Vyas et al.'s
  ``nikhilvyas/SOAP``) is listed in docs/conventions.md; optimlab follows pytorch-optimizer.
* The QR of the power iteration runs in float32 even for float64 parameters (the reference's
  choice); the eigh at the first step in the parameter's dtype.
* ``merge_dims``: pytorch-optimizer's ``merge_small_dims`` returns [1] when *all* dimensions
  merge into one, which crashes the reshape of any tensor of more than one element; optimlab
  keeps the merged dimension (docs/conventions.md has a reproduction).
* ``weight_decay`` (default 1e-2) is always decoupled and applied *after* the step, so
  optimlab's shared ``decoupled_weight_decay`` is refused.  ``maximize`` negates the gradient
  (the reference also negates the user's ``p.grad`` in place; optimlab does not).
* ``lr`` is a Python number: the eigenbases couple the elements of a tensor.  No Keras SOAP:
  ``convention="keras"`` runs the same rule.

State: ``step``, ``exp_avg``, ``exp_avg_sq``, ``GG`` and ``Q`` (lists: one matrix per dimension,
``[]`` where a dimension is not preconditioned), ``precondition_frequency`` and ``shampoo_beta``
(fixed at the first step) — the reference's names, so its state_dicts load.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, Unpack

import torch

from optimlab.optim.base import CommonOptions, Optimizer, Params, state_dtype
from optimlab.optim.declaration import Convergence, OptimizerInfo
from optimlab.optim.group_steps import adopt_group_steps
from optimlab.optim.hyperparameters import (
    NON_NEGATIVE,
    POSITIVE,
    UNIT_HALF_OPEN,
    Interval,
    _fail,
    check_choice,
    check_number,
)

DATA_FORMATS = ("channels_first", "channels_last")

_DEFAULTS: dict[str, Any] = {
    "lr": 3e-3,
    "betas": (0.95, 0.95),
    "shampoo_beta": None,
    "weight_decay": 1e-2,
    "precondition_frequency": 10,
    "max_precondition_dim": 10000,
    "merge_dims": False,
    "precondition_1d": False,
    "correct_bias": True,
    "normalize_gradient": False,
    "data_format": "channels_first",
    "eps": 1e-8,
}


def step_size(lr: float, betas: tuple[float, float], step: int, correct_bias: bool) -> float:
    """η·√(1 − β₂ˢ)/(1 − β₁ˢ) at Adam step s = t − 1 (t: the parameter's step count)."""
    if not correct_bias:
        return lr
    beta1, beta2 = betas
    return lr * (math.sqrt(1.0 - math.pow(beta2, step)) / (1.0 - math.pow(beta1, step)))


def merged_shape(shape: torch.Size, max_dim: int) -> list[int]:
    """Merge neighbouring dimensions while their product stays ≤ `max_dim`:
    [1, 2, 512, 1, 2048, 1, 3, 4] with 1024 → [1024, 2048, 12]; (3, 5) with 10000 → [15]."""
    merged: list[int] = []
    product = 1
    for dim in shape:
        product *= dim
        if product > max_dim:
            merged.append(product // dim)
            product = dim
    merged.append(product)
    return merged


class _Layout:
    """How one parameter is viewed for preconditioning: channels-last permutation and merging."""

    def __init__(self, shape: torch.Size, group: dict[str, Any]) -> None:
        self.shape = shape
        self.permute = group["data_format"] == "channels_last" and len(shape) == 4
        self.merge = group["merge_dims"]
        self.max_dim = group["max_precondition_dim"]

    def to_matrix_view(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.merge:
            return tensor
        if self.permute:
            tensor = tensor.permute(0, 3, 1, 2)
        return tensor.reshape(merged_shape(tensor.size(), self.max_dim))

    def from_matrix_view(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.merge:
            return tensor
        if self.permute:
            shape = torch.Size([self.shape[0], self.shape[3], self.shape[1], self.shape[2]])
            return tensor.reshape(shape).permute(0, 2, 3, 1)
        return tensor.reshape(self.shape)


def project(tensor: torch.Tensor, bases: list, layout: _Layout, back: bool = False):
    """Multiply every preconditioned dimension by Qᵢᵀ (or Qᵢ with `back`); cycle the others."""
    tensor = layout.to_matrix_view(tensor)
    for basis in bases:
        if len(basis) > 0:
            tensor = torch.tensordot(tensor, basis, dims=[[0], [1 if back else 0]])
        else:  # not preconditioned: move the dimension to the back unchanged
            tensor = tensor.permute([*range(1, tensor.dim()), 0])
    return layout.from_matrix_view(tensor)


def eigenbases(statistics: list) -> list:
    """Q of each Lᵢ by eigh (eigenvalues descending); [] where a dimension is not preconditioned."""
    bases: list = []
    for matrix in statistics:
        if len(matrix) == 0:
            bases.append([])
            continue
        identity = torch.eye(matrix.shape[0], device=matrix.device, dtype=matrix.dtype)
        _, vectors = torch.linalg.eigh(matrix + 1e-30 * identity)
        bases.append(torch.flip(vectors, dims=[1]))
    return bases


def refreshed_eigenbases(state: dict[str, Any], layout: _Layout) -> list:
    """One power iteration and QR per basis: Qᵢ ← qr(Lᵢ Qᵢ), columns sorted by the estimated
    eigenvalues diag(Qᵢᵀ Lᵢ Qᵢ) descending; v's axes are re-ordered to match."""
    exp_avg_sq = layout.to_matrix_view(state["exp_avg_sq"])
    bases: list = []
    for axis, (matrix, basis) in enumerate(zip(state["GG"], state["Q"])):
        if len(matrix) == 0:
            bases.append([])
            continue
        product = matrix @ basis
        order = torch.argsort((basis * product).sum(dim=0), descending=True)
        exp_avg_sq = exp_avg_sq.index_select(axis, order)
        power_iteration = product.index_select(1, order)
        # the reference's QR is float32 for every dtype (see the module docstring)
        q, _ = torch.linalg.qr(power_iteration.to(torch.float32))
        bases.append(q.to(power_iteration.dtype))
    state["exp_avg_sq"] = layout.from_matrix_view(exp_avg_sq)
    return bases


def _preconditioned(size: int, dims: int, group: dict[str, Any]) -> bool:
    """Whether a dimension of `size` gets a Shampoo statistic (1-D only with precondition_1d)."""
    if dims == 1 and not group["precondition_1d"]:
        return False
    return size <= group["max_precondition_dim"]


def init_statistics(grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """Zero Lᵢ for every preconditioned dimension (after merging), Q unset."""
    view = grad if grad.dim() == 1 else _Layout(grad.shape, group).to_matrix_view(grad)
    state["GG"] = [
        torch.zeros(size, size, device=grad.device, dtype=grad.dtype)
        if _preconditioned(size, grad.dim(), group)
        else []
        for size in view.shape
    ]
    state["Q"] = None
    state["precondition_frequency"] = group["precondition_frequency"]
    beta2 = group["betas"][1]
    state["shampoo_beta"] = beta2 if group["shampoo_beta"] is None else group["shampoo_beta"]


def update_statistics(
    grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any], step: int
) -> None:
    """Lᵢ ← β_s Lᵢ + (1 − β_s) g₍ᵢ₎g₍ᵢ₎ᵀ; Q by eigh the first time, then refreshed every
    precondition_frequency Adam steps."""
    layout = _Layout(grad.shape, group)
    weight = 1.0 - state["shampoo_beta"]
    if grad.dim() == 1:
        if len(state["GG"][0]) > 0:
            state["GG"][0].lerp_(grad.unsqueeze(1) @ grad.unsqueeze(0), weight=weight)
    else:
        view = layout.to_matrix_view(grad)
        for axis, matrix in enumerate(state["GG"]):
            if len(matrix) > 0:
                others = [*chain(range(axis), range(axis + 1, view.dim()))]
                matrix.lerp_(torch.tensordot(view, view, dims=[others, others]), weight=weight)
    if state["Q"] is None:
        state["Q"] = eigenbases(state["GG"])
    if step > 0 and step % state["precondition_frequency"] == 0:
        state["Q"] = refreshed_eigenbases(state, layout)


class SOAP(Optimizer):
    """SOAP (ShampoO with Adam in the Preconditioner's eigenbasis), as pytorch_optimizer.SOAP."""

    name = "soap"
    DEFAULTS = {"torch": dict(_DEFAULTS), "keras": dict(_DEFAULTS)}
    RANGES = {
        "lr": NON_NEGATIVE,
        "eps": POSITIVE,
        "precondition_frequency": Interval(1.0),
        "max_precondition_dim": Interval(1.0),
    }
    FLAGS = ("merge_dims", "precondition_1d", "correct_bias", "normalize_gradient")
    STATE = ("step", "exp_avg", "exp_avg_sq", "GG", "Q")

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        betas: tuple[float, float] | None = None,
        shampoo_beta: float | None = None,
        weight_decay: float | None = None,
        precondition_frequency: int | None = None,
        max_precondition_dim: int | None = None,
        merge_dims: bool | None = None,
        precondition_1d: bool | None = None,
        correct_bias: bool | None = None,
        normalize_gradient: bool | None = None,
        data_format: str | None = None,
        eps: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        hyperparameters = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "precondition_frequency": precondition_frequency,
            "max_precondition_dim": max_precondition_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "correct_bias": correct_bias,
            "normalize_gradient": normalize_gradient,
            "data_format": data_format,
            "eps": eps,
        }
        super().__init__(params, hyperparameters, weight_decay=weight_decay, **options)

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        if isinstance(group["lr"], torch.Tensor):
            raise _fail(
                owner,
                "lr",
                group["lr"],
                "a Python number (the eigenbases couple the elements of a tensor)",
            )
        if group["decoupled_weight_decay"]:
            raise _fail(
                owner,
                "decoupled_weight_decay",
                True,
                "False: SOAP's weight_decay is always decoupled, applied after the step",
            )
        if group["shampoo_beta"] is not None:
            check_number(owner, "shampoo_beta", group["shampoo_beta"], UNIT_HALF_OPEN)
        for name in ("precondition_frequency", "max_precondition_dim"):
            if not isinstance(group[name], int) or isinstance(group[name], bool):
                raise _fail(owner, name, group[name], "an integer ≥ 1")
        check_choice(owner, "data_format", group["data_format"], DATA_FORMATS)

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        # the decay comes after the step (the rule applies it), not before as the base's would
        after = {**group, "weight_decay": 0.0, "decay_after": group["weight_decay"]}
        super()._reference_step(param, grad, state, after)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        if "exp_avg" not in state:  # step 1: statistics and bases from g₁, no move
            if not bool(torch.isfinite(grad).all()):
                # but a non-finite gradient reaches the parameter at once, as in every rule
                # (nonfinite="propagate"; the reference's first step drops it)
                param.add_(grad * 0)
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
            init_statistics(grad, state, group)
            update_statistics(grad, state, group, step - 1)
            return
        adam_step = step - 1
        beta1, beta2 = group["betas"]
        layout = _Layout(grad.shape, group)
        bases = state["Q"]
        grad_projected = project(grad, bases, layout)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, weight=1.0 - beta1)
        exp_avg_sq.lerp_(grad_projected.square(), weight=1.0 - beta2)
        denominator = exp_avg_sq.sqrt().add_(group["eps"])
        update = project(project(exp_avg, bases, layout) / denominator, bases, layout, back=True)
        if group["normalize_gradient"]:
            update.div_(torch.mean(update.square()).sqrt_().add_(group["eps"]))
        param.add_(
            update, alpha=-step_size(group["lr"], group["betas"], adam_step, group["correct_bias"])
        )
        decay = group.get("decay_after", 0.0)
        if decay:
            param.mul_(1.0 - decay * group["lr"])
        update_statistics(grad, state, group, adam_step)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an optimlab or a ``pytorch_optimizer.SOAP`` state_dict (its group step count
        becomes each parameter's ``step``); the lists GG and Q are copied, not shared."""
        saved_state = state_dict["state"]
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        super().load_state_dict(state_dict)
        adopt_group_steps(self, state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, param in zip(saved_ids, params):
            for key in ("GG", "Q"):
                # from the saved lists: torch.optim's load casts them to the parameter's dtype
                # (bfloat16 for a bfloat16 parameter), the state is float32 there
                saved = saved_state.get(saved_id, {}).get(key)
                if isinstance(saved, list):
                    self.state[param][key] = [
                        m.to(param.device, state_dtype(param)).clone()
                        if isinstance(m, torch.Tensor)
                        else []
                        for m in saved
                    ]


SOAP_INFO = OptimizerInfo(
    name="soap",
    cls=SOAP,
    title="SOAP",
    family="both",
    rule="Adam in the eigenbasis Q of Shampoo's L = E[g gᵀ] per dimension: θ ← θ − η·Q(m′/(√v′+ε))",
    improves="both (Adam's step in a rotated basis that follows the curvature, as Shampoo)",
    samples=(
        {"weight_decay": 0.1},
        {"maximize": True},
        {"precondition_1d": True, "precondition_frequency": 3},
        {"merge_dims": True, "max_precondition_dim": 8, "normalize_gradient": True},
    ),
    # coarse grid 1e-3..1 (both problems have 1-D parameters: there SOAP is Adam)
    convergence=Convergence(0.01, (0.003, 2000, 0.05)),
    # the eigenbases rotate a tensor's elements into each other
    elementwise=False,
)

#: what this module registers
DECLARATIONS = (SOAP_INFO,)
