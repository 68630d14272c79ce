"""One trial's curves as TensorBoard event files: ``tensorboard --logdir DIR`` shows them.

Each trial gets its own run directory under the log directory, named so a person can find it in
TensorBoard's run list::

    DIR/<problem label>/<optimizer>[,<other hyperparameters>][,<schedule>]/lr=<lr>/seed=<seed>

(characters that are not safe in a file name become ``_``; ``steps=N`` joins the optimizer part
when it is not the problem's budget, so no two trials of a comparison share a directory.)
The scalars are the curve the training loop recorded (`optimlab.lab.train`: the full train and
validation sets evaluated at each point, step 0 included) under ``loss/train``, ``loss/val``,
``accuracy/val``, and the final metrics (``final/test_loss``, ``final/test_accuracy``, …) at the
last step; the trial's spec and status are a text summary. Points the store holds as null
(non-finite, or no accuracy for a regression) are left out.

A run directory is written whole into a temporary sibling and renamed into place, replacing an
older one: logging a trial again (a resumed run) never doubles its points.

The writer is torch's `torch.utils.tensorboard.SummaryWriter`, which needs the ``tensorboard``
package (``pip install 'optimlab[tensorboard]'``); it is imported only when curves are written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from optimlab.lab.trial import TrialResult, TrialSpec, jsonable

INSTALL_HINT = "pip install 'optimlab[tensorboard]'"

#: curve key in the stored metrics -> TensorBoard tag
CURVE_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "val_accuracy": "accuracy/val"}
#: final metric -> TensorBoard tag (written at the last step run)
FINAL_TAGS = {
    "final_train_loss": "final/train_loss",
    "final_val_loss": "final/val_loss",
    "final_test_loss": "final/test_loss",
    "train_accuracy": "final/train_accuracy",
    "val_accuracy": "final/val_accuracy",
    "test_accuracy": "final/test_accuracy",
}

_UNSAFE = re.compile(r"[^\w.=,+-]+")


class CurveLogError(Exception):
    """Curves cannot be written (the tensorboard package is missing)."""


def summary_writer_class() -> Any:
    """torch's SummaryWriter; CurveLogError with the install command if tensorboard is missing.
    Call it before a comparison starts to fail early."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise CurveLogError(
            f"writing TensorBoard curves (--log-dir) needs the tensorboard package: {INSTALL_HINT} "
            f"({error})"
        ) from None
    return SummaryWriter


def _safe(text: str) -> str:
    """One path component: unsafe characters (``/``, ``:``, spaces…) become ``_``."""
    return _UNSAFE.sub("_", text).strip("_.") or "_"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "/".join(_number(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_name(spec: TrialSpec, default_steps: int | None = None) -> str:
    """The trial's run directory relative to the log dir, e.g.
    ``digits-mlp/adam/lr=0.01/seed=0``, ``deep-mlp_depth=10/adam,weight_decay=0.001,cosine/…``.
    `default_steps`: the problem's budget in this comparison; another budget is named."""
    optimizer = spec.optimizer.rsplit("/", 1)[-1]  # a file's absolute path: its name is enough
    others = [
        f"{key}={_number(value)}"
        for key, value in sorted(spec.hyperparameters.items())
        if key != "lr"
    ]
    if spec.schedule != "constant":
        others.append(spec.schedule)
    if default_steps is not None and spec.steps != default_steps:
        others.append(f"steps={spec.steps}")
    parts = [
        spec.problem_label or spec.problem,
        ",".join([optimizer, *others]),
        f"lr={_number(spec.lr)}",
        f"seed={spec.seed}",
    ]
    return "/".join(_safe(part) for part in parts)


def write_trial(
    log_dir: str | os.PathLike[str],
    spec: TrialSpec,
    result: TrialResult,
    *,
    default_steps: int | None = None,
) -> Path:
    """Write one trial's curves and final metrics as a TensorBoard run; returns its directory.

    `result.metrics` is the stored form (`optimlab.lab.train`): ``curve`` holds lists
    ``step``, ``train_loss``, ``val_loss``, ``val_accuracy`` of equal length, None for a point
    that was not finite or does not apply. A failed trial (no curve) gets only its text summary.
    """
    writer_class = summary_writer_class()
    root = Path(log_dir)
    final = root / run_name(spec, default_steps)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    metrics = result.metrics or {}
    curve = metrics.get("curve") or {}
    steps = curve.get("step") or []
    writer = writer_class(log_dir=str(staging))
    try:
        for key, tag in CURVE_TAGS.items():
            for step, value in zip(steps, curve.get(key) or []):
                if value is not None:
                    writer.add_scalar(tag, float(value), int(step))
        last = int(metrics.get("steps_run", steps[-1] if steps else 0))
        for key, tag in FINAL_TAGS.items():
            if isinstance(metrics.get(key), int | float):
                writer.add_scalar(tag, float(metrics[key]), last)
        summary = {
            "problem": spec.problem,
            "optimizer": spec.optimizer,
            "hyperparameters": jsonable(spec.hyperparameters),
            "schedule": spec.schedule,
            "seed": spec.seed,
            "steps": spec.steps,
            "key": spec.key,
            "status": result.status,
            "reason": result.reason,
        }
        writer.add_text("trial", "```\n" + json.dumps(summary, indent=1) + "\n```", last)
    finally:
        writer.close()
    if final.exists():  # an older log of the same trial: replaced, never appended to
        shutil.rmtree(final)
    staging.rename(final)
    return final


__all__ = ["CurveLogError", "run_name", "summary_writer_class", "write_trial"]
