"""Run trials on a local process pool (or in this process) and store each one as it finishes.

`BaseExecutor` is the interface every executor has (``submit`` / ``wait_one`` / ``pending`` /
``is_done`` / ``close``, a context manager) and that `run_comparison` drives; `Executor` is the
local one, `optimlab.lab.ray_executor.RayExecutor` runs the trials as Ray tasks.

Workers are started with ``spawn`` (a clean interpreter: no inherited threads or locks), get the
parent's generated data sets through `optimlab.problems.data.export_cache`, run torch with one
thread each (small models: processes, not threads, give the parallelism), and die with the
parent (Linux ``PR_SET_PDEATHSIG``) so a killed comparison leaves no orphans behind. A worker
writes its trial to the store itself, so a finished trial is on disk even if the parent dies
before it hears about it.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import Problem, data, get_problem, registry

_WORKER_STORE: ResultStore | None = None


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def single_threaded() -> tuple[int, int]:
    """One thread for torch and for the numba kernels; returns the previous counts. Trials are
    small: parallelism comes from processes, and threads would only fight over the cores."""
    import numba

    previous = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    return previous


def restore_threads(previous: tuple[int, int]) -> None:
    import numba

    torch.set_num_threads(previous[0])
    numba.set_num_threads(previous[1])


@functools.lru_cache(maxsize=16)
def _problem(spec: str) -> Problem:
    return get_problem(spec)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _init_worker(cache: dict[str, Any], sources: dict[str, str], directory: str) -> None:
    global _WORKER_STORE
    _die_with_parent()
    single_threaded()
    data.import_cache(cache)
    registry.import_sources(sources)
    _WORKER_STORE = ResultStore(directory)


def run_trial(spec: TrialSpec, prune: bool = False) -> TrialResult:
    """Train `spec` in this process (the problem built once per process) and return its result.
    ``prune``: stop a clearly diverging run early (`optimlab.lab.pruning`); tuners ask for it."""
    try:
        problem = _problem(spec.problem)
    except Exception:  # let train() turn a bad problem into a "failed" trial with the reason
        problem = None
    if prune:
        from optimlab.lab.pruning import train_pruned

        return train_pruned(spec, problem)
    return train(spec, problem)


def run_and_store(
    spec: TrialSpec, store: ResultStore | None = None, prune: bool = False
) -> TrialResult:
    """Train `spec`, write it to the store, return its result."""
    store = store or _WORKER_STORE
    assert store is not None, "run_and_store outside a worker needs a store"
    result = run_trial(spec, prune)
    store.put(spec, result)
    return result


class BaseExecutor:
    """What every executor shares: the keys already stored or submitted, so callers may submit
    freely (a spec that is stored or in flight is skipped), and the context manager.

    Subclasses start the trial in `_start` and return the next finished one from `_finish`;
    `wait_one` returns it only once it is in the store.
    """

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self._known = store.keys()
        self._pending: set[str] = set()

    def __enter__(self) -> BaseExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (trials still queued are dropped; finished ones are stored)."""

    @property
    def pending(self) -> int:
        """Trials submitted and not yet returned by `wait_one`."""
        raise NotImplementedError

    @property
    def slots(self) -> int:
        """How many trials run at once (tuners keep about that many in flight)."""
        raise NotImplementedError

    def is_done(self, spec: TrialSpec) -> bool:
        return spec.key in self._known

    def submit(self, spec: TrialSpec, prune: bool = False) -> bool:
        """Queue `spec` unless it is stored or queued already; True if it was queued.
        ``prune``: stop it early if it clearly diverges (tuning trials)."""
        if spec.key in self._known or spec.key in self._pending:
            return False
        self._pending.add(spec.key)
        self._start(spec, prune)
        return True

    def wait_one(self) -> tuple[TrialSpec, TrialResult]:
        """Block until one submitted trial is finished and stored; return it and its result."""
        if not self.pending:
            raise RuntimeError("wait_one() with nothing submitted")
        spec, result = self._finish()
        self._known.add(spec.key)
        self._pending.discard(spec.key)
        return spec, result

    def _start(self, spec: TrialSpec, prune: bool) -> None:
        raise NotImplementedError

    def _finish(self) -> tuple[TrialSpec, TrialResult]:
        raise NotImplementedError


class Executor(BaseExecutor):
    """Trials on a local process pool; each worker writes its trial to the store itself.

    ``workers <= 1`` runs each trial in this process when `wait_one` is called (no pool).
    """

    def __init__(self, store: ResultStore, workers: int) -> None:
        super().__init__(store)
        self.workers = max(1, int(workers))
        self._queue: deque[tuple[TrialSpec, bool]] = deque()
        self._futures: dict[Future, TrialSpec] = {}
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._futures)

    @property
    def slots(self) -> int:
        return self.workers

    def _start(self, spec: TrialSpec, prune: bool) -> None:
        if self.workers == 1:
            self._queue.append((spec, prune))
        else:
            self._futures[self._ensure_pool().submit(run_and_store, spec, None, prune)] = spec

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(
                    data.export_cache(),
                    registry.export_sources(),
                    str(self.store.directory),
                ),
            )
        return self._pool

    def _finish(self) -> tuple[TrialSpec, TrialResult]:
        if self._queue:
            spec, prune = self._queue.popleft()
            previous = single_threaded()
            try:
                result = run_and_store(spec, self.store, prune)
            finally:
                restore_threads(previous)
            return spec, result
        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        spec = self._futures.pop(future)
        return spec, future.result()
