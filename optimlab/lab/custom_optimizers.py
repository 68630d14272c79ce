"""A user's own optimizer next to the built-in nine: ``mine.py:MyOpt`` or ``torch.optim:AdamW``.

An entry of ``--optimizers`` that is not a built-in name is *custom* (`looks_custom`):

- ``path/to/file.py:Attribute[:key=value...]``: a class or factory defined in a Python file;
- ``package.module:Attribute[:key=value...]``: one importable anywhere the trials run
  (``torch.optim:AdamW``, ``torch.optim:RAdam:decoupled_weight_decay=true``).

The attribute must build an optimizer from ``(params, lr=..., **options)`` — a
`torch.optim.Optimizer` subclass, or a function returning one — and step without a closure (the
lab's training loop calls ``optimizer.step()``).

A file is read **once**, by the process that parses the command line (`parse_custom_item`); its
text travels inside the picklable `CustomOptimizer` (and through `export_sources` /
`import_sources`, the way ``--problem path.py:factory`` files travel, see
`optimlab.problems.registry`), so a pool worker or a Ray node needs no copy of the file, and
editing the file while a comparison runs changes nothing in that run. Only that one file
travels: what it imports must be installed wherever trials run.

Every failure is a ValueError that says what is wrong: the file is missing, is not ``.py`` or
is not valid Python; the module cannot be imported; the attribute is missing or not callable;
it does not build from ``(params, lr=..., **options)`` (with the class's own message, e.g. a bad
option value); its ``step()`` fails or leaves non-tensors or non-finite values behind.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import math
import re
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from optimlab.optim.modes import to_train_point
from optimlab.spec import parse_value

#: ``Attribute`` or ``Attribute.inner`` (a factory held by a class or namespace)
_ATTRIBUTE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: a dotted module path, ``torch.optim``
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def looks_custom(name: str) -> bool:
    """Whether an optimizer entry's first part names a custom optimizer rather than a built-in:
    a file (``x/y.py``, ``y.py``, anything with a path separator) or a dotted module
    (``torch.optim``). Built-in names (``adam``) have neither a dot nor a slash. A whole entry
    may be given: only its part before the first ``:`` counts (``adam:lr=0.1`` is built in)."""
    name = name.strip().partition(":")[0]
    return name.endswith(".py") or "/" in name or "\\" in name or "." in name


def _is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


@dataclass(frozen=True)
class CustomOptimizer:
    """A custom optimizer as the command read it; picklable, it travels to pool and Ray workers.

    Attributes:
        source: the file as given (``"mine.py"``) or the module (``"torch.optim"``).
        attribute: the class or factory in it (``"MyOpt"``).
        file_text: the file's text, read once by the driver (None for modules).
        path: the file's absolute path on the driver (``""`` for modules); names the code in
            tracebacks and keys `export_sources`. Nothing is read from it after parsing.
    """

    source: str
    attribute: str
    file_text: str | None = field(default=None, repr=False)
    path: str = ""

    @property
    def is_file(self) -> bool:
        return self.file_text is not None

    @property
    def label(self) -> str:
        """The short display name: ``"mine.py:MyOpt"``, ``"torch.optim:AdamW"``."""
        shown = Path(self.source).name if self.is_file else self.source
        return f"{shown}:{self.attribute}"

    @property
    def name(self) -> str:
        """The canonical name to store with a trial (``TrialSpec.optimizer``): the file's
        absolute path (so a resumed run finds it from any directory) or the module, and the
        attribute. `from_name` turns it back into this optimizer."""
        return f"{self.path or self.source}:{self.attribute}"

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the sha256 of the file's text ("" for modules): what
        changes when the user edits the file, for callers that want it in a trial's identity."""
        if self.file_text is None:
            return ""
        return hashlib.sha256(self.file_text.encode()).hexdigest()[:12]

    def resolve(self) -> Callable[..., torch.optim.Optimizer]:
        """The class or factory: from `file_text` (executed as a module, once per process and
        text) or imported from the module. ValueError if missing or not callable."""
        if self.file_text is not None:
            module = _module_from_text(self.path or self.source, self.file_text)
            where = f"optimizer file {self.source!r}"
        else:
            module = _import_module(self.source)
            where = f"module {self.source!r}"
        target: Any = module
        for part in self.attribute.split("."):
            if not hasattr(target, part):
                found = sorted(
                    n
                    for n in dir(module)
                    if not n.startswith("_") and callable(getattr(module, n, None))
                )
                shown = ", ".join(found[:30]) + (", …" if len(found) > 30 else "")
                raise ValueError(
                    f"{where} has no {self.attribute!r} (optimizer {self.label}); callables "
                    f"found: {shown or 'none'}"
                )
            target = getattr(target, part)
        if not callable(target):
            raise ValueError(
                f"{self.label}: {self.attribute!r} in {where} is a {type(target).__name__}, not "
                f"a class or function; it must build an optimizer from (params, lr=..., **options)"
            )
        return target

    def build(
        self, params: Iterable[Any], lr: float | None = None, **options: Any
    ) -> torch.optim.Optimizer:
        """``attribute(params, lr=lr, **options)``; ValueError with the class's own message if
        it refuses (a bad option or value), or if it returns no `torch.optim.Optimizer`.
        ``lr=None`` leaves the class's default."""
        factory = self.resolve()
        kwargs = dict(options) if lr is None else {"lr": lr, **options}
        try:
            optimizer = factory(params, **kwargs)
        except Exception as error:  # the class's own validation: pass its words on
            given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            raise ValueError(
                f"optimizer {self.label} does not build from (params, {given}): "
                f"{type(error).__name__}: {error}"
            ) from error
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer {self.label} returned {type(optimizer).__name__}; it must build a "
                f"torch.optim.Optimizer from (params, lr=..., **options)"
            )
        return optimizer

    def default_lr(self) -> float | None:
        """The default of the ``lr`` argument in the signature, if it has a numeric one."""
        parameter = _parameters(self.resolve()).get("lr")
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return None
        default = parameter.default
        if isinstance(default, torch.Tensor) and default.numel() == 1:
            default = default.item()
        if isinstance(default, bool) or not isinstance(default, int | float):
            return None
        return float(default) if math.isfinite(default) and default > 0 else None

    def accepted_options(self) -> list[str] | None:
        """The keyword arguments the signature names (``params`` excluded), or None when it
        takes ``**kwargs`` (anything goes) or cannot be inspected."""
        try:
            parameters = _parameters(self.resolve())
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return None
        return [
            name
            for name, p in parameters.items()
            if name != "params"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]


def _parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The signature's parameters (a class: its ``__init__`` without ``self``)."""
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------
# reading and importing


@functools.cache
def _module_from_text(path: str, text: str) -> types.ModuleType:
    """The module a file's text makes, as importing `path` would; once per process and text."""
    digest = hashlib.sha1(f"{path}\0{text}".encode()).hexdigest()[:12]
    module = types.ModuleType(f"optimlab_user_optimizer_{digest}")
    module.__file__ = path
    try:
        code = compile(text, path, "exec")
    except SyntaxError as error:
        raise ValueError(f"optimizer file {path!r} is not valid Python: {error}") from error
    # registered like an import, so that dataclasses, pickling of its classes by name and
    # `inspect.getsource` work inside the file
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)  # running the user's own optimizer file is the point
    except Exception as error:
        del sys.modules[module.__name__]
        raise ValueError(
            f"optimizer file {path!r} fails when run: {type(error).__name__}: {error}"
        ) from error
    return module


def _import_module(source: str) -> types.ModuleType:
    try:
        return importlib.import_module(source)
    except ImportError as error:
        raise ValueError(
            f"optimizer module {source!r} cannot be imported ({error}); give an installed "
            f"module (torch.optim:AdamW), a file (path/to/file.py:MyOpt) or a built-in name"
        ) from error
    except Exception as error:
        raise ValueError(
            f"optimizer module {source!r} fails when imported: {type(error).__name__}: {error}"
        ) from error


#: The text of every optimizer file this process read, by absolute path. The executors hand it
#: to their workers (`export_sources` / `import_sources`), so a worker that is given only a
#: trial's optimizer name (`CustomOptimizer.name`) runs the code the command read.
_SOURCES: dict[str, str] = {}


def export_sources() -> dict[str, str]:
    """The optimizer files' texts this process read, to pass to `import_sources`."""
    return dict(_SOURCES)


def import_sources(sources: dict[str, str]) -> None:
    """Use optimizer files read by another process (see `export_sources`) in place of the disk."""
    _SOURCES.update(sources)


def _read_file(source: str) -> tuple[str, str]:
    """(absolute path, text) of an optimizer file: from `_SOURCES` if this process has it,
    else from the disk (then remembered). ValueError if missing, not .py, or unreadable."""
    file = Path(source).expanduser().resolve()
    key = str(file)
    if key in _SOURCES:
        return key, _SOURCES[key]
    if file.suffix != ".py":
        raise ValueError(
            f"optimizer file {source!r} is not a .py file; give path/to/file.py:ClassOrFactory"
        )
    if not file.is_file():
        raise ValueError(f"optimizer file {source!r} does not exist (resolved to {key})")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"optimizer file {source!r} cannot be read: {error}") from error
    _SOURCES[key] = text
    return key, text


# ------------------------------------------------------------------------------------------------
# parsing and checking


def split_custom_item(item: str) -> tuple[str, str, dict[str, Any]]:
    """``"mine.py:MyOpt:lr=0.1:beta=0.9"`` -> ``("mine.py", "MyOpt", {"lr": 0.1, "beta": 0.9})``.

    Values are parsed as in `optimlab.spec` (``true``, ``0.9/0.99``, numbers, text).
    """
    source, _, rest = item.strip().partition(":")
    attribute, _, rest = rest.partition(":")
    source, attribute = source.strip(), attribute.strip()
    if not source or not attribute or "=" in attribute:
        raise ValueError(
            f"optimizer {item.strip()!r}: a custom optimizer is path/to/file.py:ClassOrFactory"
            f"[:key=value...] or package.module:Class[:key=value...], e.g. torch.optim:AdamW"
        )
    options: dict[str, Any] = {}
    for pair in filter(None, rest.split(":")) if rest else ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"bad option {pair!r} in optimizer {item.strip()!r}; expected key=value, "
                f"e.g. lr=0.01"
            )
        if key.strip() in options:
            raise ValueError(f"optimizer {item.strip()!r} gives option {key.strip()!r} twice")
        options[key.strip()] = parse_value(value)
    return source, attribute, options


def parse_custom_item(source: str, attribute: str, options: dict[str, Any]) -> CustomOptimizer:
    """The `CustomOptimizer` for ``source:attribute``: reads the file once (or imports the
    module), finds the attribute and checks the option names against its signature.

    ValueError, saying what is wrong, for: a file that is missing, not ``.py`` or not valid
    Python; a module that cannot be imported; a missing or non-callable attribute; an option or
    ``lr`` its signature does not take. Values are checked by `check_custom`, which builds it.
    """
    if not _ATTRIBUTE.match(attribute):
        raise ValueError(
            f"optimizer {source}:{attribute}: {attribute!r} is not a Python name; give the "
            f"class or factory, e.g. {source}:MyOptimizer"
        )
    if _is_file_source(source):
        path, text = _read_file(source)
        optimizer = CustomOptimizer(source, attribute, text, path)
    elif _MODULE.match(source):
        optimizer = CustomOptimizer(source, attribute)
    else:
        raise ValueError(
            f"optimizer source {source!r} is neither a .py file nor a dotted module name; give "
            f"path/to/file.py:ClassOrFactory or package.module:Class"
        )
    optimizer.resolve()  # file runs / module imports, attribute exists and is callable
    accepted = optimizer.accepted_options()
    if accepted is not None:
        if "lr" not in accepted:
            raise ValueError(
                f"optimizer {optimizer.label} does not take lr (its arguments: "
                f"{', '.join(accepted) or 'none'}); it must build from (params, lr=..., **options)"
            )
        unknown = [key for key in options if key not in accepted]
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for optimizer {optimizer.label}; valid options: "
                f"{', '.join(accepted)}"
            )
    return optimizer


def parse_custom_spec(item: str) -> tuple[CustomOptimizer, dict[str, Any]]:
    """One ``--optimizers`` entry, ``source:Attribute[:key=value...]``: the optimizer and its
    options (see `split_custom_item`, `parse_custom_item`)."""
    source, attribute, options = split_custom_item(item)
    return parse_custom_item(source, attribute, options), options


def from_name(name: str) -> CustomOptimizer:
    """The optimizer of a stored trial's name (`CustomOptimizer.name`): a file's text from
    `_SOURCES` (handed over by the command) or, failing that, the disk."""
    source, _, attribute = name.strip().rpartition(":")
    if not source:
        raise ValueError(f"optimizer {name!r} is not source:Attribute")
    return parse_custom_item(source, attribute, {})


#: The parameters `check_custom` builds on: a matrix and a vector, like a layer's weight and bias
def _dummy_parameters() -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(3, 2, generator=generator)),
        torch.nn.Parameter(torch.randn(2, generator=generator)),
    ]


def check_custom(optimizer: CustomOptimizer, options: dict[str, Any]) -> None:
    """Build `optimizer` with `options` on dummy parameters (a 3×2 weight and a bias) and step
    twice, as the training loop would: ValueError if it does not build, its ``step()`` raises,
    or the parameters are no longer finite tensors of their shape and dtype afterwards.

    Without ``lr`` in `options` the signature's default is used (else 1e-3)."""
    options = dict(options)
    lr = options.pop("lr", None)
    if lr is None:
        lr = optimizer.default_lr() or 1e-3
    params = _dummy_parameters()
    layout = [(p.shape, p.dtype) for p in params]
    built = optimizer.build(params, lr=lr, **options)
    to_train_point(built)  # Schedule-Free's classes refuse to step outside train mode
    if not built.param_groups or any("lr" not in group for group in built.param_groups):
        raise ValueError(
            f"optimizer {optimizer.label}: its param_groups have no 'lr'; learning-rate tuning "
            f"and schedules set param_group['lr']"
        )
    for step in (1, 2):
        for p in params:
            p.grad = torch.ones_like(p) * 0.1 * step
        try:
            returned = built.step()
        except Exception as error:
            raise ValueError(
                f"optimizer {optimizer.label}: step() fails: {type(error).__name__}: {error}"
            ) from error
        if returned is not None and not isinstance(returned, torch.Tensor | float | int):
            raise ValueError(
                f"optimizer {optimizer.label}: step() returned {type(returned).__name__}; it "
                f"must return None or the closure's loss (a tensor)"
            )
        for index, (p, (shape, dtype)) in enumerate(zip(params, layout)):
            if not isinstance(p.data, torch.Tensor) or (p.shape, p.dtype) != (shape, dtype):
                raise ValueError(
                    f"optimizer {optimizer.label}: after step() parameter {index} is no longer "
                    f"a {dtype} tensor of shape {tuple(shape)}"
                )
            if not bool(torch.isfinite(p).all()):
                raise ValueError(
                    f"optimizer {optimizer.label}: step() with lr={lr!r} made parameter {index} "
                    f"non-finite (gradients 0.1, then 0.2)"
                )


def create_optimizer(
    name: str, params: Iterable[Any], **hyperparameters: Any
) -> torch.optim.Optimizer:
    """Build a trial's optimizer by its stored name: a built-in (``adam``) through the
    registry, else a custom one (`from_name`). The one call the training loop needs."""
    if not looks_custom(name.partition(":")[0]):
        from optimlab.optim.registry import create

        return create(name, params, **hyperparameters)
    hyperparameters = dict(hyperparameters)
    lr = hyperparameters.pop("lr", None)
    return from_name(name).build(params, lr=lr, **hyperparameters)


__all__ = [
    "CustomOptimizer",
    "check_custom",
    "create_optimizer",
    "export_sources",
    "from_name",
    "import_sources",
    "looks_custom",
    "parse_custom_item",
    "parse_custom_spec",
    "split_custom_item",
]
