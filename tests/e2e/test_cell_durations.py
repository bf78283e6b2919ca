"""The slowest cells of each notebook: in pytest's ``--durations`` and in the HTML report.

Real kernels and real xdist: the cells' seconds travel from the workers in the reports.
"""

from __future__ import annotations

import json
import re

import pytest

from millrun_testing import write_notebook

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def slow(pytester: pytest.Pytester) -> None:
    cells = ["import time", "time.sleep(0.6)", "y = 2"]
    write_notebook(pytester.path / "nbs" / "slow.ipynb", cells, params=None)
    write_notebook(pytester.path / "nbs" / "quick.ipynb", ["z = 3"], params=None)


def test_durations_lists_the_slowest_cells_after_the_slowest_items(
    pytester: pytest.Pytester, slow: None
) -> None:
    result = pytester.runpytest_subprocess(
        "--millrun", "nbs", "-n", "2", "--durations", "2", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*slowest 2 durations*",
            "*slowest 2 notebook cells*",
            "0.6?s nbs/slow.ipynb::slow[[]0[]] cell 2: time.sleep(0.6)",
        ]
    )


def test_without_durations_no_cells_are_listed(pytester: pytest.Pytester, slow: None) -> None:
    result = pytester.runpytest("--millrun", "nbs", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "notebook cells" not in result.stdout.str()


def test_the_report_names_a_passing_runs_slowest_cells(
    pytester: pytest.Pytester, slow: None
) -> None:
    result = pytester.runpytest("--millrun", "nbs", "--millrun-report", "report.html")
    result.assert_outcomes(passed=2)
    page = (pytester.path / "report.html").read_text()
    blob = re.search(r'id="millrun-data">(.*?)</script>', page, re.S)
    assert blob is not None
    rows = json.loads(blob.group(1))["rows"]
    (slow_row,) = [row for row in rows if "nbs/slow.ipynb" in row["cells"]]
    (block,) = slow_row["detail"]
    assert block["title"] == "Slowest cells"
    assert re.match(r"0\.6\d s  cell 2: time\.sleep\(0\.6\)\n", block["text"]), block["text"]
