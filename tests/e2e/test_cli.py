"""The ``millrun`` command in a subprocess: outputs, exit codes, summary, help, interrupts."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from millrun_testing import (
    assert_no_kernels_left,
    output_files,
    wait_for_running_cells,
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


def start_cli(cwd: Path, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MILLRUN, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def interrupt(process: subprocess.Popen[str], how: str) -> tuple[str, str, float]:
    """Ctrl-C (the terminal signals the whole group) or SIGTERM (a CI cancel: the main
    process alone); the output, and the seconds from the signal until the command ended."""
    assert process.poll() is None
    started = time.monotonic()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    seconds = time.monotonic() - started
    stdout, stderr = process.communicate(timeout=60)
    return stdout, stderr, seconds


def pool_workers(cli: psutil.Process, cli_cmdline: list[str]) -> list[tuple[int, str]]:
    """The command's pool workers: forks of itself, or children of its forkserver (with the
    command line they have now, as a child between fork and exec has its parent's)."""
    found = []
    for child in cli.children():
        with contextlib.suppress(psutil.Error):
            cmdline = child.cmdline()
            if cmdline == cli_cmdline:
                found.append((child.pid, " ".join(cmdline)))
            elif "multiprocessing.forkserver" in " ".join(cmdline):
                found += [(w.pid, " ".join(w.cmdline())) for w in child.children()]
    return found


@KERNELS
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_with_workers_stops_within_seconds_leaving_nothing_behind(
    tmp_path: Path, kernel_tmp: Path, how: str
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["print(x)", "import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3, 4]})
    process = start_cli(tmp_path, "nbs", "p.json", "--output-dir", "out", "--workers", "2")
    wait_for_running_cells(tmp_path / "out", "*slow*", 2)  # both workers inside a notebook
    stdout, stderr, seconds = interrupt(process, how)
    # every worker stops its notebook and exits by itself, well within the 5 s grace
    assert seconds < 4, (seconds, stdout, stderr)
    assert process.returncode == 130, stderr
    last = stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"0 passed, 0 failed, 2 interrupted, 2 not run in [\d.]+s", last)
    out = tmp_path / "out"
    assert output_files(out) == ["0-slow.ipynb", "1-slow.ipynb"]
    assert not list(out.glob(".*partial*"))
    assert_no_kernels_left(kernel_tmp, within=5)
    # the workers stopped their fork templates and spare kernels and removed their folders
    assert sorted(p.name for p in kernel_tmp.iterdir()) == []


@KERNELS
@pytest.mark.parametrize("kernel_start", ["fork"], indirect=True)  # the same in spawn mode
@pytest.mark.parametrize(
    ("quick", "runs", "workers", "last"),
    [
        (True, 4, 2, "4 passed, 0 failed, 2 interrupted, 2 not run"),
        (False, 1, 1, "0 passed, 0 failed, 1 interrupted, 0 not run"),
        (False, 2, 2, "0 passed, 0 failed, 2 interrupted, 0 not run"),
    ],
    ids=["some-passed", "one-run", "none-left"],
)
def test_interrupted_summary_accounts_for_every_planned_run(
    tmp_path: Path, kernel_tmp: Path, quick: bool, runs: int, workers: int, last: str
) -> None:
    if quick:
        write_notebook(tmp_path / "nbs" / "quick.ipynb", ["pass"])
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": list(range(runs))})
    process = start_cli(tmp_path, "nbs", "p.json", "--output-dir", "out", "--workers", workers)
    wait_for_running_cells(tmp_path / "out", "*slow*", min(runs, workers))
    stdout, stderr, _ = interrupt(process, "ctrl-c")
    assert process.returncode == 130, stderr
    lines = stdout.strip().splitlines()
    assert re.fullmatch(rf"{last} in [\d.]+s", lines[-1]), stdout
    cut = min(runs, workers)
    assert f"Interrupted: {cut} cut short (partial outputs saved), {runs - cut} not run." in stdout
    assert "runs above finished" not in stdout
    notebook, out = tmp_path / "nbs" / "slow.ipynb", tmp_path / "out"
    for index in range(cut):  # each run cut short, named with its saved partial output
        assert f"{notebook} [{index}]\n    output: {out / f'{index}-slow.ipynb'}" in stdout
    assert_no_kernels_left(kernel_tmp, within=5)


@KERNELS
@pytest.mark.parametrize("kernel_start", ["fork"], indirect=True)
def test_pool_starts_no_more_workers_than_runs(tmp_path: Path, kernel_tmp: Path) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(4)"])
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    process = start_cli(tmp_path, "nbs", "p.json", "--output-dir", "out", "--workers", "8")
    cli = psutil.Process(process.pid)
    cli_cmdline = cli.cmdline()
    first_seen: dict[tuple[int, str], float] = {}
    last_seen: dict[tuple[int, str], float] = {}
    while process.poll() is None:
        for worker in pool_workers(cli, cli_cmdline):
            first_seen.setdefault(worker, time.monotonic())
            last_seen[worker] = time.monotonic()
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert "2 passed, 0 failed" in stdout
    # a worker lives on (a process on its way to exec another program does not)
    workers = [w for w in first_seen if last_seen[w] - first_seen[w] > 0.5]
    assert 1 <= len(workers) <= 2, workers
