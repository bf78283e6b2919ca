"""The plugin's side of kernel coverage: pytest-cov's settings, read where an item runs.

Why no patching of pytest-cov: its controllers (``Central`` without xdist,
``DistMaster`` on the xdist controller) combine every ``<data_file>.*`` file beside
their data file when the session ends, and delete them; a ``DistWorker`` not on the
controller's machine combines them before sending its data.  Kernels that write
coverage's parallel data files there (see
:mod:`pytest_millrun.inkernel.coverage_start`) are therefore in the report, in
``--cov-fail-under`` and in every ``--cov-report``, under ``-n 0`` and ``-n 2``.
What the kernels need is read here from pytest-cov's registered plugin (``_cov``):
the started ``Coverage`` and the folder it started in; without pytest-cov, the
``Coverage`` of ``coverage run -m pytest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_millrun.coverage.kernel_settings import KernelCoverage

#: The name pytest-cov registers its plugin under (when ``--cov`` is given).
PYTEST_COV_PLUGIN = "_cov"
#: The kernels' settings of this process's run, once read (None: kernels are not measured).
coverage_key = pytest.StashKey["KernelCoverage | None"]()


def item_coverage(item: pytest.Item) -> KernelCoverage | None:
    """How the kernel of ``item`` measures, or None when nothing measures this run.

    An item marked ``no_cover`` (pytest-cov's marker) is not measured; with
    ``--cov-context=test`` the lines are the item's, as pytest-cov labels a test's
    (``<nodeid>|run``).
    """
    config = item.config
    if coverage_key not in config.stash:
        config.stash[coverage_key] = _run_coverage(config)
    settings = config.stash[coverage_key]
    if settings is None or item.get_closest_marker("no_cover") is not None:
        return None
    if _test_contexts(config):
        return settings.in_context(f"{item.nodeid}|run")
    return settings


def _controller(config: pytest.Config) -> Any:
    plugin = config.pluginmanager.get_plugin(PYTEST_COV_PLUGIN)
    return getattr(plugin, "cov_controller", None)


def _test_contexts(config: pytest.Config) -> bool:
    plugin = config.pluginmanager.get_plugin(PYTEST_COV_PLUGIN)
    return getattr(getattr(plugin, "options", None), "cov_context", None) == "test"


def _run_coverage(config: pytest.Config) -> KernelCoverage | None:
    """pytest-cov's measurement of this process, else ``coverage run``'s, else None."""
    from pytest_millrun.coverage.kernel_reports import warn_once
    from pytest_millrun.coverage.kernel_settings import (
        KernelCoverageError,
        kernel_coverage,
        measuring_coverage,
    )

    controller = _controller(config)
    cov = getattr(controller, "cov", None)
    topdir = getattr(controller, "topdir", None)
    if cov is None:
        cov, topdir = measuring_coverage(), None
    if cov is None:
        return None
    # This process measures little of what the notebooks run: its own "no data" and
    # "never imported" warnings would contradict the report (pytest-cov's DistMaster
    # silences them for the same reason, through the same attributes).
    cov._warn_no_data = False
    cov._warn_unimported_source = False
    try:
        return kernel_coverage(cov, topdir)
    except KernelCoverageError as exc:
        warn_once([str(exc)])
        return None
