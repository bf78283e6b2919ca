"""What a new user hit (issue 23): one output notebook whichever front end ran it, failures and
early exits that explain themselves, warnings said once, and records per notebook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import assert_no_kernels_left, write_notebook, write_params
from pytest_millrun import RunFailedError, execute_run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: Output at the descriptor level (a shell command, a child process) and from Python, and
#: which of pytest's variables the kernel sees.
STREAMS = """\
import os, subprocess, sys
os.system("echo from-system")
subprocess.run(["echo", "from-subprocess"], check=True)
print("from-stderr", file=sys.stderr)
print("pytest variables:", [k for k in ("PYTEST_CURRENT_TEST", "PYTEST_VERSION",
      "PYTEST_XDIST_WORKER") if k in os.environ])
total = x * 10
"""

SUITE = """\
variations: [{x: 1}]
notebooks:
  nbs/calc.ipynb: {variations: [{x: 1, z: 5}], record: [result]}
  elsewhere/*.ipynb: {constants: {x: 2}}
  nope/*.ipynb: {constants: {x: 3}}
marks:
  - {notebooks: elsewhere/*.ipynb, skip: not in this run}
"""


def streams(output: Path) -> dict[str, str]:
    """The text of each stream of the notebook's code cells, after the parameters."""
    found: dict[str, str] = {}
    for cell in json.loads(output.read_text())["cells"]:
        for out in cell.get("outputs", ()):
            if out["output_type"] == "stream":
                found[out["name"]] = found.get(out["name"], "") + "".join(out["text"])
    return found


def project(root: Path) -> None:
    write_notebook(root / "nbs" / "streams.ipynb", [STREAMS], params="x = 0")
    write_notebook(root / "nbs" / "calc.ipynb")  # declares x and y; the suite also gives z
    write_notebook(root / "nbs" / "magic.ipynb", ["%undefined-line-magic", "print('never')"])
    write_notebook(root / "nbs" / "stop.ipynb", ["import sys", "sys.exit()", "a = 1", "b = 2"])
    write_notebook(root / "elsewhere" / "other.ipynb")  # in the suite, not in this run
    (root / "suite.yaml").write_text(SUITE)


def test_plugin_run_explains_failures_and_exits_and_records_per_notebook(
    pytester: pytest.Pytester, kernel_tmp: Path
) -> None:
    project(pytester.path)
    result = pytester.runpytest(
        "--millrun-params", "suite.yaml", "nbs", "-n", "2",
        "--millrun-record", "streams*.ipynb:total", "--millrun-results", "table.json",
        "--millrun-report", "report.html",
    )  # fmt: skip
    out = result.stdout.str()
    result.assert_outcomes(passed=3, failed=1, warnings=2)
    # An error without text of its own quotes what the cell printed.
    result.stdout.fnmatch_lines(
        [
            "*CellExecutionError: UsageError: Line magic function `%undefined-line-magic` not "
            "found in cell [[]3[]]*",
            "The cell printed (last lines):",
            "    UsageError: Line magic function `%undefined-line-magic` not found.",
        ]
    )
    # sys.exit() passes, as in papermill, and the summary and the report say what it skipped.
    note = "stop.ipynb: stopped by SystemExit in cell [4]; 2 later cells not run."
    assert f"millrun: {note}" in out
    assert note in (pytester.path / "report.html").read_text()
    # Warnings: once under -n 2, named by the notebook, no JSON line quoted as its source.
    assert out.count("does not declare 'z'") == 1, out
    result.stdout.fnmatch_lines(
        ["nbs/calc.ipynb:0", "  nbs/calc.ipynb:0: MillrunParameterWarning*"]
    )
    assert "    {" not in out.splitlines()
    # The glob of notebooks on disk but outside this run is not a typo; one matching nothing is.
    assert "glob 'elsewhere/*.ipynb' match" not in out
    assert "matched no collected item" not in out  # the mark rule for them neither
    assert out.count("the notebooks glob 'nope/*.ipynb' matches no file under") == 1
    # Each notebook records its own names: the suite's for calc, the glob's for streams.
    rows = {row["notebook"]: row for row in json.loads((pytester.path / "table.json").read_text())}
    assert rows["nbs/calc.ipynb"]["value.result"] == 3
    assert rows["nbs/streams.ipynb"]["value.total"] == 10
    assert rows["nbs/stop.ipynb"]["status"] == "passed"
    assert (
        "value.result" not in rows["nbs/stop.ipynb"]
        or rows["nbs/stop.ipynb"]["value.result"] is None
    )
    assert_no_kernels_left(kernel_tmp)


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


def test_empty_folder_says_no_notebook_was_found_and_where(pytester: pytest.Pytester) -> None:
    (pytester.path / "empty").mkdir()
    write_notebook(pytester.path / "full" / "a.ipynb")
    result = pytester.runpytest("--millrun", "empty", "-n", "2")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert result.stdout.str().count("millrun: no notebook found under empty:") == 1
    deselected = pytester.runpytest("--millrun", "full", "-k", "nothing")
    assert deselected.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "no notebook found" not in deselected.stdout.str()


def test_suite_warning_of_a_json_params_file_quotes_no_line_of_it(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "calc.ipynb")
    write_params(
        pytester.path / "suite.json", {"notebooks": {"nbs/calc.ipnyb": {"constants": {"x": 2}}}}
    )
    result = pytester.runpytest(
        "--millrun-params", "suite.json", "nbs", "--collect-only", "-n", "2"
    )
    result.stdout.fnmatch_lines(["suite.json:0", "  suite.json:0: MillrunSuiteWarning: *"])
    assert result.stdout.str().count("matches no file under") == 1
    assert "    {" not in result.stdout.lines
