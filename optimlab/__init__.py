"""optimlab: the optimizer lab for PyTorch.

The classic optimizers (and AdamW) as drop-in ``torch.optim.Optimizer`` classes, verified against
torch.optim and Keras 3, plus tools to watch them on loss surfaces, compare them fairly on real
training problems, and diagnose slow or stuck training.

``import optimlab`` is cheap: the optimizers (and with them torch) are imported the first time
one of the names below is touched (PEP 562 module ``__getattr__``), so that ``optimlab --help``
and ``optimlab --version`` answer without loading torch.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

__all__ = [
    "NAG",
    "SGD",
    "SOAP",
    "AdEMAMix",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "Lamb",
    "Lion",
    "Momentum",
    "Muon",
    "NAdam",
    "Optimizer",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "__version__",
    "create",
    "list_optimizers",
]

#: the public names that live in `optimlab.optim`, loaded on first use
_FROM_OPTIM = frozenset(__all__) - {"__version__"}

if _TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from optimlab.optim import (
        NAG,
        SGD,
        SOAP,
        Adadelta,
        Adafactor,
        Adagrad,
        Adam,
        Adamax,
        AdamW,
        Adan,
        AdEMAMix,
        Lamb,
        Lion,
        Momentum,
        Muon,
        NAdam,
        Optimizer,
        Prodigy,
        RAdam,
        RMSprop,
        ScheduleFreeAdamW,
        ScheduleFreeSGD,
        create,
        list_optimizers,
    )


def __getattr__(name: str) -> _Any:
    if name in _FROM_OPTIM:
        value = getattr(_importlib.import_module("optimlab.optim"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'optimlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names (loaded or not) and the submodules imported so far; not the helpers.
    return sorted({*__all__, *(n for n in globals() if not n.startswith("_"))})
