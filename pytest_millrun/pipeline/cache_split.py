"""The jobs of a run parted into those the cache answers for and those to dispatch.

Why its own module, used by the API and the CLI: the check must happen before
dispatch, so that no job is sent to a pool or a Dask worker only to be skipped
and a run whose jobs are all cached starts no pool, cluster or kernel.  (The
plugin checks each item where it runs: :mod:`pytest_millrun.plugin.cache_glue`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from pytest_millrun.cache import keys, verdicts
from pytest_millrun.cache.verdicts import CacheSettings
from pytest_millrun.core.data import ExecutionResult, RunInterrupted
from pytest_millrun.core.discovery import absolute
from pytest_millrun.dispatch.jobs import Job, RunOptions


class CacheSplit:
    """The jobs of a run parted, before any is dispatched, into cached results and jobs to run.

    Why before dispatch: no job goes to a pool or a Dask worker only to be skipped,
    and a run whose jobs are all cached starts no pool, cluster or kernel.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        settings: CacheSettings,
        options: RunOptions,
        *,
        warn: bool = False,
    ) -> None:
        self.jobs = list(jobs)
        self.cached: dict[int, ExecutionResult] = {}
        self.to_run: list[Job] = list(jobs)
        self.unmatched: list[str] = []
        if not settings.enabled:
            return
        keys.forget()
        inputs = verdicts.RunInputs(settings)
        self.to_run = []
        urls = [job.output_url for job in self.jobs if job.output_url is not None]
        if urls and not settings.force:  # on object storage: every sidecar fetched at once
            from pytest_millrun.cache.sidecars import prefetch

            with contextlib.suppress(OSError):  # each check then says what it cannot read
                prefetch(urls, settings.storage_options)
        for index, job in enumerate(self.jobs):
            verdict, key = verdicts.verdict_for(
                job.notebook, job.variation, job.output, inputs, settings,
                kernel_name=options.kernel_name, record=job.record,
                papermill_kwargs=options.papermill_kwargs, more_inputs=job.cache_inputs,
                more_ignore=job.cache_ignore, url=job.output_url,
            )  # fmt: skip
            if verdict.hit:
                self.cached[index] = verdicts.cached_result(
                    job.notebook, job.variation_id, job.variation, job.output_name, verdict,
                    settings.coverage,
                )  # fmt: skip
            else:
                self.to_run.append(
                    dataclasses.replace(job, cache_key=key, cache_reasons=verdict.reasons)
                )
        self.unmatched = [*inputs.unmatched, *inputs.unmatched_more]
        if self.unmatched and warn:
            message = keys.unmatched_message(
                self.unmatched, inputs.base, "cache_inputs (or a suite's inputs)"
            )
            warnings.warn(keys.CacheInputWarning(message), stacklevel=3)

    def run(
        self,
        runner: Callable[[Sequence[Job], Callable[[ExecutionResult], None] | None], Any],
        on_result: Callable[[ExecutionResult], None] | None = None,
        order: Callable[[list[Job]], list[Job]] | None = None,
    ) -> list[ExecutionResult]:
        """``runner(jobs, on_result)`` over the jobs to run; all results in plan order.

        ``on_result`` hears the cached results first, then each run's as it ends.
        ``order`` says in which order the jobs are handed to ``runner`` (the results
        still come back in plan order).
        """
        if on_result is not None:
            for index in sorted(self.cached):
                on_result(self.cached[index])
        if not self.to_run:
            return self.merge([])
        todo = order(list(self.to_run)) if order is not None else self.to_run
        reordered = todo != self.to_run
        try:
            ran: list[ExecutionResult] = runner(todo, on_result)
        except RunInterrupted as exc:
            raise RunInterrupted(self.merge(exc.results, reordered), exc.pending) from None
        return self.merge(ran, reordered)

    def merge(
        self, ran: Sequence[ExecutionResult], reordered: bool = False
    ) -> list[ExecutionResult]:
        """Cached and run results in plan order; a job that has no result is left out."""
        if not self.cached and not reordered:
            return list(ran)
        by_job = {(absolute(r.notebook), r.variation_id): r for r in ran}
        merged: list[ExecutionResult] = []
        for index, job in enumerate(self.jobs):
            found = self.cached.get(index) or by_job.get((absolute(job.notebook), job.variation_id))
            if found is not None:
                merged.append(found)
        return merged
