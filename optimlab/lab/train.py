"""Train one trial: build the problem's model and the optimizer, run the minibatch loop, evaluate.

The loop is deliberately the plain loop one would write by hand (sample a minibatch, forward,
backward, step, schedule) so that its cost is the cost of training (benchmarks/
runner_overhead.py measures it). A non-finite training loss ends the run with status
``diverged``; any exception ends it with ``failed`` and the reason — never a crash of the
comparison.

Metrics of an ``ok`` trial (losses are data losses on the full split, in eval mode):
``final_train_loss``, ``final_val_loss``, ``final_test_loss``, ``train_accuracy``,
``val_accuracy``, ``test_accuracy`` (classification), ``train_perplexity``,
``val_perplexity``, ``test_perplexity`` (language models: exp of the loss), ``best_val_loss``, ``steps_run``,
``stopped_early``, ``seconds_per_step`` (training steps after the first), ``warmup_seconds``
(the first step: a numba kernel's compile or cache load, lazy initialization — kept apart so
it does not inflate the per-step time), ``seconds`` (all, wall clock), ``cpu_seconds`` (all,
this process's CPU time), ``curve`` (``step``, ``train_loss``, ``val_loss``, ``val_accuracy``
at each evaluation, step 0 included) and ``curve_seconds`` (the training wall clock so far at
each of those evaluations, evaluations themselves and the first step's warm-up excluded).

A caller may end a run early through ``stop_if(step, curve)``, asked after each evaluation: a
returned reason ends the run with status ``diverged``, that reason and ``pruned: true`` (how a
tuner prunes a diverging trial, `optimlab.lab.pruning`); None lets it go on.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from optimlab.lab.schedules import make_schedule
from optimlab.lab.trial import TrialResult, TrialSpec, jsonable, perplexity
from optimlab.optim.modes import (
    evaluation_point,
    has_modes,
    recompute_batchnorm,
    to_evaluation_point,
    to_train_point,
)
from optimlab.optim.registry import REGISTRY, create
from optimlab.problems import Problem, get_problem
from optimlab.problems.base import Split

EVAL_CHUNK = 4096
#: training batches over which batch-norm statistics are recomputed at an optimizer's
#: evaluation point (Schedule-Free's x); the first ones of the training split, in order
BATCHNORM_BATCHES = 32


def batchnorm_batches(x_train: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """The first `BATCHNORM_BATCHES` full minibatches of the training inputs, in order (fixed:
    the same at every evaluation, and no draw from the trial's generator)."""
    stop = min(len(x_train), BATCHNORM_BATCHES * batch)
    return [x_train[i : i + batch] for i in range(0, stop - batch + 1, batch)]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, problem: Problem, split: Split
) -> tuple[float, float | None, torch.Tensor]:
    """(mean loss, accuracy or None, outputs) of `model` on a full split, in eval mode."""
    was_training = model.training
    model.eval()
    x, y = split
    outputs = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    model.train(was_training)
    loss = float(problem.loss_fn(outputs, y))
    accuracy = None
    if problem.task == "classification":
        accuracy = float((outputs.argmax(1) == y).float().mean())
    return loss, accuracy, outputs


def optimizer_kwargs(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """JSON gives lists; optimizers want tuples (betas)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}


def eval_steps(steps: int, evals: int) -> set[int]:
    """The steps after which to evaluate: half of `evals` spaced geometrically from step 1 (so
    that steps to a target are resolved to a constant *ratio*, which is what a performance
    profile compares) and half evenly (for the curves); the last step always."""
    evals = max(1, min(evals, steps))
    geometric = evals // 2
    points = {round(steps * (i + 1) / (evals - geometric)) for i in range(evals - geometric)}
    if geometric:
        points |= {round(steps ** (i / geometric)) for i in range(geometric)}
    return points


#: ``stop_if(step, curve)``: a reason to end the run now, or None
StopIf = Callable[[int, dict[str, list[Any]]], str | None]


def train(
    spec: TrialSpec, problem: Problem | None = None, stop_if: StopIf | None = None
) -> TrialResult:
    """Run `spec` and return its result; exceptions become status ``failed``."""
    try:
        return _train(spec, problem or get_problem(spec.problem), stop_if)
    except Exception as error:  # a failed trial is a result, not a crash of the comparison
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        return TrialResult("failed", {}, reason=last)


def _train(spec: TrialSpec, problem: Problem, stop_if: StopIf | None) -> TrialResult:
    started, cpu_started = time.perf_counter(), time.process_time()
    model = problem.build_model(spec.seed)
    model.train()
    kwargs = optimizer_kwargs(spec.hyperparameters)

    def build(params: Any) -> torch.optim.Optimizer:
        """The trial's optimizer on `params` (a list, or param groups the problem made)."""
        if spec.custom is not None:  # the user's class, carried by the spec
            return spec.custom.build(params, **kwargs)
        return create(spec.optimizer, params, **kwargs)

    info = REGISTRY.get(spec.optimizer) if spec.custom is None else None
    whole_model = info.whole_model if info is not None else None
    if whole_model is not None and problem.lr_groups is None:
        optimizer = whole_model(model, **kwargs)  # Muon: hidden matrices only, the rest AdamW
    else:
        optimizer = problem.build_optimizer(model, build)
    to_train_point(optimizer)
    schedule = make_schedule(spec.schedule, optimizer, spec.steps)
    generator = torch.Generator().manual_seed(spec.seed)
    x_train, y_train = problem.train
    n = len(x_train)
    batch = min(problem.batch_size, n)
    checkpoints = eval_steps(spec.steps, spec.evals)
    # Schedule-Free with batch norm: statistics recomputed at x for every evaluation
    statistics = batchnorm_batches(x_train, batch)

    curve: dict[str, list[Any]] = {
        "step": [],
        "train_loss": [],
        "val_loss": [],
        "val_accuracy": [],
    }
    curve_seconds: list[float] = []
    best_val, best_state, since_best = math.inf, None, 0

    def record(step: int) -> float:
        # Schedule-Free: evaluate the average x, not y (batch-norm statistics taken at x)
        with evaluation_point(optimizer, model, statistics):
            train_loss, _, _ = evaluate(model, problem, problem.train)
            val_loss, val_accuracy, _ = evaluate(model, problem, problem.val)
        curve["step"].append(step)
        curve["train_loss"].append(train_loss)
        curve["val_loss"].append(val_loss)
        curve["val_accuracy"].append(val_accuracy)
        # the first step's warm-up (a kernel's compile, lazy initialization) is left out, as from
        # seconds_per_step: seconds to a target compare optimizers, not compilers
        curve_seconds.append(train_seconds - warmup_seconds)
        return val_loss

    train_seconds, warmup_seconds, step, stopped_early, diverged_at = 0.0, 0.0, 0, False, None
    record(0)
    pruned = stop_if(0, curve) if stop_if is not None else None
    if pruned is not None:
        diverged_at = 0
    order, position = torch.randperm(n, generator=generator), 0
    while step < spec.steps and pruned is None:
        tick = time.perf_counter()
        if position + batch > n:  # a new epoch: reshuffle, drop the incomplete last batch
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position : position + batch]
        position += batch
        inputs, targets = x_train[index], y_train[index]
        if problem.augment is not None:
            inputs = problem.augment(inputs, generator)
        loss = problem.loss_fn(model(inputs), targets)
        if problem.penalty is not None:
            loss = loss + problem.penalty(model)
        if not math.isfinite(loss.item()):
            diverged_at = step + 1
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.after_step()
        step += 1
        elapsed = time.perf_counter() - tick
        train_seconds += elapsed
        if step == 1:
            warmup_seconds = elapsed
        if step in checkpoints:
            val_loss = record(step)
            if not math.isfinite(val_loss) or not math.isfinite(curve["train_loss"][-1]):
                diverged_at = step
                break
            pruned = stop_if(step, curve) if stop_if is not None else None
            if pruned is not None:
                diverged_at = step
                break
            schedule.on_eval(val_loss)
            if val_loss < best_val:
                best_val, since_best = val_loss, 0
                if problem.early_stopping:
                    with evaluation_point(optimizer, model, statistics):
                        best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if problem.early_stopping and since_best >= problem.early_stopping:
                    stopped_early = True
                    break

    metrics: dict[str, Any] = {
        "steps_run": step,
        "seconds_per_step": (
            (train_seconds - warmup_seconds) / (step - 1) if step > 1 else train_seconds
        ),
        "warmup_seconds": warmup_seconds,
        "curve": curve,
        "curve_seconds": curve_seconds,
        "best_val_loss": best_val,
        "stopped_early": stopped_early,
    }
    if diverged_at is not None:
        metrics["diverged_at"] = diverged_at
        metrics["seconds"] = time.perf_counter() - started
        metrics["cpu_seconds"] = time.process_time() - cpu_started
        if pruned is not None:
            metrics["pruned"] = True
        reason = pruned or f"non-finite loss at step {diverged_at}"
        return TrialResult("diverged", jsonable(metrics), reason=reason)
    if best_state is not None:
        model.load_state_dict(best_state)  # saved at the evaluation point
    else:
        to_evaluation_point(optimizer)
        if has_modes(optimizer):  # the final model is x: its batch-norm statistics too
            recompute_batchnorm(model, statistics)
    predictions = None
    for split in ("train", "val", "test"):
        loss, accuracy, outputs = evaluate(model, problem, getattr(problem, split))
        metrics[f"final_{split}_loss"] = loss
        if accuracy is not None:
            metrics[f"{split}_accuracy"] = accuracy
        if problem.task == "language-model":  # the loss is nats per token
            metrics[f"{split}_perplexity"] = perplexity(loss)
        if split == "test" and problem.task == "classification":
            probabilities = torch.softmax(outputs.double(), dim=1).numpy()
            predictions = probabilities.astype(np.float16).tobytes()
    metrics["seconds"] = time.perf_counter() - started
    metrics["cpu_seconds"] = time.process_time() - cpu_started
    if not all(math.isfinite(metrics[f"final_{s}_loss"]) for s in ("train", "val", "test")):
        return TrialResult("diverged", jsonable(metrics), reason="non-finite final loss")
    return TrialResult("ok", jsonable(metrics), predictions=predictions)
