"""The Ray executor against the local executor and the results store: a real local Ray instance
with 2 CPUs (started once for the module, by a `RayExecutor`, as the CLI starts it).

Skipped, with the reason, only when Ray is not installed (``pip install 'optimlab[ray]'``); the
bad-input tests need no Ray.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from optimlab.cli import main
from optimlab.lab.protocol import Comparison, contenders, lr_grid, run_comparison
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from tests.test_compare import TINY_COMPARISON, TINY_TRIALS, USER_FILE

TINY = TINY_COMPARISON
#: wall-clock measurements, the only metrics allowed to differ between two runs
TIMING = {"seconds", "cpu_seconds", "seconds_per_step", "warmup_seconds", "curve_seconds"}

CRASHING_PROBLEM = '''
import os
from pathlib import Path

import torch

from optimlab.problems import Problem


def make(mode="always", log=""):
    """A problem whose model factory kills its worker process: every time (mode=always) or on
    the first attempt only (mode=once). Each attempt appends the worker's pid to `log`."""
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 2 * x

    def build(seed):
        with open(log, "a") as file:
            file.write(f"{os.getpid()}\\n")
        if mode == "always" or len(Path(log).read_text().splitlines()) == 1:
            os._exit(3)
        torch.manual_seed(seed)
        return torch.nn.Linear(1, 1)

    return Problem(
        name="crash",
        options={},
        train=(x, y),
        val=(x, y),
        test=(x, y),
        build_model=build,
        loss_fn=torch.nn.functional.mse_loss,
        batch_size=16,
        task="regression",
    )
'''


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc; Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture(scope="module")
def ray_owner(tmp_path_factory):
    """The module's Ray instance, started by a RayExecutor without an address (as the CLI does):
    2 CPUs. Its shutdown must leave none of the processes Ray started behind."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'optimlab[ray]'")
    from optimlab.lab.ray_executor import RayExecutor

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    before = _descendants(os.getpid())
    owner = RayExecutor(ResultStore(tmp_path_factory.mktemp("ray-owner")), workers=2)
    owner.start()
    yield owner
    started = _descendants(os.getpid()) - before
    owner.close()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started), "Ray left processes behind"


def assert_same_trials(first: Path, second: Path) -> None:
    a = ResultStore(first, create=False).get()
    b = ResultStore(second, create=False).get()
    assert set(a) == set(b)
    for key, trial in a.items():
        other = b[key].result
        assert (trial.result.status, trial.result.reason) == (other.status, other.reason)
        assert trial.result.predictions == other.predictions
        numbers = {k: v for k, v in trial.result.metrics.items() if k not in TIMING}
        assert numbers == {k: v for k, v in other.metrics.items() if k not in TIMING}


def test_a_local_ray_instance_has_the_workers_cpus(ray_owner) -> None:
    import ray

    assert ray.cluster_resources()["CPU"] == 2
    assert ray_owner.slots == 2


def tiny() -> Comparison:
    # per (problem, optimizer): 3 grid points + 1 extra seed at the best rate + 2 default seeds
    return Comparison(
        [("quadratic-deep", 15), ("digits-logreg", 15)],
        contenders("sgd,adam"),
        lr_grid(3, 1e-4, 10),
        seeds=2,
        default_seeds=2,
    )


def test_same_numbers_as_the_local_executor_each_stored_on_arrival_and_resumable(
    ray_owner, tmp_path: Path
) -> None:
    from optimlab.lab.ray_executor import RayExecutor

    local, on_ray = ResultStore(tmp_path / "local"), ResultStore(tmp_path / "ray")
    assert run_comparison(tiny(), local, 1)["run"] == TINY_TRIALS
    seen: list[tuple[str, str, int]] = []

    def on_progress(event: dict) -> None:
        if event["event"] == "finished":
            key = event["spec"].key
            seen.append((event["status"], on_ray.get([key])[key].result.status, on_ray.count()))

    ran = run_comparison(tiny(), on_ray, 2, on_progress, executor=RayExecutor(on_ray, 2))
    assert ran == {"run": TINY_TRIALS, "reused": 0, "total": TINY_TRIALS}
    assert_same_trials(local.directory, on_ray.directory)
    # each result was in the store when it was announced, one more row each time
    assert [status for status, _, _ in seen] == [stored for _, stored, _ in seen]
    assert [count for _, _, count in seen] == list(range(1, TINY_TRIALS + 1))
    # and this process wrote every row: the Ray workers never touch the store
    pids = {row[0] for row in sqlite3.connect(on_ray.path).execute("SELECT pid FROM trials")}
    assert pids == {os.getpid()}
    statuses = {t.result.status for t in on_ray.iter()}
    assert "ok" in statuses  # the comparison trained something (sgd at lr=10 diverges)

    rerun = run_comparison(tiny(), on_ray, 2, executor=RayExecutor(on_ray, 2))
    assert rerun == {"run": 0, "reused": TINY_TRIALS, "total": TINY_TRIALS}
    with sqlite3.connect(on_ray.path) as connection:
        connection.execute(
            "DELETE FROM trials WHERE key IN (SELECT key FROM trials ORDER BY key LIMIT 5)"
        )
    rerun = run_comparison(tiny(), on_ray, 2, executor=RayExecutor(on_ray, 2))
    assert rerun == {"run": 5, "reused": TINY_TRIALS - 5, "total": TINY_TRIALS}
    assert_same_trials(local.directory, on_ray.directory)


def test_a_problem_file_travels_with_the_trials(ray_owner, tmp_path: Path) -> None:
    """A Ray node needs no copy of ``--problem path.py:factory``: the file is gone before any
    trial starts, and Ray's worker processes build the problem from the text the driver read."""
    from optimlab.lab.ray_executor import RayExecutor

    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    comparison = Comparison(
        [(f"{path}:make:n=100", 20)], contenders("adam"), lr_grid(2, 1e-3, 1e-1), seeds=1
    )
    comparison.resolve()  # the driver reads the file, as the command does before any trial
    path.unlink()
    store = ResultStore(tmp_path / "out")
    run_comparison(comparison, store, 2, executor=RayExecutor(store, 2))
    trials = list(store.iter())
    assert len(trials) == 2 and all(t.result.status == "ok" for t in trials), trials
    for trial in trials:  # the problem the driver read: the same numbers as a run in-process
        here = train(trial.spec)
        numbers = {k: v for k, v in trial.result.metrics.items() if k not in TIMING}
        assert numbers == {k: v for k, v in here.metrics.items() if k not in TIMING}


def test_a_dying_worker_is_retried_then_the_trial_is_stored_as_failed(
    ray_owner, tmp_path: Path
) -> None:
    factory = tmp_path / "crashing.py"
    factory.write_text(CRASHING_PROBLEM)
    always, once = tmp_path / "always.log", tmp_path / "once.log"
    problems = f"{factory}:make:mode=always:log={always},{factory}:make:mode=once:log={once}"
    out = tmp_path / "out"
    args = ["compare", "--problems", problems, "--optimizers", "sgd:lr=0.001", "--seeds", "1"]
    args += ["--steps", "5", "--executor", "ray", "--ray-retries", "1", "--out", str(out)]
    assert main(args) == 0  # the comparison is not a casualty of its workers
    trials = list(ResultStore(out, create=False).iter())
    assert len(trials) == 2  # one trial per problem: the fixed rate is also the default
    by_log = {
        always: next(t for t in trials if "mode=always" in t.spec.problem),
        once: next(t for t in trials if "mode=once" in t.spec.problem),
    }
    # mode=always: the first attempt and one retry, each in another (new) worker process
    attempts = always.read_text().split()
    assert len(attempts) == 2 and len(set(attempts)) == 2
    failed = by_log[always].result
    assert failed.status == "failed"
    assert "WorkerCrashedError" in failed.reason and "2 time(s)" in failed.reason
    # mode=once: the retry finished the trial
    assert len(once.read_text().split()) == 2
    assert by_log[once].result.status == "ok"


def test_optuna_tuning_trials_run_on_ray(ray_owner, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna", reason="Optuna is not installed")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    args = ["compare", "--problems", "quadratic-deep", "--optimizers", "adam", "--steps", "10"]
    args += ["--seeds", "2", "--tuner", "optuna", "--trials", "4", "--executor", "ray"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    keys = ResultStore(tmp_path, create=False).keys()
    assert len(study.trials) == 4
    assert all(t.state.is_finished() and t.user_attrs["key"] in keys for t in study.trials)


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--executor", "dask"], "--executor", "unknown executor 'dask'; valid: local, ray"),
        (["--ray-retries", "-1"], "--ray-retries", "-1; allowed: an integer in [0, 100]"),
        (["--ray-address", "head:6379"], "--ray-address", "'head:6379' needs --executor ray"),
    ],
)
def test_bad_executor_options_exit_2(args, option, message, tmp_path: Path, capsys) -> None:
    code = main(["compare", *TINY, *args, "--out", str(tmp_path / "out")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"Invalid value for {option}" in error and message in error
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_an_address_where_nothing_listens_exits_2_at_once(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'optimlab[ray]'")
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    code = main(
        [
            "compare",
            *TINY,
            "--executor",
            "ray",
            "--ray-address",
            address,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "Invalid value for --ray-address" in error
    assert f"nothing accepts connections at {address}" in error
    assert not (tmp_path / "out" / "results.sqlite").exists()  # before any work


def test_without_ray_the_executor_says_how_to_install_it(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["compare", *TINY, "--executor", "ray", "--out", str(tmp_path / "out")])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "Invalid value for --executor" in error and "pip install 'optimlab[ray]'" in error
    assert not (tmp_path / "out").exists()


MY_OPTIMIZER = """
import torch

class MyOpt(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
"""


def test_a_custom_optimizer_file_travels_with_the_trials(ray_owner, tmp_path: Path) -> None:
    """``--optimizers mine.py:MyOpt`` on Ray: the file is gone before any trial starts; the
    trials carry the text the driver read, and give the numbers of a run in this process."""
    from optimlab.lab.ray_executor import RayExecutor

    path = tmp_path / "mine.py"
    path.write_text(MY_OPTIMIZER)
    comparison = Comparison(
        [("quadratic-deep", 15)], contenders(f"adam,{path}:MyOpt"), lr_grid(2, 1e-3, 1e-1), seeds=1
    )
    path.unlink()
    on_ray, local = ResultStore(tmp_path / "ray"), ResultStore(tmp_path / "local")
    run_comparison(comparison, on_ray, 2, executor=RayExecutor(on_ray, 2))
    run_comparison(comparison, local, 1)
    mine = [t for t in on_ray.iter() if t.spec.optimizer == "mine.py:MyOpt"]
    assert len(mine) == 3 and all(t.result.status == "ok" for t in mine), mine
    assert_same_trials(local.directory, on_ray.directory)
