"""The `name:key=value:key=value` syntax shared by optimizers and problems on the command line.

``"sgd:lr=0.95,momentum:lr=0.1:convention=keras"`` is two items, ``("sgd", {"lr": 0.95})`` and
``("momentum", {"lr": 0.1, "convention": "keras"})``.  Values are parsed as booleans
(``true``/``false``), integers, floats, tuples of numbers separated by ``/`` (``betas=0.9/0.99``)
or, failing those, strings.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from optimlab.optim.registry import get_info, list_optimizers


def parse_value(text: str) -> Any:
    """Parse one value of a spec: bool, int, float, tuple of numbers (a/b) or string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if "/" in text:
        parts = text.split("/")
        try:
            return tuple(parse_number(part) for part in parts)
        except ValueError:
            return text
    try:
        return parse_number(text)
    except ValueError:
        return text.strip()


def parse_number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_item(item: str) -> tuple[str, dict[str, Any]]:
    """``"adam:lr=0.01:betas=0.9/0.99"`` -> ``("adam", {"lr": 0.01, "betas": (0.9, 0.99)})``."""
    name, *pairs = item.strip().split(":")
    if not name:
        raise ValueError(f"empty name in spec item {item!r}; expected name[:key=value...]")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            message = f"bad option {pair!r} in spec item {item!r}; expected key=value, e.g. lr=0.01"
            looks_like_class = pair.strip().isidentifier() and pair.strip()[0].isupper()
            if pair is pairs[0] and (looks_like_class or os.path.isfile(name.strip())):
                # 'afile:Lion' reads as a name and an option; the user meant a class in a file
                message += (
                    f" (a class in a file is path/to/file.py:Class, the file ending in .py; "
                    f"{name.strip()!r} is not one)"
                )
            raise ValueError(message)
        key = key.strip()
        if key in options:
            raise ValueError(
                f"option {key!r} given twice in spec item {item!r}; give each option once"
            )
        options[key] = parse_value(value)
    return name.strip(), options


def split_items(spec: str) -> list[str]:
    """The comma-separated items of `spec`; an empty one (``adam,,sgd``, ``modern,``) is an
    error rather than silently dropped: it is usually a name that went missing."""
    items = spec.split(",")
    if not spec.strip():
        raise ValueError(f"empty spec {spec!r}; expected name[:key=value...][,name...]")
    for position, item in enumerate(items, 1):
        if not item.strip():
            raise ValueError(
                f"empty item {position} in spec {spec!r}; expected name[:key=value...]"
                f"[,name...] with no empty entries (remove the extra comma)"
            )
    return items


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """A comma-separated list of items; see the module docstring."""
    return [parse_item(item) for item in split_items(spec)]


def optimizer_options(name: str) -> list[str]:
    """The keyword arguments the optimizer `name` accepts."""
    from optimlab.optim.base import CommonOptions

    parameters = inspect.signature(get_info(name).cls.__init__).parameters.values()
    own = [
        p.name
        for p in parameters
        if p.name not in ("self", "params") and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    # `**options: Unpack[CommonOptions]`: the options every optimizer takes (convention, ...)
    takes_common = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    common = (
        [key for key in CommonOptions.__annotations__ if key not in own] if takes_common else []
    )
    return own + common


def split_custom_item(item: str) -> tuple[str, str, dict[str, Any]] | None:
    """``"mine.py:MyOpt:lr=0.1"`` -> ``("mine.py", "MyOpt", {"lr": 0.1})`` and
    ``"torch.optim:AdamW"`` -> ``("torch.optim", "AdamW", {})``; None for a built-in name.

    An item is custom when its first part looks like a file (``x.py``, ``dir/x.py``) or a
    dotted module (``torch.optim``); see `optimlab.lab.custom_optimizers`."""
    from optimlab.lab.custom_optimizers import split_custom_item as split

    if not is_custom_item(item):
        return None
    return split(item)


def is_custom_item(item: str) -> bool:
    """Whether `item` names a class of the user's (a file or a dotted module), not a
    registered optimizer."""
    from optimlab.lab.custom_optimizers import looks_custom

    return looks_custom(item.strip().partition(":")[0])


def expand_presets(spec: str) -> str:
    """Replace the preset words ``classic`` (the textbook's nine), ``modern`` and ``all`` in an
    optimizer spec by their optimizers' names: ``"classic,lion"`` -> ``"sgd,...,nadam,lion"``."""
    from optimlab.optim.registry import PRESETS, preset_optimizers

    return ",".join(
        ",".join(preset_optimizers(part.strip())) if part.strip() in PRESETS else part
        for part in spec.split(",")
    )


def parse_optimizer_items(
    spec: str, allow_custom: bool = True
) -> list[tuple[str, dict[str, Any], Any]]:
    """Parse and check an optimizer spec into ``(name, options, custom)`` per item: `custom`
    is None for a built-in name and a `optimlab.lab.custom_optimizers.CustomOptimizer` (its
    `label` as the name) for ``path/to/file.py:Class`` or ``package.module:Class``.

    Unknown names or options raise ValueError listing the valid ones."""
    split_items(spec)  # the user's own items, before the presets expand
    items = expand_presets(spec).split(",")
    parsed: list[tuple[str, dict[str, Any], Any]] = []
    for item in items:
        if not allow_custom and is_custom_item(item):
            # parsed as a registered name, "lion.py:Lion" read as a bad option 'Lion'
            raise ValueError(
                f"{item.strip()!r} names a class of your own: only registered optimizers run "
                f"here ({', '.join(list_optimizers())}); `optimlab compare --optimizers "
                f"{item.strip()}` runs your own"
            )
        custom = split_custom_item(item) if allow_custom else None
        if custom is not None:
            from optimlab.lab.custom_optimizers import parse_custom_item

            source, attribute, options = custom
            optimizer = parse_custom_item(source, attribute, options)
            parsed.append((optimizer.label, options, optimizer))
            continue
        name, options = parse_item(item)
        if name not in list_optimizers():
            custom_hint = (
                ", or your own as path/to/file.py:Class or package.module:Class"
                if allow_custom
                else ""
            )
            raise ValueError(
                f"unknown optimizer {name!r}; valid names: {', '.join(list_optimizers())}"
                + custom_hint
            )
        valid = optimizer_options(name)
        for key in options:
            if key not in valid:
                raise ValueError(
                    f"unknown option {key!r} for optimizer {name!r}; valid options: "
                    f"{', '.join(valid)}"
                )
        parsed.append((name, options, None))
    return parsed


def parse_optimizer_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse and check a spec of built-in optimizers: ``[(name, options), ...]``; unknown names
    or options raise ValueError listing the valid ones."""
    return [(name, options) for name, options, _ in parse_optimizer_items(spec, False)]
