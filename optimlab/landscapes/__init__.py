"""The landscape lab: the optimlab optimizers on 2D loss surfaces, in pictures and numbers.

* :mod:`~optimlab.landscapes.functions` — the surfaces (ravine, saddle, Rosenbrock, …);
* :mod:`~optimlab.landscapes.runner` — the batched runner: every trajectory a row of one tensor,
  advanced by the real optimizer classes;
* :mod:`~optimlab.landscapes.metrics` — final loss, distance to the minimum, steps to ε,
  divergence, zigzag, which minimum;
* :mod:`~optimlab.landscapes.tuning` — the learning-rate grid;
* :mod:`~optimlab.landscapes.results` — the result types (:class:`Run`, :class:`LandscapeResult`)
  and their JSON form;
* :mod:`~optimlab.landscapes.experiment` — :func:`run_landscape`, the one call from Python;
* :mod:`~optimlab.landscapes.theory` — the closed forms of quadratics (best rates, limits);
* :mod:`~optimlab.landscapes.scenarios` — named experiments that each show one phenomenon;
* :mod:`~optimlab.landscapes.plots` — contour, loss and animation figures (matplotlib, Agg);
* :mod:`~optimlab.landscapes.output` — the files: trajectories.json and the pictures.

Data flows one way: functions → runner → metrics/tuning → results → experiment → scenarios, and
the views (plots, output) read results; nothing below imports a view.  matplotlib is imported
only by ``plots`` (and only when a figure is asked for).
"""

from optimlab.landscapes.experiment import run_landscape
from optimlab.landscapes.functions import Landscape, Minimum, get_function, list_functions
from optimlab.landscapes.output import write_outputs
from optimlab.landscapes.results import LandscapeResult, Run
from optimlab.landscapes.runner import Batch, Config, run_batch
from optimlab.landscapes.scenarios import ScenarioOutcome, list_scenarios, run_scenario

__all__ = [
    "Batch",
    "Config",
    "Landscape",
    "LandscapeResult",
    "Minimum",
    "Run",
    "ScenarioOutcome",
    "get_function",
    "list_functions",
    "list_scenarios",
    "run_batch",
    "run_landscape",
    "run_scenario",
    "write_outputs",
]
