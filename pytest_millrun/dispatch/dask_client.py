"""Running a planned run's jobs on a Dask cluster: the client side, shared by the CLI and the API.

Why Dask and not a scheduler of our own: ``distributed`` already places tasks,
retries those whose worker died, and is what the scientific Python world runs
its clusters with.  Each job is one task (:func:`~pytest_millrun.dispatch.dask_worker.
run_job_on_worker`); workers that see the client's files run it at the client's
paths, the others get the files it needs with it and send its output back
(:mod:`pytest_millrun.dispatch.shipping`).

``distributed`` is imported only here and in :mod:`pytest_millrun.dispatch.dask_worker`,
and only when a run asks for Dask, so plain ``pytest`` and ``millrun`` never
pay for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from pytest_millrun.core.data import (
    ExecutionInterrupted,
    ExecutionResult,
    Failure,
    RunInterrupted,
)
from pytest_millrun.core.interrupts import sigterm_as_interrupt
from pytest_millrun.dispatch.cluster_errors import INSTALL_HINT, ClusterError
from pytest_millrun.dispatch.gathering import Gathered
from pytest_millrun.dispatch.jobs import Job, RunOptions, interrupted_result, job_result
from pytest_millrun.dispatch.ship_manifest import ShipSettings
from pytest_millrun.dispatch.worker_checks import check_workers, kernel_names
from pytest_millrun.execution.execute import resolve_kernel_start
from pytest_millrun.execution.kernels import ForkFallbackWarning

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["INSTALL_HINT", "ClusterError", "Submitted", "cluster_environments", "run_on_cluster"]

#: How long stopped notebooks get to save their partial outputs after Ctrl-C.
_GRACE_SECONDS = 5.0
#: How long to wait for a scheduler to answer, and for a first worker to join it.
_CONNECT_SECONDS = 10.0
_WORKERS_SECONDS = 60.0



def client_of(executor: Executor | None) -> Client | None:
    """The Dask client behind ``client.get_executor()``, so such an executor runs as ``dask=``."""
    if executor is None or not type(executor).__module__.startswith("distributed."):
        return None
    client = getattr(executor, "_client", None)
    return client


@contextlib.contextmanager
def connect(dask: str | Client, workers: int) -> Iterator[Client]:
    """A client for ``dask``: ``"local"`` (a cluster of ``workers`` processes, closed after),
    a scheduler address (left running; only our client is closed), or a client (left open)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError(
            f"Running on Dask needs the distributed package. {INSTALL_HINT}"
        ) from exc
    if isinstance(dask, Client):
        yield dask
        return
    if not isinstance(dask, str) or not dask:
        raise ClusterError(
            f"dask= takes 'local', a scheduler address such as tcp://host:8786, or a "
            f"distributed.Client, not {dask!r}."
        )
    with contextlib.ExitStack() as stack:
        if dask == "local":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster, set_as_default=False))
        else:
            try:
                client = Client(dask, timeout=_CONNECT_SECONDS, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(
                    f"Cannot reach the Dask scheduler at {dask} ({exc}). Check the address "
                    f"(tcp://host:8786) and that `dask scheduler` runs there, or use --dask "
                    f"local (dask='local') for a cluster on this machine."
                ) from None
            stack.enter_context(client)
        yield client


@contextlib.contextmanager
def cluster_environments(
    dask: str | Client | None, jobs: Sequence[Job], options: RunOptions
) -> Iterator[None]:
    """Cache keys made meanwhile hold the environments of the workers at ``dask``.

    Why: what ran on a worker is stamped with the worker's environment; the check
    before the next run must compare the same, not the client's.  A ``local``
    cluster's workers are this interpreter, so nothing is asked; nor without Dask.
    Raises :class:`ClusterError` when a worker lacks what the jobs need.
    """
    from pytest_millrun.cache.keys import environments_of

    if dask is None or (isinstance(dask, str) and dask == "local"):
        yield
        return
    with connect(dask, 1) as client:
        found = check_workers(client, kernel_names(jobs, options), environments=True)
    with environments_of(found):
        yield


def run_on_cluster(
    dask: str | Client,
    workers: int,
    jobs: Sequence[Job],
    options: RunOptions,
    on_result: Callable[[ExecutionResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    ship: ShipSettings | None = None,
) -> list[ExecutionResult]:
    """Run the jobs on Dask; results in plan order.  ``on_start`` hears the cluster's threads.

    Raises :class:`~pytest_millrun.core.data.RunInterrupted` on Ctrl-C, after the
    running notebooks saved their partial outputs, with the pending tasks
    cancelled and the cluster usable (or closed, for ``local``).
    """
    results: list[ExecutionResult] | None = None
    try:
        with sigterm_as_interrupt(), open_cluster(dask, workers, on_start) as client:
            results = _run(client, jobs, options, on_result, ship)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # while the cluster started (nothing ran) or closed (all did)
        if results is None:
            raise RunInterrupted([], len(jobs)) from None
    assert results is not None
    return results


@contextlib.contextmanager
def open_cluster(
    dask: str | Client, workers: int, on_start: Callable[[int], None] | None = None
) -> Iterator[Client]:
    """A client of a cluster ready for millrun's tasks: the worker plugin registered, a worker
    there; ``on_start`` hears its threads.  Each worker drops its spare kernel at the end."""
    from pytest_millrun.dispatch.dask_worker import PLUGIN_NAME, MillrunWorkerPlugin, end_run

    with connect(dask, workers) as client:
        client.register_plugin(MillrunWorkerPlugin(local=dask == "local"), PLUGIN_NAME)
        try:
            client.wait_for_workers(1, timeout=_WORKERS_SECONDS)
        except TimeoutError:
            raise ClusterError(
                f"The Dask scheduler at {client.scheduler.address} has no workers "
                f"(waited {_WORKERS_SECONDS:g} s). Start some with `dask worker "
                f"{client.scheduler.address}`."
            ) from None
        if on_start is not None:
            on_start(sum(client.nthreads().values()))
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.run(end_run, on_error="ignore")


def _run(
    client: Client,
    jobs: Sequence[Job],
    options: RunOptions,
    on_result: Callable[[ExecutionResult], None] | None,
    ship: ShipSettings | None = None,
) -> list[ExecutionResult]:
    from distributed import as_completed

    submitted = Submitted(client, jobs, options, ship)
    gathered = Gathered(len(jobs), on_result)
    try:
        for future in as_completed(submitted.futures, loop=client.loop):
            result = submitted.collect(future)
            if result is not None:
                gathered.add(submitted.index_of[future.key], result)
    except KeyboardInterrupt:
        submitted.stop(gathered.done)
        raise gathered.interrupted() from None
    return gathered.ordered()


class Submitted:
    """A run's jobs, all submitted to the cluster at once; each job's result taken when wanted.

    Why apart from :func:`run_on_cluster`: the pytest plugin submits the selected
    items' jobs once collection is over and has each item wait for its own result,
    in pytest's order, while the CLI and the API take them as they finish.
    """

    def __init__(
        self,
        client: Client,
        jobs: Sequence[Job],
        options: RunOptions,
        ship: ShipSettings | None = None,
    ) -> None:
        from pytest_millrun.dispatch.dask_worker import run_job_on_worker
        from pytest_millrun.dispatch.ship_manifest import ShipLimitError
        from pytest_millrun.dispatch.shipping import prepare

        # "auto" means the client's choice ($MILLRUN_KERNEL_START here), not each worker's
        options = dataclasses.replace(
            options, kernel_start=resolve_kernel_start(options.kernel_start)
        )
        self.client = client
        check_workers(client, kernel_names(jobs, options))
        try:
            self.jobs, self.shipment = prepare(client, jobs, ship or ShipSettings())
        except ShipLimitError as exc:
            raise ClusterError(str(exc)) from None
        self.run_id = uuid.uuid4().hex[:12]
        keys = [f"millrun-{self.run_id}-{index}" for index in range(len(jobs))]
        if self.shipment is None:
            self.futures: list[Future] = client.map(
                run_job_on_worker, self.jobs, options=options, run_id=self.run_id, key=keys,
                pure=False,
            )  # fmt: skip
        else:
            shipment = self.shipment
            self.futures = [
                client.submit(
                    run_job_on_worker, job, options=options, run_id=self.run_id, key=key,
                    pure=False, files=shipment.files_of[index],
                    import_roots=shipment.import_roots_of[index], shared=shipment.shared,
                )
                for index, (job, key) in enumerate(zip(self.jobs, keys, strict=True))
            ]  # fmt: skip
        self.index_of = {future.key: index for index, future in enumerate(self.futures)}
        self.stopped = False
        self._noticed = False

    def collect(self, future: Future) -> ExecutionResult | None:
        """A finished task's result (None: it never ran, its run being stopped); a task Dask
        could not complete is the job's failure, saying why."""
        index = self.index_of[future.key]
        if future.status != "finished":
            error = future.exception() if future.status == "error" else None
            return _task_failure(self.jobs[index], error)
        result, notice, output = future.result()
        if notice and not self._noticed:
            self._noticed = True
            warnings.warn(notice, ForkFallbackWarning, stacklevel=1)
        if result is not None and self.shipment is not None:
            _bring_home(self.jobs[index], result, output)
        return result  # type: ignore[no-any-return]

    def result(self, index: int) -> ExecutionResult:
        """Job ``index``'s result, once its task ends.

        On Ctrl-C the whole run stops (:meth:`stop`) and this job's partial result, if it
        ran, comes as :class:`~pytest_millrun.core.data.ExecutionInterrupted`.
        """
        future = self.futures[index]
        ended = threading.Event()
        future.add_done_callback(lambda _: ended.set())
        try:
            while not ended.wait(1.0):  # Ctrl-C reaches the main thread between waits
                pass
        except KeyboardInterrupt:
            done: dict[int, ExecutionResult] = {}
            self.stop(done)
            if index in done:
                raise ExecutionInterrupted(done[index]) from None
            raise
        result = self.collect(future)
        if result is None:  # a task of a run stopped meanwhile never ran
            return interrupted_result(self.jobs[index])
        return result

    def all_done(self) -> bool:
        return all(future.done() for future in self.futures)

    def stop(self, done: dict[int, ExecutionResult] | None = None) -> None:
        """Stop the run's notebooks on the workers, cancel its queued tasks; ``done`` gets
        the results that were saved (the partial ones too).  Once; a no-op after."""
        if self.stopped:
            return
        self.stopped = True
        _stop(self.client, self.run_id, self.futures, {} if done is None else done, self.collect)


def _stop(
    client: Client,
    run_id: str,
    futures: Sequence[Future],
    done: dict[int, ExecutionResult],
    collect: Callable[[Future], ExecutionResult | None],
) -> None:
    """Stop this run's notebooks on the workers, cancel its queued tasks, keep what was saved.

    A worker cannot stop a task's thread, so the stop is ours: every worker
    kills the kernels of this run's running jobs (which then save their
    partial outputs and return) and returns at once from any of its tasks that
    starts later.  Tasks not yet on a worker are cancelled.
    """
    from pytest_millrun.dispatch.dask_worker import stop_run

    index_of = {future.key: index for index, future in enumerate(futures)}
    with contextlib.suppress(Exception):
        client.run(stop_run, run_id, on_error="ignore")
    processing: set[Any] = set()
    with contextlib.suppress(Exception):
        processing = {key for keys in client.processing().values() for key in keys}
    waiting = [f for f in futures if not f.done() and f.key in processing]
    client.cancel([f for f in futures if not f.done() and f.key not in processing])
    deadline = time.monotonic() + _GRACE_SECONDS
    while any(not f.done() for f in waiting) and time.monotonic() < deadline:
        time.sleep(0.05)
    for future in futures:
        index = index_of[future.key]
        if index in done or future.status != "finished":
            continue
        with contextlib.suppress(Exception):
            result = collect(future)
            if result is not None:
                done[index] = result
    client.cancel([f for f in futures if not f.done()])


def _bring_home(job: Job, result: ExecutionResult, output: bytes | None) -> None:
    """Write a shipped job's output at the client's path; a failure that wrote none leaves
    no earlier pass's cache entry behind (as a failure at home does)."""
    from pytest_millrun.dispatch.shipping import write_output

    if output is not None:
        write_output(job.output, output)
    elif not result.passed and job.output_url is None and job.output.exists():
        from pytest_millrun.cache.verdicts import unstamp

        unstamp(job.output)


def _task_failure(job: Job, exc: BaseException | None) -> ExecutionResult:
    """A task Dask could not complete: the job fails with the reason, it is never lost."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        worker = getattr(exc.last_worker, "address", exc.last_worker)
        message = (
            f"The Dask worker running it died, and so did the workers that retried it "
            f"(the last one {worker}); the scheduler gave up after {exc.allowed_failures} "
            f"retries (distributed.scheduler.allowed-failures). A worker dies when it runs out "
            f"of memory or is killed; the notebook's partial output, if any, is kept."
        )
        failure = Failure("worker-died", message, ename="KilledWorker", evalue="worker died")
    else:
        name = type(exc).__name__ if exc is not None else "CancelledError"
        message = (
            f"The Dask task running it failed: {name}: {exc}. Check that the workers have "
            f"pytest-millrun installed, in the same version as the client."
        )
        failure = Failure("error", message, ename=name, evalue=str(exc))
    return job_result(job, "failed", failure)
