"""Test-session setup shared by every test module.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, and falls back to TensorFlow (not
installed here); so the backend is chosen before any test module can import keras. A value set
by the caller (e.g. the Makefile) wins.

The Keras parity tests record the relative error of each run with ``record_property``; the
summary below prints the worst one per (algorithm, dtype) at the end of the session. Properties
travel with the test reports, so the table is complete under ``pytest -n 2`` as well.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

os.environ.setdefault("KERAS_BACKEND", "torch")

# `make test` (and so CI) draws the same hypothesis examples every run: a red CI then means a
# change broke something, never that this run drew an unlucky example.  `make fuzz` explores new
# random examples, many more of them; what it finds becomes an `@example` in the test.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: the ``record_property`` name under which a parity test stores (algorithm, dtype, error)
PARITY_PROPERTY = "keras_parity_error"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    worst: dict[tuple[str, str], float] = {}
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for key, value in getattr(report, "user_properties", ()):
                if key == PARITY_PROPERTY:
                    name, dtype, error = value
                    worst[name, dtype] = max(worst.get((name, dtype), 0.0), error)
    if not worst:
        return
    terminalreporter.section("Keras 3 parity: worst relative error")
    for (name, dtype), error in sorted(worst.items()):
        terminalreporter.write_line(f"{name:<10} {dtype:<8} {error:.3g}")


@pytest.fixture()
def one_thread():
    """One torch thread, as trials run in the executors (and no thread contention on a shared
    machine); the population and halving tests use it (``pytestmark``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
