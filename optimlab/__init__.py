"""optimlab: the optimizer lab for PyTorch.

The nine classic optimizers as drop-in ``torch.optim.Optimizer`` classes, verified against
torch.optim and Keras 3, plus tools to watch them on loss surfaces, compare them fairly on real
training problems, and diagnose slow or stuck training.
"""

from optimlab.optim import (
    NAG,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Momentum,
    NAdam,
    Optimizer,
    RMSprop,
    create,
    list_optimizers,
)

__version__ = "0.1.0"

__all__ = [
    "NAG",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Momentum",
    "NAdam",
    "Optimizer",
    "RMSprop",
    "__version__",
    "create",
    "list_optimizers",
]
