"""Concurrency stress: many concurrent kernel starts and shutdowns, with nothing failing or left.

Deselected by default (it takes minutes); run it with ``pytest -m stress``.
``MILLRUN_STRESS_REPEATS`` sets how many times the 200-execution run is repeated.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import assert_no_kernels_left, write_notebook, write_params

REPEATS = int(os.environ.get("MILLRUN_STRESS_REPEATS", "2"))


@pytest.mark.stress
@pytest.mark.usefixtures("kernel_start")
@pytest.mark.parametrize("repeat", range(REPEATS))
def test_200_concurrent_executions_at_n4_all_pass_and_leave_nothing(
    pytester: pytest.Pytester, kernel_tmp: Path, repeat: int
) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb", ["result = x + 1"], params="x = 0")
    write_notebook(pytester.path / "nbs" / "b.ipynb", ["result = x * 2"], params="x = 0")
    write_params(pytester.path / "p.json", {"x": list(range(100))})
    result = pytester.runpytest_subprocess(
        "--millrun-params", "p.json", "nbs", "-n", "4", "-p", "no:cacheprovider", timeout=1200
    )
    result.assert_outcomes(passed=200)
    assert "Address already in use" not in result.stdout.str()
    assert len(list((pytester.path / ".millrun" / "nbs").glob("*.ipynb"))) == 200
    assert_no_kernels_left(kernel_tmp, within=5)
