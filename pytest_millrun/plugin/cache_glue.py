"""The plugin's side of incremental runs: how a cached item and a re-run are reported.

The check itself is :mod:`pytest_millrun.cache.verdicts`, shared with the API
and the CLI; each item asks the session for it (:meth:`~pytest_millrun.plugin.
session.MillrunSession.verdict_for`) in the process that runs it (an xdist worker
too), once, remembered on the item.  A cached item passes
with its ``user_properties`` saying so (``millrun_cached``, which JUnit shows
as a property, and which xdist carries to the controller), and a variation
that runs says why (``millrun_ran_because``); with ``-vv`` each item's read set
goes the same way (``millrun_read_set``, only then: it can be thousands of lines).
:class:`CacheReport` turns those into pytest's own reporting: a ``cached``
category with the letter ``c`` in the progress line and a count in the summary
line, with ``-v`` the reasons each variation ran, and with ``-vv`` what each read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

CACHED_PROPERTY = "millrun_cached"
REASON_PROPERTY = "millrun_ran_because"
READ_SET_PROPERTY = "millrun_read_set"


def keep_read_set(item: pytest.Item, result: Any) -> None:
    """With ``-vv``: the item's read set (its ``ExecutionResult.read_set``), for the summary."""
    if item.config.option.verbose > 1 and result.read_set:
        item.user_properties.append((READ_SET_PROPERTY, json.dumps(list(result.read_set))))


class CacheReport:
    """Registered with ``--millrun-cache``: the ``cached`` category, and why others ran."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reasons: dict[str, str] = {}
        self.read_sets: dict[str, list[str]] = {}
        self.cached = 0
        self.position: dict[str, int] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        if report.when == "call" and report.passed and _cached(report):
            return "cached", "c", ("CACHED", {"green": True})
        return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        if report.passed and _cached(report):
            self.cached += 1
        for name, value in report.user_properties:
            if name == REASON_PROPERTY:
                self.reasons[report.nodeid] = str(value)
            elif name == READ_SET_PROPERTY:
                self.read_sets[report.nodeid] = json.loads(str(value))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Without xdist: the order the reasons are said in, as collected (longest first
        may run the items in another order; under xdist they come as the items end)."""
        from pytest_millrun.plugin.state import collection_order_key

        collected = self.config.stash.get(collection_order_key, None)
        ids = collected or [item.nodeid for item in session.items]
        self.position = {nodeid: index for index, nodeid in enumerate(ids)}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.verbose > 0:
            for nodeid, reason in self._in_order(self.reasons):
                terminalreporter.write_line(f"millrun: ran {nodeid}: {reason}")
            for nodeid, lines in self._in_order(self.read_sets):
                terminalreporter.write_line(f"millrun: read set of {nodeid} ({len(lines)}):")
                for line in lines:
                    terminalreporter.write_line(f"    {line}")
        elif self.reasons:
            ran = len(self.reasons)
            terminalreporter.write_line(
                f"millrun: {self.cached} cached, {ran} ran (-v says why each ran)"
            )

    def _in_order(self, said: dict[str, Any]) -> list[tuple[str, Any]]:
        last = len(self.position)
        return sorted(said.items(), key=lambda kv: self.position.get(kv[0], last))


def _cached(report: pytest.TestReport) -> bool:
    return any(name == CACHED_PROPERTY for name, _ in report.user_properties)
