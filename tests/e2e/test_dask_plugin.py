"""The pytest plugin on Dask (``--millrun-dask``): real pytest runs in subprocesses, with a
real LocalCluster (``local``) or a `dask scheduler` and `dask worker` started here, and real
kernels.

Why subprocesses: the plugin starts a cluster, or a client with threads of its own, inside
pytest; a pytester run in this process would leave them to the next test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from millrun_testing import (
    assert_no_kernels_left,
    assert_nothing_left,
    dask_scheduler_and_worker,
    output_files,
    private_tmp,
    wait_for_running_cells,
    write_notebook,
    write_params,
)

pytest.importorskip("distributed")

#: A cell that prints when it started and ended, and which process started its kernel.
SPAN = (
    "import os, time\nstart = time.time()\ntime.sleep(1.5)\nend = time.time()\n"
    "print(start, end, os.environ['JPY_PARENT_PID'])"
)


@pytest.fixture(scope="module")
def remote_address() -> Iterator[tuple[str, Path]]:
    """`dask scheduler` and one `dask worker --nthreads 2`, separate processes on 127.0.0.1."""
    with dask_scheduler_and_worker(nthreads=2) as (address, tmp):
        yield address, tmp


def run_pytest(
    folder: Path, *args: str, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"TMPDIR": str(tmp)} if tmp is not None else {})}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def spans(folder: Path) -> list[tuple[float, float, int]]:
    """(start, end, the kernel's parent pid) that each output's span cell printed."""
    found = []
    for path in sorted(folder.rglob("*.ipynb")):
        cells = nbformat.read(str(path), as_version=4).cells
        text = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
        start, end, parent = text.split()[:3]
        found.append((float(start), float(end), int(parent)))
    return found


def test_local_cluster_runs_the_items_at_once_and_reports_as_usual(tmp_path: Path) -> None:
    """Serial pytest, yet two 1.5 s notebooks overlap: they ran on the 2 workers at once."""
    write_notebook(tmp_path / "nbs" / "span.ipynb", [SPAN, "result = 1 / x"])
    write_params(tmp_path / "p.json", {"x": [1, 0, 2]})
    tmp = private_tmp()
    done = run_pytest(
        tmp_path, "--millrun-params", "p.json", "nbs", "--millrun-dask", "local",
        "--millrun-dask-workers", "2", "--junitxml", "junit.xml", "--millrun-results",
        "results.csv", "-rA", tmp=tmp,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 2 passed" in done.stdout
    assert "ZeroDivisionError" in done.stdout  # the failure's report, as without Dask
    assert "span[1]" in done.stdout
    found = spans(tmp_path / ".millrun")
    assert len(found) == 3
    ordered = sorted(found)
    assert any(a[1] > b[0] for a, b in itertools.pairwise(ordered)), found
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    outcomes = {
        case.get("name"): "failed" if case.find("failure") is not None else "passed"
        for case in suites.iter("testcase")
    }
    assert outcomes == {"span[0]": "passed", "span[1]": "failed", "span[2]": "passed"}
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 4
    assert_nothing_left(tmp)  # the local cluster was closed


def test_a_cache_answered_item_is_not_sent_to_the_cluster(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb", ["result = x * 2"])
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    args = ["--millrun-params", "p.json", "nbs", "--millrun-cache", "--millrun-dask", "local",
            "--millrun-dask-workers", "1", "-v"]  # fmt: skip
    first = run_pytest(tmp_path, *args)
    assert "2 passed" in first.stdout, first.stdout + first.stderr
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / ".millrun").rglob("*.ipynb")}
    second = run_pytest(tmp_path, *args, "-k", "not a[1]")
    assert "1 deselected, 1 cached" in second.stdout, second.stdout + second.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing ran again
    write_params(tmp_path / "p.json", {"x": [1, 3]})  # the second variation changed
    third = run_pytest(tmp_path, *args)
    assert "1 passed, 1 cached" in third.stdout, third.stdout + third.stderr
    assert "a[1] PASSED" in third.stdout


def test_scheduler_and_worker_run_only_the_selected_items(
    remote_address: tuple[str, Path], tmp_path: Path
) -> None:
    address, worker_tmp = remote_address
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = 1 / (x - 2)"])
    write_notebook(tmp_path / "nbs" / "other.ipynb", ["result = x"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3]})
    done = run_pytest(
        tmp_path, "--millrun-params", "p.json", "nbs", "--millrun-dask", address,
        "-k", "divide and not divide[2]", "--millrun-report", "report.html",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed, 4 deselected" in done.stdout
    assert "ZeroDivisionError" in done.stdout
    # only what was selected ran: the deselected items were never submitted
    assert output_files(tmp_path / ".millrun") == ["nbs/0-divide.ipynb", "nbs/1-divide.ipynb"]
    assert (tmp_path / "report.html").exists()
    assert_no_kernels_left(worker_tmp)


def test_x_stops_what_still_runs_on_the_cluster(
    remote_address: tuple[str, Path], tmp_path: Path
) -> None:
    address, worker_tmp = remote_address
    write_notebook(tmp_path / "nbs" / "a_fails.ipynb", ["raise ValueError('first')"])
    write_notebook(tmp_path / "nbs" / "b_slow.ipynb", ["import time\ntime.sleep(120)"])
    started = time.monotonic()
    done = run_pytest(tmp_path, "--millrun", "nbs", "--millrun-dask", address, "-x")
    assert time.monotonic() - started < 60, done.stdout
    assert "1 failed" in done.stdout, done.stdout + done.stderr
    assert "stopping after 1 failures" in done.stdout
    assert_no_kernels_left(worker_tmp, within=15)  # the slow notebook was stopped


def test_ctrl_c_stops_the_cluster_run_keeps_partial_outputs_and_closes_it(
    tmp_path: Path,
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3, 4]})
    tmp = private_tmp()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--millrun-params", "p.json", "nbs", "--millrun-dask",
         "local", "--millrun-dask-workers", "2", "--millrun-results", "results.json"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_running_cells(tmp_path / ".millrun" / "nbs", ".*partial*", count=2)
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert time.monotonic() - started < 20, output
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output or "Interrupted" in output
    saved = output_files(tmp_path / ".millrun")
    assert "nbs/0-slow.ipynb" in saved, saved  # the partial output of the item it waited for
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows[0]["status"] == "interrupted"
    assert_nothing_left(tmp)  # workers, templates and kernels all gone


def test_dask_with_xdist_is_one_usage_error(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    done = run_pytest(tmp_path, "--millrun", "nbs", "--millrun-dask", "local", "-n", "2")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--millrun-dask local runs the items on a Dask cluster" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_dask_workers_without_a_local_cluster_is_a_usage_error(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    done = run_pytest(tmp_path, "--millrun", "nbs", "--millrun-dask-workers", "2")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--millrun-dask-workers sizes the cluster of --millrun-dask local" in done.stderr


def test_an_unreachable_scheduler_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    done = run_pytest(tmp_path, "--millrun", "nbs", "--millrun-dask", "tcp://127.0.0.1:9")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr
    assert not (tmp_path / ".millrun").exists()
