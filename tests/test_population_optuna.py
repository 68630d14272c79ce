"""`--tuner optuna --population auto` (issue 14, point 5): Optuna proposes a population's worth
of points at once, the batch trains as one population, and each member is stored and told as an
ordinary trial — checked against Optuna's own record of the study and the results store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.lab.store import ResultStore

ARGS = ["compare", "--problems", "quadratic-deep", "--optimizers", "sgd", "--steps", "6"]
ARGS += ["--seeds", "1", "--evals", "2", "--workers", "1", "--tuner", "optuna", "--trials", "6"]


#: one torch thread, as trials run in the executors (the fixture is in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def study_trials(directory: Path) -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(directory / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def test_optuna_asks_a_population_at_a_time_and_tells_each_member(tmp_path, capsys):
    pytest.importorskip("optuna", reason="Optuna is not installed: pip install 'optimlab[optuna]'")
    assert main([*ARGS, "--population", "auto", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    trials = study_trials(tmp_path)
    stored = {t.key: t for t in ResultStore(tmp_path, create=False).iter()}
    # 6 trials: M = max(TPE's 3 start-up points, ⌈6 / 4⌉) = 3, two populations of 3
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    for trial in trials:
        row = stored[trial.user_attrs["key"]]  # an ordinary trial: its own key, its own row
        assert row.spec.seed == 0 and math.isclose(row.spec.lr, trial.params["lr"])
        assert row.result.metrics["population_size"] == 3
        if row.result.status == "ok":
            assert trial.state.name == "COMPLETE"
            assert trial.value == row.result.metrics["final_val_loss"]
        else:  # a member that diverged stopped alone (pruned at its step), told as pruned
            assert (row.result.status, trial.state.name) == ("diverged", "PRUNED")
    assert any(t.state.name == "COMPLETE" for t in trials)
    # the second batch was asked once the first was told
    batches = [trials[:3], trials[3:]]
    finished = [max(t.datetime_complete for t in batch) for batch in batches]
    assert finished[0] <= min(t.datetime_start for t in batches[1])
