"""Notebooks as pytest collectors and their variations as test items.

As pytest's own ``doctest.py`` makes a non-Python file a ``pytest.File`` whose
children are ``pytest.Item`` s: :class:`NotebookFile` reads one notebook and yields
one :class:`NotebookItem` per variation, whose ``runtest`` runs a job and whose
``repr_failure`` is the failure's plain text.  The hooks (:mod:`.hooks`) import
this module only once the plugin is on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_millrun.core.discovery import (
    MillrunParameterWarning,
    NotebookError,
    ParameterNameError,
    UndeclaredParameterError,
    read_notebook,
)
from pytest_millrun.core.naming import OutputPathError
from pytest_millrun.core.params import ParamsError
from pytest_millrun.dispatch.jobs import Job, RunOptions
from pytest_millrun.plugin.marking import marks_for, says_collection_warnings
from pytest_millrun.plugin.state import (
    CELLS_PROPERTY,
    NOTES_SECTION,
    OUTPUT_PROPERTY,
    session_key,
)

if TYPE_CHECKING:
    from pytest_millrun.cache.keys import CacheKey
    from pytest_millrun.cache.verdicts import Verdict
    from pytest_millrun.execution.kernel_session import KernelSessionPart


class NotebookFile(pytest.File):
    """One notebook; its children are its variations."""

    def collect(self) -> Iterable[NotebookItem]:
        session = self.config.stash[session_key]
        try:
            data = read_notebook(self.path)
        except NotebookError as exc:
            raise self.CollectError(str(exc)) from None
        try:
            jobs, warning = session.plan_for(self.path, data)
        except UndeclaredParameterError as exc:
            if session.worker:
                # An xdist worker cannot refuse the run (a usage error there is an
                # INTERNALERROR): the notebook's own collection error says it instead.
                raise self.CollectError(str(exc)) from None
            session.strict_problems.append(str(exc))
            return
        except (ParamsError, ParameterNameError, OutputPathError, ValueError) as exc:
            raise self.CollectError(str(exc)) from None
        if warning and says_collection_warnings(self.config):
            # Named by the notebook's path as pytest shows paths, at line 0: a notebook has no
            # source line to quote (line 1 of its JSON is "{").
            where = os.path.relpath(self.path, self.config.invocation_params.dir)
            warnings.warn_explicit(
                MillrunParameterWarning(warning), MillrunParameterWarning, where, 0
            )
        #: every variation the notebook has, selected or not (snapshot checks count them)
        self.variation_count = len(jobs)
        for job in jobs:
            item_name = f"{self.path.stem}[{job.variation_id}]"
            item = NotebookItem.from_parent(
                self,
                name=item_name,
                # The id given as text, as the cache stores it: pytest 9 reads ids as
                # ``path::name[params]`` and would otherwise hold ours as the name
                # ``calc[1]`` without params, which --lf, --ff and --sw never match.
                nodeid=f"{self.nodeid}::{item_name}",
                job=job,
            )
            for mark in marks_for(session, self.path, job.variation, job.variation_id):
                item.add_marker(mark)
            yield item


class NotebookFailed(Exception):
    """Carries a failed result from ``runtest`` to ``repr_failure``."""

    def __init__(self, result: Any) -> None:
        super().__init__(result.error.headline if result.error else "failed")
        self.result = result


class NotebookItem(pytest.Item):
    """One variation of one notebook."""

    def __init__(self, *, job: Job, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: what runs: planned as the CLI and the API plan theirs
        self.job = job
        self.variation = job.variation
        self.variation_id = job.variation_id
        self.output = job.output
        self.record = job.record  # the variables this notebook records after its last cell
        self.result: Any = None  # the ExecutionResult, once run
        #: The item pytest runs after this one in this process (xdist knows it too), if any.
        self.following: pytest.Item | None = None
        #: The cache's verdict and key, once checked in this process (with the cache on).
        self.verdict: tuple[Verdict, CacheKey | None] | None = None

    def runtest(self) -> None:
        from pytest_millrun.dispatch.jobs import run_job

        session = self.config.stash[session_key]
        self.user_properties.append((OUTPUT_PROPERTY, self.output_name))
        job = self.job_to_run()
        if job is None:
            self._pass_from_cache()
            return
        if session.settings.cache_settings.enabled:
            from pytest_millrun.plugin.cache_glue import REASON_PROPERTY

            self.user_properties.append((REASON_PROPERTY, "; ".join(job.cache_reasons)))
        result = session.cluster_result(self)  # with --millrun-dask: submitted already
        if result is None:
            self._start_next_kernel_ahead()
            result = run_job(job, self._run_options())
        self.result = result
        if result.read_set:  # with the cache on
            from pytest_millrun.plugin.cache_glue import keep_read_set

            keep_read_set(self, result)
        if result.cell_seconds:
            import json

            self.user_properties.append((CELLS_PROPERTY, json.dumps(result.cell_seconds)))
        if result.kernel_report:
            _count_kernel_coverage(self, result.kernel_report)
            imports = result.kernel_report.get("imports")
            if imports is not None:
                import json

                from pytest_millrun.plugin.preload_memory import PRELOADS_PROPERTY

                self.user_properties.append((PRELOADS_PROPERTY, json.dumps(imports)))
        for note in result.notes:
            self.add_report_section("call", NOTES_SECTION, note)
        if not result.passed:
            raise NotebookFailed(result)

    @property
    def output_name(self) -> str:
        """Where the output goes, as reports name it: its path, or its URL on object storage."""
        return str(self.job.output_name)

    def _run_options(self) -> RunOptions:
        """The run's options, plus the preloads learned from the last runs, this item's kernel
        coverage when pytest-cov measures and where its progress goes when it is shown."""
        import dataclasses

        from pytest_millrun.plugin.coverage_glue import item_coverage
        from pytest_millrun.plugin.preload_memory import preload_options

        session = self.config.stash[session_key]
        run = session.settings
        item_coverage(self)  # first: it reads the run's coverage settings, which preloads heed
        options = preload_options(self.config, run.run_options(), run.preload)
        progress = session.progress_sink(self.nodeid)
        if progress is not None:
            options = dataclasses.replace(options, progress=progress)
        part = self.coverage_part(lines_back=False)
        if part is None:
            return options
        return dataclasses.replace(options, session_parts=(*options.session_parts, part))

    def coverage_part(self, *, lines_back: bool) -> Callable[[], KernelSessionPart] | None:
        """What measures this item's kernel when pytest-cov measures (None otherwise).

        ``lines_back``: the kernel sends its lines back in the result (a Dask worker,
        which may not reach pytest-cov's data file), written here by :meth:`runtest`.
        """
        import functools

        from pytest_millrun.plugin.coverage_glue import item_coverage

        settings = item_coverage(self)
        if settings is None:
            return None
        from pytest_millrun.core.learned_preloads import named_preloads
        from pytest_millrun.execution.coverage_part import CoveragePart

        run = self.config.stash[session_key].settings
        return functools.partial(
            CoveragePart, settings, keep_lines=run.cache_settings.enabled,
            preload=named_preloads(run.preload), lines_back=lines_back,
        )  # fmt: skip

    def cache_verdict(self) -> tuple[Verdict, CacheKey | None]:
        """The cache's verdict on this item and the key its pass records, checked once."""
        if self.verdict is None:
            from pytest_millrun.plugin.coverage_glue import item_coverage

            session = self.config.stash[session_key]
            self.verdict = session.verdict_for(self.job, item_coverage(self))
        return self.verdict

    def job_to_run(self) -> Job | None:
        """What runs for this item: None when the cache answers (``--millrun-cache`` and the
        earlier output still matches), else the job, with the cache's key and reasons."""
        import dataclasses

        if not self.config.stash[session_key].settings.cache_settings.enabled:
            return self.job
        verdict, key = self.cache_verdict()
        if verdict.hit:
            return None
        return dataclasses.replace(self.job, cache_key=key, cache_reasons=verdict.reasons)

    def _pass_from_cache(self) -> None:
        """The earlier output answers: the item passes with the result read back from it."""
        from pytest_millrun.cache.verdicts import cached_result
        from pytest_millrun.plugin.cache_glue import CACHED_PROPERTY, keep_read_set
        from pytest_millrun.plugin.coverage_glue import item_coverage

        verdict, _ = self.cache_verdict()
        self.result = cached_result(
            self.path, self.variation_id, self.variation, self.job.output_name, verdict,
            item_coverage(self),
        )  # fmt: skip
        self.user_properties.append((CACHED_PROPERTY, "true"))
        keep_read_set(self, self.result)

    def _start_next_kernel_ahead(self) -> None:
        """In fork mode, the next item's kernel starts while this item runs.

        The next item is known here (pytest and xdist hold one back), and so is
        its folder, the one thing its kernel's launch differs in: pytest's own
        variables (``PYTEST_CURRENT_TEST``) never reach a kernel (see
        :func:`pytest_millrun.execution.kernels.kernel_environment`).  After the
        last item, or before one the cache answers for, nothing is started.
        """
        from pytest_millrun.execution.execute import expect_next_execution

        session = self.config.stash[session_key]
        session.keep_kernels_ahead()
        following = self.following
        cached = session.settings.cache_settings.enabled and (
            isinstance(following, NotebookItem) and following.cache_verdict()[0].hit
        )
        if isinstance(following, NotebookItem) and not cached:
            expect_next_execution(following.path)
        else:
            expect_next_execution(None)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, NotebookFailed):
            from pytest_millrun.execution.failures import format_failure

            return format_failure(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # a line number (not None): pytest reports a skip mark at the item's location
        return self.path, 0, f"{self.path.name}[{self.variation_id}]"


def _count_kernel_coverage(item: NotebookItem, kernel_report: Any) -> None:
    """Write the lines a Dask worker's kernel sent back; warn what a kernel's coverage missed."""
    from pytest_millrun.coverage.kernel_reports import warn_once
    from pytest_millrun.execution.coverage_part import coverage_notes, write_returned_lines
    from pytest_millrun.plugin.coverage_glue import item_coverage

    settings = item_coverage(item)
    if settings is not None:
        write_returned_lines(kernel_report, settings)

    warn_once(coverage_notes(kernel_report))
