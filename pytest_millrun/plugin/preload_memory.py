"""The plugin's side of learned preloads: what each item's kernel imported, in pytest's cache.

Why the cache: the plugin's items learn without reading every output at collection.
Each notebook item's report carries its kernel's record
(:data:`PRELOADS_PROPERTY`, a user property, so xdist
brings it to the controller); :class:`PreloadMemory`, in the controller or the only
process, keeps the records by node id under :data:`CACHE_KEY` (an item the cache
answered for keeps the one before), with the modules a worker found unfit to fork, and
says those once under ``-v``.  What the next run preloads is decided where every front
end decides it (:func:`pytest_millrun.pipeline.preloading.with_learned_preloads`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_millrun.dispatch.jobs import RunOptions

#: The user property of a run's kernel's imports as JSON: ``{"imported": [...], "unsafe": {}}``.
PRELOADS_PROPERTY = "millrun_preloads"
#: This process's reading of the cache: (imported modules of each item, unsafe modules).
records_key = pytest.StashKey[tuple[list[list[str]], dict[str, str]]]()
#: Where pytest's cache keeps ``{"imported": {nodeid: [module]}, "unsafe": {module: why}}``.
CACHE_KEY = "millrun/preloads"


def cached_records(config: pytest.Config) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(imported modules by node id, unsafe modules and why) as the last runs left them."""
    cache = getattr(config, "cache", None)
    known = cache.get(CACHE_KEY, {}) if cache is not None else {}
    known = known if isinstance(known, dict) else {}
    imported, unsafe = known.get("imported"), known.get("unsafe")
    return (
        {
            str(nodeid): [str(name) for name in names]
            for nodeid, names in (imported if isinstance(imported, dict) else {}).items()
            if isinstance(names, list)
        },
        {str(k): str(v) for k, v in (unsafe if isinstance(unsafe, dict) else {}).items()},
    )


def preload_options(
    config: pytest.Config, options: RunOptions, preload: tuple[str, ...]
) -> RunOptions:
    """``options`` with the preloads learned from pytest's cache (fork mode, unless
    ``--millrun-preload none``), as the command and the API learn from the outputs."""
    from pytest_millrun.pipeline.preloading import with_learned_preloads
    from pytest_millrun.plugin.coverage_glue import coverage_key

    if records_key not in config.stash:
        by_item, unfit = cached_records(config)
        config.stash[records_key] = (list(by_item.values()), unfit)
    imported, unsafe = config.stash[records_key]
    coverage = config.stash.get(coverage_key, None)
    return with_learned_preloads(options, preload, imported, unsafe, coverage)


class PreloadMemory:
    """Registered in the controller (or the only process): keeps the records, tells the drops."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.known_imported, self.known_unsafe = cached_records(config)
        self.imported: dict[str, list[str]] = {}
        self.unsafe: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == PRELOADS_PROPERTY:
                record: dict[str, Any] = json.loads(str(value))
                self.imported[report.nodeid] = [str(n) for n in record.get("imported", [])]
                self.unsafe.update({str(k): str(v) for k, v in record.get("unsafe", {}).items()})

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or not (self.imported or self.unsafe):
            return
        root = self.config.rootpath
        imported = {
            nodeid: names
            for nodeid, names in {**self.known_imported, **self.imported}.items()
            if (root / nodeid.partition("::")[0]).exists()  # a notebook gone teaches nothing
        }
        cache.set(CACHE_KEY, {"imported": imported, "unsafe": {**self.known_unsafe, **self.unsafe}})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.verbose <= 0:
            return
        from pytest_millrun.pipeline.preloading import unsafe_line

        for name, why in sorted(self.unsafe.items()):
            if name not in self.known_unsafe:
                terminalreporter.write_line(unsafe_line(name, why))
