"""Training problems for comparing optimizers: data sets (generated locally or shipped in a
package) and models, by name with options::

    from optimlab.problems import get_problem, list_problems

    problem = get_problem("deep-mlp:depth=10:activation=sigmoid")
    model = problem.build_model(seed=0)
    x, y = problem.train
    loss = problem.loss_fn(model(x), y)
"""

from optimlab.problems.base import Problem
from optimlab.problems.registry import (
    PROBLEMS,
    Option,
    ProblemInfo,
    get_problem,
    list_problems,
    problem_options,
)

__all__ = [
    "PROBLEMS",
    "Option",
    "Problem",
    "ProblemInfo",
    "get_problem",
    "list_problems",
    "problem_options",
]
