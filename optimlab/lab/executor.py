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

**Populations** (``population="auto"``): the trials submitted before the next `wait_one` are
grouped into populations — the trials of one (problem, optimizer, schedule, budget) that differ
only in learning rate and seed (`optimlab.lab.population`) — and each population is one unit of
work, trained as one batched model in one worker; its members are stored and returned as
ordinary trials, one by one. What cannot be batched (`population.check_population` says why)
runs as single trials, and ``on_fallback`` hears the reason once. ``"off"``: single trials only.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from optimlab.lab.halving import HalvingPolicy
from optimlab.lab.store import ResultStore
from optimlab.lab.train import train
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import Problem, data, get_problem, registry

_WORKER_STORE: ResultStore | None = None
#: what a tuning trial's unit does about losing runs: nothing (False), stop a clear divergence
#: (True, `optimlab.lab.pruning`), or successive halving of the grid (`HalvingPolicy`)
Pruning = bool | HalvingPolicy

#: ``population=`` values: batch what can be batched, or single trials only
POPULATION_MODES = ("auto", "off")
#: the most members one unit of work trains at once (memory grows with it; 36 rates + 10
#: default seeds of the full suite fit in one)
MAX_MEMBERS = 64


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
    ``prune``: stop a clearly diverging run early (`optimlab.lab.pruning`); tuners ask for it.
    A run that ended exploded is ``diverged`` (`optimlab.lab.pruning.ended_exploded`)."""
    try:
        problem = _problem(spec.problem)
    except Exception:  # let train() turn a bad problem into a "failed" trial with the reason
        problem = None
    from optimlab.lab.pruning import ended_exploded, train_pruned

    return ended_exploded(train_pruned(spec, problem) if prune else train(spec, problem))


def run_and_store(
    spec: TrialSpec, store: ResultStore | None = None, prune: bool = False
) -> TrialResult:
    """Train `spec`, write it to the store, return its result."""
    store = store or _WORKER_STORE
    assert store is not None, "run_and_store outside a worker needs a store"
    result = run_trial(spec, prune)
    store.put(spec, result)
    return result


def run_unit(specs: list[TrialSpec], prune: Pruning = False) -> list[TrialResult]:
    """One unit of work: a single trial, or a population trained batched (the results in the
    order of `specs`). A population that turns out unbatchable here runs trial by trial.
    ``prune`` a `HalvingPolicy`: the unit is one (problem, optimizer)'s grid, successively
    halved (`optimlab.lab.halving.run_halving`).

    Every run that finished with its validation loss still exploded is returned ``diverged``
    (`optimlab.lab.pruning.ended_exploded`), whatever its role: grid point, seed rerun or
    default-rate seed."""
    from optimlab.lab.pruning import ended_exploded

    return [ended_exploded(result) for result in _run_unit(specs, prune)]


def _run_unit(specs: list[TrialSpec], prune: Pruning) -> list[TrialResult]:
    if isinstance(prune, HalvingPolicy):
        from optimlab.lab.halving import run_halving

        try:
            problem = _problem(specs[0].problem)
        except Exception:  # train() turns a bad problem into "failed" trials with the reason
            problem = None
        return run_halving(specs, problem, prune)
    if len(specs) == 1:
        return [run_trial(specs[0], prune)]
    from optimlab.lab.population import Unbatchable, train_population

    stop_if = None
    if prune:
        from optimlab.lab.pruning import explosion

        stop_if = explosion
    try:
        return train_population(specs, _problem(specs[0].problem), stop_if)
    except Unbatchable:
        return [run_trial(spec, prune) for spec in specs]


def run_unit_and_store(
    specs: list[TrialSpec], store: ResultStore | None = None, prune: Pruning = False
) -> list[TrialResult]:
    """`run_unit`, each member written to the store as an ordinary trial (same key, same row)."""
    store = store or _WORKER_STORE
    assert store is not None, "run_unit_and_store outside a worker needs a store"
    results = run_unit(specs, prune)
    for spec, result in zip(specs, results):
        store.put(spec, result)
    return results


def _chunks(group: list[TrialSpec]) -> list[list[TrialSpec]]:
    """`group` in near-equal units of at most `MAX_MEMBERS` members."""
    parts = math.ceil(len(group) / MAX_MEMBERS)
    size = math.ceil(len(group) / parts)
    return [group[i : i + size] for i in range(0, len(group), size)]


class BaseExecutor:
    """What every executor shares: the keys already stored or submitted, so callers may submit
    freely (a spec that is stored or in flight is skipped), the grouping of submitted trials
    into populations, and the context manager.

    Subclasses start a unit of work (one trial, or a population's trials) in `_start` and return
    the next finished unit's trials and results from `_finish`; `wait_one` returns them one at a
    time, each only once it is in the store.

    ``population``: ``"auto"`` trains the trials of one population as one batched unit where
    that can be done (else singly, reporting the reason once to ``on_fallback``); ``"off"``
    runs every trial alone.
    """

    def __init__(
        self,
        store: ResultStore,
        population: str = "off",
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if population not in POPULATION_MODES:
            raise ValueError(f"population={population!r}; allowed: {', '.join(POPULATION_MODES)}")
        self.store = store
        self.population = population
        self.on_fallback = on_fallback
        self._known = store.keys()
        self._pending: set[str] = set()
        self._buffer: list[tuple[TrialSpec, Pruning]] = []
        self._ready: deque[tuple[TrialSpec, TrialResult]] = deque()
        self._verdicts: dict[str, str | None] = {}
        #: the reasons populations ran as single trials (each reported once)
        self.fallbacks: list[str] = []

    def __enter__(self) -> BaseExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (trials still queued are dropped; finished ones are stored)."""

    @property
    def pending(self) -> int:
        """Trials submitted and not yet returned by `wait_one`."""
        return len(self._pending)

    @property
    def slots(self) -> int:
        """How many units run at once (tuners keep about that many trials in flight)."""
        raise NotImplementedError

    def is_done(self, spec: TrialSpec) -> bool:
        return spec.key in self._known

    def submit(self, spec: TrialSpec, prune: Pruning = False) -> bool:
        """Queue `spec` unless it is stored or queued already; True if it was queued.
        ``prune``: stop it early if it clearly diverges (tuning trials); a `HalvingPolicy`:
        one grid point of a successive halving (the grid of one pair is one unit of work,
        batched or not)."""
        if spec.key in self._known or spec.key in self._pending:
            return False
        self._pending.add(spec.key)
        if self.population == "off" and not isinstance(prune, HalvingPolicy):
            self._start([spec], prune)
        else:  # grouped into populations at the next wait_one, with everything submitted
            self._buffer.append((spec, prune))
        return True

    def wait_one(self) -> tuple[TrialSpec, TrialResult]:
        """Block until one submitted trial is finished and stored; return it and its result."""
        if not self.pending:
            raise RuntimeError("wait_one() with nothing submitted")
        self._dispatch()
        if not self._ready:
            self._ready.extend(self._finish())
        spec, result = self._ready.popleft()
        self._known.add(spec.key)
        self._pending.discard(spec.key)
        return spec, result

    def _dispatch(self) -> None:
        """Start the buffered trials: each population that can be batched as units of at most
        `MAX_MEMBERS` members, the rest one by one."""
        if not self._buffer:
            return
        from optimlab.lab.population import group_populations

        buffered, self._buffer = self._buffer, []
        for prune in dict.fromkeys(p for _, p in buffered):  # each kind, in order of arrival
            for group in group_populations([s for s, p in buffered if p == prune]):
                if isinstance(prune, HalvingPolicy):  # the grid is one unit: halved together
                    batched = self.population == "auto" and len(group) > 1
                    batched = batched and self._batchable(group)
                    chunks = _chunks(group) if batched else [group]
                    for chunk in chunks:
                        self._start(chunk, prune if batched else prune.single())
                    continue
                if len(group) == 1 or not self._batchable(group):
                    for spec in group:
                        self._start([spec], prune)
                    continue
                for chunk in _chunks(group):
                    self._start(chunk, prune)

    def _batchable(self, group: list[TrialSpec]) -> bool:
        """Whether `group` trains as one population; the reason it cannot goes to
        `on_fallback`, once per reason."""
        from optimlab.lab.population import Unbatchable, check_optimizer, check_problem

        def verdict(check: Callable[[], None]) -> str | None:
            try:
                check()
            except Unbatchable as error:
                return str(error)
            except Exception:  # a problem that does not build: single trials fail with the
                return ""  # reason, each as `train` fails it (nothing to report here)
            return None

        problem = group[0].problem  # checked once per problem, the optimizer once per options
        if problem not in self._verdicts:
            self._verdicts[problem] = verdict(lambda: check_problem(_problem(problem)))
        reason = self._verdicts[problem]
        if reason is None:
            reason = verdict(lambda: check_optimizer(group[0]))
        if reason and reason not in self.fallbacks:
            self.fallbacks.append(reason)
            if self.on_fallback is not None:
                self.on_fallback(f"population: single trials for {reason}")
        return reason is None

    def _start(self, specs: list[TrialSpec], prune: Pruning) -> None:
        raise NotImplementedError

    def _finish(self) -> list[tuple[TrialSpec, TrialResult]]:
        raise NotImplementedError


class Executor(BaseExecutor):
    """Trials on a local process pool; each worker writes its trial to the store itself.

    ``workers <= 1`` runs each trial in this process when `wait_one` is called (no pool).
    """

    def __init__(
        self,
        store: ResultStore,
        workers: int,
        population: str = "off",
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(store, population, on_fallback)
        self.workers = max(1, int(workers))
        self._queue: deque[tuple[list[TrialSpec], Pruning]] = deque()
        self._futures: dict[Future, list[TrialSpec]] = {}
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def slots(self) -> int:
        return self.workers

    def _start(self, specs: list[TrialSpec], prune: Pruning) -> None:
        if self.workers == 1:
            self._queue.append((specs, prune))
        else:
            future = self._ensure_pool().submit(run_unit_and_store, specs, None, prune)
            self._futures[future] = specs

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

    def _finish(self) -> list[tuple[TrialSpec, TrialResult]]:
        if self._queue:
            specs, prune = self._queue.popleft()
            previous = single_threaded()
            try:
                results = run_unit_and_store(specs, self.store, prune)
            finally:
                restore_threads(previous)
            return list(zip(specs, results))
        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        specs = self._futures.pop(future)
        return list(zip(specs, future.result()))
