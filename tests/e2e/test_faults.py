"""Fault injection with real kernels: each fault fails its own item, with a clear message,
a saved partial output, the other items still passing, and no kernel left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from millrun_testing import (
    assert_no_kernels_left,
    wait_for_running_cells,
    write_notebook,
    write_params,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
KERNELS = pytest.mark.usefixtures("kernel_start")  # for tests that start kernels, in both modes


def run_with_good_neighbour(
    pytester: pytest.Pytester, cells: list[str], *args: str
) -> pytest.RunResult:
    write_notebook(pytester.path / "nbs" / "fault.ipynb", cells)
    write_notebook(pytester.path / "nbs" / "good.ipynb", ["result = x + y"])
    return pytester.runpytest_subprocess("--millrun", "nbs", "--junitxml=report.xml", *args)


def item_seconds(pytester: pytest.Pytester, name: str) -> float:
    """How long pytest says the item took (setup, call and teardown), from the JUnit report:
    unlike a clock around the whole run, no interpreter or worker start-up is in it."""
    tree = ET.parse(pytester.path / "report.xml")
    [case] = [c for c in tree.iter("testcase") if c.get("name") == name]
    return float(case.get("time", "nan"))


def saved_cells(pytester: pytest.Pytester) -> list[dict[str, object]]:
    cells: list[dict[str, object]] = json.loads(
        (pytester.path / ".millrun" / "nbs" / "0-fault.ipynb").read_text()
    )["cells"]
    return cells


@KERNELS
def test_notebook_timeout_stops_the_kernel_and_keeps_the_cells_that_ran(
    pytester: pytest.Pytester, kernel_tmp: Path
) -> None:
    # The limit's clock includes the kernel's start, which can take seconds on a busy
    # machine: 8 s leaves the first cell time to run.
    result = run_with_good_neighbour(
        pytester,
        ["print('before')", "import time\ntime.sleep(60)"],
        "--millrun-notebook-timeout",
        "8",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["TimeoutError: timed out after 8 s in cell [[]3[]]"])
    assert item_seconds(pytester, "fault[0]") < 40  # stopped, not left to sleep its 60 s
    printed = [o for c in saved_cells(pytester) for o in c.get("outputs", [])]  # type: ignore[attr-defined]
    assert any("before" in "".join(o.get("text", "")) for o in printed)
    assert_no_kernels_left(kernel_tmp)


@KERNELS
def test_cell_timeout_fails_the_item_naming_the_cell(
    pytester: pytest.Pytester, kernel_tmp: Path
) -> None:
    result = run_with_good_neighbour(
        pytester, ["import time\ntime.sleep(60)"], "--millrun-timeout", "2"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["TimeoutError: the per-cell time limit ran out in cell [[]2[]]"])
    assert_no_kernels_left(kernel_tmp)


@KERNELS
@pytest.mark.parametrize(
    ("code", "how"),
    [
        ("import os\nos._exit(3)", "exit code 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
    ],
    ids=["os-exit", "sigkill"],
)
def test_dead_kernel_fails_its_item_within_seconds_saying_how(
    pytester: pytest.Pytester, kernel_tmp: Path, code: str, how: str
) -> None:
    result = run_with_good_neighbour(pytester, ["print('alive')", code])
    result.assert_outcomes(passed=1, failed=1)
    assert item_seconds(pytester, "fault[0]") < 30  # noticed, not waited on
    result.stdout.fnmatch_lines([f"DeadKernelError: the kernel died in cell*({how}*"])
    assert (pytester.path / ".millrun" / "nbs" / "0-fault.ipynb").exists()
    assert_no_kernels_left(kernel_tmp)


#: Holds ipykernel's relay thread for a second before it writes what it read, so a
#: kernel that exits at once always loses those bytes unless something else relays them.
SLOW_RELAY_THREAD = (
    "import threading, time\n"
    "_write = os.write\n"
    "def write(fd, data):\n"
    "    if threading.current_thread() is not threading.main_thread():\n"
    "        time.sleep(1)\n"
    "    return _write(fd, data)\n"
    "os.write = write\n"
)


@KERNELS
@pytest.mark.parametrize("widened", [False, True], ids=["natural", "widened"])
def test_dead_kernel_report_quotes_its_last_stderr_lines_every_time(
    tmp_path: Path, widened: bool
) -> None:
    crash = (
        "import os\n"
        + (SLOW_RELAY_THREAD if widened else "")
        + "os.write(2, b'FATAL: the probe gave up here\\n')\n"
        + "os._exit(3)"
    )
    write_notebook(tmp_path / "nbs" / "fault.ipynb", ["print('alive')", crash], params="x = 0")
    write_params(tmp_path / "p.json", {"x": [1, 2, 3, 4]})
    done = subprocess.run(
        [sys.executable, "-m", "pytest_millrun", "nbs", "p.json", "--output-dir", "out",
         "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("FATAL: the probe gave up here") == 4, done.stdout


@KERNELS
@pytest.mark.parametrize(
    ("code", "outcome", "headline"),
    [
        ("import sys\nsys.exit(1)", "failed", "SystemExit: 1 in cell [[]2[]]"),
        ("import sys\nsys.exit(0)", "passed", None),
        ("raise KeyboardInterrupt", "failed", "KeyboardInterrupt in cell [[]2[]]"),
    ],
    ids=["sys-exit-1", "sys-exit-0", "keyboard-interrupt"],
)
def test_exits_and_interrupts_raised_in_a_cell_behave_like_papermill(
    pytester: pytest.Pytester, code: str, outcome: str, headline: str | None
) -> None:
    result = run_with_good_neighbour(pytester, [code])
    result.assert_outcomes(passed=2 if outcome == "passed" else 1, failed=int(outcome == "failed"))
    if headline:
        result.stdout.fnmatch_lines([headline])


def test_unknown_kernel_name_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    result = pytester.runpytest("--millrun", "nbs", "--millrun-kernel", "nosuchkernel")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["NoSuchKernel: nosuchkernel", "No kernel named 'nosuchkernel' is installed*"]
    )


@KERNELS
def test_notebook_for_a_language_without_kernel_fails_alone(pytester: pytest.Pytester) -> None:
    # a kernel name no machine has (this one may have IRkernel's "ir" installed)
    write_notebook(
        pytester.path / "nbs" / "r.ipynb", ["x <- 1"], params=None, kernel="ir-none", language="R"
    )
    write_notebook(pytester.path / "nbs" / "good.ipynb")
    result = pytester.runpytest("--millrun", "nbs")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["No kernel named 'ir-none' is installed*"])


@KERNELS
def test_undeclared_parameter_warns_naming_keys_and_notebook(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    write_params(pytester.path / "p.json", {"x": [1], "typo": [2]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*does not declare 'typo' in its parameters cell (it declares x, y)*"]
    )


def test_strict_params_refuses_before_anything_runs(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    write_params(pytester.path / "p.json", {"x": [1], "typo": [2]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs", "--millrun-strict-params")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "does not declare 'typo'" in result.stderr.str()
    assert not (pytester.path / ".millrun").exists()


def test_strict_params_under_xdist_is_the_notebooks_collection_error(
    pytester: pytest.Pytester,
) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    write_notebook(pytester.path / "nbs" / "b.ipynb", params="x = 1\ny = 2\ntypo = 0")
    write_params(pytester.path / "p.json", {"x": [1], "typo": [2]})
    result = pytester.runpytest(
        "--millrun-params", "p.json", "nbs", "--millrun-strict-params", "-n", "2"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting nbs/a.ipynb*", "*does not declare 'typo'*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@KERNELS
def test_notebook_without_parameters_cell_warns_once(pytester: pytest.Pytester) -> None:
    write_notebook(pytester.path / "nbs" / "a.ipynb", ["print(x)"], params=None)
    write_params(pytester.path / "p.json", {"x": [1, 2, 3]})
    result = pytester.runpytest("--millrun-params", "p.json", "nbs")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*has no cell tagged 'parameters'*"])


def test_kernel_that_cannot_start_is_a_clear_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = pytester.path / "kernels" / "kernels" / "broken"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", "import sys; print('cannot start', file=sys.stderr); sys.exit(3)"]
    (spec / "kernel.json").write_text(
        json.dumps(
            {"argv": [*argv, "{connection_file}"], "display_name": "b", "language": "python"}
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(pytester.path / "kernels"))
    write_notebook(pytester.path / "nbs" / "a.ipynb")
    result = pytester.runpytest_subprocess(
        "--millrun", "nbs", "--millrun-kernel", "broken", "-o", "addopts="
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*The kernel 'broken' could not start*exit code 3*", "*cannot start*"]
    )


@KERNELS
def test_kernel_connection_is_private(pytester: pytest.Pytester) -> None:
    code = (
        "import json, os, stat\n"
        "from ipykernel.connect import get_connection_file\n"
        "path = get_connection_file()\n"
        "info = json.load(open(path))\n"
        "assert info['transport'] == 'ipc', info\n"
        "assert info['key'] and info['signature_scheme'] == 'hmac-sha256'\n"
        "assert stat.S_IMODE(os.stat(path).st_mode) == 0o600\n"
        "assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & 0o777 == 0o700\n"
    )
    write_notebook(pytester.path / "nbs" / "a.ipynb", [code])
    pytester.runpytest("--millrun", "nbs").assert_outcomes(passed=1)


@KERNELS
@pytest.mark.parametrize(
    ("sig", "xdist"),
    [(signal.SIGINT, []), (signal.SIGINT, ["-n", "2"]), (signal.SIGTERM, [])],
    ids=["sigint-serial", "sigint-xdist", "sigterm-serial"],
)
def test_interrupt_stops_pytest_promptly_and_leaves_no_kernel(
    pytester: pytest.Pytester, kernel_tmp: Path, sig: signal.Signals, xdist: list[str]
) -> None:
    write_notebook(pytester.path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(pytester.path / "p.json", {"x": [1, 2, 3, 4]})
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--millrun-params", "p.json", "nbs", *xdist],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    wait_for_running_cells(pytester.path / ".millrun" / "nbs", ".*partial*", timeout=60)
    started = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)  # Ctrl-C: the terminal signals the whole group
    else:
        process.send_signal(sig)  # a CI cancel: the main process alone
    output, _ = process.communicate(timeout=60)
    assert time.monotonic() - started < 20, output
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output or "Interrupted" in output
    assert list(pytester.path.glob(".millrun/nbs/*-slow.ipynb")), "the partial output is kept"
    assert_no_kernels_left(kernel_tmp)
