"""``execute_run``: every notebook of a folder times every parameter variation.

The plan (which notebook, which variation, which output file) is pure and is
made and checked in full before anything runs: a typo in a papermill keyword,
two variations writing one file or an output that would replace an input
notebook fail here, not halfway through a long run.  The jobs then go through
any :class:`concurrent.futures.Executor`: none (in this process), a process
pool over all pairs at once, or one the caller brings.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .discovery import (
    MillrunParameterWarning,
    NotebookError,
    absolute,
    check_parameters,
    discover_notebooks,
    read_notebook_json,
)
from .execute import (
    ExecutionInterrupted,
    ExecutionResult,
    Failure,
    OverwriteError,
    Status,
    check_output_target,
    execute_notebook,
    kernels_ahead,
)
from .failures import API_OPTION_NAMES, OptionNames
from .interrupts import sigterm_as_interrupt
from .kernels import KernelStart
from .naming import check_output_folder, mirrored_folder, name_variations, safe_output_path
from .params import BulkParams, Variation
from .recording import parse_names
from .stale import handle_stale_outputs
from .suite import MillrunSuiteWarning, Suite, pick_components, resolve_suite

#: How long interrupted jobs get to save their partial outputs before workers are stopped.
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Job:
    """One (notebook, variation) pair and where its output goes."""

    notebook: Path
    variation: Variation
    variation_id: str
    output: Path


@dataclass(frozen=True)
class RunOptions:
    """What every job of a run shares; picklable, so it reaches pool workers intact."""

    kernel_name: str | None = None
    cell_timeout: float | None = None
    notebook_timeout: float | None = None
    kernel_start: KernelStart = "auto"
    preload: tuple[str, ...] = ()
    record: tuple[str, ...] = ()
    papermill_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: How the front end spells the options a failure's advice names.
    option_names: OptionNames = API_OPTION_NAMES


class RunFailedError(Exception):
    """Raised after the whole run when any variation failed; carries every result."""

    def __init__(self, results: list[ExecutionResult]) -> None:
        self.results = results
        self.failures = [r for r in results if not r.passed]
        lines = [f"{len(self.failures)} of {len(results)} notebook runs failed:"]
        for r in self.failures:
            headline = r.error.headline if r.error else r.status
            lines.append(f"  {r.notebook.name} [{r.variation_id}]: {headline} -> {r.output}")
        super().__init__("\n".join(lines))


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run; ``results`` holds what finished (and was cut short)."""

    def __init__(self, results: list[ExecutionResult], pending: int) -> None:
        super().__init__(f"Interrupted with {pending} notebook runs not finished")
        self.results = results
        self.pending = pending


def plan_run(
    notebook_dir_or_file: str | Path,
    variations: Sequence[Variation] | Suite,
    *,
    output_dir: str | Path | None = None,
    prepend: Sequence[str] = (),
    append: Sequence[str] = (),
    recursive: bool = False,
    exclude_glob_pattern: str | None = None,
    include_glob_pattern: str | None = None,
    strict_params: bool = False,
) -> list[Job]:
    """Every job of a run, in a deterministic order, with collisions refused.

    With a :class:`Suite` each notebook gets its own section's variations and
    components; ``prepend``/``append`` win over the suite's where not empty.
    """
    target = Path(notebook_dir_or_file)
    out = Path(output_dir) if output_dir is not None else None
    notebooks = discover_notebooks(
        target,
        recursive=recursive,
        include_glob_pattern=include_glob_pattern,
        exclude_glob_pattern=exclude_glob_pattern,
        output_dirs=[out] if out is not None and out.resolve() != target.resolve() else [],
    )
    if not notebooks:
        raise FileNotFoundError(
            f"No notebooks found in {target} (pattern {include_glob_pattern or '*.ipynb'}"
            f"{', recursively' if recursive else ''}). Check the path and the glob patterns, "
            f"or pass --recursive for notebooks in subfolders."
        )
    base = target if target.is_dir() else target.parent
    jobs: list[Job] = []
    writable: set[Path] = set()
    used_globs: list[str | None] = []
    for notebook in map(absolute, notebooks):
        own: Sequence[Variation]
        own_prepend, own_append = prepend, append
        if isinstance(variations, Suite):
            section = variations.section_for(notebook)
            used_globs.append(section.glob)
            own = section.variations
            own_prepend = pick_components(prepend, section.prepend)
            own_append = pick_components(append, section.append)
        else:
            own = variations
        keys = [key for variation in own for key in variation]
        try:
            data = read_notebook_json(notebook)
        except NotebookError:
            pass  # fails as its own job, with the same message, and the others still run
        else:
            warning = check_parameters(
                notebook,
                data,
                keys,
                strict=strict_params,
                strict_flag="strict_params=True (--strict-params)",
            )
            if warning:
                warnings.warn(MillrunParameterWarning(warning), stacklevel=3)
        if out is None:
            folder_root, folder = notebook.parent, Path()
        else:
            folder_root, folder = out, mirrored_folder(notebook, base)
        if folder_root / folder not in writable:
            check_output_folder(folder_root / folder, "output_dir= or --output-dir")
            writable.add(folder_root / folder)
        names = name_variations(notebook.stem, own, own_prepend, own_append)
        for name, variation in zip(names, own, strict=False):
            output = safe_output_path(folder_root, folder, name.filename)
            jobs.append(Job(notebook, variation, name.id, output))
    _refuse_collisions(jobs)
    if isinstance(variations, Suite) and variations.is_suite:
        for _, message in variations.unmatched_globs(used_globs):
            warnings.warn(MillrunSuiteWarning(message), stacklevel=3)
    return jobs


def planned_outputs(jobs: Iterable[Job]) -> list[tuple[Path, Path]]:
    """(notebook, output) of every job, as :mod:`pytest_millrun.stale` takes them."""
    return [(job.notebook, job.output) for job in jobs]


def _refuse_collisions(jobs: Iterable[Job]) -> None:
    inputs = {job.notebook.resolve() for job in jobs}
    owners: dict[Path, Job] = {}
    for job in jobs:
        if job.output in inputs:
            raise ValueError(
                f"{job.notebook.name} [{job.variation_id}] would write its output over the "
                f"input notebook {job.output}. Choose an output_dir or other components."
            )
        try:
            check_output_target(job.notebook, job.output)
        except OverwriteError as exc:
            raise ValueError(str(exc)) from None
        other = owners.setdefault(job.output, job)
        if other is not job:
            raise ValueError(
                f"{other.notebook.name} [{other.variation_id}] and {job.notebook.name} "
                f"[{job.variation_id}] would both write {job.output}. Add a prepend/append "
                f"component that tells them apart."
            )


def check_papermill_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse, before anything runs, a keyword papermill or nbclient would not use."""
    import papermill
    from nbclient import NotebookClient

    accepted = set(inspect.signature(papermill.execute_notebook).parameters)
    accepted |= set(NotebookClient.class_trait_names()) | {"execution_timeout"}
    accepted -= {"input_path", "output_path", "parameters", "engine_kwargs", "nb", "km"}
    managed = {"kernel_manager_class", "resources"}
    for name in kwargs:
        if name in managed:
            raise TypeError(
                f"execute_run sets papermill's {name!r} itself (private kernel sockets, the "
                f"notebook's folder as working directory); it cannot be passed."
            )
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise TypeError(
                f"{name!r} is not an argument of papermill.execute_notebook or of nbclient's "
                f"NotebookClient, so it would be ignored.{hint}"
            )


def execute_run(
    notebook_dir_or_file: str | Path,
    bulk_params: BulkParams | Mapping[str, Any] | str | Path,
    output_dir: str | Path | None = None,
    output_prepend_components: Sequence[str] | None = None,
    output_append_components: Sequence[str] | None = None,
    recursive: bool = False,
    exclude_glob_pattern: str | None = None,
    include_glob_pattern: str | None = None,
    use_multiprocessing: bool = False,
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    dask: Any = None,
    notebook_timeout: float | None = None,
    strict_params: bool = False,
    kernel_start: KernelStart = "auto",
    preload: Sequence[str] = (),
    record: Sequence[str] = (),
    snapshots: str | Path | None = None,
    snapshot_update: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    on_result: Callable[[ExecutionResult], None] | None = None,
    clean_output: bool = False,
    **kwargs: Any,
) -> list[ExecutionResult]:
    """Run every notebook with every variation; return one result per pair.

    ``bulk_params`` is a list of dicts, a dict of equal-length lists, a suite
    dict (its globs relative to the notebook folder) or the path of a JSON or
    YAML file in any of these forms (its globs relative to the file's folder).
    Every pair is attempted.  When any failed, :class:`RunFailedError` is
    raised after all work is done, listing every failure and carrying all
    results.  ``kwargs`` go to ``papermill.execute_notebook`` (``kernel_name``,
    ``execution_timeout``, ``log_output``, nbclient options ...).  With
    ``use_multiprocessing`` all pairs share one process pool of ``workers``
    processes (default: the CPU count); ``executor`` replaces that pool with
    any ``concurrent.futures.Executor``.  ``dask`` runs them on a Dask cluster:
    ``"local"`` (``workers`` processes), a scheduler address or a ``Client``,
    as does ``executor=client.get_executor()``.  ``kernel_start`` (``auto``, ``fork``,
    ``spawn``) and ``preload`` choose how kernels start; ``notebook_timeout``
    limits a whole notebook and ``strict_params`` refuses undeclared parameters.
    ``clean_output`` removes, before the run, outputs of these notebooks that
    earlier runs wrote beside this run's and this run does not write (only
    files carrying millrun's output marker).
    ``record`` names variables read after each notebook's last cell into
    ``ExecutionResult.recorded``, with its scrapbook scraps; write the table with
    :func:`write_results`.  ``snapshots`` names a folder of snapshots the
    recorded values are compared with (``rtol``/``atol``, see
    :mod:`pytest_millrun.snapshots`); a difference raises
    :class:`~pytest_millrun.snapshots.SnapshotMismatchError` with the table,
    and ``snapshot_update`` writes them instead.
    """
    target = Path(notebook_dir_or_file)
    variations = resolve_suite(bulk_params, target if target.is_dir() else target.parent)
    check_papermill_kwargs(kwargs)
    if snapshots is not None or snapshot_update:
        from .snapshots import tolerance_of

        if snapshots is None:
            raise ValueError("snapshot_update=True needs snapshots= (the folder of the snapshots).")
        tolerance = tolerance_of(rtol, atol)  # a bad one is refused before anything runs
    papermill_kwargs = dict(kwargs)
    options = RunOptions(
        kernel_name=papermill_kwargs.pop("kernel_name", None),
        cell_timeout=papermill_kwargs.pop("execution_timeout", None),
        notebook_timeout=notebook_timeout,
        kernel_start=kernel_start,
        preload=tuple(preload),
        record=parse_names(record, "record"),
        papermill_kwargs=papermill_kwargs,
    )
    jobs = plan_run(
        notebook_dir_or_file,
        variations,
        output_dir=output_dir,
        prepend=list(output_prepend_components or ()),
        append=list(output_append_components or ()),
        recursive=recursive,
        exclude_glob_pattern=exclude_glob_pattern,
        include_glob_pattern=include_glob_pattern,
        strict_params=strict_params,
    )
    if clean_output:
        stale = handle_stale_outputs(planned_outputs(jobs), clean=True)
        for error in stale.errors:
            warnings.warn(error, stacklevel=2)
    from .cluster import client_of, run_on_cluster

    dask = dask if dask is not None else client_of(executor)
    if dask is not None:
        results = run_on_cluster(dask, workers or os.cpu_count() or 1, jobs, options, on_result)
    elif executor is not None:
        results = run_jobs(jobs, options, executor, on_result)
    elif use_multiprocessing:
        results = run_in_pool(jobs, options, workers or os.cpu_count() or 1, on_result)
    else:
        results = run_jobs(jobs, options, None, on_result)
    if snapshots is not None:
        from .snapshots import snapshot_check

        snapshot_check(results, snapshots, target, snapshot_update, tolerance)
    if any(not r.passed for r in results):
        raise RunFailedError(results)
    return results


def run_job(job: Job, options: RunOptions) -> ExecutionResult:
    """Run one job; module-level so process pools can pickle it."""
    return execute_notebook(
        job.notebook,
        job.output,
        job.variation,
        variation_id=job.variation_id,
        kernel_name=options.kernel_name,
        cell_timeout=options.cell_timeout,
        notebook_timeout=options.notebook_timeout,
        kernel_start=options.kernel_start,
        preload=options.preload,
        option_names=options.option_names,
        record=options.record,
        **options.papermill_kwargs,
    )


def run_jobs(
    jobs: Sequence[Job],
    options: RunOptions,
    executor: Executor | None,
    on_result: Callable[[ExecutionResult], None] | None = None,
) -> list[ExecutionResult]:
    """Run the jobs, in order of the plan in the returned list whatever order they finish in."""
    from .poolworker import run_job_in_worker

    done: dict[int, ExecutionResult] = {}
    futures: dict[Future[ExecutionResult], int] = {}
    started_at = time.time()

    def record(index: int, result: ExecutionResult) -> None:
        done[index] = result
        if on_result is not None:
            on_result(result)

    try:
        with sigterm_as_interrupt():
            if executor is None:
                with kernels_ahead(options.kernel_start):
                    for index, job in enumerate(jobs):
                        try:
                            record(index, run_job(job, options))
                        except ExecutionInterrupted as exc:
                            done[index] = exc.result
                            raise
            else:
                for index, job in enumerate(jobs):
                    futures[executor.submit(run_job_in_worker, job, options)] = index
                for future in as_completed(futures):
                    try:
                        record(futures[future], future.result())
                    except ExecutionInterrupted as exc:
                        done[futures[future]] = exc.result
                        raise
    except KeyboardInterrupt:
        if executor is not None:
            _stop(executor, futures, done, jobs, started_at)
        ordered = [done[i] for i in sorted(done)]
        raise RunInterrupted(ordered, len(jobs) - len(ordered)) from None
    return [done[i] for i in sorted(done)]


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


@contextlib.contextmanager
def process_pool(workers: int, kernel_start: str = "auto") -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers come from a ``forkserver``, not from a fork of this process.

    Why not fork: this process runs threads (the kernel reaper, spare-kernel starts),
    and a fork copies any lock another thread holds, which can deadlock a worker
    (Python 3.12+ warns about it, and 3.14 no longer forks by default).  Why not
    spawn: every worker would import the kernel stack itself (about 0.35 s of CPU
    each); the forkserver imports it once (:data:`poolworker.PRELOAD`) and forks
    workers from a single-threaded process.  Workers start on demand, so never
    more than there are jobs.
    """
    from . import poolworker

    if sys.platform != "win32":
        multiprocessing.forkserver.set_forkserver_preload(list(poolworker.PRELOAD))
    levels = {
        name: logging.getLogger(name).level
        for name in ("papermill", "traitlets", "nbclient", "asyncio")
    }
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_PoolContext() if sys.platform != "win32" else None,
        initializer=poolworker.initialize,
        initargs=(kernel_start, dict(os.environ), levels),
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
    from .poolworker import NotStarted

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


def interrupted_result(job: Job) -> ExecutionResult:
    return job_result(
        job,
        "interrupted",
        Failure("interrupted", "Interrupted by a signal; the partial output is saved."),
    )


def job_result(job: Job, status: Status, failure: Failure) -> ExecutionResult:
    """The result of a job that ended without an execution of its own to report it.

    Why one place: a job cut short before its kernel ran, or failed by the
    machinery around it (a Dask task that died, a notebook a worker cannot see),
    must still be reported like any run: its output if one was saved, no time.
    """
    return ExecutionResult(
        notebook=job.notebook,
        variation_id=job.variation_id,
        parameters=dict(job.variation),
        output=job.output if job.output.exists() else None,
        status=status,
        duration=0.0,
        error=failure,
    )
