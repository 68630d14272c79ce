"""Optimizers with two points: where the gradient is taken (train) and what is evaluated (eval).

Schedule-Free (``optimlab.optim.schedulefree``, the ``schedulefree`` package and any user class
with the same protocol) keeps the parameters at the gradient point y in train mode and at the
average x after ``optimizer.eval()``.  Everything that trains or evaluates a model with a given
optimizer goes through these helpers, so it works for any optimizer that has the two methods and
is a no-op for the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def has_modes(optimizer: Any) -> bool:
    """Whether `optimizer` has ``train()`` and ``eval()`` (Schedule-Free's protocol)."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


def to_train_point(optimizer: Any) -> None:
    """Put the parameters at the optimizer's training point (before steps); no-op without modes."""
    if has_modes(optimizer):
        optimizer.train()


def to_evaluation_point(optimizer: Any) -> None:
    """Put the parameters at the optimizer's evaluation point; no-op without modes."""
    if has_modes(optimizer):
        optimizer.eval()


@contextlib.contextmanager
def evaluation_point(optimizer: Any) -> Iterator[None]:
    """Inside the block the parameters are at the evaluation point, then back at the training
    point (Schedule-Free: x inside, y after)."""
    to_evaluation_point(optimizer)
    try:
        yield
    finally:
        to_train_point(optimizer)
