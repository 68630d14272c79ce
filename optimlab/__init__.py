"""optimlab: the optimizer lab for PyTorch.

The classic optimizers (and AdamW) as drop-in ``torch.optim.Optimizer`` classes, verified against
torch.optim and Keras 3, plus tools to watch them on loss surfaces, compare them fairly on real
training problems, and diagnose slow or stuck training.

``import optimlab`` is cheap: the optimizers (and with them torch) are imported the first time
one of the names below is touched (PEP 562 module ``__getattr__``), so that ``optimlab --help``
and ``optimlab --version`` answer without loading torch.
"""

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

#: what `optimlab` exports from `optimlab.optim` besides the optimizer classes
_HELPERS = frozenset({"Optimizer", "create", "list_optimizers", "muon_for"})


def _optim() -> _Any:
    return _importlib.import_module("optimlab.optim")


def _public_names() -> list[str]:
    """The registered optimizers' class names (from the registry's declarations: no list here),
    the helpers and ``__version__``; asking imports the optimizers (and torch)."""
    return sorted({*_optim().optimizer_classes(), *_HELPERS, "__version__"})


def __getattr__(name: str) -> _Any:
    if name == "__all__":  # `from optimlab import *`
        return _public_names()
    # Only a helper or a class name (capitalized) loads the optimizers: probing a lowercase name
    # (a subpackage not imported yet, say) stays light.
    if name in _HELPERS or name[:1].isupper():
        optim = _optim()
        if name in _HELPERS or name in optim.optimizer_classes():
            value = getattr(optim, name)
            if name in optim.__all__:  # built-in: later lookups skip this function
                globals()[name] = value
            return value
    raise AttributeError(f"module 'optimlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names (loaded or not) and the submodules imported so far; not the helpers.
    return sorted({*_public_names(), *(n for n in globals() if not n.startswith("_"))})
