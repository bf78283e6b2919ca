"""Kernels that run side by side share the cores: each one's native thread pools get the cores
divided by the kernels running at once, unless the user sized them; real kernels, real
xdist and the real process pool."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from millrun_testing import write_notebook, write_params
from pytest_millrun.execution.kernel_threads import KERNELS_AT_ONCE, THREAD_VARIABLES, usable_cpus

#: What the notebook records: two of the variables, as its kernel started with them.
CELL = """\
import os
threads = {n: os.environ.get(n) for n in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
"""


def recorded_threads(output: Path) -> dict[str, str | None]:
    nb = json.loads(output.read_text())
    found: dict[str, str | None] = nb["metadata"]["millrun"]["recorded"]["threads"]
    return found


@pytest.fixture
def sweep(pytester: pytest.Pytester, kernel_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook and two variations, in an environment that sizes no thread pool and runs
    no xdist worker (this suite may run under xdist itself)."""
    for name in (*THREAD_VARIABLES, "PYTEST_XDIST_WORKER_COUNT", KERNELS_AT_ONCE):
        monkeypatch.delenv(name, raising=False)
    write_notebook(pytester.path / "nbs" / "t.ipynb", [CELL], params="x = 0")
    return write_params(pytester.path / "p.json", {"x": [1, 2]})


def test_kernels_under_xdist_get_the_cores_divided_by_the_workers(
    pytester: pytest.Pytester, sweep: Path
) -> None:
    share = str(max(1, usable_cpus() // 2))
    result = pytester.runpytest("--millrun-params", sweep, "nbs", "-n", "2",
                                "--millrun-record", "threads")  # fmt: skip
    result.assert_outcomes(passed=2)
    for name in ("0-t.ipynb", "1-t.ipynb"):
        got = recorded_threads(pytester.path / ".millrun" / "nbs" / name)
        assert got == {"OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share}


def test_one_kernel_at_a_time_and_a_users_setting_are_left_alone(
    pytester: pytest.Pytester, sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = pytester.runpytest("--millrun-params", sweep, "nbs", "--millrun-record", "threads")
    result.assert_outcomes(passed=2)
    got = recorded_threads(pytester.path / ".millrun" / "nbs" / "0-t.ipynb")
    assert got == {"OMP_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user decides for all of them
    result = pytester.runpytest("--millrun-params", sweep, "nbs", "-n", "2",
                                "--millrun-record", "threads")  # fmt: skip
    result.assert_outcomes(passed=2)
    got = recorded_threads(pytester.path / ".millrun" / "nbs" / "1-t.ipynb")
    assert got == {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": None}


def test_the_commands_pool_workers_share_the_cores_too(
    pytester: pytest.Pytester, sweep: Path
) -> None:
    share = str(max(1, usable_cpus() // 2))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir", "out",
         "--workers", "2", "--record", "threads"],
        cwd=pytester.path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    got = recorded_threads(pytester.path / "out" / "0-t.ipynb")
    assert got == {"OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share}
