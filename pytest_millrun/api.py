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
import multiprocessing.util
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    KernelStart,
    OverwriteError,
    check_output_target,
    execute_notebook,
    kernels_ahead,
)
from .failures import API_OPTION_NAMES, OptionNames
from .naming import check_output_folder, mirrored_folder, name_variations, safe_output_path
from .params import BulkParams, Variation
from .recording import parse_names
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
    notebook_timeout: float | None = None,
    strict_params: bool = False,
    kernel_start: KernelStart = "auto",
    preload: Sequence[str] = (),
    record: Sequence[str] = (),
    on_result: Callable[[ExecutionResult], None] | None = None,
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
    any ``concurrent.futures.Executor``.  ``kernel_start`` (``auto``, ``fork``,
    ``spawn``) and ``preload`` choose how kernels start; ``notebook_timeout``
    limits a whole notebook and ``strict_params`` refuses undeclared parameters.
    ``record`` names variables read after each notebook's last cell into
    ``ExecutionResult.recorded``, with its scrapbook scraps; write the table with
    :func:`write_results`.
    """
    target = Path(notebook_dir_or_file)
    variations = resolve_suite(bulk_params, target if target.is_dir() else target.parent)
    check_papermill_kwargs(kwargs)
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
    if executor is not None:
        results = run_jobs(jobs, options, executor, on_result)
    elif use_multiprocessing:
        with process_pool(workers or os.cpu_count() or 1, options.kernel_start) as pool:
            results = run_jobs(jobs, options, pool, on_result)
    else:
        results = run_jobs(jobs, options, None, on_result)
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
    done: dict[int, ExecutionResult] = {}
    futures: dict[Future[ExecutionResult], int] = {}
    started_at = time.time()

    def record(index: int, result: ExecutionResult) -> None:
        done[index] = result
        if on_result is not None:
            on_result(result)

    try:
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


#: Pool-worker state for a clean stop: is a job running, has SIGTERM arrived.
_worker_state = {"running": False, "terminating": False}


#: What a pool worker keeps open for its whole life (its spare kernel, in fork mode).
_worker_life = contextlib.ExitStack()


def _worker_init(kernel_start: str = "auto") -> None:
    """Pool workers leave Ctrl-C to the parent, which stops them with SIGTERM.

    SIGTERM during a job becomes KeyboardInterrupt, so the job saves its
    partial output and shuts its kernel down; the worker then exits instead
    of taking the next queued job.  An idle worker exits at once.  A worker
    runs job after job, so in fork mode it starts each next kernel ahead;
    the last one is discarded at its exit.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _worker_life.enter_context(kernels_ahead(kernel_start))
    # multiprocessing ends its workers with os._exit after its own finalizers, never atexit
    multiprocessing.util.Finalize(None, _worker_exit, exitpriority=0)


def _worker_exit() -> None:
    """Stop this worker's spare kernel and fork template, and remove their folders."""
    _worker_life.close()
    forkserver = sys.modules.get(f"{__package__}.forkserver")
    if forkserver is not None:
        forkserver.shutdown_templates()


def _on_sigterm(signum: int, frame: object) -> None:
    _worker_state["terminating"] = True
    if _worker_state["running"]:
        raise KeyboardInterrupt
    _worker_exit()
    os._exit(128 + signum)


def run_job_in_worker(job: Job, options: RunOptions) -> ExecutionResult:
    """:func:`run_job` for executor workers, honouring a stop request between jobs."""
    if _worker_state["terminating"]:
        _worker_exit()
        os._exit(128 + signal.SIGTERM)
    _worker_state["running"] = True
    try:
        return run_job(job, options)
    finally:
        _worker_state["running"] = False
        if _worker_state["terminating"]:
            _worker_exit()
            os._exit(128 + signal.SIGTERM)


@contextlib.contextmanager
def process_pool(workers: int, kernel_start: str = "auto") -> Any:
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_worker_init, initargs=(kernel_start,)
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
    """Cancel what has not started, stop the workers, and account for every job.

    Workers ignore SIGINT and turn SIGTERM into KeyboardInterrupt, so each
    running job saves its partial output and shuts its kernel down; workers
    that do not stop within a grace period are killed.  A job cut short is
    reported from the output it saved, since a stopped pool loses its result.
    """
    # shutdown() forgets the worker processes, so take hold of them first
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=_GRACE_SECONDS)
            if process.is_alive():
                process.kill()
    wait(futures, timeout=_GRACE_SECONDS)
    for future, index in futures.items():
        if index in done or not future.done() or future.cancelled():
            continue
        with contextlib.suppress(BaseException):
            done[index] = future.result()
    for index, job in enumerate(jobs):
        if index not in done and _written_since(job.output, started_at):
            done[index] = interrupted_result(job)


def _written_since(path: Path, started_at: float) -> bool:
    try:
        return path.stat().st_mtime >= started_at
    except OSError:
        return False


def interrupted_result(job: Job) -> ExecutionResult:
    return ExecutionResult(
        notebook=job.notebook,
        variation_id=job.variation_id,
        parameters=dict(job.variation),
        output=job.output,
        status="interrupted",
        duration=0.0,
        error=Failure("interrupted", "Interrupted by a signal; the partial output is saved."),
    )
