"""The plugin's side of incremental runs: the check where an item runs, and how it is reported.

The check itself is :mod:`pytest_millrun.cache.verdicts`, shared with the API
and the CLI.  Here: each item checks its output in the process that runs it
(an xdist worker too), once, remembered on the item; a cached item passes
with its ``user_properties`` saying so (``millrun_cached``, which JUnit shows
as a property, and which xdist carries to the controller), and a variation
that runs says why (``millrun_ran_because``).  :class:`CacheReport` turns
those into pytest's own reporting: a ``cached`` category with the letter
``c`` in the progress line and a count in the summary line, and with ``-v``
the reasons each variation ran.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from pytest_millrun.cache.keys import CacheKey
from pytest_millrun.cache.verdicts import RunInputs, Verdict
from pytest_millrun.plugin.state import settings_key

CACHED_PROPERTY = "millrun_cached"
REASON_PROPERTY = "millrun_ran_because"
#: The item's verdict and key, once checked in this process.
verdict_key = pytest.StashKey[tuple[Verdict, "CacheKey | None"]]()
#: The run's declared inputs, hashed once in this process.
inputs_key = pytest.StashKey[RunInputs]()


def configure(config: pytest.Config) -> None:
    """Start a new run's memory of files; name, once, an input glob that matches nothing."""
    from pytest_millrun.cache import keys, verdicts

    settings = config.stash[settings_key].cache_settings
    keys.forget()
    inputs = verdicts.RunInputs(settings)
    config.stash[inputs_key] = inputs
    if inputs.unmatched and not hasattr(config, "workerinput"):
        message = keys.unmatched_message(
            inputs.unmatched, inputs.base, "--millrun-cache-inputs / millrun_cache_inputs"
        )
        config.issue_config_time_warning(keys.CacheInputWarning(message), stacklevel=2)
    config.pluginmanager.register(CacheReport(config), "millrun-cache")


def check_item(item: Any) -> tuple[Verdict, CacheKey | None]:
    """The item's verdict (a hit, or why it runs) and the key a pass will record."""
    from pytest_millrun.cache import verdicts

    known: tuple[Verdict, CacheKey | None] | None = item.stash.get(verdict_key, None)
    if known is not None:
        return known
    settings = item.config.stash[settings_key]
    inputs = item.config.stash[inputs_key]
    unmatched = len(inputs.unmatched_more)
    found = verdicts.verdict_for(
        item.path, item.variation, item.output, inputs, settings.cache_settings,
        kernel_name=settings.kernel_name, record=item.record, papermill_kwargs={},
        more_inputs=settings.suite.section_for(item.path).inputs if settings.suite else (),
    )  # fmt: skip
    if len(inputs.unmatched_more) > unmatched:
        from pytest_millrun.cache.keys import CacheInputWarning, unmatched_message

        new = inputs.unmatched_more[unmatched:]
        message = unmatched_message(new, inputs.base, f"The suite's inputs of {item.path.name}")
        warnings.warn(CacheInputWarning(message), stacklevel=2)
    item.stash[verdict_key] = found
    return found


class CacheReport:
    """Registered with ``--millrun-cache``: the ``cached`` category, and why others ran."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reasons: dict[str, str] = {}
        self.cached = 0

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

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.verbose > 0:
            for nodeid, reason in self.reasons.items():
                terminalreporter.write_line(f"millrun: ran {nodeid}: {reason}")
        elif self.reasons:
            ran = len(self.reasons)
            terminalreporter.write_line(
                f"millrun: {self.cached} cached, {ran} ran (-v says why each ran)"
            )


def _cached(report: pytest.TestReport) -> bool:
    return any(name == CACHED_PROPERTY for name, _ in report.user_properties)
