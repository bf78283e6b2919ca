"""Runs inside a Dask worker process: the task that executes one job, and the worker plugin.

Why a module of its own: Dask pickles tasks by reference, so what a worker
runs must be importable there, and it must not drag the client's front ends
(click, tqdm) into every worker.  A worker runs its tasks in threads (several
at once with ``--nthreads``), never in its main thread, so nothing here may
rely on signals: a stop request arrives as a call (:func:`stop_run`, sent with
``Client.run``) and ends the running notebooks by killing their kernels, after
which each execution saves its partial output as it would after Ctrl-C.

Fork mode needs nothing special in threads: the template is a separate,
single-threaded process that the worker talks to over a socket under a lock.
What the worker must do is stop it, and the spare kernel, when it closes,
because a worker process started by a nanny leaves without running ``atexit``:
that is :class:`MillrunWorkerPlugin`'s ``teardown``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from pytest_millrun.core.data import ExecutionInterrupted, ExecutionResult, Failure
from pytest_millrun.execution.execute import kernels_ahead, resolve_kernel_start
from pytest_millrun.execution.kernels import forget_stop, fork_broken, stop_execution

if TYPE_CHECKING:
    from pytest_millrun.dispatch.jobs import Job, RunOptions

#: Name under which the plugin is registered; registering it again is a no-op.
PLUGIN_NAME = "pytest-millrun"

#: How many stopped run ids a worker remembers (a task of a stopped run that starts late
#: returns at once); a long-lived cluster sees many runs, so the oldest are forgotten.
_REMEMBERED_STOPS = 64

_lock = threading.Lock()
_life = contextlib.ExitStack()
_state: dict[str, Any] = {"spares": False, "fork_notice_sent": False}
#: Thread ids of the jobs running here, by run id.
_running: dict[str, set[int]] = {}
_stopped: list[str] = []


class MillrunWorkerPlugin(WorkerPlugin):  # type: ignore[misc]
    """Stops this worker's spare kernel and fork templates when the worker closes.

    ``local`` is for a cluster millrun started itself: its worker processes
    share the terminal's process group, and the client, not the terminal's
    Ctrl-C, decides how they stop; and their log lines would only repeat, in
    the user's terminal, what the client's report says.
    """

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self, local: bool = False) -> None:
        self.local = local

    def setup(self, worker: Any) -> None:
        if not self.local:
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in ("papermill", "traitlets", "nbclient", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def teardown(self, worker: Any) -> None:
        close_worker()


def close_worker() -> None:
    """Discard the spare kernel and stop the fork templates of this process."""
    with _lock:
        _state["spares"] = False
    _life.close()
    forkserver = sys.modules.get("pytest_millrun.forkserver")
    if forkserver is not None:
        forkserver.shutdown_templates()


def run_job_on_worker(
    job: Job,
    options: RunOptions,
    run_id: str,
    files: Mapping[str, bytes] | None = None,
    import_roots: Sequence[str] = (),
    shared: frozenset[str] = frozenset(),
) -> tuple[Any, str | None, bytes | None]:
    """One job, on a Dask worker: ``(result, notice, output)``.

    The result is ``None`` for a job of a run already stopped (it never ran).
    ``notice`` is the first fork-fallback message of this worker, for the client
    to show once: a warning raised here would only reach the worker's log.
    ``files``: the job's files, shipped because some workers do not see the client's;
    unless this worker is one of the ``shared`` that do, the job runs in a private
    folder holding them and ``output`` is its executed notebook, for the client to write.
    """
    from pytest_millrun.dispatch.jobs import run_job
    from pytest_millrun.dispatch.ship_worker import run_shipped

    with _lock:
        if run_id in _stopped:
            return None, None, None
        _running.setdefault(run_id, set()).add(threading.get_ident())
    try:
        job = _with_own_environment(job)
        away = files is not None and _address() not in shared
        if not away and not job.notebook.exists():
            return _unseen(job), None, None
        if resolve_kernel_start(options.kernel_start) == "fork":
            _keep_spares()
        if away:
            assert files is not None
            result, output = run_shipped(job, options, files, import_roots)
            return result, _fork_notice(), output
        try:
            result = run_job(job, options)
        except ExecutionInterrupted as exc:
            result = exc.result
        return result, _fork_notice(), None
    finally:
        with _lock:
            forget_stop(threading.get_ident())  # the thread's next job runs normally
            mine = _running.get(run_id, set())
            mine.discard(threading.get_ident())
            if not mine:
                _running.pop(run_id, None)


def worker_facts(kernel_names: Sequence[str], environments: bool = False) -> dict[str, Any]:
    """What the client checks before a run (called with ``Client.run``): this worker's
    pytest-millrun and Python versions, its kernels, and with ``environments`` (the cache
    is on) each named kernel's environment, read afresh (something may have been
    installed since; reading them costs a scan of the installed distributions).
    """
    import platform

    from jupyter_client.kernelspec import KernelSpecManager

    from pytest_millrun.cache import keys

    installed = sorted(KernelSpecManager().find_kernel_specs())
    if environments:
        keys.forget()
    return {
        "millrun": keys.millrun_version(),
        "python": platform.python_version(),
        "installed": installed,
        "environments": {
            name: keys.kernel_environment(name)
            for name in kernel_names
            if environments and name in installed
        },
    }


def _with_own_environment(job: Job) -> Job:
    """The job, its cache key holding this worker's environment of its kernel, not the
    client's: the output then says what it really ran with."""
    key = job.cache_key
    if key is None:
        return job
    import dataclasses

    from pytest_millrun.cache.keys import kernel_environment

    environment, distributions = kernel_environment(str(key.parts["kernel"]["name"]))
    parts = {**key.parts, "environment": environment}
    key = dataclasses.replace(key, parts=parts, distributions=distributions)
    return dataclasses.replace(job, cache_key=key)


def _address() -> str:
    with contextlib.suppress(Exception):
        from distributed import get_worker

        return str(get_worker().address)
    return ""


def stop_run(run_id: str) -> int:
    """Called with ``Client.run`` on Ctrl-C: stop this run's notebooks; later tasks return at once.

    Returns how many running notebooks were stopped.  Other runs sharing the
    worker are untouched.
    """
    with _lock:  # held throughout, so no thread moves on to another run's job meanwhile
        if run_id not in _stopped:
            _stopped.append(run_id)
            del _stopped[:-_REMEMBERED_STOPS]
        return sum(stop_execution(thread) for thread in sorted(_running.get(run_id, ())))


def end_run() -> None:
    """Called with ``Client.run`` when a run ends: no spare kernel waits on an idle worker.

    The template stays (it is cheap and the next run's first kernel needs it);
    the worker plugin stops it when the worker closes.  Another run sharing
    the worker only loses its head start on one kernel.
    """
    forkserver = sys.modules.get("pytest_millrun.forkserver")
    if forkserver is not None:
        forkserver.discard_spare()


def _keep_spares() -> None:
    """From the first fork-mode job on, start each next kernel ahead, for the worker's life."""
    with _lock:
        if _state["spares"]:
            return
        _state["spares"] = True
        _life.enter_context(kernels_ahead("fork"))


def _fork_notice() -> str | None:
    with _lock:
        if not fork_broken.is_set() or _state["fork_notice_sent"]:
            return None
        _state["fork_notice_sent"] = True
    return (
        f"Fork kernel start is unavailable on Dask worker {worker_name()}; its kernels are "
        f"spawned the usual way instead, which is slower but otherwise the same."
    )


def worker_name() -> str:
    """The worker's address, host and pid, for messages the client shows."""
    address = "?"
    with contextlib.suppress(Exception):
        from distributed import get_worker

        address = str(get_worker().address)
    return f"{address} (host {socket.gethostname()}, pid {os.getpid()})"


def _unseen(job: Job) -> ExecutionResult:
    """A notebook this worker cannot see: fail the job at once, saying where and why."""
    folder = next((p for p in job.notebook.parents if p.exists()), Path("/"))
    message = (
        f"Dask worker {worker_name()} cannot see the notebook {job.notebook} (the nearest "
        f"folder it sees is {folder}), though every worker saw the run's files at the "
        f"client's paths when it started, so none were shipped with the tasks. A worker that "
        f"joined the cluster since, or a file system unmounted meanwhile? Run again: the "
        f"files are then shipped to the workers that do not see them."
    )
    from pytest_millrun.dispatch.jobs import job_result

    failure = Failure("error", message, ename="FileNotFoundError", evalue=str(job.notebook))
    return job_result(job, "failed", failure)
