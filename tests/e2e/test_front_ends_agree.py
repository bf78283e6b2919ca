"""The same sweep through the three front ends (the pytest plugin, the ``millrun`` command and
``execute_run``), with real kernels: the same output notebook, and the same results rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import millrun
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


def rows_without_paths_and_durations(table: Path) -> list[dict[str, Any]]:
    """The rows of a JSON results table without ``output`` and ``duration_s``: where a front
    end writes its notebooks, and how long they took, are its own."""
    rows: list[dict[str, Any]] = json.loads(table.read_text())
    return [{k: v for k, v in row.items() if k not in ("output", "duration_s")} for row in rows]


def rows_of_each_front_end(
    pytester: pytest.Pytester, out: Path, round_: str, outcomes: dict[str, int]
) -> list[list[dict[str, Any]]]:
    """The sweep under ``pytester.path`` run with the cache by pytest under xdist, by the
    command with a pool and by the API, each writing its notebooks and its table under
    ``out``; their rows. ``outcomes``: pytest's summary counts."""
    root = pytester.path
    result = pytester.runpytest(
        "--millrun-params", "p.json", ".", "-n", "2", "--millrun-record", "total",
        "--millrun-output-dir", out / "pytest", "--millrun-results", out / f"pytest-{round_}.json",
        "--millrun-cache",
    )  # fmt: skip
    assert result.parseoutcomes() == outcomes, result.stdout.str()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", ".", "p.json", "--recursive", "--workers", "2",
         "--record", "total", "--output-dir", out / "cli", "--results", out / f"cli-{round_}.json",
         "--cache"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    with pytest.raises(RunFailedError) as failed:
        execute_run(
            root, root / "p.json", output_dir=out / "api", recursive=True, record=["total"],
            cache=True,
        )  # fmt: skip
    millrun.write_results(failed.value.results, out / f"api-{round_}.json")
    return [
        rows_without_paths_and_durations(out / f"{front}-{round_}.json")
        for front in ("pytest", "cli", "api")
    ]


def test_the_same_sweep_gives_the_same_result_rows_from_the_plugin_the_cli_and_the_api(
    pytester: pytest.Pytester, kernel_tmp: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two notebooks (one in a subfolder) x two variations, one of which fails, with a recorded
    value, run by each front end twice with the cache (the second time the passed runs are
    read back): the rows agree on status, parameters, values, cached and the error's
    headline."""
    root = pytester.path
    write_notebook(root / "add.ipynb", ["total = x + y"])
    write_notebook(root / "sub" / "divide.ipynb", ["total = x / (y - 2)"])
    write_params(root / "p.json", {"x": [1, 45], "y": [2, 3]})
    # pytest's rootdir: without an ini file, output paths given as arguments would move it
    pytester.makeini("[pytest]\n")
    out = tmp_path_factory.mktemp("outputs")  # outside the root, so no run finds another's
    by_pytest, by_cli, by_api = rows_of_each_front_end(
        pytester, out, "first", {"passed": 3, "failed": 1}
    )
    assert by_cli == by_pytest
    assert by_api == by_pytest
    first, second = {"param.x": 1, "param.y": 2}, {"param.x": 45, "param.y": 3}
    failure = "ZeroDivisionError: division by zero in cell [3]"
    assert by_pytest == [
        {"notebook": "add.ipynb", "variation": "0", "status": "passed", "cached": False,
         "error": "", **first, "value.total": 3},
        {"notebook": "add.ipynb", "variation": "1", "status": "passed", "cached": False,
         "error": "", **second, "value.total": 48},
        {"notebook": "sub/divide.ipynb", "variation": "0", "status": "failed", "cached": False,
         "error": failure, **first, "value.total": None},
        {"notebook": "sub/divide.ipynb", "variation": "1", "status": "passed", "cached": False,
         "error": "", **second, "value.total": 45.0},
    ]  # fmt: skip
    # again: the passed runs are read back from each front end's own outputs
    by_pytest, by_cli, by_api = rows_of_each_front_end(
        pytester, out, "again", {"cached": 3, "failed": 1}
    )
    assert by_cli == by_pytest
    assert by_api == by_pytest
    assert [row["cached"] for row in by_pytest] == [True, True, False, True]
    assert [row["value.total"] for row in by_pytest] == [3, 48, None, 45.0]
    assert_no_kernels_left(kernel_tmp)
