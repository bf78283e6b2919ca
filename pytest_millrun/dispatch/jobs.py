"""A job: one (notebook, variation) pair with its output path, and how it is run.

Why its own module below the front ends: the process pool's workers and the Dask
workers unpickle :class:`Job` and :class:`RunOptions` and call :func:`run_job`;
they must import this and nothing of the API or the CLI that planned the run.
Why here and not in ``execution``: running a notebook knows nothing of the cache;
a job is where the two meet (the key is recorded in the output after a pass).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_millrun.cache.keys import CacheKey
from pytest_millrun.core import data
from pytest_millrun.core.data import ExecutionInterrupted, ExecutionResult, Failure
from pytest_millrun.core.params import Variation
from pytest_millrun.execution.execute import execute_notebook
from pytest_millrun.execution.kernel_session import KernelSessionPart
from pytest_millrun.execution.progress_sink import ProgressSink
from pytest_millrun.execution.read_recording import NOT_ASKED, PROBLEM, ReadsPart


@dataclass(frozen=True)
class Job:
    """One (notebook, variation) pair and where its output goes."""

    notebook: Path
    variation: Variation
    variation_id: str
    output: Path
    #: the variables this notebook records after its last cell (the one place that says so)
    record: tuple[str, ...] = ()
    #: With the cache on: the key its output records if it passes, and why it runs.
    cache_key: CacheKey | None = None
    cache_reasons: tuple[str, ...] = ()
    #: A suite section's own ``inputs`` (absolute globs), part of the cache key.
    cache_inputs: tuple[str, ...] = ()
    #: A suite section's own ``ignore`` (absolute globs): never inputs nor reads.
    cache_ignore: tuple[str, ...] = ()
    #: With an output dir on object storage: where ``output`` (a local file) is uploaded.
    output_url: str | None = None
    #: Kernel session parts of this job alone, besides the run's (a Dask job's coverage,
    #: whose context is its item's): picklable, as ``RunOptions.session_parts``.
    session_parts: tuple[Callable[[], KernelSessionPart], ...] = ()
    #: Record what the run reads though the cache does not ask (files are shipped to Dask
    #: workers): :class:`~pytest_millrun.cache.reads.ReadSettings` as JSON.
    record_reads: Mapping[str, Any] | None = None
    #: Set on a Dask worker without the client's files: the task's private folder, under
    #: which ``notebook`` and ``output`` lie at their client paths.
    moved_from: str = ""

    @property
    def output_name(self) -> Path | str:
        """The output as results name it: its path, or its URL (credentials hidden)."""
        if self.output_url is None:
            return self.output
        from pytest_millrun.core.storage import redacted

        return redacted(self.output_url)


@dataclass(frozen=True)
class RunOptions:
    """What every job of a run shares; picklable, so it reaches pool workers intact."""

    kernel_name: str | None = None
    cell_timeout: float | None = None
    notebook_timeout: float | None = None
    kernel_start: data.KernelStart = "auto"
    preload: tuple[str, ...] = ()
    #: Modules the notebooks imported in their last runs, which the fork template tries too.
    learned_preload: tuple[str, ...] = ()
    papermill_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: How the front end spells the options a failure's advice names.
    option_names: data.OptionNames = data.API_OPTION_NAMES
    #: What makes each execution's kernel session parts besides the built-in ones (picklable:
    #: a part class, or a ``functools.partial`` of one); see ``execute_notebook``.
    session_parts: tuple[Callable[[], KernelSessionPart], ...] = ()
    #: Who hears each execution's progress (picklable where it crosses processes: a
    #: :class:`~pytest_millrun.execution.progress_sink.ChannelSink`); None: nobody.
    progress: ProgressSink | None = None
    #: With outputs on object storage: fsspec's keywords for its filesystem (the API's
    #: ``storage_options``; credentials, never shown).
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)


def run_job(job: Job, options: RunOptions) -> ExecutionResult:
    """Run one job; module-level so process pools can pickle it.

    With the cache on, a pass records the job's key in its output, and any other
    end (a failure, an interrupt) removes an earlier key from it, so the output never
    answers for a run that did not pass.
    """
    try:
        result = _execute(job, options)
    except ExecutionInterrupted as exc:
        if job.cache_key is not None:
            _keep_cache_entry(job, job.cache_key, None)
        if job.output_url is not None:  # the partial output goes where the others do
            delivered = deliver(job, exc.result, options.storage_options)
            raise ExecutionInterrupted(delivered) from None
        raise
    _keep_read_set(job, result)
    if job.cache_key is not None:
        read_set = _keep_cache_entry(job, job.cache_key, result)
        if read_set:
            result = dataclasses.replace(result, read_set=read_set)
    if job.cache_reasons:
        result = dataclasses.replace(result, cache_reasons=job.cache_reasons)
    if job.output_url is None:
        return result
    return deliver(job, result, options.storage_options)


def deliver(
    job: Job, result: ExecutionResult, storage_options: Mapping[str, Any] | None = None
) -> ExecutionResult:
    """Upload the job's executed notebook to its URL, which the result then names.

    Where the job ran (this process, a pool worker, a Dask worker), so no output comes
    back through the parent.  The local file goes once uploaded; an upload that fails
    fails the job, saying why, with the local file kept where the message says.  With
    the cache on, the entry a warm run checks is kept beside the output (or removed).
    """
    from pytest_millrun.core.storage import redacted, upload

    assert job.output_url is not None
    if not job.output.exists():
        return dataclasses.replace(result, output=None)
    try:
        upload(job.output, job.output_url, storage_options)
    except OSError as exc:
        failure = Failure(
            "error", f"The output was executed but {exc}. It is kept at {job.output}.",
            ename=type(exc).__name__, evalue=str(exc),
        )  # fmt: skip
        return dataclasses.replace(result, status="failed", error=failure)
    if job.cache_key is not None:
        result = _publish_cache_entry(job, result, storage_options or {})
    job.output.unlink()
    return dataclasses.replace(result, output=redacted(job.output_url))  # shown everywhere


def _publish_cache_entry(
    job: Job, result: ExecutionResult, storage_options: Mapping[str, Any]
) -> ExecutionResult:
    """The uploaded output's cache entry kept beside it; a storage that refuses costs the
    next run a re-run (the output's version no longer matches), not this run its pass."""
    from pytest_millrun.cache import verdicts

    assert job.output_url is not None
    try:
        verdicts.publish(job.output, job.output_url, storage_options)
    except OSError as exc:
        note = f"Its cache entry was not kept, so the next run runs it again: {exc}."
        return dataclasses.replace(result, notes=(*result.notes, note))
    return result


def _execute(job: Job, options: RunOptions) -> ExecutionResult:
    """``execute_notebook`` with the job's own arguments and the run's shared options.

    The options' fields are ``execute_notebook``'s keywords by name (papermill's own
    ``papermill_kwargs`` go through as they are).
    """
    keywords = {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(options)
        if field.name not in ("papermill_kwargs", "storage_options")
    }
    keywords["session_parts"] = (*options.session_parts, *job.session_parts, *_job_parts(job))
    return execute_notebook(
        job.notebook, job.output, job.variation, variation_id=job.variation_id,
        record=job.record, **keywords, **options.papermill_kwargs,
    )  # fmt: skip


def _job_parts(job: Job) -> tuple[Callable[[], KernelSessionPart], ...]:
    """The session parts of this job alone: the read recorder, when the cache or shipping
    files to Dask workers uses what it records; nothing otherwise."""
    wanted = job.cache_key.reads if job.cache_key is not None else None
    if wanted is None:
        wanted = job.record_reads
    if wanted is None:
        return ()
    from pytest_millrun.cache.reads import ReadSettings

    settings = ReadSettings.from_json(wanted).kernel_settings()
    return (functools.partial(ReadsPart, settings),)


def _keep_read_set(job: Job, result: ExecutionResult) -> None:
    """Keep what the run read in its output, for the next run to ship (failed runs too)."""
    report = result.kernel_report.get(ReadsPart.name)
    if not isinstance(report, dict) or NOT_ASKED in report or PROBLEM in report:
        return
    from pytest_millrun.cache.read_sets import keep_read_set
    from pytest_millrun.cache.reads import home_path

    home = Path(home_path(str(job.notebook.parent.resolve()), job.moved_from))
    keep_read_set(job.output, report, home, job.moved_from)


def _keep_cache_entry(
    job: Job, key: CacheKey, result: ExecutionResult | None
) -> tuple[str, ...]:
    """Stamp a pass's output with its key and what it read; unstamp any other end.

    A pass whose reads cannot be vouched for (a file changed while it ran, a
    recorder that failed) keeps no key but says why, for the next run's ``-v``.
    A kernel of another language records no reads: its key is the declared inputs'.
    Returns the read set the key holds, as ``-vv`` lists it (empty without one).
    """
    from pytest_millrun.cache import verdicts

    if result is None or not result.passed:
        if job.output.exists():
            verdicts.unstamp(job.output)
        return ()
    if key.reads is None:
        verdicts.stamp(job.output, key)
        return ()
    report = result.kernel_report.get(ReadsPart.name)
    if isinstance(report, dict) and NOT_ASKED in report:
        verdicts.stamp(job.output, key)
        return ()
    from pytest_millrun.cache.reads import ReadSettings, describe, reads_part

    if not isinstance(report, dict):
        report = {PROBLEM: "the kernel sent no read record"}
    settings = ReadSettings.from_json(key.reads)
    folder = job.notebook.parent.resolve()
    part, reasons = reads_part(report, folder, settings, job.moved_from)
    if part is None:
        verdicts.stamp_unusable(job.output, reasons)
        return ()
    verdicts.stamp(job.output, key, part)
    return tuple(describe(part))


def interrupted_result(job: Job) -> ExecutionResult:
    return job_result(
        job,
        "interrupted",
        Failure("interrupted", "Interrupted by a signal; the partial output is saved."),
    )


def job_result(job: Job, status: data.Status, failure: Failure) -> ExecutionResult:
    """The result of a job that ended without an execution of its own to report it.

    Why one place: a job cut short before its kernel ran, or failed by the
    machinery around it (a Dask task that died, a notebook a worker cannot see),
    must still be reported like any run: its output if one was saved, no time.
    """
    return ExecutionResult.ended(
        job.notebook, job.variation_id, job.variation, job.output, status, 0.0, error=failure
    )
