"""The base class of every optimlab optimizer.

An algorithm module declares four things and this class does the rest:

* ``DEFAULTS``: the default hyperparameters under each convention (``"torch"`` and ``"keras"``);
* ``RANGES``: the interval each numeric hyperparameter must lie in (``FLAGS`` for booleans);
* ``STATE``: the per-parameter state it keeps (names are torch.optim's, so state_dicts move over);
* ``reference_rule``: the plain per-tensor update, the ground truth that fused kernels must match.

What is common to all algorithms lives here, once: validation of every parameter group,
``maximize`` (negate the gradient), weight decay (L2 added to the gradient, as torch.optim does, or
decoupled, ``p <- p (1 - lr wd)`` as AdamW and Keras do), the ``step`` counter, low-precision
parameters (float16/bfloat16 parameters keep their state in float32 and are updated in float32),
``nonfinite="skip"``, and a ``load_state_dict`` that restores state exactly.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, ClassVar, TypedDict, Unpack

import torch

from optimlab.optim import low_precision
from optimlab.optim.hyperparameters import (
    CONVENTIONS,
    IMPLEMENTATIONS,
    NON_NEGATIVE,
    NONFINITE_POLICIES,
    Interval,
    check_betas,
    check_choice,
    check_flag,
    check_number,
    check_torch_implementation_options,
)

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]

#: Options every optimizer accepts, with their defaults (the same under both conventions).
COMMON_DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.0,
    "decoupled_weight_decay": False,
    "maximize": False,
    "nonfinite": "propagate",
    "impl": "auto",
    # torch.optim's implementation switches, accepted so torch.optim code runs unchanged and
    # recorded in every group as torch.optim records them (see `selected_impl`).
    "foreach": None,
    "fused": None,
    "capturable": False,
    "differentiable": False,
}


class CommonOptions(TypedDict, total=False):
    """The keyword options every optimizer takes besides its own hyperparameters."""

    maximize: bool
    decoupled_weight_decay: bool
    convention: str
    nonfinite: str
    impl: str
    foreach: bool | None
    fused: bool | None
    capturable: bool
    differentiable: bool
    # below float32 (optimlab.optim.low_precision)
    state_dtype: str
    stochastic_rounding: bool
    rounding_seed: int
    min_quantized_size: int


def selected_impl(group: dict[str, Any]) -> str:
    """The implementation a group runs: ``impl``, unless torch's ``fused``/``foreach`` chose one.

    ``fused=True`` is optimlab's fused kernel (``impl="fused"``); ``foreach=True`` asks torch
    for its multi-tensor loop, whose results are the single-tensor loop's, so it gets the
    reference rule (``impl="reference"``).  None/False leave ``impl`` to decide, as in torch.
    """
    if group.get("fused"):
        return "fused"
    if group.get("foreach"):
        return "reference"
    return group["impl"]


def _is_named(param: Any) -> bool:
    return isinstance(param, tuple) and len(param) == 2 and isinstance(param[0], str)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """Optimizer state is float32 for half-precision parameters, else the parameter's dtype."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def scalar_dtype() -> torch.dtype:
    """torch.optim's dtype for scalar state (``step``, NAdam's ``mu_product``): float64 when the
    default dtype is float64, else float32 (``torch.optim.optimizer._get_scalar_dtype``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def scaled_sub_(param: torch.Tensor, direction: torch.Tensor, lr: float | torch.Tensor) -> None:
    """param <- param - lr * direction, for a Python-number or a tensor learning rate."""
    if isinstance(lr, torch.Tensor):
        param.sub_(direction * lr)
    else:
        param.add_(direction, alpha=-lr)


def scaled_addcdiv_(
    param: torch.Tensor,
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    lr: float | torch.Tensor,
) -> None:
    """param <- param - lr * numerator / denominator, rounded as torch.optim's addcdiv_ rounds."""
    if isinstance(lr, torch.Tensor):
        param.sub_(numerator / denominator * lr)
    else:
        param.addcdiv_(numerator, denominator, value=-lr)


def as_float(value: float | torch.Tensor) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def kernel_factory(
    module: str, build: Callable[[ModuleType], Any] | None = None
) -> Callable[[], Any]:
    """An algorithm's ``kernel`` factory: ``optimlab.optim.kernels.<module>`` imported on first use.

    The factory returns the kernel module's ``SPEC``, or ``build(module)`` for a kernel that takes
    the per-step scalars from the algorithm (``lambda k: k.make_spec(step_scalars)``: the kernel
    never imports the algorithm, the layers point one way).  Cached: after the first call a step
    pays one call, not an import statement; numba loads only when a step first needs a kernel.
    """

    @functools.cache
    def kernel() -> Any:
        loaded = importlib.import_module(f"optimlab.optim.kernels.{module}")
        return loaded.SPEC if build is None else build(loaded)

    kernel.__doc__ = f"The fused kernel (optimlab.optim.kernels.{module}), imported on first use."
    return kernel


class Optimizer(torch.optim.Optimizer):
    """Base class: a `torch.optim.Optimizer` whose update rule is declared by a subclass."""

    #: registry name, e.g. ``"adam"``
    name: ClassVar[str]
    #: hyperparameter defaults per convention (algorithm-specific ones only)
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]]
    #: allowed interval of each numeric hyperparameter
    RANGES: ClassVar[dict[str, Interval]] = {}
    #: boolean hyperparameters
    FLAGS: ClassVar[tuple[str, ...]] = ()
    #: per-parameter state tensors, by torch.optim's names
    STATE: ClassVar[tuple[str, ...]] = ()
    #: whether the rule keeps a per-parameter ``step`` count (as torch.optim does)
    COUNTS_STEPS: ClassVar[bool] = True
    #: the fused kernel, as a factory returning its ``KernelSpec`` (it imports numba only when a
    #: step first needs it); None: the algorithm has no kernel and always runs the reference.
    kernel: ClassVar[Callable[[], Any] | None] = None
    #: the ``state_dtype`` values the algorithm supports (``optimlab.optim.low_precision``)
    STATE_DTYPES: ClassVar[tuple[str, ...]] = ("float32",)
    #: the fused kernel for low-precision state and bfloat16 weights (a factory returning the
    #: kernel module, see ``kernels.lowprec_dispatch``); None: such groups run the reference
    low_precision_kernel: ClassVar[Callable[[], Any] | None] = None

    def __init__(
        self,
        params: Params,
        hyperparameters: dict[str, Any],
        *,
        weight_decay: float | None = None,
        **options: Unpack[CommonOptions],
    ) -> None:
        owner = type(self).__name__
        unknown = sorted(
            set(options) - set(COMMON_DEFAULTS) - set(low_precision.DEFAULTS) - {"convention"}
        )
        if unknown:
            accepted = ", ".join(
                [*self.DEFAULTS["torch"], "convention", *COMMON_DEFAULTS, *low_precision.DEFAULTS]
            )
            raise TypeError(
                f"{owner} got an unexpected keyword argument {unknown[0]!r}; accepted: {accepted}"
            )
        convention = options.get("convention", "torch")
        check_choice(owner, "convention", convention, CONVENTIONS)
        defaults = self.default_hyperparameters(convention)
        given = {**hyperparameters, "weight_decay": weight_decay}
        defaults.update({k: v for k, v in given.items() if v is not None})
        defaults.update(options)
        self._validate_group(defaults)
        if isinstance(params, torch.Tensor):
            raise TypeError(
                f"{owner}: params must be an iterable of tensors or of dicts "
                f"(parameter groups), got a single tensor; pass [tensor] instead"
            )
        #: the fused kernels' flat state, one layout per parameter group (by id; see
        #: ``kernels.layout``); bookkeeping of the fast path, not state: never in the state_dict
        self.fused_layouts: dict[int, Any] = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy and pickle restore torch.optim's three fields only; the fused layouts
        # are rebuilt from the restored state by the next step.
        super().__setstate__(state)
        self.fused_layouts = {}

    # ----------------------------------------------------------------------------------------
    # configuration
    @classmethod
    def default_hyperparameters(cls, convention: str = "torch") -> dict[str, Any]:
        """Every hyperparameter with its default under `convention`, common options included."""
        check_choice(cls.__name__, "convention", convention, CONVENTIONS)
        own = cls.DEFAULTS[convention]  # an algorithm may set a common one (AdamW's weight_decay)
        common = {k: v for k, v in COMMON_DEFAULTS.items() if k not in own}
        return {**own, **common, "convention": convention}

    def _validate_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_choice(owner, "convention", group.get("convention"), CONVENTIONS)
        check_choice(owner, "nonfinite", group.get("nonfinite"), NONFINITE_POLICIES)
        check_choice(owner, "impl", group.get("impl"), IMPLEMENTATIONS)
        check_number(owner, "weight_decay", group["weight_decay"], NON_NEGATIVE)
        for flag in ("decoupled_weight_decay", "maximize", *self.FLAGS):
            check_flag(owner, flag, group[flag])
        check_torch_implementation_options(owner, group)
        if (group.get("impl") == "fused" or group.get("fused")) and self.kernel is None:
            # told at construction, not at the first step() after a model was built around it
            chosen = "fused=True" if group.get("fused") else "impl='fused'"
            raise ValueError(
                f"{owner}({chosen}): this optimizer declares no fused kernel; allowed: "
                f"impl='auto' or impl='reference'"
            )
        for name, interval in self.RANGES.items():
            check_number(owner, name, group[name], interval)
        if "betas" in group:
            check_betas(owner, group["betas"])
        has_kernel = self.low_precision_kernel is not None
        low_precision.check_group(owner, self.STATE_DTYPES, group, fused_kernel=has_kernel)
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Cross-hyperparameter checks of one algorithm (override where needed)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        owner = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{owner}: a parameter group must be a dict with a 'params' key, "
                f"got a {type(param_group).__name__}"
            )
        if "params" not in param_group:
            raise ValueError(
                f"{owner}: parameter group {len(self.param_groups)} has no 'params' key "
                f"(keys: {', '.join(map(repr, param_group)) or 'none'}); every parameter group "
                f"needs 'params', e.g. {{'params': model.parameters(), 'lr': 0.01}}"
            )
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        # Named parameters (`model.named_parameters()`), as torch.optim takes them since 2.7:
        # (name, tensor) pairs; the names go to the group's "param_names" (and the state_dict).
        tensors = [p[1] if _is_named(p) else p for p in params]
        names = [p[0] for p in params if _is_named(p)]
        seen: set[int] = set()
        for index, param in enumerate(tensors):
            if not isinstance(param, torch.Tensor):
                raise TypeError(
                    f"{owner}: parameter {index} is a {type(param).__name__}, not a tensor "
                    f"(nor a (name, tensor) pair as model.named_parameters() gives)"
                )
            if not param.is_floating_point():
                raise ValueError(
                    f"{owner}: parameter {index} has dtype {param.dtype}; only floating-point "
                    f"parameters (float16, bfloat16, float32, float64) can be optimized"
                )
            if id(param) in seen:
                raise ValueError(
                    f"{owner}: parameter {index} (shape {tuple(param.shape)}) is given twice in one "
                    f"parameter group; each parameter may appear once"
                )
            seen.add(id(param))
        if names and len(names) != len(tensors):
            raise ValueError(
                f"{owner}: {len(names)} of the {len(tensors)} parameters of a group have names; "
                f"give every parameter a name (model.named_parameters()) or none"
            )
        # torch.optim reads the names back out of the (name, tensor) pairs itself.
        super().add_param_group({**param_group, "params": params})
        self._validate_group(self.param_groups[-1])

    # ----------------------------------------------------------------------------------------
    # the step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one update of every parameter that has a gradient; return the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # A group whose last step was fused and has not changed since repeats it without the
        # checks below (kernels.dispatch.FastStep); only where the class updates groups the
        # base's way, so that a subclass's own _update_group always runs.
        fast = type(self)._update_group is Optimizer._update_group
        layouts = self.fused_layouts
        for group in self.param_groups:
            if fast:
                layout = layouts.get(id(group))
                if layout is not None and layout.fast is not None and layout.fast(self, group):
                    continue
            with torch.no_grad():
                self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        """One group's update: gather the parameters that have a gradient, apply ``nonfinite``."""
        params, grads = [], []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; use dense "
                    f"gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam"
                )
            params.append(p)
            grads.append(grad)
        if not params:
            return
        if group["nonfinite"] == "skip" and not _all_finite(grads, selected_impl(group)):
            for p in params:
                state = self.state[p]
                state["nonfinite_skipped"] = state.get("nonfinite_skipped", 0) + 1
            return
        self._update_group(group, params, grads)

    def _update_group(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """Update one group's parameters: the fused kernel where it applies, else the reference.

        ``impl="auto"`` takes the fused CPU kernel (``optimlab.optim.kernels``) when the group
        suits it and the reference rule otherwise; ``"fused"`` insists (and raises, saying why,
        on a group the kernel cannot take); ``"reference"`` always runs the per-tensor rule.
        torch.optim's ``fused=True`` means ``"fused"`` and ``foreach=True`` ``"reference"``.
        """
        impl = selected_impl(group)
        if low_precision.option(group, "state_dtype") == "float32":
            # switched back from bf16/int8: no float32 kernel or rule may read 8-bit codes
            low_precision.decode_left_state(self, params)
        if impl != "reference" and low_precision.uses_low_precision(group):
            params, grads = self._low_precision_fused_step(group, params, grads, impl == "fused")
        elif impl != "reference":
            required = impl == "fused"
            kernels = _kernels(required)
            if kernels is not None:
                spec = None if self.kernel is None else self.kernel()
                if kernels.fused_step(self, spec, group, params, grads, required=required):
                    return
        for param, grad in zip(params, grads):
            self._reference_step(param, grad, self.state[param], group)

    def _low_precision_fused_step(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        required: bool,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The low-precision kernel's step where it applies; returns what is left for the
        reference rule (everything when the class has no such kernel or the group does not
        suit it, a tensor whose state is stored in another form than the group now asks for)."""
        kernels = _kernels(required)
        if kernels is None or self.low_precision_kernel is None or self.kernel is None:
            return params, grads
        from optimlab.optim.kernels import lowprec_dispatch

        kernel, spec = self.low_precision_kernel(), self.kernel()
        left = lowprec_dispatch.fused_step(
            self, kernel, spec, group, params, grads, required=required
        )
        if left is None:
            return params, grads
        return [params[i] for i in left], [grads[i] for i in left]

    def _reference_step(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        work = param.float() if param.dtype in LOW_PRECISION else param
        grad = grad.to(work.dtype)
        if group["maximize"]:
            grad = -grad
        weight_decay = group["weight_decay"]
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                work.mul_(1 - group["lr"] * weight_decay)
            else:
                grad = grad.add(work, alpha=weight_decay)
        if self.COUNTS_STEPS:
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["step"] += 1
            step = int(state["step"].item())
        else:
            step = 0
        if low_precision.uses_low_precision(group):
            rule = self.reference_rule
            low_precision.reference_step(self, rule, param, work, grad, state, group, step)
            return
        self.reference_rule(work, grad, state, group, step)
        if work is not param:
            param.copy_(work)

    @staticmethod
    def reference_rule(
        param: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, Any],
        group: dict[str, Any],
        step: int,
    ) -> None:
        """Update `param` and `state` in place, given the (maximize- and L2-adjusted) gradient."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------
    # state_dict
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict saved by this class or by the torch.optim class of the same algorithm.

        torch.optim casts every saved state tensor to its parameter's dtype and shares the
        tensors with `state_dict`; optimlab copies them and restores them in their own dtype
        (float32 state for half-precision parameters; ``step`` and ``mu_product`` as saved), so a resumed run
        continues bit for bit like an uninterrupted one.
        """
        saved_state = state_dict["state"]
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        chosen = low_precision.options_of(self)  # this optimizer's, not the saved ones
        super().load_state_dict(state_dict)
        low_precision.restore_options(self, chosen)
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, param in zip(saved_ids, params):
            for key, value in saved_state.get(saved_id, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if key == "step":
                    dtype = value.dtype
                elif key == "mu_product":
                    dtype = value.dtype  # the saved precision, so the product continues alike
                else:
                    dtype = state_dtype(param)
                # Cloned: torch.optim aliases the loaded tensors, so two optimizers loaded from
                # one state_dict would update each other's state.
                self.state[param][key] = value.to(device=param.device, dtype=dtype).clone()
        # A torch.optim state_dict lacks optimlab's options: take them from this optimizer.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self._validate_group(group)
        low_precision.convert_loaded_state(self)


def _all_finite(grads: list[torch.Tensor], impl: str = "reference") -> bool:
    """Whether every gradient is finite: one parallel pass on the CPU, else one torch sync."""
    if impl != "reference":
        kernels = _kernels(required=False)
        finite = None if kernels is None else kernels.grads_all_finite(grads)
        if finite is not None:
            return finite
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


_KERNELS: Any = None


def _kernels(required: bool) -> Any:
    """The fused-kernel package, imported on first use (numba takes a moment to load).

    None if numba cannot be imported, unless `required` (``impl="fused"``): then the ImportError.
    """
    global _KERNELS
    if _KERNELS is None:
        try:
            from optimlab.optim import kernels
        except ImportError:
            if required:
                raise
            _KERNELS = False
        else:
            _KERNELS = kernels
    return _KERNELS or None
