"""What the optimizers modelled on ``pytorch-optimizer`` share: three betas, and a step count kept
in the parameter group.

``pytorch_optimizer`` (Adan, AdEMAMix, SOAP) counts steps per parameter *group* (``group["step"]``)
where torch.optim and optimlab count them per parameter (``state[p]["step"]``).  Both agree while
every parameter of a group has a gradient at every step; :func:`adopt_group_steps` turns the group
count of a loaded ``pytorch_optimizer`` state_dict into per-parameter counts, so its state_dicts
load and continue alike.
"""

from __future__ import annotations

from typing import Any

import torch

from optimlab.optim.hyperparameters import UNIT_HALF_OPEN, _fail, check_number


def check_three_betas(owner: str, value: Any) -> None:
    """betas = (beta1, beta2, beta3), each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise _fail(
            owner, "betas", value, f"a triple (beta1, beta2, beta3), each in {UNIT_HALF_OPEN}"
        )
    for index, beta in enumerate(value):
        check_number(owner, f"betas[{index}]", beta, UNIT_HALF_OPEN)


def merge_weight_decouple(
    owner: str, weight_decouple: bool | None, options: dict[str, Any]
) -> None:
    """Accept pytorch_optimizer's ``weight_decouple`` as optimlab's ``decoupled_weight_decay``.

    They are one option under two names: giving both with different values is an error.
    """
    if weight_decouple is None:
        return
    given = options.get("decoupled_weight_decay", weight_decouple)
    if given != weight_decouple:
        raise ValueError(
            f"{owner}: invalid weight_decouple={weight_decouple!r} with "
            f"decoupled_weight_decay={given!r}; they are one option (give one of them)"
        )
    options["decoupled_weight_decay"] = weight_decouple


def adopt_group_steps(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
    """After loading `state_dict`: give each parameter without a ``step`` its group's count.

    A ``pytorch_optimizer`` state_dict keeps the count in ``param_groups[i]["step"]`` (an int);
    optimlab keeps a float32 tensor per parameter (torch.optim's layout).
    """
    for group, saved in zip(optimizer.param_groups, state_dict["param_groups"]):
        count = saved.get("step")
        if not isinstance(count, int):
            continue
        for param in group["params"]:
            state = optimizer.state[param]
            if state and "step" not in state:
                state["step"] = torch.tensor(float(count), dtype=torch.float32)
        group.pop("step", None)  # optimlab counts per parameter; one count, not two


def renamed_group_options(state_dict: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """`state_dict` with the reference's group option names turned into optimlab's
    (``{"weight_decouple": "decoupled_weight_decay"}``); the old names are dropped."""
    groups = []
    for group in state_dict["param_groups"]:
        group = dict(group)
        for theirs, ours in renames.items():
            if theirs in group:
                group[ours] = group.pop(theirs)
        groups.append(group)
    return {**state_dict, "param_groups": groups}
