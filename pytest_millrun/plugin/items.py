"""Notebooks as pytest collectors and their variations as test items.

As pytest's own ``doctest.py`` makes a non-Python file a ``pytest.File`` whose
children are ``pytest.Item`` s: :class:`NotebookFile` reads one notebook and yields
one :class:`NotebookItem` per variation, whose ``runtest`` runs a job and whose
``repr_failure`` is the failure's plain text.  The hooks (:mod:`.hooks`) import
this module only once the plugin is on.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable
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
from pytest_millrun.core.naming import OutputPathError, mirrored_folder
from pytest_millrun.core.params import ParamsError
from pytest_millrun.dispatch.jobs import Job
from pytest_millrun.pipeline.planning import PlanWords, notebook_setup, plan_notebook
from pytest_millrun.plugin.marking import (
    collected_key,
    marks_for,
    matched_globs_key,
    says_collection_warnings,
)

if TYPE_CHECKING:
    from pytest_millrun.config.run_config import RunConfig
from pytest_millrun.plugin.state import (
    NOTES_SECTION,
    kernels_ahead_key,
    next_item_key,
    settings_key,
    strict_problems_key,
)

#: How the plugin names the options a planning error points at.
PLUGIN_WORDS = PlanWords(
    strict="--millrun-strict-params", record="--millrun-record", output_dir="--millrun-output-dir"
)


def plan_for(
    config: pytest.Config, settings: RunConfig, notebook: Path, data: dict[str, Any] | None
) -> tuple[list[Job], str | None]:
    """Every job of one notebook, selected or not, through the planning the CLI and API use.

    Components: the command line's, else the suite's section's, else the ini file's.
    ``GLOB:name`` record globs are relative to the params file's folder, as the suite's
    are (the rootdir without a params file).  Raises what
    :func:`~pytest_millrun.pipeline.planning.plan_notebook` and
    :func:`~pytest_millrun.pipeline.planning.notebook_setup` raise.
    """
    explicit = [
        settings_value if name in settings.command_line else ()
        for name, settings_value in (("prepend", settings.prepend), ("append", settings.append))
    ]
    setup = notebook_setup(
        notebook,
        settings.suite if settings.suite is not None else settings.variations,
        record=settings.record,
        base=config.rootpath,
        prepend=explicit[0],
        append=explicit[1],
        fallback=(settings.prepend, settings.append),
    )
    assert settings.output_dir is not None  # the plugin's default: .millrun under the rootdir
    if settings.suite is not None:
        config.stash.setdefault(matched_globs_key, set()).add(setup.glob)
        config.stash.setdefault(collected_key, set()).add(settings.suite.relative(notebook))
    return plan_notebook(
        notebook,
        setup,
        data,
        output_root=settings.output_dir,
        folder=mirrored_folder(notebook, config.rootpath),
        kernel_name=settings.kernel_name,
        strict_params=settings.strict_params,
        words=PLUGIN_WORDS,
    )


class NotebookFile(pytest.File):
    """One notebook; its children are its variations."""

    def collect(self) -> Iterable[NotebookItem]:
        settings = self.config.stash[settings_key]
        try:
            data = read_notebook(self.path)
        except NotebookError as exc:
            raise self.CollectError(str(exc)) from None
        try:
            jobs, warning = plan_for(self.config, settings, self.path, data)
        except UndeclaredParameterError as exc:
            if hasattr(self.config, "workerinput"):
                # An xdist worker cannot refuse the run (a usage error there is an
                # INTERNALERROR): the notebook's own collection error says it instead.
                raise self.CollectError(str(exc)) from None
            self.config.stash[strict_problems_key].append(str(exc))
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
            for mark in marks_for(
                self.config, settings.suite, self.path, job.variation, job.variation_id
            ):
                item.add_marker(mark)
            yield item


def _will_be_cached(item: NotebookItem) -> bool:
    """Whether the cache answers for the item, so no kernel need be started ahead for it."""
    if not item.config.stash[settings_key].cache_settings.enabled:
        return False
    from pytest_millrun.plugin.cache_glue import check_item

    return check_item(item)[0].hit


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

    def runtest(self) -> None:
        from pytest_millrun.dispatch.jobs import run_job

        settings = self.config.stash[settings_key]
        self.user_properties.append(("millrun_output", str(self.output)))
        job = self.job
        if settings.cache_settings.enabled:
            checked = self._through_cache(job)
            if checked is None:
                return
            job = checked
        options = settings.run_options()
        self._start_next_kernel_ahead(settings)
        result = run_job(job, options)
        self.result = result
        for note in result.notes:
            self.add_report_section("call", NOTES_SECTION, note)
        if not result.passed:
            raise NotebookFailed(result)

    def _through_cache(self, job: Job) -> Job | None:
        """With ``--millrun-cache``: None when the earlier output answers (the item passes
        from it), else the job with the key its pass records and why it runs."""
        import dataclasses

        from pytest_millrun.cache.verdicts import cached_result
        from pytest_millrun.plugin.cache_glue import CACHED_PROPERTY, REASON_PROPERTY, check_item

        verdict, key = check_item(self)
        if verdict.hit:
            self.result = cached_result(
                self.path, self.variation_id, self.variation, self.output, verdict
            )
            self.user_properties.append((CACHED_PROPERTY, "true"))
            return None
        self.user_properties.append((REASON_PROPERTY, "; ".join(verdict.reasons)))
        return dataclasses.replace(job, cache_key=key, cache_reasons=verdict.reasons)

    def _start_next_kernel_ahead(self, settings: RunConfig) -> None:
        """In fork mode, the next item's kernel starts while this item runs.

        The next item is known here (pytest and xdist hold one back), and so is
        its folder, the one thing its kernel's launch differs in: pytest's own
        variables (``PYTEST_CURRENT_TEST``) never reach a kernel (see
        :func:`pytest_millrun.execution.kernels.kernel_environment`).  After the
        last item nothing is started.
        """
        from pytest_millrun.execution.execute import expect_next_execution, kernels_ahead

        if not self.config.stash.get(kernels_ahead_key, False):  # once per process
            self.config.stash[kernels_ahead_key] = True
            ahead = contextlib.ExitStack()
            ahead.enter_context(kernels_ahead(settings.kernel_start))
            self.config.add_cleanup(ahead.close)
        following = self.stash.get(next_item_key, None)
        if isinstance(following, NotebookItem) and not _will_be_cached(following):
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
