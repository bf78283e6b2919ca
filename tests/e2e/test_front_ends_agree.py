"""The same sweep through the three front ends (the pytest plugin, the ``millrun`` command and
``execute_run``), with real kernels: the same output notebook, and the same results rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import STREAMS, assert_no_kernels_left, write_notebook, write_params
from pytest_millrun import RunFailedError, execute_run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def streams(output: Path) -> dict[str, str]:
    """The text of each stream of the notebook's code cells, after the parameters."""
    found: dict[str, str] = {}
    for cell in json.loads(output.read_text())["cells"]:
        for out in cell.get("outputs", ()):
            if out["output_type"] == "stream":
                found[out["name"]] = found.get(out["name"], "") + "".join(out["text"])
    return found


def test_output_is_the_same_from_the_plugin_the_cli_and_the_api(
    pytester: pytest.Pytester, kernel_tmp: Path
) -> None:
    """ipykernel captures no descriptor under PYTEST_CURRENT_TEST: no kernel may see it."""
    write_notebook(pytester.path / "nbs" / "streams.ipynb", [STREAMS], params="x = 0")
    (pytester.path / "nbs" / "broken.ipynb").write_text('{"cells": [')
    write_params(pytester.path / "p.json", {"x": [1]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs/streams.ipynb", "-n", "2")
    result.assert_outcomes(passed=1)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir", "cli",
         "--workers", "1"],
        cwd=pytester.path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    # A notebook that is not one never ran, and the progress line says so instead of "-> None".
    assert "FAILED broken.ipynb [0] in 0.0 s: not run: Notebook broken.ipynb is not valid JSON" in (
        done.stderr
    )
    assert "None" not in done.stderr
    [api] = execute_run(pytester.path / "nbs" / "streams.ipynb", {"x": [1]}, output_dir="api")
    with pytest.raises(RunFailedError) as failed:
        execute_run(pytester.path / "nbs" / "broken.ipynb", {"x": [1]}, output_dir="api")
    assert str(failed.value).endswith(
        "is not valid JSON (Expecting value at line 1, column 12) (no output written)"
    ), str(failed.value)
    outputs: list[dict[str, Any]] = [
        streams(path)
        for path in (
            pytester.path / ".millrun" / "nbs" / "0-streams.ipynb",
            pytester.path / "cli" / "0-streams.ipynb",
            api.output,
        )
    ]
    for found in outputs:
        assert "from-system" in found["stdout"], found
        assert "from-subprocess" in found["stdout"], found
        assert "pytest variables: []" in found["stdout"], found
        assert found["stderr"] == "from-stderr\n", found
    assert_no_kernels_left(kernel_tmp)
