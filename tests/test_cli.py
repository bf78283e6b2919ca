"""The ``millrun`` command in a subprocess: outputs, exit codes, summary, help, interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    assert_no_kernels_left,
    kernels_under,
    output_files,
    write_notebook,
    write_params,
)

MILLRUN = [sys.executable, "-m", "pytest_millrun"]

KERNELS = pytest.mark.usefixtures("kernel_start")  # for tests that start kernels, in both modes


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MILLRUN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@KERNELS
def test_seed_readme_example_works_as_written(tmp_path: Path) -> None:
    write_notebook(
        tmp_path / "Notebooks_Dir" / "special_calculation.ipynb",
        ["results = x_values * y_values"],
        params="x_values = 1\ny_values = 1",
    )
    write_params(tmp_path / "params.json", {"x_values": [0, 3], "y_values": [45, 10]})
    done = run(
        "./Notebooks_Dir", "params.json", "--prepend", "x_values,y_values,results", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert output_files(tmp_path / "Notebooks_Dir") == [
        "0-45-results-special_calculation.ipynb",
        "3-10-results-special_calculation.ipynb",
        "special_calculation.ipynb",
    ]
    assert "2 passed, 0 failed" in done.stdout
    # our kernels' own chatter (warnings, "running over TCP" notices) stays out of the terminal
    assert "kernel" not in done.stderr.lower()


@KERNELS
def test_failures_exit_1_with_a_summary_of_each(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = x / (y - 2)"])
    write_params(tmp_path / "p.json", {"x": [1, 2], "y": [2, 3]})
    done = run("nbs", "p.json", "--output-dir", "out", "--append", "y", cwd=tmp_path)
    assert done.returncode == 1
    out = tmp_path / "out" / "divide-2.ipynb"
    assert f"{tmp_path / 'nbs' / 'divide.ipynb'} [2] in cell [3]" in done.stdout
    assert "ZeroDivisionError: division by zero" in done.stdout
    assert f"output: {out}" in done.stdout
    assert "1 passed, 1 failed" in done.stdout
    assert output_files(tmp_path / "out") == ["divide-2.ipynb", "divide-3.ipynb"]
    # not a terminal: one plain line per finished run
    assert "[2/2]" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing_dir", "p.json"], "does not exist"),
        (["nbs", "missing.json"], "does not exist"),
        (["nbs", "bad.json"], "unequal lengths"),
        (["nbs", "p.json", "--no-such-option"], "No such option"),
        (["nbs", "p.json", "--timeout", "-1"], "positive number"),
        (["nbs", "p.json", "--include-glob-pattern", "*.nothing"], "No notebooks found"),
    ],
)
def test_bad_usage_or_input_exits_2_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    write_params(tmp_path / "p.json", {"x": [1]})
    write_params(tmp_path / "bad.json", {"x": [1], "y": [1, 2]})
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_recursive_exclude_and_kernel_options_choose_what_runs_and_how(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    write_notebook(tmp_path / "nbs" / "skip_me.ipynb", ["raise RuntimeError('excluded')"])
    write_notebook(tmp_path / "nbs" / "deep" / "b.ipynb", kernel="no-such-kernel")
    write_notebook(tmp_path / "nbs" / "deep" / "skip_too.ipynb", ["raise RuntimeError('no')"])
    write_params(tmp_path / "p.json", {"x": [1]})
    done = run(
        "nbs", "p.json", "--output-dir", "out", "--recursive", "--exclude-glob-pattern", "skip*",
        "--kernel", "python3", "--workers", "1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # b.ipynb's own kernel is missing
    assert output_files(tmp_path / "out") == ["0-a.ipynb", "deep/0-b.ipynb"]


def test_notebook_timeout_option_stops_the_notebook_and_keeps_its_output(
    tmp_path: Path,
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": [1]})
    done = run("nbs", "p.json", "--output-dir", "out", "--notebook-timeout", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 2 s" in done.stdout
    assert output_files(tmp_path / "out") == ["0-slow.ipynb"]


def test_strict_params_option_refuses_an_undeclared_key_before_running(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    write_params(tmp_path / "p.json", {"x": [1], "typo": [2]})
    done = run("nbs", "p.json", "--output-dir", "out", "--strict-params", cwd=tmp_path)
    assert done.returncode == 2
    assert "does not declare 'typo'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_help_documents_arguments_options_and_defaults(tmp_path: Path) -> None:
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0
    for text in ["NOTEBOOK_DIR_OR_FILE PARAMS", "--output-dir", "--prepend", "--append",
                 "--recursive / --no-recursive", "--exclude-glob-pattern",
                 "--include-glob-pattern", "--workers", "--kernel", "--timeout",
                 "--notebook-timeout", "--no-progress", "[default:", "Exit status"]:  # fmt: skip
        assert text in done.stdout, text


def test_millrun_script_and_module_are_the_same_command(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("millrun")
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert by_script.stdout == run("--help", cwd=tmp_path).stdout


@KERNELS
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_promptly_leaves_no_process_and_keeps_outputs(
    tmp_path: Path, kernel_tmp: Path, how: str
) -> None:
    write_notebook(tmp_path / "nbs" / "quick.ipynb", ["pass"])
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3, 4]})
    process = subprocess.Popen(
        [*MILLRUN, "nbs", "p.json", "--output-dir", "out", "--workers", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "out").glob("*slow*"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert process.poll() is None
    started = time.monotonic()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does: the whole group
    else:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 15
    assert process.returncode == 130, stderr
    assert "Interrupted" in stdout
    assert "not run" in stdout
    saved = output_files(tmp_path / "out")
    assert {"0-quick.ipynb", "1-quick.ipynb", "2-quick.ipynb", "3-quick.ipynb"} <= set(saved)
    assert "0-slow.ipynb" in saved  # the partial output of a run that was cut short
    assert "2 interrupted" in stdout
    assert not list((tmp_path / "out").glob(".*partial*"))
    assert_no_kernels_left(kernel_tmp, within=5)
    assert kernels_under(kernel_tmp) == []
