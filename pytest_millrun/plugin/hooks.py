"""The pytest plugin: every notebook times every parameter variation is a test item.

Thin glue: options (see :mod:`pytest_millrun.options`) resolve once into
:class:`Settings`, notebooks become :class:`NotebookFile` collectors,
variations become :class:`NotebookItem` tests, and running one is a call to
:func:`pytest_millrun.execute.execute_notebook`.
Nothing heavy is imported unless ``--millrun``/``--millrun-params`` (or their
ini keys) switch the plugin on, so a plain ``pytest`` run stays fast.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from .discovery import (
    MillrunParameterWarning,
    NotebookError,
    ParameterNameError,
    UndeclaredParameterError,
    check_parameters,
    is_excluded_path,
    is_output_notebook,
    read_notebook_json,
)
from .marking import (
    check_mark_names,
    configure_marks,
    marks_for,
    matched_globs_key,
    variation_counts,
    warn_unmatched,
)
from .naming import (
    OutputPathError,
    VariationName,
    check_output_folder,
    mirrored_folder,
    name_variations,
    safe_output_path,
)
from .options import OPTIONS, Settings, option_names, resolve_settings
from .params import ParamsError, Variation
from .stale import StaleOutputs, handle_stale_outputs
from .suite import pick_components

settings_key = pytest.StashKey[Settings]()
#: Strict-params violations found while collecting, refused together before anything runs.
strict_problems_key = pytest.StashKey[list[str]]()
#: Set once this process has started keeping the next kernel ahead (fork mode).
kernels_ahead_key = pytest.StashKey[bool]()
#: The item pytest runs after this one in this process (xdist knows it too), if any.
next_item_key = pytest.StashKey[pytest.Item | None]()
#: Outputs of earlier runs found (and removed, if asked) before this run, for the summary.
stale_key = pytest.StashKey[StaleOutputs]()


#: The report section that carries a run's notes (e.g. the kernel it defaulted to).
NOTES_SECTION = "millrun"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("millrun", "run notebooks over parameter variations (pytest-millrun)")
    for option in OPTIONS:
        if option.flag:
            group.addoption(
                option.cli, action="store_true", default=None, dest=option.dest, help=option.help
            )
            parser.addini(option.ini, type="bool", default=False, help=option.help)
        else:
            group.addoption(
                option.cli, default=None, dest=option.dest, metavar=option.metavar, help=option.help
            )
            parser.addini(option.ini, type="string", default="", help=option.help)
    from .snapshots_plugin import add_options

    add_options(group, parser)


def pytest_configure(config: pytest.Config) -> None:
    settings = resolve_settings(config)
    config.stash[settings_key] = settings
    config.stash[strict_problems_key] = []
    configure_marks(config)
    if settings.enabled:
        # One unreadable notebook is that file's collection error; the others still run.
        config.option.continue_on_collection_errors = True
        _stop_on_sigterm(config)
        from .results_plugin import ResultsTable
        from .snapshots_plugin import configure as configure_snapshots

        config.pluginmanager.register(
            ResultsTable(config, settings.results, settings.report), "millrun-results"
        )
        configure_snapshots(config)


def _stop_on_sigterm(config: pytest.Config) -> None:
    """Treat SIGTERM like Ctrl-C until unconfigure, so a CI cancel saves partial outputs."""
    from .interrupts import sigterm_as_interrupt

    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_interrupt())
    config.add_cleanup(stack.close)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(settings_key, None)
    if settings is None or not settings.enabled:
        return []
    source = settings.params_file or "each notebook's own defaults"
    count = len(settings.variations)
    if settings.suite is not None and settings.suite.is_suite:
        parts = [f"millrun:   {line}" for line in settings.suite.describe()]
        return [f"millrun: suite {source}, outputs in {settings.output_dir}", *parts]
    return [
        f"millrun: {count} variation{'s' if count != 1 else ''} from {source}, "
        f"outputs in {settings.output_dir}"
    ]


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    settings = config.stash.get(settings_key, None)
    if settings is None or settings.suite is None or not settings.suite.is_suite:
        return []
    return variation_counts(items, config.rootpath)


def pytest_sessionstart(session: pytest.Session) -> None:
    settings = session.config.stash.get(settings_key, None)
    if settings is not None and settings.enabled:
        check_mark_names(session.config, settings.suite)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Repeat each run's notes once at the end, where a passing item's sections never show.

    Then say what was found (or removed) of earlier runs' stale outputs.
    """
    title = f"Captured {NOTES_SECTION} call"
    notes = sorted(
        {
            content
            for reports in terminalreporter.stats.values()
            for report in reports
            for name, content in getattr(report, "sections", ())
            if name == title
        }
    )
    for note in notes:
        terminalreporter.write_line(f"millrun: {note}")
    stale = config.stash.get(stale_key, None)
    message = stale.describe("--millrun-clean-output") if stale is not None else None
    if stale is not None and message:
        terminalreporter.write_line(f"millrun: {message}", yellow=not stale.removed)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> NotebookFile | None:
    settings = parent.config.stash.get(settings_key, None)
    if settings is None or not settings.enabled or file_path.suffix != ".ipynb":
        return None
    if is_excluded_path(file_path, _dedicated_output_dirs(settings, parent.config)):
        return None
    try:
        if is_output_notebook(read_notebook_json(file_path)):
            return None
    except NotebookError:
        pass  # collect() raises it again, as this file's own collection error
    file: NotebookFile = NotebookFile.from_parent(parent, path=file_path)
    return file


def _dedicated_output_dirs(settings: Settings, config: pytest.Config) -> list[Path]:
    """The output dir, unless it holds what is under test.

    When it is (or contains) the rootdir or a path given to pytest
    (``--millrun-output-dir nbs`` with ``pytest nbs``), the inputs live in it
    too, and the output marker alone tells outputs apart.
    """
    out = settings.output_dir.resolve()
    under_test = [config.rootpath, *_argument_paths(config)]
    holds_inputs = any(out == path or out in path.parents for path in under_test)
    return [] if holds_inputs else [out]


def _argument_paths(config: pytest.Config) -> list[Path]:
    """The paths of pytest's arguments (or testpaths), without any ``::name[id]`` part."""
    base = config.invocation_params.dir
    return [(base / arg.partition("::")[0]).resolve() for arg in config.args]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if isinstance(item, NotebookItem):
        item.stash[next_item_key] = nextitem


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Refuse, before anything runs, undeclared parameters (strict) and colliding outputs."""
    settings = config.stash.get(settings_key, None)
    if settings is not None and settings.enabled:
        warn_unmatched(config, settings.suite, settings.params_file)
    problems = config.stash.get(strict_problems_key, [])
    if problems:
        raise pytest.UsageError("\n".join(problems))
    owners: dict[Path, str] = {}
    inputs = {item.path.resolve() for item in items if isinstance(item, NotebookItem)}
    for item in items:
        if not isinstance(item, NotebookItem):
            continue
        if item.output in inputs:
            raise pytest.UsageError(
                f"{item.nodeid} would write its output to {item.output}, which is an input "
                f"notebook. Choose another --millrun-output-dir or other components."
            )
        other = owners.setdefault(item.output, item.nodeid)
        if other != item.nodeid:
            raise pytest.UsageError(
                f"{other} and {item.nodeid} would both write {item.output}. Add a component "
                f"that tells them apart (--millrun-prepend / --millrun-append)."
            )


def notebook_variations(
    config: pytest.Config, settings: Settings, notebook: Path
) -> tuple[Sequence[Variation], tuple[str, ...], tuple[str, ...]]:
    """A notebook's variations and id components: its suite section's, or everyone's.

    Components: the command line's, else the suite's, else the ini file's.
    Raises :class:`ParamsError` for a notebook no suite section takes.
    """
    if settings.suite is None:
        return settings.variations, settings.prepend, settings.append
    section = settings.suite.section_for(notebook)
    config.stash.setdefault(matched_globs_key, set()).add(section.glob)
    cli_prepend = config.getoption("millrun_prepend") is not None
    cli_append = config.getoption("millrun_append") is not None
    prepend = pick_components(
        settings.prepend if cli_prepend else (), section.prepend, settings.prepend
    )
    append = pick_components(settings.append if cli_append else (), section.append, settings.append)
    return section.variations, prepend, append


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: deal with stale outputs once the run's items are known, before any runs."""
    if not hasattr(session.config, "workerinput"):  # xdist workers leave it to the controller
        notebooks = [item.path for item in session.items if isinstance(item, NotebookItem)]
        _handle_stale_outputs(session.config, notebooks)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """With xdist: the controller, once, when the first worker has collected.

    Workers collect the same items, and none runs before all have collected,
    so a clean here happens once and before the run starts.
    """
    config: pytest.Config = node.config
    if stale_key in config.stash:
        return
    paths = sorted({nodeid.partition("::")[0] for nodeid in ids})
    notebooks = [config.rootpath / path for path in paths if path.endswith(".ipynb")]
    _handle_stale_outputs(config, notebooks)


def _handle_stale_outputs(config: pytest.Config, notebooks: Iterable[Path]) -> None:
    settings = config.stash.get(settings_key, None)
    if settings is None or not settings.enabled:
        return
    planned: list[tuple[Path, Path]] = []
    for notebook in dict.fromkeys(notebooks):
        with contextlib.suppress(ParamsError, OutputPathError, OSError):
            variations, prepend, append = notebook_variations(config, settings, notebook)
            plan = plan_variations(
                notebook, variations, prepend, append, settings.output_dir, config.rootpath
            )
            planned += [(notebook, output) for _, _, output in plan]
    clean = settings.clean_output and not config.option.collectonly
    config.stash[stale_key] = handle_stale_outputs(planned, clean=clean)


class NotebookFile(pytest.File):
    """One notebook; its children are its variations."""

    def collect(self) -> Iterable[NotebookItem]:
        settings = self.config.stash[settings_key]
        try:
            data = read_notebook_json(self.path)
        except NotebookError as exc:
            raise self.CollectError(str(exc)) from None
        try:
            variations, prepend, append = notebook_variations(self.config, settings, self.path)
        except ParamsError as exc:
            raise self.CollectError(str(exc)) from None
        self._check_parameters(settings, data, variations)
        folder = mirrored_folder(self.path, self.config.rootpath)
        try:
            check_output_folder(settings.output_dir / folder, "--millrun-output-dir")
            planned = plan_variations(
                self.path, variations, prepend, append, settings.output_dir, self.config.rootpath
            )
        except OutputPathError as exc:
            raise self.CollectError(str(exc)) from None
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
            )
            for mark in marks_for(self.config, settings.suite, self.path, variation, name.id):
                item.add_marker(mark)
            yield item

    def _check_parameters(
        self, settings: Settings, data: dict[str, Any], variations: Sequence[Variation]
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
        if warning:
            warnings.warn_explicit(
                MillrunParameterWarning(warning), MillrunParameterWarning, str(self.path), 1
            )


class NotebookFailed(Exception):
    """Carries a failed result from ``runtest`` to ``repr_failure``."""

    def __init__(self, result: Any) -> None:
        super().__init__(result.error.headline if result.error else "failed")
        self.result = result


class NotebookItem(pytest.Item):
    """One variation of one notebook."""

    def __init__(
        self, *, variation: Variation, variation_id: str, output: Path, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.variation = variation
        self.variation_id = variation_id
        self.output = output
        self.result: Any = None  # the ExecutionResult, once run

    def runtest(self) -> None:
        from .api import Job, RunOptions, run_job

        settings = self.config.stash[settings_key]
        self.user_properties.append(("millrun_output", str(self.output)))
        options = RunOptions(
            kernel_name=settings.kernel,
            cell_timeout=settings.timeout,
            notebook_timeout=settings.notebook_timeout,
            kernel_start=settings.kernel_start,
            preload=settings.preload,
            option_names=option_names(),
            record=settings.record,
        )
        self._start_next_kernel_ahead(settings)
        result = run_job(Job(self.path, self.variation, self.variation_id, self.output), options)
        self.result = result
        for note in result.notes:
            self.add_report_section("call", NOTES_SECTION, note)
        if not result.passed:
            raise NotebookFailed(result)

    def _start_next_kernel_ahead(self, settings: Settings) -> None:
        """In fork mode, the next item's kernel starts while this item runs.

        The next item is known here (pytest and xdist hold one back), and so is
        what its kernel will see that this one's does not: its folder, and
        pytest's ``PYTEST_CURRENT_TEST``.  After the last item nothing is started.
        """
        from .execute import expect_next_execution, kernels_ahead

        if not self.config.stash.get(kernels_ahead_key, False):  # once per process
            self.config.stash[kernels_ahead_key] = True
            ahead = contextlib.ExitStack()
            ahead.enter_context(kernels_ahead(settings.kernel_start))
            self.config.add_cleanup(ahead.close)
        following = self.stash.get(next_item_key, None)
        if isinstance(following, NotebookItem):
            current_test = {"PYTEST_CURRENT_TEST": f"{following.nodeid} (call)"}
            expect_next_execution(following.path, current_test)
        else:
            expect_next_execution(None)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        if isinstance(excinfo.value, NotebookFailed):
            from .execute import format_failure

            return format_failure(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # a line number (not None): pytest reports a skip mark at the item's location
        return self.path, 0, f"{self.path.name}[{self.variation_id}]"
