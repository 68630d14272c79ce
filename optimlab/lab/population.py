"""Train a population: the trials of one (problem, optimizer, schedule, budget) that differ only
in learning rate and seed, run as one batched model.

Member i's parameters are row i of stacked tensors: each parameter of the problem's model
becomes one leaf of shape (M, numel), viewed as (M, *shape) for the forward. The forward and
backward run once for all members (the built-in models: a forward written out over the stacked
weights, `optimlab.lab.population_batched`; others: ``torch.func.vmap`` over
``torch.func.functional_call`` of the problem's own module; batch norm's running statistics are
stacked buffers, updated in place per member). The loss that is differentiated is Σᵢ Lᵢ over the members still training: member i's
parameters appear only in Lᵢ, so ∂(Σⱼ Lⱼ)/∂θᵢ = ∂Lᵢ/∂θᵢ, its own gradient.

The optimizer is built once on the stacked leaves with the learning rate as a tensor of shape
(M, 1): it broadcasts over every (M, numel) leaf, so an elementwise rule (every classic one)
updates each row exactly as the single trial updates its tensors. Whether an optimizer can do
this is checked by behaviour, not by name (`check_optimizer`): a rule that couples the elements
of a tensor (a norm, a factored moment, an orthogonalization) or that rejects a tensor rate
fails the check and its trials run singly. With ``impl="auto"`` an optimizer that has a fused
kernel steps the population in it (`steps_fused`): the kernel takes the (M, 1) rate as one rate
per member and steps each row as it steps the single trial's tensor, bit for bit
(``optim.kernels.members``); the rates are then float64, the single trials' Python floats.

Each member keeps its single trial's identity: its model is built from its own seed, its
minibatch order (and augmentation) comes from its own ``torch.Generator(seed)``, the evaluation
steps are the same, and the stopping rules (non-finite loss, a tuner's ``stop_if``, early
stopping) apply per member. A member that stops is frozen (its rate set to 0, its loss left out
of the sum) and its result is the single trial's; the others go on untouched — every batched
operation is independent per member. Its metrics are `optimlab.lab.train`'s, with times as the
member's share of the population's wall clock (population time / M) and ``population_size``.

Dropout and DropConnect masks: a built-in model draws them from its own `MaskStream`, seeded
by the trial's seed; the population draws member i's masks from member i's stream outside
``vmap``, in the order and shapes of its single trial's forward, and feeds them into the
vmapped forward (`BatchedModel.losses`), so member i sees its single trial's masks.

What is not batched (`check_problem` says why, and the caller runs those trials singly):
dropout layers that draw from torch's global generator (a user's ``nn.Dropout``: no batched
run can reproduce those draws), problems with learning-rate
groups (fine-tuning), and models that ``vmap`` cannot run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import re
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from optimlab.lab import population_logistic, population_loss
from optimlab.lab.population_batched import explicit_forward
from optimlab.lab.population_conv import batchable
from optimlab.lab.population_memory import keep_freed_memory
from optimlab.lab.schedules import make_schedule, parse_schedule
from optimlab.lab.train import EVAL_CHUNK, StopIf, eval_steps, optimizer_kwargs
from optimlab.lab.trial import TrialResult, TrialSpec, jsonable
from optimlab.optim import low_precision
from optimlab.optim.base import Optimizer, selected_impl
from optimlab.optim.modes import evaluation_point, to_evaluation_point, to_train_point
from optimlab.optim.registry import create, get_info
from optimlab.problems import Problem, get_problem
from optimlab.problems.base import Split
from optimlab.problems.masks import Draw, MaskStream, mask_stream
from optimlab.problems.models import DropConnectLinear


class Unbatchable(ValueError):
    """These trials cannot run as one population (the message says why); run them singly."""


# ------------------------------------------------------------------------------------------------
# which trials form a population


def population_key(spec: TrialSpec) -> str:
    """What the members of a population share: the trial's identity without ``lr`` and seed."""
    identity = spec.identity()
    identity.pop("seed")
    identity["hyperparameters"] = {
        k: v for k, v in identity["hyperparameters"].items() if k != "lr"
    }
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def group_populations(specs: Sequence[TrialSpec]) -> list[list[TrialSpec]]:
    """`specs` grouped by `population_key`, in order of first appearance (duplicates dropped)."""
    groups: dict[str, list[TrialSpec]] = {}
    seen: set[str] = set()
    for spec in specs:
        if spec.key in seen:
            continue
        seen.add(spec.key)
        groups.setdefault(population_key(spec), []).append(spec)
    return list(groups.values())


# ------------------------------------------------------------------------------------------------
# what can be batched


def check_problem(problem: Problem) -> None:
    """Unbatchable (with the reason) unless `problem`'s model can train as a population."""
    if problem.lr_groups is not None:
        raise Unbatchable(f"problem {problem.label}: learning-rate groups are not batched")
    model = problem.build_model(0)
    for name, module in model.named_modules():
        stochastic = isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0
        stochastic |= isinstance(module, DropConnectLinear) and module.p > 0
        # pop4: seeded masks (a MaskStream) are drawn per member outside vmap (BatchedModel)
        if stochastic and not isinstance(getattr(module, "masks", None), MaskStream):
            raise Unbatchable(
                f"problem {problem.label}: {type(module).__name__} ({name}) draws its masks from "
                f"torch's global generator in a single trial, which a population cannot reproduce"
            )
    if any(not p.requires_grad for p in model.parameters()):
        raise Unbatchable(f"problem {problem.label}: frozen parameters are not batched")
    try:
        batched = BatchedModel([model, copy.deepcopy(model)])
        x, y = problem.train
        batch = min(problem.batch_size, len(x), 4)
        inputs = torch.stack(
            [x[:batch], x[batch : 2 * batch] if len(x) >= 2 * batch else x[:batch]]
        )
        targets = torch.stack([y[:batch], y[:batch]])
        batched.losses(inputs, targets, problem.loss_fn).sum().backward()
    except Exception as error:  # whatever vmap or the model raised: the reason to fall back
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        raise Unbatchable(
            f"problem {problem.label}: vmap cannot batch its model ({last})"
        ) from None


@functools.lru_cache(maxsize=64)
def _optimizer_verdict(name: str, hyperparameters: str, custom: Any) -> str | None:
    """None if the optimizer steps a stacked (2, n) tensor with a (2, 1) rate exactly as it
    steps the two rows alone with their own rates; else the reason."""
    kwargs = optimizer_kwargs(json.loads(hyperparameters))
    if custom is None:
        info = get_info(name)
        if not info.elementwise:  # declared in the registry: no need to try
            return (
                f"{info.title} is not element-wise (a tensor's norm, factored moment or "
                f"matrix shape enters each update, so a stacked tensor's rows cannot be "
                f"separate members)"
            )
        kwargs.setdefault("impl", "reference")  # what a tensor rate runs (no kernel compile)
    rates = (1e-2, 3e-3)

    def build(params: list[torch.Tensor], lr: Any) -> torch.optim.Optimizer:
        if custom is not None:
            return custom.build(params, **kwargs, lr=lr)
        return create(name, params, **kwargs, lr=lr)

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    grads = [torch.randn(2, 6, generator=generator, dtype=torch.float64) for _ in range(3)]
    try:
        stacked = start.clone().requires_grad_()
        optimizer = build([stacked], torch.tensor(rates, dtype=torch.float64).view(2, 1))
        for grad in grads:
            stacked.grad = grad.clone()
            optimizer.step()
        rows = []
        for i, lr in enumerate(rates):
            row = start[i].clone().requires_grad_()
            single = build([row], lr)
            for grad in grads:
                row.grad = grad[i].clone()
                single.step()
            rows.append(row.detach())
    except Exception as error:
        # the class's own words, not the wrapper's (the newcomer read "does not build from
        # (params, lr=a tensor of 2 rows): RuntimeError: …" as an internal error)
        while error.__cause__ is not None and isinstance(error.__cause__, Exception):
            error = error.__cause__
        return (
            f"it does not take a learning rate per member: its class refuses a tensor of "
            f"rates ({one_line(error)})"
        )
    if not torch.allclose(stacked.detach(), torch.stack(rows), rtol=1e-12, atol=1e-14):
        return "its update couples the elements of a tensor (not elementwise)"
    return None


def one_line(error: Exception, limit: int = 200) -> str:
    """``Type: message`` on one line, a tensor's printout replaced by its shape (a message that
    prints the rate tensor would otherwise spill its rows over the terminal)."""

    def shape(match: re.Match[str]) -> str:
        rows = match.group(0).count("[") - 1
        return "a tensor" if rows < 1 else f"a tensor of {rows} rows"

    text = re.sub(r"tensor\([^)]*\)", shape, f"{type(error).__name__}: {error}")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_optimizer(spec: TrialSpec) -> None:
    """Unbatchable (with the reason) unless `spec`'s optimizer steps every member at once with a
    learning rate per member, checked by behaviour: two steps of a stacked tensor against the
    two rows stepped alone."""
    hyperparameters = {k: v for k, v in spec.hyperparameters.items() if k != "lr"}
    # 8-bit / bf16 state quantizes blocks of a tensor and keeps tensors under 4,096 elements in
    # float32: on a stacked (M, n) leaf the blocks and that threshold span the members, so a
    # member would not be its single trial (measured: a 12 % different loss, a divergence)
    low = {k: v for k, v in hyperparameters.items() if k in ("state_dtype", "stochastic_rounding")}
    if low.get("state_dtype", "float32") != "float32" or low.get("stochastic_rounding"):
        chosen = ", ".join(f"{k}={v!r}" for k, v in low.items())
        raise Unbatchable(
            f"optimizer {_entry(spec)}: {chosen} quantizes blocks that would span the "
            f"members of a population (single trials reproduce it)"
        )
    text = json.dumps(jsonable(hyperparameters), sort_keys=True)
    reason = _optimizer_verdict(spec.optimizer, text, spec.custom)
    if reason is not None:
        raise Unbatchable(f"optimizer {_entry(spec)}: {reason}")


def _entry(spec: TrialSpec) -> str:
    """The optimizer as the user's spec entry reads (``adam:state_dtype=int8``, not ``adam``:
    plain adam in the same run is batched)."""
    options = [f"{k}={v}" for k, v in spec.hyperparameters.items() if k != "lr"]
    return ":".join([spec.optimizer, *options])


def steps_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every group of `optimizer` (built on a population's leaves with an (M, 1) rate)
    steps in its fused kernel, a rate per member (``impl="auto"`` or ``"fused"``)."""
    if not isinstance(optimizer, Optimizer) or optimizer.kernel is None:
        return False
    try:
        from optimlab.optim import kernels
    except ImportError:  # no numba: every step is the reference rule's
        return False
    spec = optimizer.kernel()
    for group in optimizer.param_groups:
        if selected_impl(group) == "reference" or low_precision.uses_low_precision(group):
            return False
        params = list(group["params"])
        if kernels.unfusable_reason(spec, group, params, params) is not None:
            return False
    return True


def check_population(specs: Sequence[TrialSpec], problem: Problem) -> None:
    """Unbatchable unless `specs` are one population that can train batched."""
    keys = {population_key(s) for s in specs}
    if len(keys) != 1:
        raise Unbatchable("the trials differ in more than learning rate and seed")
    if len({s.key for s in specs}) != len(specs):
        raise Unbatchable("a trial is given twice")
    check_problem(problem)
    check_optimizer(specs[0])


# ------------------------------------------------------------------------------------------------
# the batched model


class BatchedModel:
    """M copies of one module as stacked parameters (leaves of shape (M, numel)) and buffers
    (shape (M, *shape)); `losses` and `outputs` run every member at once with vmap.

    Dropout/DropConnect masks (models with a `MaskStream`): before each training forward,
    member i's masks are drawn from member i's stream, in the order and shapes its single
    trial's forward draws them (recorded once per input shape, `_plan`), stacked over members
    and supplied to the vmapped forward, whose layers take them instead of drawing.

    The built-in models run a forward written out by hand over the stacked weights
    (`optimlab.lab.population_batched`: batched matmuls, a convolution with its own backward),
    without vmap; the loss is torch's cross-entropy laid out classes-major where it rounds as
    torch's own (`optimlab.lab.population_loss`), else the problem's own, vmapped; a model that
    is one ``Linear`` layer on ``cross_entropy`` runs the layer and the loss as one node
    (`optimlab.lab.population_logistic`). Other models run under vmap; their
    ``Conv1d`` layers as one matmul per member (`optimlab.lab.population_conv`), which vmap
    batches into one ``bmm`` over the members (vmap's own ``conv1d`` is no faster per member
    than a single trial's)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        keep_freed_memory()  # the next step reuses this step's pages (population_memory)
        self.module = batchable(models[0])
        self.explicit = explicit_forward(models[0])
        # one Linear layer: the layer and the loss as one node (population_logistic)
        self.logistic = population_logistic.names(models[0])
        self.size = len(models)
        self.streams = [mask_stream(m) for m in models]
        self._plans: dict[tuple[Any, ...], list[Draw]] = {}
        named = [dict(m.named_parameters()) for m in models]
        self.names = list(named[0])
        self.shapes = [named[0][n].shape for n in self.names]
        self.leaves = [
            torch.stack([p[n].detach().reshape(-1) for p in named]).requires_grad_()
            for n in self.names
        ]
        buffers = [dict(m.named_buffers()) for m in models]
        self.buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}

    def parameters(self, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """name → (M, *shape) views of the leaves (or of the rows `rows`)."""
        leaves = self.leaves if rows is None else [leaf[rows] for leaf in self.leaves]
        return {
            n: leaf.view(len(leaf), *shape)
            for n, leaf, shape in zip(self.names, leaves, self.shapes)
        }

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, (params, buffers), (x,))

    def losses(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Each member's training loss on its own minibatch (inputs (M, B, …)): shape (M,)."""

        wrapped = None if penalty is None else _Penalty(self.module, penalty)
        stream = self.streams[0]
        masks = self.masks(inputs[0]) if stream is not None else []
        if self.logistic is not None and not masks:
            weight, bias = self.logistic
            params = self.parameters()
            if population_logistic.applies(loss_fn, inputs, targets, params[weight].shape[1]):
                losses = population_logistic.member_logistic_loss(
                    inputs, params[weight], params[bias] if bias else None, targets
                )
                if wrapped is not None:
                    penalties = vmap(lambda p: functional_call(wrapped, _prefixed(p), ()))
                    losses = losses + penalties(params)
                return losses
        if self.explicit is not None:
            self.module.train()
            outputs = self.explicit(self.parameters(), self.buffers, inputs, masks, True)
            # torch's cross-entropy laid out classes-major where it rounds as torch's own
            # (optimlab.lab.population_loss), else the problem's loss function, vmapped
            if population_loss.applies(loss_fn, outputs, targets):
                losses = population_loss.member_cross_entropy(outputs, targets)
            else:
                losses = vmap(loss_fn, randomness="error")(outputs, targets)
            if wrapped is not None:
                penalties = vmap(lambda p: functional_call(wrapped, _prefixed(p), ()))
                losses = losses + penalties(self.parameters())
            return losses

        def member(
            params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor, keep: list
        ) -> torch.Tensor:
            with stream.supplying(keep) if stream is not None else contextlib.nullcontext():
                loss = loss_fn(self._call(params, buffers, x), y)
            if wrapped is not None:
                loss = loss + functional_call(wrapped, _prefixed(params), ())
            return loss

        self.module.train()
        return vmap(member, randomness="error")(
            self.parameters(), self.buffers, inputs, targets, masks
        )

    @staticmethod
    def minibatches(
        x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[index], y[index]`` for an (M, B) index: each member's minibatch, (M, B, …).
        ``index_select`` on the flat index, not advanced indexing: measured 32 against 208 µs
        for digits-logreg's 36 × 128 rows of 64 floats (one thread)."""
        flat = index.reshape(-1)
        inputs = torch.index_select(x, 0, flat).view(*index.shape, *x.shape[1:])
        return inputs, torch.index_select(y, 0, flat).view(*index.shape, *y.shape[1:])

    def masks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The masks of one training forward on a minibatch shaped like `x`: each member's
        drawn from its own stream (in its single trial's order), stacked: [(M, *shape), ...]."""
        plan = self._plan(x)
        if not plan:
            return []
        drawn = [stream.draw(plan) for stream in self.streams if stream is not None]
        if len(drawn) != self.size:
            raise ValueError("some members' models have no mask stream")
        return [torch.stack(column) for column in zip(*drawn)]

    def _plan(self, x: torch.Tensor) -> list[Draw]:
        """What one training forward on `x` (one member's minibatch) draws, in order: recorded
        by running the first member's module once (its stream's state is left alone)."""
        key = (tuple(x.shape), x.dtype)
        if key not in self._plans:
            stream = self.streams[0]
            assert stream is not None
            probe = copy.deepcopy(self.module)  # (its batch-norm statistics are not touched)
            probe.train()
            with torch.no_grad(), torch.random.fork_rng(devices=[]), stream.recording() as plan:
                for module in probe.modules():  # the copy's layers record into this stream
                    if isinstance(getattr(module, "masks", None), MaskStream):
                        module.masks = stream
                probe(x)
            self._plans[key] = list(plan)
        return self._plans[key]

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The members `rows`' outputs on `x` (shared by all), in eval mode: (len(rows), n, …)."""
        params = self.parameters(rows)
        buffers = {n: b[rows] for n, b in self.buffers.items()}
        # every member's activations of a chunk are held at once: chunks of 4·EVAL_CHUNK/M
        # samples keep that at four single evaluations' (a 36-member CNN peaked at 1.5 GB)
        chunk = max(1, 4 * EVAL_CHUNK // max(1, len(rows)))
        if self.explicit is not None:
            forward, members = self.explicit, len(rows)
            pieces = [x[i : i + chunk] for i in range(0, len(x), chunk)]
            return torch.cat(
                [forward(params, buffers, p.expand(members, *p.shape), [], False) for p in pieces],
                dim=1,
            )
        self.module.eval()
        try:
            call = vmap(self._call, in_dims=(0, 0, None), randomness="error")
            return torch.cat(
                [call(params, buffers, x[i : i + chunk]) for i in range(0, len(x), chunk)],
                dim=1,
            )
        finally:
            self.module.train()

    def snapshot(self, row: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Member `row`'s parameters and buffers (copies), for early stopping's best weights."""
        leaves = [leaf[row].detach().clone() for leaf in self.leaves]
        return leaves, {n: b[row].clone() for n, b in self.buffers.items()}

    @torch.no_grad()
    def restore(self, row: int, saved: tuple[list[torch.Tensor], dict[str, torch.Tensor]]) -> None:
        leaves, buffers = saved
        for leaf, value in zip(self.leaves, leaves):
            leaf[row] = value
        for name, value in buffers.items():
            self.buffers[name][row] = value


class _Penalty(nn.Module):
    """A module whose forward is ``penalty(model)``, so functional_call can substitute the
    member's parameters into a problem's penalty (which reads ``model.parameters()``)."""

    def __init__(self, model: nn.Module, penalty: Callable[[nn.Module], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.penalty = penalty

    def forward(self) -> torch.Tensor:
        return self.penalty(self.model)


def _prefixed(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"model.{n}": p for n, p in params.items()}


# ------------------------------------------------------------------------------------------------
# training


class _Member:
    """One member's bookkeeping: what `train` keeps for a single trial."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.curve: dict[str, list[Any]] = {
            "step": [],
            "train_loss": [],
            "val_loss": [],
            "val_accuracy": [],
        }
        self.curve_seconds: list[float] = []
        self.best_val, self.since_best = math.inf, 0
        self.best_state: Any = None
        self.steps_run = 0
        self.stopped_early = False
        self.diverged_at: int | None = None
        self.pruned: str | None = None
        #: stopped by successive halving (status ``pruned``), not by a divergence rule
        self.halved = False
        self.result: TrialResult | None = None


#: ``rung(step, {member: validation loss})`` after each evaluation: {member: reason} of the
#: members to stop as ``pruned`` (successive halving, `optimlab.lab.halving.RungJudge`)
Rung = Callable[[int, dict[int, float]], dict[int, str]]


def train_population(
    specs: Sequence[TrialSpec],
    problem: Problem | None = None,
    stop_if: StopIf | None = None,
    rung: Rung | None = None,
) -> list[TrialResult]:
    """Train `specs` (one population) batched; member i's result is ``train(specs[i])``'s up to
    float rounding. Unbatchable if they cannot be batched; any other exception fails every
    member with the reason (as `train` fails a trial).

    ``rung``: asked after each evaluation with every training member's finite validation loss
    (all of them first, so a decision sees the whole rung); the members it names stop with
    status ``pruned``. Members that stopped for good (pruned or diverged) leave the batched
    model at that evaluation (`_compact`): the others go on bit for bit as they would have."""
    try:
        problem = problem or get_problem(specs[0].problem)
        check_population(specs, problem)
        return _train_population(list(specs), problem, stop_if, rung)
    except Unbatchable:
        raise
    except Exception as error:  # a failed population is M failed trials, not a crash
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return [TrialResult("failed", {}, reason=last) for _ in specs]


def _train_population(
    specs: list[TrialSpec], problem: Problem, stop_if: StopIf | None, rung: Rung | None = None
) -> list[TrialResult]:
    started, cpu_started = time.perf_counter(), time.process_time()
    size = len(specs)
    first = specs[0]
    members = [_Member(s) for s in specs]
    model = BatchedModel([problem.build_model(s.seed) for s in specs])
    dtype = model.leaves[0].dtype
    # float64 rates hold the single trials' Python floats exactly: what the fused kernels need
    # to compute each member's coefficients as its single trial does (optim.kernels.members)
    rates = torch.tensor([s.lr for s in specs], dtype=torch.float64).view(size, 1)
    kwargs = optimizer_kwargs({k: v for k, v in first.hyperparameters.items() if k != "lr"})

    def build(leaves: list[torch.Tensor], lr: torch.Tensor) -> torch.optim.Optimizer:
        if first.custom is not None:
            return first.custom.build(leaves, **kwargs, lr=lr.clone())
        return create(first.optimizer, leaves, **kwargs, lr=lr.clone())

    optimizer = build(model.leaves, rates)
    if not steps_fused(optimizer) and dtype != torch.float64:
        # the reference rule multiplies by the rate tensor: in the parameters' dtype, as the
        # single trial's Python-number rate is applied to them
        rates = rates.to(dtype)
        for group in optimizer.param_groups:
            group["lr"] = rates.clone()
    to_train_point(optimizer)
    schedule = _PopulationSchedule(first.schedule, rates, first.steps)
    # row r of the batched model is member live[r]; `active` is over rows
    live = list(range(size))
    active = torch.ones(size, dtype=torch.bool)
    x_train, y_train = problem.train
    n = len(x_train)
    batch = min(problem.batch_size, n)
    checkpoints = eval_steps(first.steps, first.evals)
    train_seconds, warmup_seconds, step = 0.0, 0.0, 0

    def stop(
        r: int, at: int | None = None, pruned: str | None = None, halved: bool = False
    ) -> None:
        """The member of row r trains no more: its rate is 0 and its loss leaves the sum."""
        active[r] = False
        m = members[live[r]]
        m.steps_run = step
        if at is not None:
            m.diverged_at, m.pruned, m.halved = at, pruned, halved

    def record() -> None:
        rows = active.nonzero().flatten()
        with evaluation_point(optimizer):
            train_stats = _evaluate(model, problem, problem.train, rows)
            val_stats = _evaluate(model, problem, problem.val, rows)
        for j, r in enumerate(rows.tolist()):
            m = members[live[r]]
            m.curve["step"].append(step)
            m.curve["train_loss"].append(train_stats[0][j])
            m.curve["val_loss"].append(val_stats[0][j])
            m.curve["val_accuracy"].append(val_stats[1][j])
            # the first step's warm-up left out, as train() does (seconds to target)
            m.curve_seconds.append((train_seconds - warmup_seconds) / size)

    def halve() -> None:
        """Successive halving's rung: every training member's value first, then the verdicts."""
        if rung is None:
            return
        values = {}
        for r in active.nonzero().flatten().tolist():
            m = members[live[r]]
            value, train_loss = m.curve["val_loss"][-1], m.curve["train_loss"][-1]
            if math.isfinite(value) and math.isfinite(train_loss):
                values[live[r]] = value
        stopped = rung(step, values)
        for r in active.nonzero().flatten().tolist():
            if live[r] in stopped:
                stop(r, step, stopped[live[r]], halved=True)

    record()
    if stop_if is not None:
        for r, i in enumerate(live):
            reason = stop_if(0, members[i].curve)
            if reason is not None:
                stop(r, 0, reason)
    orders = _orders(members, n)
    position = 0
    while step < first.steps and bool(active.any()):
        tick = time.perf_counter()
        if position + batch > n:  # a new epoch for every member: reshuffle, drop the rest
            orders, position = _orders([members[i] for i in live], n), 0
        index = orders[:, position : position + batch]
        position += batch
        inputs, targets = BatchedModel.minibatches(x_train, y_train, index)
        if problem.augment is not None:
            inputs = torch.stack(
                [problem.augment(inputs[r], members[i].generator) for r, i in enumerate(live)]
            )
        losses = model.losses(inputs, targets, problem.loss_fn, problem.penalty)
        for r in (active & ~torch.isfinite(losses.detach())).nonzero().flatten().tolist():
            stop(r, step + 1)
        if not bool(active.any()):
            break
        optimizer.zero_grad(set_to_none=True)
        torch.where(active, losses, torch.zeros((), dtype=losses.dtype)).sum().backward()
        for group in optimizer.param_groups:
            group["lr"] = schedule.rates() * active.view(len(live), 1)
        optimizer.step()
        schedule.after_step()
        step += 1
        elapsed = time.perf_counter() - tick
        train_seconds += elapsed
        if step == 1:
            warmup_seconds = elapsed
        if step in checkpoints:
            record()
            halve()
            for r in active.nonzero().flatten().tolist():
                _after_evaluation(
                    r, members[live[r]], step, stop, stop_if, schedule, model, optimizer, problem
                )
            # the members that stopped for good leave the batched model (early-stopped ones
            # stay: their final evaluation is still to come)
            keep = [r for r, i in enumerate(live) if members[i].diverged_at is None]
            if len(keep) < len(live) and keep:
                optimizer, orders, active = _compact(
                    keep, model, optimizer, build, schedule, orders, active
                )
                live = [live[r] for r in keep]
    for r in active.nonzero().flatten().tolist():
        members[live[r]].steps_run = step
    timing = {
        "seconds_per_step": (
            (train_seconds - warmup_seconds) / (step - 1) if step > 1 else train_seconds
        )
        / size,
        "warmup_seconds": warmup_seconds / size,
    }
    finals = _final_evaluations(members, live, model, optimizer, problem)
    seconds = (time.perf_counter() - started) / size
    cpu_seconds = (time.process_time() - cpu_started) / size
    return [
        _result(m, timing, finals.get(i), seconds, cpu_seconds, size) for i, m in enumerate(members)
    ]


def _compact(
    keep: list[int],
    model: BatchedModel,
    optimizer: torch.optim.Optimizer,
    build: Callable[[list[torch.Tensor], torch.Tensor], torch.optim.Optimizer],
    schedule: _PopulationSchedule,
    orders: torch.Tensor,
    active: torch.Tensor,
) -> tuple[torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """Only the rows `keep` of the population go on: the model's leaves, buffers and mask
    streams, the optimizer's state (a new optimizer on the new leaves, loaded with the kept rows
    of every per-member state tensor), the rates and schedules, the minibatch orders. Every
    batched operation is independent per member, so a kept member's numbers do not change."""
    rows = torch.tensor(keep, dtype=torch.long)
    size = len(active)
    saved = optimizer.state_dict()

    def take(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
            return value[rows].clone()
        return value

    saved["state"] = {
        k: {name: take(v) for name, v in state.items()} for k, state in saved["state"].items()
    }
    saved["param_groups"] = [
        {name: take(v) for name, v in group.items()} for group in saved["param_groups"]
    ]
    with torch.no_grad():
        model.leaves = [leaf[rows].detach().clone().requires_grad_() for leaf in model.leaves]
    model.buffers = {name: b[rows].clone() for name, b in model.buffers.items()}
    model.streams = [model.streams[r] for r in keep]
    model.size = len(keep)
    schedule.keep(rows)
    compacted = build(model.leaves, schedule.base)
    compacted.load_state_dict(saved)
    return compacted, orders[rows], active[rows]


def _after_evaluation(
    i: int,
    m: _Member,
    step: int,
    stop: Callable[..., None],
    stop_if: StopIf | None,
    schedule: _PopulationSchedule,
    model: BatchedModel,
    optimizer: torch.optim.Optimizer,
    problem: Problem,
) -> None:
    """`train`'s rules after an evaluation, for member i (that is still training)."""
    val_loss, train_loss = m.curve["val_loss"][-1], m.curve["train_loss"][-1]
    if not math.isfinite(val_loss) or not math.isfinite(train_loss):
        stop(i, step)
        return
    reason = stop_if(step, m.curve) if stop_if is not None else None
    if reason is not None:
        stop(i, step, reason)
        return
    schedule.on_eval(i, val_loss)
    if val_loss < m.best_val:
        m.best_val, m.since_best = val_loss, 0
        if problem.early_stopping:
            with evaluation_point(optimizer):
                m.best_state = model.snapshot(i)
    else:
        m.since_best += 1
        if problem.early_stopping and m.since_best >= problem.early_stopping:
            m.stopped_early = True
            stop(i)


def _orders(members: list[_Member], n: int) -> torch.Tensor:
    """Each member's shuffle of the training set from its own generator: (M, n)."""
    return torch.stack([torch.randperm(n, generator=m.generator) for m in members])


def _evaluate(
    model: BatchedModel, problem: Problem, split: Split, rows: torch.Tensor
) -> tuple[list[float], list[float | None], torch.Tensor]:
    """Per member of `rows`: mean loss and accuracy (None: regression) on a full split, and
    the outputs (len(rows), n, …)."""
    if len(rows) == 0:
        return [], [], torch.empty(0)
    x, y = split
    outputs = model.outputs(x, rows)
    losses = [float(problem.loss_fn(out, y)) for out in outputs]
    if problem.task != "classification":
        return losses, [None] * len(losses), outputs
    accuracy = (outputs.argmax(2) == y).float().mean(1)
    return losses, [float(a) for a in accuracy], outputs


def _final_evaluations(
    members: list[_Member],
    live: list[int],
    model: BatchedModel,
    optimizer: torch.optim.Optimizer,
    problem: Problem,
) -> dict[int, dict[str, Any]]:
    """The final metrics (by member) of every member that did not diverge: on its best weights
    (early stopping), else at the optimizer's evaluation point. Row r is member live[r]."""
    finishing = [r for r, i in enumerate(live) if members[i].diverged_at is None]
    to_evaluation_point(optimizer)
    # best weights were saved at the evaluation point: restored after the optimizer's eval()
    for r in finishing:
        if members[live[r]].best_state is not None:
            model.restore(r, members[live[r]].best_state)
    rows = torch.tensor(finishing, dtype=torch.long)
    finals: dict[int, dict[str, Any]] = {live[r]: {} for r in finishing}
    for split in ("train", "val", "test"):
        losses, accuracies, outputs = _evaluate(model, problem, getattr(problem, split), rows)
        for j, r in enumerate(finishing):
            final = finals[live[r]]
            final[f"final_{split}_loss"] = losses[j]
            if accuracies[j] is not None:
                final[f"{split}_accuracy"] = accuracies[j]
            if split == "test" and problem.task == "classification":
                probabilities = torch.softmax(outputs[j].double(), dim=1).numpy()
                final["predictions"] = probabilities.astype(np.float16).tobytes()
    return finals


def _result(
    m: _Member,
    timing: dict[str, float],
    final: dict[str, Any] | None,
    seconds: float,
    cpu_seconds: float,
    size: int,
) -> TrialResult:
    """Member m's `TrialResult`, with `train`'s metrics."""
    metrics: dict[str, Any] = {
        "steps_run": m.steps_run,
        **timing,
        "curve": m.curve,
        "curve_seconds": m.curve_seconds,
        "best_val_loss": m.best_val,
        "stopped_early": m.stopped_early,
        "population_size": size,
    }
    if m.halved:  # successive halving stopped it at a rung: its own status
        metrics["pruned_at"] = m.diverged_at
        metrics["seconds"], metrics["cpu_seconds"] = seconds, cpu_seconds
        return TrialResult("pruned", jsonable(metrics), reason=m.pruned or "pruned")
    if m.diverged_at is not None:
        metrics["diverged_at"] = m.diverged_at
        metrics["seconds"], metrics["cpu_seconds"] = seconds, cpu_seconds
        if m.pruned is not None:
            metrics["pruned"] = True
        reason = m.pruned or f"non-finite loss at step {m.diverged_at}"
        return TrialResult("diverged", jsonable(metrics), reason=reason)
    assert final is not None
    predictions = final.pop("predictions", None)
    metrics.update(final)
    metrics["seconds"], metrics["cpu_seconds"] = seconds, cpu_seconds
    if not all(math.isfinite(metrics[f"final_{s}_loss"]) for s in ("train", "val", "test")):
        return TrialResult("diverged", jsonable(metrics), reason="non-finite final loss")
    return TrialResult("ok", jsonable(metrics), predictions=predictions)


class _PopulationSchedule:
    """The members' learning rates under a schedule, as a (M, 1) tensor.

    A per-step schedule multiplies every rate by the same factor: torch's scheduler runs once,
    on a dummy optimizer at rate 1, and the rates are base × factor (equal to each single
    trial's scheduled rate up to rounding). ``plateau`` depends on each member's validation
    loss, so each member has its own ReduceLROnPlateau on a dummy optimizer at its rate.
    """

    def __init__(self, spec: str, rates: torch.Tensor, steps: int) -> None:
        self.base = rates
        name, _ = parse_schedule(spec)
        self.per_member = name == "plateau"
        count = len(rates) if self.per_member else 1
        start = rates.flatten().tolist() if self.per_member else [1.0]
        self.dummies = [
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr) for lr in start[:count]
        ]
        self.schedules = [make_schedule(spec, d, steps) for d in self.dummies]
        for dummy in self.dummies:  # (no gradient: a no-op that tells torch's schedulers the
            dummy.step()  # optimizer has stepped, so they do not warn about the order)

    def keep(self, rows: torch.Tensor) -> None:
        """Only the members `rows` go on (`_compact`)."""
        self.base = self.base[rows]
        if self.per_member:
            self.dummies = [self.dummies[r] for r in rows.tolist()]
            self.schedules = [self.schedules[r] for r in rows.tolist()]

    def rates(self) -> torch.Tensor:
        if self.per_member:
            values = [d.param_groups[0]["lr"] for d in self.dummies]
            return torch.tensor(values, dtype=self.base.dtype).view(-1, 1)
        return self.base * self.dummies[0].param_groups[0]["lr"]

    def after_step(self) -> None:
        if not self.per_member:
            self.schedules[0].after_step()

    def on_eval(self, member: int, val_loss: float) -> None:
        if self.per_member:
            self.schedules[member].on_eval(val_loss)
