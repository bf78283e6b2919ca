"""A user's typed script that calls ``millrun.execute_run`` type-checks, with real types.

The package says ``Typing :: Typed``: mypy must read its annotations from the
*installed* package (the ``py.typed`` marker), not treat ``import millrun`` as
untyped and every result as ``Any``.  The check runs mypy ``--strict`` on a script
in a folder of its own (so no source checkout is on mypy's path) against an
interpreter's installed packages: this test run's own by default (an editable
install reads the checkout), or the one ``MILLRUN_TYPECHECK_PYTHON`` names, which
``.ci/run`` sets to a fresh venv that holds the built wheel.

A wrong use must be an error, and ``reveal_type`` must name ``ExecutionResult``,
so the check cannot pass on ``Any``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_SCRIPT = '''\
"""What a user writes: run a sweep, then read the results with their types."""

from __future__ import annotations

from pathlib import Path

import millrun
import pytest_millrun
from millrun import ExecutionResult, RunFailedError


def sweep(folder: Path) -> list[ExecutionResult]:
    try:
        return millrun.execute_run(
            folder, {"noise": [0.1, 0.3]}, output_dir=folder / "runs", record=["rmse"]
        )
    except RunFailedError as failed:
        return list(failed.results)


def summary(results: list[ExecutionResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        rmse: object = result.recorded.get("rmse")
        duration: float = result.duration
        output: Path | str | None = result.output  # a URL with an output dir on object storage
        if result.passed:
            lines.append(f"{result.notebook.name} [{result.variation_id}] {rmse} {duration:.1f}s")
        elif result.error is not None:
            lines.append(f"{result.notebook.name}: {result.error.message} ({output})")
    millrun.write_results(results, "sweep.csv")
    return lines


version: str = millrun.__version__ + pytest_millrun.__version__
reveal_type(millrun.execute_run("nbs", {"x": [1]}))
'''

WRONG_USE = """\
import millrun

results = millrun.execute_run("nbs", {"x": [1]})
oops = results[0].passed + "x"
"""


def _typecheck_python() -> str:
    return os.environ.get("MILLRUN_TYPECHECK_PYTHON") or sys.executable


def test_mypy_strict_accepts_a_typed_user_script_and_catches_a_wrong_use(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    (tmp_path / "user_script.py").write_text(USER_SCRIPT)
    (tmp_path / "wrong_use.py").write_text(WRONG_USE)
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    # a warm cache (pytest's cache folder) makes a rerun take a second instead of 20
    cache = pytestconfig.cache
    cache_dir = cache.mkdir("millrun-typed-use-mypy") if cache else tmp_path / ".mypy_cache"
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--config-file", "mypy.ini",
            "--cache-dir", str(cache_dir),
            "--python-executable", _typecheck_python(),
            "--show-error-codes", "--no-pretty", "--no-error-summary",
            "user_script.py", "wrong_use.py",
        ],
        cwd=tmp_path,  # mypy puts its working folder on its path: no checkout there
        capture_output=True,
        text=True,
    )  # fmt: skip
    report = done.stdout + done.stderr
    lines = report.splitlines()
    user_errors = [line for line in lines if line.startswith("user_script.py") and "error:" in line]
    assert not user_errors, textwrap.indent(report, "  ")
    (revealed,) = [line for line in lines if "Revealed type" in line]
    assert re.search(r'"(builtins\.)?list\[[\w.]*\.ExecutionResult\]"', revealed), report
    wrong = [line for line in lines if line.startswith("wrong_use.py")]
    assert wrong == [
        'wrong_use.py:4: error: Unsupported operand types for + ("bool" and "str")  [operator]'
    ], report
