"""The `name:key=value:key=value` syntax shared by optimizers and problems on the command line.

``"sgd:lr=0.95,momentum:lr=0.1:convention=keras"`` is two items, ``("sgd", {"lr": 0.95})`` and
``("momentum", {"lr": 0.1, "convention": "keras"})``.  Values are parsed as booleans
(``true``/``false``), integers, floats, tuples of numbers separated by ``/`` (``betas=0.9/0.99``)
or, failing those, strings.
"""

from __future__ import annotations

import inspect
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
            raise ValueError(
                f"bad option {pair!r} in spec item {item!r}; expected key=value, e.g. lr=0.01"
            )
        options[key.strip()] = parse_value(value)
    return name.strip(), options


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """A comma-separated list of items; see the module docstring."""
    items = [part for part in spec.split(",") if part.strip()]
    if not items:
        raise ValueError(f"empty spec {spec!r}; expected name[:key=value...][,name...]")
    return [parse_item(item) for item in items]


def optimizer_options(name: str) -> list[str]:
    """The keyword arguments the optimizer `name` accepts."""
    signature = inspect.signature(get_info(name).cls.__init__)
    return [p for p in signature.parameters if p not in ("self", "params")]


def parse_optimizer_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse and check an optimizer spec: unknown names or options raise ValueError listing
    the valid ones. Tuples of length one are unwrapped; betas must be given as b1/b2."""
    parsed = parse_spec(spec)
    for name, options in parsed:
        if name not in list_optimizers():
            raise ValueError(
                f"unknown optimizer {name!r}; valid names: {', '.join(list_optimizers())}"
            )
        valid = optimizer_options(name)
        for key in options:
            if key not in valid:
                raise ValueError(
                    f"unknown option {key!r} for optimizer {name!r}; valid options: "
                    f"{', '.join(valid)}"
                )
    return parsed
