"""``execute_run``: both params forms, both modes, globs, recursion, failures, papermill kwargs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

import millrun
from millrun_testing import (
    assert_no_kernels_left,
    output_files,
    wait_for_running_cells,
    write_notebook,
)
from pytest_millrun import RunFailedError, execute_run

KERNELS = pytest.mark.usefixtures("kernel_start")  # for tests that start kernels, in both modes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_notebook(tmp_path / "nbs" / "add.ipynb", ["result = x + y"])
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = x / (y - 2)"])
    write_notebook(tmp_path / "nbs" / "deep" / "inner.ipynb", ["result = x * y"])
    return tmp_path / "nbs"


def test_import_millrun_is_the_same_api() -> None:
    assert millrun.execute_run is execute_run


@KERNELS
@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["sequential", "pool"])
def test_every_pair_runs_and_failures_are_raised_after_all_work(
    folder: Path, tmp_path: Path, use_multiprocessing: bool
) -> None:
    with pytest.raises(RunFailedError) as info:
        execute_run(
            folder, {"x": [1, 45], "y": [2, 3]}, output_dir=tmp_path / "out",
            output_prepend_components=["x"], use_multiprocessing=use_multiprocessing, workers=2,
        )  # fmt: skip
    results = info.value.results
    assert [(r.notebook.name, r.variation_id, r.status) for r in results] == [
        ("add.ipynb", "1", "passed"),
        ("add.ipynb", "45", "passed"),
        ("divide.ipynb", "1", "failed"),
        ("divide.ipynb", "45", "passed"),
    ]
    [failure] = info.value.failures
    assert failure.error is not None
    assert (failure.error.ename, failure.error.evalue) == ("ZeroDivisionError", "division by zero")
    assert failure.error.exec_count == 3
    assert "divide.ipynb [1]: ZeroDivisionError: division by zero" in str(info.value)
    assert output_files(tmp_path / "out") == [
        "1-add.ipynb", "1-divide.ipynb", "45-add.ipynb", "45-divide.ipynb",
    ]  # fmt: skip
    assert all(r.duration > 0 for r in results)


@KERNELS
def test_list_of_dicts_and_outputs_beside_the_notebook_by_default(folder: Path) -> None:
    results = execute_run(folder / "add.ipynb", [{"x": 1, "y": 1}, {"x": 2, "y": 2}])
    assert [r.output for r in results] == [folder / "0-add.ipynb", folder / "1-add.ipynb"]
    # a second run over the folder does not pick up the first run's outputs
    again = execute_run(folder, [{"x": 0, "y": 0}], exclude_glob_pattern="divide*")
    assert [r.notebook.name for r in again] == ["add.ipynb"]


@KERNELS
def test_params_file_path_is_accepted(folder: Path, tmp_path: Path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"x": [5], "y": [6]}))
    [result] = execute_run(folder / "add.ipynb", params, output_dir=tmp_path / "o")
    assert result.passed


@KERNELS
def test_recursive_mirrors_folders_under_output_dir(folder: Path, tmp_path: Path) -> None:
    execute_run(
        folder, {"x": [1], "y": [3]}, output_dir=tmp_path / "out", recursive=True,
        include_glob_pattern="*[dr].ipynb",
    )  # fmt: skip
    assert output_files(tmp_path / "out") == ["0-add.ipynb", "deep/0-inner.ipynb"]


@KERNELS
@pytest.mark.parametrize("use_multiprocessing", [False, True], ids=["sequential", "pool"])
def test_papermill_kwargs_reach_every_execution(
    folder: Path, tmp_path: Path, use_multiprocessing: bool
) -> None:
    execute_run(
        folder / "add.ipynb", {"x": [1, 2], "y": [3, 4]}, output_dir=tmp_path / "out",
        use_multiprocessing=use_multiprocessing, report_mode=True, progress_bar=True,
    )  # fmt: skip
    for name in ["0-add.ipynb", "1-add.ipynb"]:
        cells = json.loads((tmp_path / "out" / name).read_text())["cells"]
        assert all(c["metadata"].get("jupyter", {}).get("source_hidden") for c in cells)


def test_unknown_kwarg_is_an_error_before_anything_runs(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"'log_outptu' is not an argument.*Did you mean log_output"
    ):
        execute_run(folder, {"x": [1], "y": [3]}, output_dir=tmp_path / "out", log_outptu=True)
    assert not (tmp_path / "out").exists()


@KERNELS
def test_any_executor_can_run_the_jobs(folder: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = execute_run(
            folder / "add.ipynb", {"x": [1, 2, 3], "y": [1, 2, 3]}, output_dir=tmp_path / "o",
            executor=pool,
        )  # fmt: skip
    assert [r.status for r in results] == ["passed"] * 3


@KERNELS
def test_a_process_pool_executor_runs_each_job_in_one_of_its_workers(tmp_path: Path) -> None:
    notebook = write_notebook(
        tmp_path / "nb" / "who.ipynb",
        ["import os\nopen(f'launcher-{x}.txt', 'w').write(os.environ['JPY_PARENT_PID'])"],
        params="x = 0",
    )
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = execute_run(notebook, {"x": [1, 2]}, output_dir=tmp_path / "o", executor=pool)
        launchers = {int((notebook.parent / f"launcher-{x}.txt").read_text()) for x in (1, 2)}
        # every kernel was started by a worker of this pool, none by this process
        assert {psutil.Process(pid).ppid() for pid in launchers} == {os.getpid()}
    assert os.getpid() not in launchers
    assert [r.status for r in results] == ["passed", "passed"]
    assert output_files(tmp_path / "o") == ["0-who.ipynb", "1-who.ipynb"]


def test_strict_params_refuses_an_undeclared_key_before_anything_runs(
    folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="does not declare 'typo'"):
        execute_run(
            folder, {"x": [1], "y": [2], "typo": [3]}, output_dir=tmp_path / "out",
            strict_params=True,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_execution_timeout_kwarg_is_the_per_cell_limit(tmp_path: Path) -> None:
    write_notebook(tmp_path / "slow.ipynb", ["import time\ntime.sleep(20)"])
    with pytest.raises(RunFailedError) as info:
        execute_run(tmp_path / "slow.ipynb", [{}], output_dir=tmp_path / "o", execution_timeout=1)
    [failure] = info.value.failures
    assert failure.error is not None
    assert failure.error.kind == "timeout"
    # the cell's own duration as papermill recorded it (the run's also holds the kernel start)
    cells = json.loads((tmp_path / "o" / "0-slow.ipynb").read_text())["cells"]
    assert cells[-1]["metadata"]["papermill"]["duration"] < 10


def test_colliding_outputs_are_refused_before_running(tmp_path: Path) -> None:
    write_notebook(tmp_path / "a.ipynb")
    write_notebook(tmp_path / "lit-a.ipynb")
    with pytest.raises(ValueError, match="not an output of millrun"):
        execute_run(tmp_path / "a.ipynb", [{}], output_prepend_components=["lit"])
    assert output_files(tmp_path) == ["a.ipynb", "lit-a.ipynb"]


SCRIPT = """\
import json, os, sys, time
import millrun

with open("imports.log", "a") as log:  # how many times this unguarded script body runs
    log.write(f"{os.getpid()}\\n")
try:
    results = millrun.execute_run(
        "nbs", {"x": [1, 2, 3, 4]}, output_dir="out", use_multiprocessing=True, workers=2
    )
except KeyboardInterrupt as exc:
    report = [(r.variation_id, r.status, r.duration, str(r.output)) for r in exc.results]
    print(json.dumps({"interrupted": report, "pending": exc.pending}), flush=True)
    sys.exit(130)
print(json.dumps({"passed": [r.variation_id for r in results if r.passed]}))
"""


def run_script(folder: Path) -> subprocess.Popen[str]:
    (folder / "run.py").write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, "run.py"], cwd=folder, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def test_readme_script_without_main_guard_runs_a_pool_once(tmp_path: Path) -> None:
    write_notebook(tmp_path / "nbs" / "add.ipynb", ["result = x + 1"], params="x = 0")
    process = run_script(tmp_path)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert json.loads(stdout) == {"passed": ["0", "1", "2", "3"]}
    # pool workers never re-run the caller's script
    assert len((tmp_path / "imports.log").read_text().split()) == 1


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_pooled_run_stops_within_seconds_on_a_signal(
    tmp_path: Path, kernel_tmp: Path, how: str
) -> None:
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["print(x)", "import time\ntime.sleep(60)"])
    process = run_script(tmp_path)
    wait_for_running_cells(tmp_path / "out", "*slow*", 2)  # both workers inside a notebook
    assert process.poll() is None
    workers = [
        child for child in psutil.Process(process.pid).children(recursive=True)
        if "ipykernel" not in " ".join(child.cmdline())
    ]  # fmt: skip
    started = time.monotonic()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
        seconds = time.monotonic() - started
        stdout, stderr = process.communicate(timeout=30)  # leftover workers keep the pipes open
        _, alive = psutil.wait_procs(workers, timeout=5)  # the forkserver ends after its parent
    finally:
        for worker in workers:  # never leave one behind, even when the test fails
            with contextlib.suppress(psutil.Error):
                worker.kill()
    assert process.returncode == 130, stderr
    assert seconds < 4, (seconds, stderr)  # each worker stopped by itself, no grace sat out
    report = json.loads(stdout)
    out = tmp_path / "out"
    assert report["pending"] == 2
    assert [row[:2] for row in report["interrupted"]] == [
        ["0", "interrupted"],
        ["1", "interrupted"],
    ]
    assert [row[3] for row in report["interrupted"]] == [
        str(out / "0-slow.ipynb"),
        str(out / "1-slow.ipynb"),
    ]
    # the worker's own result came back (a result the parent makes up has no time at all)
    assert all(row[2] > 0 for row in report["interrupted"]), report["interrupted"]
    assert_no_kernels_left(kernel_tmp)
    assert alive == []
    assert sorted(p.name for p in kernel_tmp.iterdir()) == []  # no fork template folder left


def test_pool_workers_are_not_forks_of_the_calling_process(tmp_path: Path) -> None:
    """This process runs threads (kernel reaper, spare kernels): a fork of it could deadlock."""
    code = (
        "import json, psutil\n"
        "print(json.dumps([(p.pid, ' '.join(p.cmdline())) for p in psutil.Process().parents()]))"
    )
    write_notebook(tmp_path / "nbs" / "who.ipynb", [code])
    [result] = execute_run(
        tmp_path / "nbs", [{}], output_dir=tmp_path / "out", use_multiprocessing=True, workers=1
    )
    assert result.passed
    assert result.output is not None
    [cell] = [c for c in json.loads(result.output.read_text())["cells"] if c.get("outputs")]
    ancestry = json.loads("".join(cell["outputs"][0]["text"]))  # a string or a list of lines
    pids = [pid for pid, _ in ancestry]
    assert os.getpid() in pids
    # the kernel's ancestor just below this process: the forkserver the worker came from
    _, cmdline = ancestry[pids.index(os.getpid()) - 1]
    assert "multiprocessing.forkserver" in cmdline, ancestry


def test_a_signal_during_a_pool_workers_exit_cleanup_does_not_start_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent's SIGTERM arriving while a worker stops its template must not start the
    clean-up again: the second one waited forever for the first one's template lock."""
    from pytest_millrun import forkserver
    from pytest_millrun.dispatch import pool_worker

    state = {"worker": True, "running": False, "stopping": True, "cleaning": False}
    monkeypatch.setattr(pool_worker, "_state", state)
    steps: list[str] = []

    def shutdown_templates() -> None:
        steps.append("templates")
        pool_worker._on_signal(signal.SIGTERM, None)  # arrives in the middle of the request

    monkeypatch.setattr(forkserver, "shutdown_templates", shutdown_templates)
    monkeypatch.setattr(pool_worker, "kill_leftover_kernels", lambda: steps.append("kernels"))
    monkeypatch.setattr(os, "_exit", lambda code: steps.append(f"exit {code}"))
    pool_worker._on_signal(signal.SIGTERM, None)
    assert steps == ["templates", "kernels", f"exit {128 + signal.SIGTERM}"]
