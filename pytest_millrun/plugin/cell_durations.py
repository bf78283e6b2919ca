"""The slowest notebook cells under pytest's ``--durations``, after pytest's slowest items.

Why: pytest's own list names the slowest notebook variations; what a reader then wants is
the cell that made one slow.  Each notebook item's report carries its cells' seconds
(:data:`~pytest_millrun.plugin.state.CELLS_PROPERTY`, a user property, so xdist brings it
to the controller), and :class:`SlowestCells` lists the slowest cells of the whole run the
way pytest lists items: ``--durations=N`` of them (0: all), those under
``--durations-min`` left out unless ``-vv``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_millrun.plugin.state import CELLS_PROPERTY


def cell_seconds(report: pytest.TestReport) -> list[tuple[int, float, str]]:
    """The cells of a notebook item's run, from its report (none: not a notebook's run)."""
    for name, value in report.user_properties:
        if name == CELLS_PROPERTY:
            return [(int(i), float(s), str(line)) for i, s, line in json.loads(str(value))]
    return []


class SlowestCells:
    """Registered in the controller (or the only process) with ``--durations``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cells: list[tuple[float, str, int, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.cells += [(s, report.nodeid, i, line) for i, s, line in cell_seconds(report)]

    @pytest.hookimpl(trylast=True)  # after pytest's own list of the slowest items
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        count = self.config.option.durations
        if count is None or not self.cells:
            return
        slowest = sorted(self.cells, key=lambda cell: -cell[0])
        if count > 0:
            slowest = slowest[:count]
        least = self.config.option.durations_min  # None: pytest's own default, as it reads it
        if least is None:
            least = 0.005 if self.config.option.verbose < 2 else 0.0
        shown = [c for c in slowest if c[0] >= least]
        title = "slowest notebook cells" if count <= 0 else f"slowest {count} notebook cells"
        terminalreporter.write_sep("=", title)
        for seconds, nodeid, index, line in shown:
            terminalreporter.write_line(f"{seconds:02.2f}s {nodeid} cell {index + 1}: {line}")
        if len(shown) < len(slowest):
            terminalreporter.write_line(
                f"({len(slowest) - len(shown)} cells < {least:g}s hidden.  Use -vv to show them.)"
            )
