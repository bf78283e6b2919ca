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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_millrun.core.discovery import (
    MillrunParameterWarning,
    NotebookError,
    ParameterNameError,
    UndeclaredParameterError,
    check_parameters,
    read_notebook,
    record_needs_python,
    takes_python_parameters,
)
from pytest_millrun.core.naming import (
    OutputPathError,
    VariationName,
    check_output_folder,
    mirrored_folder,
    name_variations,
    safe_output_path,
)
from pytest_millrun.core.params import ParamsError, Variation
from pytest_millrun.core.suite import pick_components
from pytest_millrun.plugin.marking import (
    collected_key,
    marks_for,
    matched_globs_key,
    says_collection_warnings,
)

if TYPE_CHECKING:
    from pytest_millrun.config.run_config import RunConfig
    from pytest_millrun.execution.jobs import Job
from pytest_millrun.plugin.state import (
    NOTES_SECTION,
    kernels_ahead_key,
    next_item_key,
    settings_key,
    strict_problems_key,
)


def notebook_variations(
    config: pytest.Config, settings: RunConfig, notebook: Path
) -> tuple[Sequence[Variation], tuple[str, ...], tuple[str, ...]]:
    """A notebook's variations and id components: its suite section's, or everyone's.

    Components: the command line's, else the suite's, else the ini file's.
    Raises :class:`ParamsError` for a notebook no suite section takes.
    """
    if settings.suite is None:
        return settings.variations, settings.prepend, settings.append
    section = settings.suite.section_for(notebook)
    config.stash.setdefault(matched_globs_key, set()).add(section.glob)
    config.stash.setdefault(collected_key, set()).add(settings.suite.relative(notebook))
    cli_prepend = "prepend" in settings.command_line
    cli_append = "append" in settings.command_line
    prepend = pick_components(
        settings.prepend if cli_prepend else (), section.prepend, settings.prepend
    )
    append = pick_components(settings.append if cli_append else (), section.append, settings.append)
    return section.variations, prepend, append


def record_names(settings: RunConfig, notebook: Path, rootpath: Path) -> tuple[str, ...]:
    """What a notebook records: its suite section's ``record``, then ``--millrun-record``'s.

    ``GLOB:name`` globs are relative to the params file's folder, as the suite's are (the
    rootdir without a params file).
    """
    spec = settings.record
    if settings.suite is None:
        return spec.for_notebook(os.path.relpath(notebook, rootpath).replace(os.sep, "/"))
    section = settings.suite.section_for(notebook)
    return spec.for_notebook(settings.suite.relative(notebook), section.record)


def plan_variations(
    notebook: Path,
    variations: Sequence[Variation],
    prepend: Sequence[str],
    append: Sequence[str],
    output_dir: Path,
    rootpath: Path,
) -> list[tuple[VariationName, Variation, Path]]:
    """Every variation of a notebook with its name and output path, selected or not."""
    folder = mirrored_folder(notebook, rootpath)
    names = name_variations(notebook.stem, variations, prepend, append)
    return [
        (name, variation, safe_output_path(output_dir, folder, name.filename))
        for name, variation in zip(names, variations, strict=False)
    ]


class NotebookFile(pytest.File):
    """One notebook; its children are its variations."""

    def collect(self) -> Iterable[NotebookItem]:
        settings = self.config.stash[settings_key]
        try:
            data = read_notebook(self.path)
        except NotebookError as exc:
            raise self.CollectError(str(exc)) from None
        try:
            variations, prepend, append = notebook_variations(self.config, settings, self.path)
        except ParamsError as exc:
            raise self.CollectError(str(exc)) from None
        self._check_parameters(settings, data, variations)
        record = record_names(settings, self.path, self.config.rootpath)
        if record and settings.kernel_name is None and not takes_python_parameters(data):
            raise self.CollectError(record_needs_python(self.path, data, "--millrun-record"))
        folder = mirrored_folder(self.path, self.config.rootpath)
        assert settings.output_dir is not None  # the plugin's default: .millrun under the rootdir
        try:
            check_output_folder(settings.output_dir / folder, "--millrun-output-dir")
            planned = plan_variations(
                self.path, variations, prepend, append, settings.output_dir, self.config.rootpath
            )
        except OutputPathError as exc:
            raise self.CollectError(str(exc)) from None
        #: every variation the notebook has, selected or not (snapshot checks count them)
        self.variation_count = len(planned)
        for name, variation, output in planned:
            item_name = f"{self.path.stem}[{name.id}]"
            item = NotebookItem.from_parent(
                self,
                name=item_name,
                # The id given as text, as the cache stores it: pytest 9 reads ids as
                # ``path::name[params]`` and would otherwise hold ours as the name
                # ``calc[1]`` without params, which --lf, --ff and --sw never match.
                nodeid=f"{self.nodeid}::{item_name}",
                variation=variation,
                variation_id=name.id,
                output=output,
                record=record,
            )
            for mark in marks_for(self.config, settings.suite, self.path, variation, name.id):
                item.add_marker(mark)
            yield item

    def _check_parameters(
        self, settings: RunConfig, data: dict[str, Any], variations: Sequence[Variation]
    ) -> None:
        keys = (key for variation in variations for key in variation)
        try:
            warning = check_parameters(
                self.path,
                data,
                keys,
                strict=settings.strict_params,
                strict_flag="--millrun-strict-params",
            )
        except UndeclaredParameterError as exc:
            if hasattr(self.config, "workerinput"):
                # An xdist worker cannot refuse the run (a usage error there is an
                # INTERNALERROR): the notebook's own collection error says it instead.
                raise self.CollectError(str(exc)) from None
            self.config.stash[strict_problems_key].append(str(exc))
            return
        except ParameterNameError as exc:  # this file's error; also right on xdist workers
            raise self.CollectError(str(exc)) from None
        if warning and says_collection_warnings(self.config):
            # Named by the notebook's path as pytest shows paths, at line 0: a notebook has no
            # source line to quote (line 1 of its JSON is "{").
            where = os.path.relpath(self.path, self.config.invocation_params.dir)
            warnings.warn_explicit(
                MillrunParameterWarning(warning), MillrunParameterWarning, where, 0
            )


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

    def __init__(
        self,
        *,
        variation: Variation,
        variation_id: str,
        output: Path,
        record: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.variation = variation
        self.variation_id = variation_id
        self.output = output
        self.record = record  # the variables this notebook records after its last cell
        self.result: Any = None  # the ExecutionResult, once run

    def runtest(self) -> None:
        from pytest_millrun.execution.jobs import Job, run_job

        settings = self.config.stash[settings_key]
        self.user_properties.append(("millrun_output", str(self.output)))
        job = Job(self.path, self.variation, self.variation_id, self.output)
        if settings.cache_settings.enabled:
            checked = self._through_cache(job)
            if checked is None:
                return
            job = checked
        options = settings.run_options(record=self.record)
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
