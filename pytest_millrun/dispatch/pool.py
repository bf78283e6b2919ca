"""Runs in the parent: a run's jobs through an executor or a process pool of our own.

The workers' side is :mod:`pytest_millrun.dispatch.pool_worker`; this module holds
the parent's: submitting, gathering in plan order, and a prompt, clean stop on
Ctrl-C or SIGTERM (the workers' kernels are stopped, partial outputs kept).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed, wait
from pathlib import Path
from typing import Any

from pytest_millrun.core.data import ExecutionInterrupted, ExecutionResult
from pytest_millrun.core.interrupts import sigterm_as_interrupt
from pytest_millrun.dispatch.gathering import Gathered
from pytest_millrun.dispatch.jobs import Job, RunOptions, interrupted_result, run_job
from pytest_millrun.execution.execute import kernels_ahead

#: How long interrupted jobs get to save their partial outputs before workers are stopped.
_GRACE_SECONDS = 5.0


def run_jobs(
    jobs: Sequence[Job],
    options: RunOptions,
    executor: Executor | None,
    on_result: Callable[[ExecutionResult], None] | None = None,
) -> list[ExecutionResult]:
    """Run the jobs, in order of the plan in the returned list whatever order they finish in."""
    from pytest_millrun.dispatch.pool_worker import run_job_in_worker

    gathered = Gathered(len(jobs), on_result)
    futures: dict[Future[ExecutionResult], int] = {}
    started_at = time.time()
    try:
        with sigterm_as_interrupt():
            if executor is None:
                with kernels_ahead(options.kernel_start):
                    for index, job in enumerate(jobs):
                        _gather(gathered, index, functools.partial(run_job, job, options))
            else:
                for index, job in enumerate(jobs):
                    futures[executor.submit(run_job_in_worker, job, options)] = index
                for future in as_completed(futures):
                    _gather(gathered, futures[future], future.result)
    except KeyboardInterrupt:
        if executor is not None:
            _stop(executor, futures, gathered.done, jobs, started_at)
        raise gathered.interrupted() from None
    return gathered.ordered()


def _gather(gathered: Gathered, index: int, result: Callable[[], ExecutionResult]) -> None:
    """One job's result into ``gathered``; an interrupted job's partial one, then the stop."""
    try:
        gathered.add(index, result())
    except ExecutionInterrupted as exc:
        gathered.keep(index, exc.result)
        raise


def run_in_pool(
    jobs: Sequence[Job],
    options: RunOptions,
    workers: int,
    on_result: Callable[[ExecutionResult], None] | None = None,
) -> list[ExecutionResult]:
    """:func:`run_jobs` in a process pool of at most ``workers`` processes, never more than jobs."""
    with (
        sigterm_as_interrupt(),  # also while the pool starts and shuts down
        process_pool(max(1, min(workers, len(jobs))), options.kernel_start) as pool,
    ):
        return run_jobs(jobs, options, pool, on_result)


@contextlib.contextmanager
def process_pool(workers: int, kernel_start: str = "auto") -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers come from a ``forkserver``, not from a fork of this process.

    Why not fork: this process runs threads (the kernel reaper, spare-kernel starts),
    and a fork copies any lock another thread holds, which can deadlock a worker
    (Python 3.12+ warns about it, and 3.14 no longer forks by default).  Why not
    spawn: every worker would import the kernel stack itself (about 0.35 s of CPU
    each); the forkserver imports it once
    (:data:`~pytest_millrun.dispatch.pool_worker.PRELOAD`) and forks workers from a
    single-threaded process.  Workers start on demand, so never more than there are jobs.
    """
    from pytest_millrun.dispatch import pool_worker
    from pytest_millrun.execution.kernel_threads import KERNELS_AT_ONCE, kernels_at_once

    at_once = workers * kernels_at_once(os.environ)  # a pool in each xdist worker: all of them
    if sys.platform != "win32":
        multiprocessing.forkserver.set_forkserver_preload(list(pool_worker.PRELOAD))
    levels = {
        name: logging.getLogger(name).level
        for name in ("papermill", "traitlets", "nbclient", "asyncio")
    }
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_PoolContext() if sys.platform != "win32" else None,
        initializer=pool_worker.initialize,
        initargs=(kernel_start, {**os.environ, KERNELS_AT_ONCE: str(at_once)}, levels),
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(
    executor: Executor,
    futures: Mapping[Future[ExecutionResult], int],
    done: dict[int, ExecutionResult],
    jobs: Sequence[Job],
    started_at: float,
) -> None:
    """Cancel what has not started, stop the running jobs and the workers, account for every job.

    Workers get SIGINT: a running job stops its notebook, saves the partial output
    and reports itself interrupted; an idle worker waits for the pool's shutdown
    message and exits.  Workers still alive when the grace period ends get SIGTERM,
    then SIGKILL.  A job whose result was lost but whose output was written during
    this run is reported interrupted from that output.
    """
    from pytest_millrun.dispatch.pool_worker import NotStarted

    deadline = time.monotonic() + _GRACE_SECONDS
    # shutdown() forgets the worker processes, so take hold of them first
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            os.kill(process.pid, signal.SIGINT)
    # shutdown() cancels the queued futures a moment later, in the pool's thread, and a future
    # cancelled that way is never "notified": wait() would sit out its timeout for it
    while (running := [f for f in futures if not f.done()]) and time.monotonic() < deadline:
        wait(running, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
    for future, index in futures.items():
        if index in done or not future.done() or future.cancelled():
            continue
        error = future.exception()
        if error is None:
            done[index] = future.result()
        elif isinstance(error, ExecutionInterrupted):
            done[index] = error.result
        elif isinstance(error, NotStarted):
            continue
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(Exception):
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
                if process.is_alive():
                    process.kill()
    for index, job in enumerate(jobs):
        if index not in done and _written_since(job.output, started_at):
            done[index] = interrupted_result(job)


def _written_since(path: Path, started_at: float) -> bool:
    try:
        return path.stat().st_mtime >= started_at
    except OSError:
        return False


if sys.platform != "win32":  # no forkserver on Windows: Python's default (spawn) there

    class _PoolProcess(multiprocessing.context.ForkServerProcess):
        """A pool worker started without re-running the caller's ``__main__``.

        multiprocessing re-imports the main script in every worker it does not fork
        (and runs it, unless it is guarded by ``if __name__ == "__main__":``).  The
        workers only ever run :mod:`pytest_millrun` functions on plain data, so they
        are told there is no main module: an unguarded script works as it did with fork.
        (Only while a worker starts, in the thread submitting jobs, does ``__main__``
        name a stand-in.)
        """

        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                return multiprocessing.context.ForkServerProcess._Popen(process_obj)
            finally:
                if main is not None:
                    sys.modules["__main__"] = main

    class _PoolContext(multiprocessing.context.ForkServerContext):
        Process = _PoolProcess
