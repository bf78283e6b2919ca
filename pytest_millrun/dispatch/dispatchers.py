"""Runs in the parent: where a run's jobs go - this process, a process pool, an executor, Dask.

One protocol and one table (as pytest-xdist keeps one ``Scheduling`` protocol and
one mode-to-class table): the CLI and the API say what they were given, and
:func:`make_dispatcher` picks the one dispatcher that runs the jobs; neither front
end knows how any of them works.  Every dispatcher returns the results in plan
order, tells ``on_result`` as each job ends, and raises
:class:`~pytest_millrun.core.data.RunInterrupted` on Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pytest_millrun.core.data import ExecutionResult
from pytest_millrun.dispatch.jobs import Job, RunOptions
from pytest_millrun.dispatch.ship_manifest import ShipSettings

OnResult = Callable[[ExecutionResult], None]
Jobs = Sequence[Job]
Results = list[ExecutionResult]
Mode = Literal["local", "pool", "executor", "dask"]


class Dispatcher(Protocol):
    """Runs a run's jobs somewhere; results in plan order."""

    def run(self, jobs: Jobs, options: RunOptions, on_result: OnResult | None) -> Results: ...


@dataclass(frozen=True)
class OnExecutor:
    """Any ``concurrent.futures.Executor`` the caller brings; with none, one job after another
    in this process (the next kernel started ahead, in fork mode)."""

    executor: Executor | None = None

    def run(self, jobs: Jobs, options: RunOptions, on_result: OnResult | None) -> Results:
        from pytest_millrun.dispatch.pool import run_jobs

        return run_jobs(jobs, options, self.executor, on_result)


@dataclass(frozen=True)
class ProcessPool:
    """A process pool of our own, of at most ``workers`` processes (never more than jobs)."""

    workers: int

    def run(self, jobs: Jobs, options: RunOptions, on_result: OnResult | None) -> Results:
        from pytest_millrun.dispatch.pool import run_in_pool

        return run_in_pool(jobs, options, self.workers, on_result)


@dataclass(frozen=True)
class OnDask:
    """A Dask cluster: ``"local"`` (``workers`` processes), a scheduler address or a client.

    ``on_start`` hears how many jobs the cluster runs at once, once it is up.
    """

    dask: Any
    workers: int
    on_start: Callable[[int], None] | None = None
    #: How files go to workers that do not see this machine's.
    ship: ShipSettings | None = None

    def run(self, jobs: Jobs, options: RunOptions, on_result: OnResult | None) -> Results:
        from pytest_millrun.dispatch.dask_client import run_on_cluster

        return run_on_cluster(
            self.dask, self.workers, jobs, options, on_result, self.on_start, self.ship
        )


def dispatch_mode(*, parallel: bool, executor: Executor | None, dask: Any) -> Mode:
    """Dask before an executor (a Dask client's executor is Dask), before a pool, before none."""
    from pytest_millrun.dispatch.dask_client import client_of

    if dask is not None or client_of(executor) is not None:
        return "dask"
    if executor is not None:
        return "executor"
    return "pool" if parallel else "local"


def make_dispatcher(
    *,
    workers: int,
    parallel: bool = False,
    executor: Executor | None = None,
    dask: Any = None,
    on_start: Callable[[int], None] | None = None,
    ship: ShipSettings | None = None,
) -> Dispatcher:
    """The dispatcher for what a front end was given; ``workers`` sizes a pool or local cluster."""
    from pytest_millrun.dispatch.dask_client import client_of

    mode = dispatch_mode(parallel=parallel, executor=executor, dask=dask)
    cluster = dask if dask is not None else client_of(executor)
    table: dict[Mode, Callable[[], Dispatcher]] = {
        "local": OnExecutor,
        "pool": lambda: ProcessPool(workers),
        "executor": lambda: OnExecutor(executor),
        "dask": lambda: OnDask(cluster, workers, on_start, ship),
    }
    return table[mode]()
