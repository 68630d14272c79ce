"""The bf16-stagnation scenario's own path: real optimizers stepping bfloat16 weights.

(The scenario's checks run in test_landscape_scenarios.py with every scenario's, and
``optimlab landscape --list`` is checked to name every scenario in test_landscape_cli.py.)
"""

from __future__ import annotations

import numpy as np

from optimlab.landscapes.bfloat16 import run_bfloat16
from optimlab.landscapes.experiment import run_landscape
from optimlab.landscapes.functions import get_function

SPEC = "sgd:lr=0.001,sgd:lr=0.001:stochastic_rounding=True"


def test_bfloat16_weights_stall_where_the_float64_runner_moves() -> None:
    surface = get_function("quadratic", condition=1.0, angle=0.0)  # ½‖θ‖²: gradient θ
    steps = 100
    rounded = run_bfloat16(surface, SPEC, [(0.5, 0.5)], steps)
    # the float64 runner knows no rounding (nor stochastic_rounding, for float64 weights)
    (exact,) = run_landscape(surface, "sgd:lr=0.001", steps=steps, starts=[(0.5, 0.5)]).runs
    expected = 0.5 * (1 - 1e-3) ** steps  # float64 SGD: (1 − η)^t θ₀
    np.testing.assert_allclose(exact.path[-1], [expected, expected], rtol=1e-12)
    nearest, stochastic = rounded.runs
    assert np.all(nearest.path == 0.5)  # 5e-4 < half the gap below 0.5 (2⁻¹⁰) at every step
    moved = 0.5 - stochastic.path[-1]
    # about 0.5 − 0.4524 = 0.048 in expectation, give or take the rounding noise (≈ 0.007)
    assert np.all((moved > 0.02) & (moved < 0.08)), moved
    assert stochastic.path.shape == (steps + 1, 2) and rounded.batch is not None
