"""Run trials as Ray tasks, on a cluster or on a local Ray instance, and store each as it arrives.

The interface is `optimlab.lab.executor.BaseExecutor`'s (``submit`` / ``wait_one`` /
``pending`` / ``is_done`` / ``close``, a context manager), so `run_comparison` drives this
executor or the local process pool without knowing which.

- **Where**: ``ray.init(address=ADDR)`` when an address is given (``HOST:6379`` of a cluster
  started with ``ray start --head``); otherwise a local Ray instance with ``workers`` CPUs. If
  Ray is already initialized in this process (a notebook, a test), that session is used and left
  running on `close`.
- **What a task does**: one unit of work — one trial, or with ``population="auto"`` one
  population of trials trained as one batched model (`optimlab.lab.population`) — with one
  torch and one numba thread (``num_cpus=1`` per
  task). The data sets this process generated (MNIST-1D) are put in Ray's object store once and
  handed to every task, so no worker regenerates them; so is the text of every problem file
  (``--problem path.py:factory``) the command read, so no node needs the file. The task *returns* the
  `optimlab.lab.trial.TrialResult` of each of its trials: workers need not share this
  machine's filesystem.
- **Storage**: this process (the driver) writes each result into the SQLite store the moment
  it arrives, so a killed comparison keeps everything that arrived and resumes as a local run.
- **Failures**: a trial's own exception is already a ``failed`` result (`train` catches it). A
  worker process that dies (segfault, OOM kill, ``os._exit``, a lost node) is retried by Ray up
  to ``retries`` times (``max_retries``); after that the trial is stored as ``failed`` with
  Ray's reason — never lost, and the comparison goes on.

Ray is imported only here, and only when this executor is created; without it,
`RayUnavailable` says how to install it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Callable
from typing import Any

from optimlab.lab.executor import BaseExecutor, Pruning, run_unit, single_threaded
from optimlab.lab.store import ResultStore
from optimlab.lab.trial import TrialResult, TrialSpec
from optimlab.problems import data, registry

INSTALL_HINT = "pip install 'optimlab[ray]'"
DEFAULT_RETRIES = 2


class RayUnavailable(ImportError):
    """Ray is not installed (the ``ray`` extra)."""


def import_ray() -> Any:
    """The ``ray`` module, or `RayUnavailable` with the install command."""
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable(f"the Ray executor needs Ray ({error}); {INSTALL_HINT}") from None
    return ray


def ray_unit(
    specs: list[TrialSpec], cache: dict[str, Any], sources: dict[str, str], prune: Pruning
) -> list[TrialResult]:
    """The Ray task: one trial or one population (`optimlab.lab.executor.run_unit`) in a Ray
    worker process (Ray reuses the process for the next). `cache` (the generated data sets) and
    `sources` (the problem files the command read) arrive from the object store; handing them
    over costs microseconds."""
    single_threaded()
    data.import_cache(cache)
    registry.import_sources(sources)
    return run_unit(specs, prune)


def failure_reason(error: BaseException, attempts: int, task_error: bool) -> str:
    """The stored reason of a trial Ray could not finish: Ray's error type and its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    if task_error:  # an exception outside train() (e.g. optimlab missing on a node)
        return f"the Ray task raised: {detail}"
    return f"{detail} (Ray ran the trial {attempts} time(s))"


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """ConnectionError unless something accepts connections at a ``HOST:PORT`` address (Ray
    itself would retry an unreachable cluster for minutes). Other forms (``auto``,
    ``ray://…``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"nothing accepts connections at {address} ({error.strerror or error}); is "
            f"`ray start --head --port={port}` running on {host}?"
        ) from None


class RayExecutor(BaseExecutor):
    """Trials as Ray tasks; the driver (this process) stores each result as it arrives.

    ``address``: a running cluster (``HOST:6379``, or ``"auto"``); None starts a local Ray
    instance with ``workers`` CPUs unless Ray is already initialized. ``retries``: how often
    Ray reruns a trial whose worker process died before it is stored as ``failed``.
    """

    def __init__(
        self,
        store: ResultStore,
        workers: int,
        address: str | None = None,
        retries: int = DEFAULT_RETRIES,
        population: str = "off",
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries}; allowed: an integer >= 0")
        self._ray = import_ray()
        super().__init__(store, population, on_fallback)
        self.workers = max(1, int(workers))
        self.address = address
        self.retries = int(retries)
        self._owns_ray = False
        self._remote: Any = None
        self._cache_ref: Any = None
        self._sources_ref: Any = None
        self._refs: dict[Any, list[TrialSpec]] = {}
        self._slots = self.workers

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) Ray and ship the data sets; done by the first `submit` too."""
        if self._remote is not None:
            return
        ray = self._ray
        if not ray.is_initialized():
            if self.address:
                check_reachable(self.address)
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                # "local": a new instance even if `ray start` left one (or its address file)
                ray.init(
                    address="local",
                    num_cpus=self.workers,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
            self._owns_ray = True
        self._cache_ref = ray.put(data.export_cache())
        self._sources_ref = ray.put(registry.export_sources())
        self._remote = ray.remote(ray_unit).options(num_cpus=1, max_retries=self.retries)
        self._slots = max(1, math.floor(ray.cluster_resources().get("CPU", self.workers)))

    def close(self) -> None:
        ray = self._ray
        for ref in self._refs:  # dropped trials: do not leave them running on a cluster
            with contextlib.suppress(Exception):  # already finished, or the cluster is gone
                ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
        self._remote = None

    @property
    def slots(self) -> int:
        """CPUs of the Ray cluster when it was joined (each task takes one)."""
        self.start()
        return self._slots

    # -- trials -------------------------------------------------------------------------------
    def _start(self, specs: list[TrialSpec], prune: Pruning) -> None:
        self.start()
        self._refs[self._remote.remote(specs, self._cache_ref, self._sources_ref, prune)] = specs

    def _finish(self) -> list[tuple[TrialSpec, TrialResult]]:
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        ref = ready[0]
        specs = self._refs.pop(ref)
        try:
            results = ray.get(ref)
        except ray.exceptions.RayError as error:  # e.g. the worker died `retries + 1` times
            task_error = isinstance(error, ray.exceptions.RayTaskError)
            reason = failure_reason(error, self.retries + 1, task_error)
            results = [TrialResult("failed", {}, reason=reason) for _ in specs]
        for spec, result in zip(specs, results):
            self.store.put(spec, result)
        return list(zip(specs, results))
