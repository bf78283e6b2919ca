"""The pytest plugin: every notebook times every parameter variation is a test item.

Thin glue: options (declared in :mod:`pytest_millrun.config.option_table`) resolve
once into a :class:`~pytest_millrun.config.run_config.RunConfig`, notebooks become
:class:`NotebookFile` collectors, variations become :class:`NotebookItem` tests, and
running one is a call to :func:`pytest_millrun.execution.execute.execute_notebook`.
Nothing heavy is imported unless ``--millrun``/``--millrun-params`` (or their
ini keys) switch the plugin on, so a plain ``pytest`` run stays fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_millrun.plugin.state import NOTES_SECTION, session_key

if TYPE_CHECKING:
    from pytest_millrun.config.run_config import RunConfig
    from pytest_millrun.plugin.items import NotebookFile
    from pytest_millrun.plugin.session import MillrunSession

#: The marker every notebook item carries (see :mod:`pytest_millrun.plugin.marking`).
MARKER_LINE = (
    "millrun(**params): a notebook variation, with its scalar parameters as keyword "
    'arguments (select with -m "millrun(x=1)", or -m "not millrun")'
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The table's plugin options, each with its ini twin (the option's ``dest`` is the key)."""
    from pytest_millrun.config.option_table import options_of

    group = parser.getgroup("millrun", "run notebooks over parameter variations (pytest-millrun)")
    for option in options_of("pytest"):
        if option.kind == "flag":
            group.addoption(
                option.pytest_flag,
                action="store_true",
                default=None,
                dest=option.ini,
                help=option.help,
            )
            parser.addini(option.ini, type="bool", default=False, help=option.help)
        else:
            group.addoption(
                option.pytest_flag,
                default=None,
                dest=option.ini,
                metavar=option.metavar,
                help=option.help,
            )
            parser.addini(option.ini, type="string", default="", help=option.help)


def _any_option_set(config: pytest.Config) -> bool:
    """Whether a millrun option is on the command line or in the ini file (a plain run: no)."""
    from pytest_millrun.config.option_table import options_of

    return any(
        config.getoption(option.ini) is not None or config.getini(option.ini)
        for option in options_of("pytest")
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)
    if "millrun(" in (config.getoption("markexpr", "") or "").replace(" ", ""):
        from pytest_millrun.plugin.marking import check_mark_expression

        check_mark_expression(config)
    if not _any_option_set(config):
        return  # notebooks off and nothing to check: a plain run imports nothing more
    from pytest_millrun.config.option_table import OptionError
    from pytest_millrun.config.run_config import from_pytest
    from pytest_millrun.plugin.session import MillrunSession

    try:
        settings = from_pytest(config)
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    session = config.stash[session_key] = MillrunSession(config, settings)
    staging = settings.output_dir
    if settings.output_url is not None and staging is not None:
        from pytest_millrun.core.storage import remove_staging

        config.add_cleanup(lambda: remove_staging(staging))
    if settings.enabled:
        # One unreadable notebook is that file's collection error; the others still run.
        config.option.continue_on_collection_errors = True
        _stop_on_sigterm(config)
        from pytest_millrun.plugin.results_glue import ResultsTable
        from pytest_millrun.plugin.snapshot_glue import configure as configure_snapshots

        config.pluginmanager.register(
            ResultsTable(config, settings.results, settings.report), "millrun-results"
        )
        configure_snapshots(config, settings)
        if not session.worker:
            from pytest_millrun.plugin.live_progress import register as register_progress
            from pytest_millrun.plugin.scheduling import RunOrder

            session.live = register_progress(config, settings.log_output)

            config.pluginmanager.register(RunOrder(config, settings.order), "millrun-order")
            from pytest_millrun.plugin.preload_memory import PreloadMemory

            config.pluginmanager.register(PreloadMemory(config), "millrun-preloads")
            if config.option.durations is not None:
                from pytest_millrun.plugin.cell_durations import SlowestCells

                config.pluginmanager.register(SlowestCells(config), "millrun-cell-durations")
        if settings.cache_settings.enabled:
            from pytest_millrun.plugin.cache_glue import CacheReport

            session.start_cache()
            config.pluginmanager.register(CacheReport(config), "millrun-cache")


def _session(config: pytest.Config) -> MillrunSession | None:
    """The session when notebooks are on; a plain run's hooks stop here and import nothing."""
    session = config.stash.get(session_key, None)
    return session if session is not None and session.enabled else None


def _settings(config: pytest.Config) -> RunConfig | None:
    """The run's options when some millrun option is set, notebooks on or off."""
    session = config.stash.get(session_key, None)
    return session.settings if session is not None else None


def _stop_on_sigterm(config: pytest.Config) -> None:
    """Treat SIGTERM like Ctrl-C until unconfigure, so a CI cancel saves partial outputs."""
    from pytest_millrun.core.interrupts import sigterm_as_interrupt

    stack = contextlib.ExitStack()
    stack.enter_context(sigterm_as_interrupt())
    config.add_cleanup(stack.close)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = _settings(config)
    if settings is None or not settings.enabled:
        return []
    source = settings.params_file or "each notebook's own defaults"
    count = len(settings.variations)
    where = str(settings.output_dir)
    if settings.output_url is not None:
        from pytest_millrun.core.storage import redacted

        where = redacted(settings.output_url)
    if settings.suite is not None and settings.suite.is_suite:
        parts = [f"millrun:   {line}" for line in settings.suite.describe()]
        return [f"millrun: suite {source}, outputs in {where}", *parts]
    return [
        f"millrun: {count} variation{'s' if count != 1 else ''} from {source}, "
        f"outputs in {where}"
    ]


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    settings = _settings(config)
    if settings is None or settings.suite is None or not settings.suite.is_suite:
        return []
    from pytest_millrun.plugin.marking import variation_counts

    return variation_counts(items, config.rootpath)


def pytest_sessionstart(session: pytest.Session) -> None:
    millrun = _session(session.config)
    if millrun is not None:
        from pytest_millrun.plugin.marking import check_mark_names

        check_mark_names(session.config, millrun.settings.suite)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Repeat each run's notes once at the end, where a passing item's sections never show.

    Then say what was found (or removed) of earlier runs' stale outputs, or that there was
    no notebook to run at all.
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
    session = _session(config)
    stale = session.stale if session is not None else None
    message = stale.describe("--millrun-clean-output") if stale is not None else None
    if stale is not None and message:
        terminalreporter.write_line(f"millrun: {message}", yellow=not stale.removed)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session is not None:
        nothing = _no_notebooks(config, session.settings)
        if nothing:
            terminalreporter.write_line(f"millrun: {nothing}", yellow=True)


def _no_notebooks(config: pytest.Config, settings: RunConfig) -> str | None:
    """When nothing was collected: that no input notebook lies under pytest's paths, if so.

    A notebook there means the items were deselected or filtered, which pytest says itself.
    """
    import fnmatch
    import os

    from pytest_millrun.core.discovery import (
        NotebookError,
        is_excluded_path,
        is_output_notebook,
        read_notebook_json,
    )

    paths = _argument_paths(config)
    skip = [*config.getini("norecursedirs")]
    outputs = _dedicated_output_dirs(settings, config)
    for path in paths:
        found = [path] if path.is_file() else []
        for folder, dirs, files in os.walk(path) if path.is_dir() else ():
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in skip)]
            found += [Path(folder, name) for name in files if name.endswith(".ipynb")]
        for notebook in found:
            if notebook.suffix != ".ipynb" or is_excluded_path(notebook, outputs):
                continue
            with contextlib.suppress(NotebookError):
                if is_output_notebook(read_notebook_json(notebook)):
                    continue
            return None
    base = config.invocation_params.dir
    where = ", ".join(os.path.relpath(path, base) for path in paths)
    return (
        f"no notebook found under {where}: the plugin collects files ending in .ipynb there "
        f"and in subfolders, leaving out hidden files, .ipynb_checkpoints, outputs of earlier "
        f"runs and the folders of norecursedirs. Check the paths given to pytest."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Generator[None, Any, None]:
    """A notebook becomes a :class:`NotebookFile`; a text notebook never a Python module.

    A hook wrapper, so it sees what pytest's Python plugin made of a ``.py``
    text notebook (a :class:`pytest.Module` when it is named on the command
    line or matches ``python_files``, a doctest module with
    ``--doctest-modules``) and takes it back before anything imports it:
    collecting a Module is what would import the file.
    """
    outcome = yield
    if _session(parent.config) is None:
        return
    file = _notebook_file(file_path, parent)
    if file is not None:
        collected = outcome.get_result()
        kept = [c for c in collected if not (isinstance(c, pytest.Module) and c.path == file_path)]
        outcome.force_result([*kept, file])


def _notebook_file(file_path: Path, parent: pytest.Collector) -> NotebookFile | None:
    """The notebook collector of an ``.ipynb`` or a text notebook, or None for other files."""
    from pytest_millrun.core.discovery import (
        NotebookError,
        is_excluded_path,
        is_output_notebook,
        read_notebook_json,
    )
    from pytest_millrun.core.text_notebooks import ipynb_twin, is_text_notebook
    from pytest_millrun.plugin.items import NotebookFile

    settings = parent.config.stash[session_key].settings
    if file_path.suffix == ".ipynb":
        if is_excluded_path(file_path, _dedicated_output_dirs(settings, parent.config)):
            return None
        try:
            if is_output_notebook(read_notebook_json(file_path)):
                return None
        except NotebookError:
            pass  # collect() raises it again, as this file's own collection error
    else:
        if not is_text_notebook(file_path, settings.text_notebooks, parent.config.rootpath):
            return None
        if is_excluded_path(file_path, _dedicated_output_dirs(settings, parent.config)):
            return None
        twin = ipynb_twin(file_path)
        if twin is not None and not parent.session.isinitpath(file_path):
            try:
                if not is_output_notebook(read_notebook_json(twin)):
                    return None  # its .ipynb runs; see ipynb_twin
            except NotebookError:
                return None  # the .ipynb fails as its own collection error
    file: NotebookFile = NotebookFile.from_parent(parent, path=file_path)
    return file


def _dedicated_output_dirs(settings: RunConfig, config: pytest.Config) -> list[Path]:
    """The output dir, unless it holds what is under test.

    When it is (or contains) the rootdir or a path given to pytest
    (``--millrun-output-dir nbs`` with ``pytest nbs``), the inputs live in it
    too, and the output marker alone tells outputs apart.
    """
    assert settings.output_dir is not None  # the plugin's default: .millrun under the rootdir
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
    if _session(item.config) is None:
        return
    from pytest_millrun.plugin.items import NotebookItem

    if isinstance(item, NotebookItem):
        item.following = nextitem


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Refuse, before anything runs, undeclared parameters (strict) and colliding outputs."""
    millrun = _session(config)
    if millrun is None:
        return
    from pytest_millrun.plugin.items import NotebookItem
    from pytest_millrun.plugin.marking import warn_unmatched

    warn_unmatched(millrun)
    notebooks = [item for item in items if isinstance(item, NotebookItem)]
    millrun.refuse_before_run([(item.nodeid, item.path, item.output) for item in notebooks])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without xdist: deal with stale outputs once the run's items are known, before any runs.

    With the cache and outputs on object storage, every process that runs items (an xdist
    worker too) first fetches their cache entries at once.
    """
    millrun = _session(session.config)
    if millrun is None:
        return
    from pytest_millrun.plugin.items import NotebookItem

    items = [item for item in session.items if isinstance(item, NotebookItem)]
    millrun.prefetch_cache_entries([item.job for item in items])
    if millrun.worker:  # xdist workers leave the stale outputs to the controller
        return
    millrun.find_stale_outputs(item.path for item in items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, None]:
    """With ``--millrun-dask``: the final items' jobs go to the cluster before the first runs,
    and whatever is left on it (``-x``, Ctrl-C) is stopped when the loop ends."""
    millrun = _session(session.config)
    if millrun is None or millrun.settings.dask is None or session.config.option.collectonly:
        yield
        return
    from pytest_millrun.plugin.items import NotebookItem

    millrun.submit_to_cluster([item for item in session.items if isinstance(item, NotebookItem)])
    try:
        yield
    finally:
        millrun.close_cluster()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """With xdist: the controller, once, when the first worker has collected.

    Workers collect the same items, and none runs before all have collected,
    so a clean here happens once and before the run starts.
    """
    millrun = _session(node.config)
    if millrun is None or millrun.stale is not None:
        return
    from pytest_millrun.core.text_notebooks import is_text_notebook

    root, globs = millrun.config.rootpath, millrun.settings.text_notebooks
    paths = sorted({nodeid.partition("::")[0] for nodeid in ids})
    millrun.find_stale_outputs(
        root / path
        for path in paths
        if path.endswith(".ipynb") or is_text_notebook(root / path, globs, root)
    )
