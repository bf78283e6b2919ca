"""Runs in the parent: one run of the ``millrun`` command and of ``execute_run``, config to results.

Why one module: the command and the API each resolve their own sources into a
:class:`~pytest_millrun.config.run_config.RunConfig` and show the outcome their own
way (a progress bar and exit status; results and exceptions), but between those
the run is the same: the plan (every job, checked in full before anything runs),
earlier runs' stale outputs, the cache verdict, dispatch, and the figure backend
while kernels draw.  The plugin plans each notebook with the same planning step and
checks the same verdict per item (:mod:`.planning`, :mod:`pytest_millrun.cache.verdicts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_millrun.config.run_config import RunConfig
from pytest_millrun.core.data import ExecutionResult
from pytest_millrun.core.storage import output_url, remove_staging, staging_folder
from pytest_millrun.core.suite_file import resolve_suite
from pytest_millrun.coverage.kernel_settings import KernelCoverage
from pytest_millrun.dispatch.dask_client import ClusterError, client_of, cluster_environments
from pytest_millrun.dispatch.dispatchers import Dispatcher, make_dispatcher
from pytest_millrun.dispatch.jobs import Job, RunOptions
from pytest_millrun.execution.coverage_part import (
    CoveragePart,
    coverage_notes,
    write_returned_lines,
)
from pytest_millrun.execution.execute import resolve_kernel_start
from pytest_millrun.pipeline.cache_split import CacheSplit
from pytest_millrun.pipeline.planning import plan_run, planned_outputs
from pytest_millrun.pipeline.preloading import outputs_records, with_learned_preloads
from pytest_millrun.pipeline.run_order import longest_first, outputs_durations
from pytest_millrun.pipeline.stale_outputs import (
    StaleOutputs,
    handle_stale_outputs,
    handle_stale_urls,
)

OnResult = Callable[[ExecutionResult], None]

# ClusterError: what :func:`run` raises when Dask is missing or its cluster cannot run the
# jobs; the command imports it from here, so it reaches no dispatch module of its own.
__all__ = ["ClusterError", "PlannedRun", "dispatcher_for", "plan", "run"]


@dataclass(frozen=True)
class PlannedRun:
    """A run planned and parted by the cache, before any job is dispatched."""

    config: RunConfig
    jobs: list[Job]
    #: Outputs of earlier runs this run does not write (removed with ``clean_output``).
    stale: StaleOutputs | None
    split: CacheSplit
    options: RunOptions
    #: With an output URL: the local folder the notebooks execute to before their upload.
    staging: Path | None = None
    #: The kernels' coverage settings when coverage measures this process (a part measures).
    coverage: KernelCoverage | None = None

    @property
    def to_run(self) -> list[Job]:
        return self.split.to_run


def plan(
    config: RunConfig,
    *,
    find_stale: bool = False,
    warn_unmatched: bool = False,
) -> PlannedRun:
    """Plan the whole run and part it into cached results and jobs to run.

    Raises the planning's errors (a bad params file, no notebook, colliding outputs,
    undeclared parameters in strict mode) before anything runs.  Stale outputs are
    looked for with ``find_stale`` or ``clean_output``, and removed with the latter.
    """
    assert config.notebook_dir_or_file is not None  # the command's and the API's first argument
    variations = config.suite or resolve_suite(config.params, config.base)
    staging = None
    if config.output_url is not None:  # made by the first output written, removed by run()
        staging = staging_folder()
    jobs = plan_run(dataclasses.replace(config, output_dir=staging) if staging else config,
                    variations)  # fmt: skip
    if staging is not None:
        assert config.output_url is not None
        jobs = [
            dataclasses.replace(job, output_url=output_url(
                config.output_url, job.output.relative_to(staging).as_posix()
            ))
            for job in jobs
        ]  # fmt: skip
    stale = None
    if (find_stale or config.clean_output) and staging is None:
        stale = handle_stale_outputs(planned_outputs(jobs), clean=config.clean_output)
    elif find_stale or config.clean_output:  # on object storage
        urls = [(job.notebook, job.output_url) for job in jobs if job.output_url is not None]
        stale = handle_stale_urls(
            urls, clean=config.clean_output, storage_options=config.storage_options
        )
    # "auto" is the parent's choice ($MILLRUN_KERNEL_START here), not each worker's
    options = dataclasses.replace(
        config.run_options(), kernel_start=resolve_kernel_start(config.kernel_start)
    )
    coverage = _kernel_coverage()
    if coverage is not None:
        keep = config.cache_settings.enabled
        part = functools.partial(
            CoveragePart, coverage, keep_lines=keep, preload=options.preload,
            lines_back=config.dask is not None,  # a worker may not reach the host's data file
        )  # fmt: skip
        options = dataclasses.replace(options, session_parts=(*options.session_parts, part))
    imported, unsafe = outputs_records(jobs) if staging is None else ([], {})
    options = with_learned_preloads(options, config.preload, imported, unsafe, coverage)
    cache_settings = dataclasses.replace(config.cache_settings, coverage=coverage)
    cluster = config.dask if config.dask is not None else client_of(config.executor)
    with cluster_environments(cluster if cache_settings.enabled else None, jobs, options):
        split = CacheSplit(jobs, cache_settings, options, warn=warn_unmatched)
    return PlannedRun(config, jobs, stale, split, options, staging, coverage)


def dispatcher_for(
    config: RunConfig, *, parallel: bool, on_start: Callable[[int], None] | None = None
) -> Dispatcher:
    """Where the jobs go: Dask, the caller's executor, a pool (``parallel``) or this process."""
    return make_dispatcher(
        workers=config.workers,
        parallel=parallel,
        executor=config.executor,
        dask=config.dask,
        on_start=on_start,
        ship=config.ship_settings,
    )


def run(
    planned: PlannedRun, dispatcher: Dispatcher, on_result: OnResult | None = None
) -> list[ExecutionResult]:
    """Every result in plan order; ``on_result`` hears the cached ones, then each run's as it ends.

    The jobs start longest first (by their outputs' last durations) unless the config's
    ``order`` is ``collection``.

    Raises :class:`~pytest_millrun.core.data.RunInterrupted` on Ctrl-C, with what finished.
    """
    with contextlib.ExitStack() as stack:
        if planned.staging is not None:
            stack.callback(remove_staging, planned.staging)
        if planned.config.figures is not None:
            from pytest_millrun.snapshots.figures import kernel_backend

            stack.enter_context(kernel_backend())
        if planned.coverage is not None:
            on_result = _counting_kernel_coverage(on_result, planned.coverage)
        return planned.split.run(
            lambda todo, hear: dispatcher.run(todo, planned.options, hear),
            on_result,
            order=None if planned.config.order == "collection" else _longest_first,
        )


def _longest_first(jobs: list[Job]) -> list[Job]:
    """The jobs whose outputs say they ran longest last time first (see :mod:`.run_order`)."""
    known = outputs_durations(job.output for job in jobs)
    return longest_first(jobs, known, key=lambda job: job.output)


def _kernel_coverage() -> KernelCoverage | None:
    """The kernels' coverage settings when coverage measures this process (``coverage run``
    of the command, or a measured program calling the API); never imports coverage."""
    from pytest_millrun.coverage.kernel_reports import warn_once
    from pytest_millrun.coverage.kernel_settings import (
        KernelCoverageError,
        kernel_coverage,
        measuring_coverage,
    )

    cov = measuring_coverage()
    if cov is None:
        return None
    try:
        return kernel_coverage(cov)
    except KernelCoverageError as exc:
        warn_once([str(exc)])
        return None


def _counting_kernel_coverage(on_result: OnResult | None, settings: KernelCoverage) -> OnResult:
    """``on_result``, first writing the lines a Dask worker's kernel sent back and warning
    (once a run per note) what a kernel's coverage missed."""
    from pytest_millrun.coverage.kernel_reports import warn_once

    def hear(result: ExecutionResult) -> None:
        write_returned_lines(result.kernel_report, settings)
        warn_once(coverage_notes(result.kernel_report))
        if on_result is not None:
            on_result(result)

    return hear
