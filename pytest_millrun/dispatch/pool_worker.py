"""Runs in each process-pool worker of ``execute_run``/``millrun``: set-up, jobs, a prompt stop.

The parent starts workers through a ``forkserver`` (see
:func:`pytest_millrun.dispatch.pool.process_pool`), so a worker begins as a copy of a
small single-threaded server, not of the parent: :func:`initialize` gives it the
parent's environment and log levels as they are now.

Stopping: the parent sends SIGINT to every worker (a terminal's Ctrl-C does the
same to the whole process group).  The first signal raises KeyboardInterrupt in
a running job, which stops its kernel, saves the partial output and returns the
job's interrupted result; later signals are ignored so they cannot break into
that clean-up, and a job taken after that is refused (:class:`NotStarted`).  An
idle worker waits for the pool's shutdown message and exits normally.  SIGTERM
stops a running job the same way, and ends an idle worker (or one already
stopping: the parent's last resort after its grace period) at once.  Every exit
path stops this worker's fork template, spare kernel and any kernel still
running, and removes their folders.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.util
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pytest_millrun.core.data import ExecutionInterrupted, ExecutionResult
from pytest_millrun.execution.execute import kernels_ahead
from pytest_millrun.execution.kernels import kill_leftover_kernels

if TYPE_CHECKING:
    from pytest_millrun.dispatch.jobs import Job, RunOptions

#: What the forkserver imports once, so that no worker pays for these imports itself.
PRELOAD = (
    "papermill",
    "papermill.engines",
    "nbclient",
    "jupyter_client.manager",
    "pytest_millrun.execution.execute",
    "pytest_millrun.execution.engine",
    "pytest_millrun.forkserver",
    __name__,
)

#: Is this process a pool worker (initialized), is a job running, has a stop been asked for,
#: is the exit clean-up under way.
_state = {"worker": False, "running": False, "stopping": False, "cleaning": False}

#: What this worker keeps open for its whole life (its spare kernel, in fork mode).
_life = contextlib.ExitStack()


class NotStarted(Exception):
    """A job this worker took after it was asked to stop; it never ran."""


def initialize(
    kernel_start: str, environ: Mapping[str, str], log_levels: Mapping[str, int]
) -> None:
    """Make this worker behave as a child of the parent as it is now, and arm the stop.

    The forkserver was started with the environment of its own start (perhaps an
    earlier run's); notebooks must see the parent's current one.
    """
    os.environ.clear()
    os.environ.update(environ)
    tempfile.tempdir = None  # recomputed from TMPDIR
    for name, level in log_levels.items():
        logging.getLogger(name).setLevel(level)
    _state["worker"] = True
    _arm()
    _life.enter_context(kernels_ahead(kernel_start))
    # multiprocessing ends its workers with os._exit after its own finalizers, never atexit
    multiprocessing.util.Finalize(None, _exit_cleanup, exitpriority=0)


def _arm() -> None:
    """Our handlers, armed again after every job in case a library replaced them."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def _on_signal(signum: int, frame: object) -> None:
    if _state["cleaning"]:
        # The clean-up this worker is in already ends in its exit.  Started again from the
        # handler, it would wait for the lock of a template request the interrupted one
        # holds, forever: a worker left behind, its template a zombie (seen after a
        # Ctrl-C reached the whole group and the parent's SIGTERM followed).
        return
    first = not _state["stopping"]
    _state["stopping"] = True
    if _state["running"] and first:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        _exit_cleanup()
        os._exit(128 + signum)
    # Another SIGINT (Ctrl-C reaches the whole group, then the parent sends its own) would
    # break into the clean-up the first one started; an idle worker waits for the pool's
    # shutdown message, sent once the running jobs have reported.


def _exit_cleanup() -> None:
    """Stop this worker's spare kernel, fork template and any kernel left; remove their folders."""
    if _state["cleaning"]:
        return
    _state["cleaning"] = True
    with contextlib.suppress(Exception):
        _life.close()
    forkserver = sys.modules.get("pytest_millrun.forkserver")
    if forkserver is not None:
        with contextlib.suppress(Exception):
            forkserver.shutdown_templates()
    kill_leftover_kernels()


def run_job_in_worker(job: Job, options: RunOptions) -> ExecutionResult:
    """:func:`~pytest_millrun.dispatch.jobs.run_job` in a worker: refused once stopping, stopped
    on a signal.

    Raises :class:`ExecutionInterrupted` (with the job's interrupted result) when a
    signal stopped it, so the parent stops the run too if it has not already.
    """
    from pytest_millrun.dispatch.jobs import interrupted_result, run_job

    if not _state["worker"]:  # an executor the caller brought: its workers are its own
        return run_job(job, options)
    if _state["stopping"]:
        raise NotStarted(job.variation_id)
    _state["running"] = True
    try:
        return run_job(job, options)
    except ExecutionInterrupted:
        _state["stopping"] = True
        raise
    except KeyboardInterrupt:  # the signal reached the job outside execute_notebook's try
        _state["stopping"] = True
        raise ExecutionInterrupted(interrupted_result(job)) from None
    finally:
        _state["running"] = False
        _arm()
