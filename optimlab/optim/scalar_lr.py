"""The learning-rate check of the optimizers that are not element-wise (Adafactor, LAMB, Muon).

optimlab's element-wise optimizers take a tensor ``lr`` with one value per element (the
landscape runner steps many trajectories as the rows of one tensor that way).  An update that
reads a whole tensor (a norm, a factored moment, a matrix's shape) would mix those rows, so these
optimizers take a Python number or a one-element tensor, as torch.optim does.
"""

from __future__ import annotations

from typing import Any

import torch


def check_scalar_lr(owner: str, group: dict[str, Any]) -> None:
    """Raise ValueError, naming the value, unless the group's lr is one number."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(
            f"{owner}: invalid lr=<tensor of shape {list(lr.shape)}>; lr must be a Python number "
            f"or a one-element tensor "
            f"({owner} is not element-wise: a tensor's rows cannot have their own learning rates)"
        )
