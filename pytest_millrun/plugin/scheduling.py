"""The plugin's side of longest first: durations kept in pytest's cache, and who runs what when.

Why a scheduler and not only an item order: under xdist the controller hands each worker
consecutive chunks of the collection (``LoadScheduling``), so a long notebook collected
last starts last whatever order the items are in; and a collection reordered on the
workers could differ between them (or on a worker restarted after the cache changed),
which xdist refuses. So the workers' collection stays as it is, and the controller's
:class:`~pytest_millrun.plugin.xdist_scheduler.LongestFirstScheduling` hands out the
items longest first, one at a time. Without xdist the items themselves are reordered.
Both use :func:`pytest_millrun.pipeline.run_order.longest_first`, as the CLI and the API
do.

The durations are the cells' seconds of the last run's notebook items (an item the
cache answered for, or one that failed, keeps the one before), under :data:`CACHE_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_millrun.pipeline.run_order import longest_first
from pytest_millrun.plugin.cell_durations import cell_seconds
from pytest_millrun.plugin.state import collection_order_key

if TYPE_CHECKING:
    from xdist.scheduler import LoadScheduling

#: Where pytest's cache keeps each notebook item's last duration, by node id.
CACHE_KEY = "millrun/durations"


def cells_duration(report: pytest.TestReport) -> float | None:
    """The seconds of a notebook item's own work (its cells), None when it did not run them.

    Its cells and not the item's call phase: the first item of each process also
    starts the fork template, and would look like the longest notebook.
    """
    cells = cell_seconds(report)
    return sum(seconds for _, seconds, _ in cells) if cells else None


def orders_items(config: pytest.Config, order: str) -> bool:
    """Whether longest first takes the order: asked for, and nothing else orders the items.

    pytest-randomly (unless told not to reorganize), ``--ff``, ``--nf``, ``--lf`` and
    ``--sw`` order the items themselves; without pytest's cache nothing is known.
    """
    if order != "longest-first" or not hasattr(config, "cache"):
        return False
    if config.pluginmanager.hasplugin("randomly") and config.getoption(
        "randomly_reorganize", True
    ):
        return False
    others = ("failedfirst", "newfirst", "lf", "stepwise")
    return not any(config.getoption(name, False) for name in others)


class RunOrder:
    """Registered in the controller (or the only process): keeps durations, orders the run."""

    def __init__(self, config: pytest.Config, order: str) -> None:
        self.config = config
        self.active = orders_items(config, order)
        cache = getattr(config, "cache", None)
        known = cache.get(CACHE_KEY, {}) if cache is not None else {}
        self.known: dict[str, float] = {
            str(k): float(v) for k, v in (known if isinstance(known, dict) else {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }  # fmt: skip
        self.measured: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            seconds = cells_duration(report)
            if seconds is not None:
                self.measured[report.nodeid] = round(seconds, 3)

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is not None and self.measured:
            known = still_there(self.known, self.config.rootpath)
            cache.set(CACHE_KEY, {**known, **self.measured})

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Without xdist: the items themselves, longest first (xdist's workers keep theirs)."""
        if self.active and self.known:
            self.config.stash[collection_order_key] = [item.nodeid for item in items]
            items[:] = longest_first(items, self.known, key=lambda item: item.nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """xdist's ``load`` scheduling, longest first, when some duration is known."""
        if not self.active or not self.known or config.getvalue("dist") != "load":
            return None
        return longest_first_scheduler(config, log, self.known)


def still_there(known: dict[str, float], rootpath: Path) -> dict[str, float]:
    """The durations whose notebook still exists: a renamed or removed notebook's go, so the
    cache entry does not grow with every id the project ever had."""
    return {
        nodeid: seconds for nodeid, seconds in known.items()
        if (rootpath / nodeid.split("::", 1)[0]).exists()
    }  # fmt: skip


def longest_first_scheduler(
    config: pytest.Config, log: Any, durations: Mapping[str, float]
) -> LoadScheduling:
    """A :class:`~pytest_millrun.plugin.xdist_scheduler.LongestFirstScheduling` (xdist
    imported there, so only here: only the controller needs it)."""
    from pytest_millrun.plugin.xdist_scheduler import LongestFirstScheduling

    return LongestFirstScheduling(config, log, durations)
