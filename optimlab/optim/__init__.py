"""The optimizers: one module per algorithm, the registry, the conventions."""

from optimlab.optim.adadelta import Adadelta
from optimlab.optim.adafactor import Adafactor
from optimlab.optim.adagrad import Adagrad
from optimlab.optim.adam import Adam, AdamW
from optimlab.optim.adamax import Adamax
from optimlab.optim.adan import Adan
from optimlab.optim.ademamix import AdEMAMix
from optimlab.optim.base import Optimizer
from optimlab.optim.lamb import Lamb
from optimlab.optim.lion import Lion
from optimlab.optim.muon import Muon, muon_for
from optimlab.optim.nadam import NAdam
from optimlab.optim.prodigy import Prodigy
from optimlab.optim.radam import RAdam
from optimlab.optim.registry import REGISTRY, OptimizerInfo, create, get_info, list_optimizers
from optimlab.optim.rmsprop import RMSprop
from optimlab.optim.schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD
from optimlab.optim.sgd import NAG, SGD, Momentum
from optimlab.optim.soap import SOAP

__all__ = [
    "NAG",
    "REGISTRY",
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
    "OptimizerInfo",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "create",
    "get_info",
    "list_optimizers",
    "muon_for",
]
