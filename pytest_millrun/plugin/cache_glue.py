"""The plugin's side of incremental runs: how a cached item and a re-run are reported.

The check itself is :mod:`pytest_millrun.cache.verdicts`, shared with the API
and the CLI; each item asks the session for it (:meth:`~pytest_millrun.plugin.
session.MillrunSession.verdict_for`) in the process that runs it (an xdist worker
too), once, remembered on the item.  A cached item passes
with its ``user_properties`` saying so (``millrun_cached``, which JUnit shows
as a property, and which xdist carries to the controller), and a variation
that runs says why (``millrun_ran_because``).  :class:`CacheReport` turns
those into pytest's own reporting: a ``cached`` category with the letter
``c`` in the progress line and a count in the summary line, and with ``-v``
the reasons each variation ran.
"""

from __future__ import annotations

from typing import Any

import pytest

CACHED_PROPERTY = "millrun_cached"
REASON_PROPERTY = "millrun_ran_because"


class CacheReport:
    """Registered with ``--millrun-cache``: the ``cached`` category, and why others ran."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reasons: dict[str, str] = {}
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

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Without xdist: the order the reasons are said in, as collected (longest first
        may run the items in another order; under xdist they come as the items end)."""
        from pytest_millrun.plugin.state import collection_order_key

        collected = self.config.stash.get(collection_order_key, None)
        ids = collected or [item.nodeid for item in session.items]
        self.position = {nodeid: index for index, nodeid in enumerate(ids)}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.verbose > 0:
            last = len(self.position)
            said = sorted(self.reasons.items(), key=lambda kv: self.position.get(kv[0], last))
            for nodeid, reason in said:
                terminalreporter.write_line(f"millrun: ran {nodeid}: {reason}")
        elif self.reasons:
            ran = len(self.reasons)
            terminalreporter.write_line(
                f"millrun: {self.cached} cached, {ran} ran (-v says why each ran)"
            )


def _cached(report: pytest.TestReport) -> bool:
    return any(name == CACHED_PROPERTY for name, _ in report.user_properties)
