"""What a run reports and writes, with real kernels: each front end's words for a failure,
errors before the first cell, timeouts in the output's metadata, Jupyter's cell tags and
notebooks that name no kernel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import STREAMS, assert_no_kernels_left, write_notebook, write_params
from pytest_millrun import RunFailedError, execute_run
from pytest_millrun.core.naming import partial_path
from pytest_millrun.execution.execute import execute_notebook

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: A message of ours quoting one that ends in a full stop, then going on ("provided.. Choose").
DOUBLE_STOP = re.compile(r"\w\.\. [A-Z]")


def tag(path: Path, index: int, *tags: str) -> None:
    """Add Jupyter cell tags to cell ``index`` of a notebook on disk."""
    data = json.loads(path.read_text())
    data["cells"][index]["metadata"]["tags"] = list(tags)
    path.write_text(json.dumps(data))


def saved(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def statuses(notebook: dict[str, Any]) -> list[str]:
    return [cell["metadata"]["papermill"]["status"] for cell in notebook["cells"]]


def faulty_project(root: Path) -> None:
    """A bare assert, a cell over the time limit, an unknown kernel, and no kernel at all."""
    write_notebook(root / "nbs" / "bare.ipynb", ["assert x == 2"])
    write_notebook(root / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_notebook(root / "nbs" / "alien.ipynb", ["x"], kernel="nosuchkernel")
    write_notebook(root / "nbs" / "nokernel.ipynb", ["import sys\nassert sys.version"], kernel=None)


def test_pytest_names_its_own_options_and_a_bare_assert_reads_cleanly(
    pytester: pytest.Pytester,
) -> None:
    faulty_project(pytester.path)
    result = pytester.runpytest("--millrun", "nbs", "--millrun-timeout", "2")
    result.assert_outcomes(passed=1, failed=3)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["AssertionError in cell [[]2[]]"])
    assert "AssertionError:  in" not in out
    assert "AssertionError: AssertionError" not in out
    assert "Raise the limit (--millrun-timeout)" in out
    assert "choose an installed kernel with --millrun-kernel." in out
    assert "(--timeout)" not in out
    assert "with --kernel." not in out
    result.stdout.fnmatch_lines(
        ["millrun: nokernel.ipynb names no kernel in its metadata, so it ran on the default "
         "kernel python3 (choose another with --millrun-kernel)."]
    )  # fmt: skip
    assert not DOUBLE_STOP.search(out), out


def test_cli_names_its_own_options_and_says_each_failure_once(tmp_path: Path) -> None:
    faulty_project(tmp_path)
    (tmp_path / "nbs" / "broken.ipynb").write_text('{"cells": [')
    write_params(tmp_path / "p.json", {"x": [1]})
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir", "out",
         "--timeout", "2", "--workers", "1", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert f"{tmp_path / 'nbs' / 'bare.ipynb'} [0] in cell [3]\n    AssertionError\n" in out
    assert "AssertionError:" not in out
    assert "Raise the limit (--timeout)" in out
    assert "choose an installed kernel with --kernel." in out
    assert "--millrun" not in out
    assert out.count("is not valid JSON") == 1, out
    assert (
        "note: nokernel.ipynb names no kernel in its metadata, so it ran on the default kernel "
        "python3 (choose another with --kernel)." in out
    )
    assert "1 passed, 4 failed" in out
    assert not DOUBLE_STOP.search(out), out


@pytest.mark.usefixtures("kernel_start")
def test_errors_before_the_first_cell_say_what_failed(tmp_path: Path) -> None:
    # the execution layer itself, below the front ends' checks before a run (which refuse
    # unwritable folders and lone surrogates in params files up front)
    notebook = write_notebook(tmp_path / "nbs" / "a.ipynb")
    taken = tmp_path / "taken" / "0-a.ipynb"
    partial_path(taken).mkdir(parents=True)  # the hidden partial name cannot be written
    runs = {
        "taken": ({"x": 1}, taken),
        "encoding": ({"x": "\ud800", "y": 2}, tmp_path / "enc" / "0-a.ipynb"),
    }
    messages = {}
    for name, (variation, output) in runs.items():
        result = execute_notebook(notebook, output, variation)
        assert result.error is not None
        messages[name] = result.error.message
    for message in messages.values():
        assert "could not start" not in message, message
        assert "ipykernel" not in message, message
    assert messages["taken"].startswith(
        "Writing the output notebook failed before the first cell: IsADirectoryError"
    )
    assert str(partial_path(taken)) in messages["taken"]
    assert messages["encoding"].startswith("The parameter 'x' of this variation cannot be written")
    # what the failed write left behind does not block the next run into the same folder
    assert execute_notebook(notebook, tmp_path / "enc" / "0-a.ipynb", {"x": 1}).passed


@pytest.mark.usefixtures("kernel_start")
@pytest.mark.parametrize("limit", ["cell", "notebook"])
def test_a_timeout_marks_its_cell_failed_and_the_later_cells_not_run(
    tmp_path: Path, limit: str
) -> None:
    notebook = write_notebook(
        tmp_path / "nb.ipynb", ["print('before')", "import time\ntime.sleep(60)", "after = 1"]
    )
    # the whole-notebook limit counts the kernel's start too: generous, for busy machines
    limits: dict[str, Any] = (
        {"execution_timeout": 2} if limit == "cell" else {"notebook_timeout": 8}
    )
    with pytest.raises(RunFailedError) as info:
        execute_run(notebook, [{}], output_dir=tmp_path / "out", **limits)
    [failure] = info.value.failures
    assert failure.error is not None
    assert failure.error.kind == "timeout"
    assert failure.error.headline.endswith("in cell [3]")
    output = saved(tmp_path / "out" / "0-nb.ipynb")
    assert statuses(output) == ["completed", "completed", "failed", "pending"]
    assert [cell["metadata"]["papermill"]["exception"] for cell in output["cells"][:3]] == [
        False, False, True,
    ]  # fmt: skip
    assert output["metadata"]["papermill"]["exception"] is True


@pytest.mark.usefixtures("kernel_start")
def test_a_dead_kernel_names_its_cell_the_same_way_every_time(
    pytester: pytest.Pytester,
) -> None:
    crash = ["print('alive')", "import os\nos._exit(3)"]
    write_notebook(pytester.path / "nbs" / "crash.ipynb", crash)
    write_params(pytester.path / "p.json", {"x": list(range(6))})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs")
    result.assert_outcomes(failed=6)
    headlines = [line for line in result.stdout.lines if line.startswith("DeadKernelError")]
    assert headlines == ["DeadKernelError: the kernel died in cell [4] (exit code 3)"] * 6


def test_jupyter_cell_tags_and_a_notebook_without_kernel(pytester: pytest.Pytester) -> None:
    expected = write_notebook(
        pytester.path / "nbs" / "expected.ipynb",
        ["raise ValueError('expected')", "after = 1", "raise RuntimeError('skipped')"],
    )
    tag(expected, 1, "raises-exception")
    tag(expected, 3, "skip-execution")
    unexpected = write_notebook(
        pytester.path / "nbs" / "unexpected.ipynb",
        ["raise ValueError('expected')", "raise KeyError('boom')", "never = 1"],
    )
    tag(unexpected, 1, "raises-exception")
    write_notebook(pytester.path / "nbs" / "nokernel.ipynb", ["result = x + y"], kernel=None)
    result = pytester.runpytest_subprocess("--millrun", "nbs", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*KeyError: 'boom' in cell [[]3[]]*", "millrun: nokernel.ipynb names no kernel*"]
    )
    out = pytester.path / ".millrun" / "nbs"
    passed = saved(out / "0-expected.ipynb")
    [error] = passed["cells"][1]["outputs"]
    assert (error["output_type"], error["ename"]) == ("error", "ValueError")
    assert passed["cells"][3]["outputs"] == []  # skip-execution: never ran
    assert not passed["metadata"]["papermill"]["exception"]
    assert not [c for c in passed["cells"] if "papermill-error-cell-tag" in c["metadata"]["tags"]]
    failed = saved(out / "0-unexpected.ipynb")
    # papermill's markers: a notice on top, an anchor just before the untagged error
    assert "In [3]" in "".join(failed["cells"][0]["source"])
    assert "papermill-error-cell-tag" in failed["cells"][3]["metadata"]["tags"]
    assert failed["cells"][2]["outputs"][0]["ename"] == "ValueError"  # still there
    assert failed["cells"][4]["outputs"][0]["ename"] == "KeyError"


@pytest.mark.usefixtures("kernel_start")
def test_a_segfault_report_quotes_the_faulthandler_dump_of_the_crashing_cell(
    pytester: pytest.Pytester,
) -> None:
    crash = "import ctypes, faulthandler\nfaulthandler.enable()\nctypes.string_at(0)"
    write_notebook(pytester.path / "nbs" / "segv.ipynb", [crash])
    write_params(pytester.path / "p.json", {"x": [1, 2]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "DeadKernelError: the kernel died in cell [[]3[]] (killed by SIGSEGV)",
            "*The kernel's last output was:",
            "    Fatal Python error: Segmentation fault",
            "    Current thread * (most recent call first):",
            "      File *ctypes*, line * in string_at",
            "      File *, line 3 in <module>",
        ]
        * 2,
        consecutive=False,
    )


SUITE = """\
variations: [{x: 1}]
notebooks:
  nbs/calc.ipynb: {variations: [{x: 1, z: 5}], record: [result]}
  elsewhere/*.ipynb: {constants: {x: 2}}
  nope/*.ipynb: {constants: {x: 3}}
marks:
  - {notebooks: elsewhere/*.ipynb, skip: not in this run}
"""


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
