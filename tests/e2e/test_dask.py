"""Runs on Dask: a real LocalCluster (2 worker processes), and a `dask scheduler` and
`dask worker` started as separate processes on 127.0.0.1, with real kernels.

Each cluster starts once per module (seconds each) and is shared by the tests; the
workers get their own TMPDIR, so leftover kernels can be looked for there.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from pytest_millrun import RunFailedError, execute_run
from pytest_millrun.config.run_config import RunConfig
from pytest_millrun.dispatch.dask_client import run_on_cluster
from pytest_millrun.pipeline.planning import plan_run

distributed = pytest.importorskip("distributed")

MILLRUN = [sys.executable, "-m", "pytest_millrun"]
DASK = Path(sys.executable).with_name("dask")

#: A notebook that kills the Dask worker running it (its kernel's JPY_PARENT_PID), once
#: per marker file, or every time without one.
KILL_WORKER = """\
import os, signal
marker = os.environ.get("MILLRUN_TEST_MARKER", "")
if not marker or not os.path.exists(marker):
    if marker:
        open(marker, "w").close()
    os.kill(int(os.environ["JPY_PARENT_PID"]), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def local_client() -> Iterator[Any]:
    """A LocalCluster of 2 worker processes; a task whose worker died twice is given up."""
    import dask

    tmp = private_tmp()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, env={"TMPDIR": str(tmp)},
        )  # fmt: skip
    client = distributed.Client(cluster, set_as_default=False)
    client.worker_tmp = tmp
    yield client
    client.close()
    cluster.close()
    assert_nothing_left(tmp)


@pytest.fixture(scope="module")
def remote_address() -> Iterator[tuple[str, Path]]:
    """`dask scheduler` and one `dask worker --nthreads 2`, separate processes on 127.0.0.1."""
    with dask_scheduler_and_worker(nthreads=2) as (address, tmp):
        yield address, tmp


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two notebooks whose runs finish out of plan order (the first variations sleep longest)."""
    write_notebook(tmp_path / "nbs" / "add.ipynb", ["import time\ntime.sleep(0.6 / x)", "z = x"])
    write_notebook(tmp_path / "nbs" / "divide.ipynb", ["result = x / (y - 2)"])
    return tmp_path / "nbs"


def printed(output: Path | None) -> str:
    """Everything the cells of an output notebook printed."""
    assert output is not None
    cells = nbformat.read(str(output), as_version=4).cells
    return "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))


def statuses(results: list[Any]) -> list[tuple[str, str, str]]:
    return [(r.notebook.name, r.variation_id, r.status) for r in results]


@pytest.mark.parametrize("how", ["dask", "executor"])
def test_results_come_back_in_plan_order_with_failures_reported(
    local_client: Any, folder: Path, tmp_path: Path, how: str
) -> None:
    target = {"dask": local_client} if how == "dask" else {"executor": local_client.get_executor()}
    with pytest.raises(RunFailedError) as info:
        execute_run(
            folder, {"x": [1, 2, 3], "y": [2, 3, 4]}, output_dir=tmp_path / "out",
            output_prepend_components=["x"], **target,
        )  # fmt: skip
    assert statuses(info.value.results) == [
        ("add.ipynb", "1", "passed"), ("add.ipynb", "2", "passed"), ("add.ipynb", "3", "passed"),
        ("divide.ipynb", "1", "failed"), ("divide.ipynb", "2", "passed"),
        ("divide.ipynb", "3", "passed"),
    ]  # fmt: skip
    [failure] = info.value.failures
    assert failure.error is not None
    assert (failure.error.ename, failure.error.exec_count) == ("ZeroDivisionError", 3)
    assert len(output_files(tmp_path / "out")) == 6
    assert_no_kernels_left(local_client.worker_tmp)


def test_kernels_are_forked_inside_dask_worker_threads(local_client: Any, tmp_path: Path) -> None:
    write_notebook(
        tmp_path / "who.ipynb",
        ["import os\nparent = open(f'/proc/{os.getppid()}/cmdline').read()\nprint(parent)"],
    )
    results = execute_run(
        tmp_path / "who.ipynb", {"x": [1, 2, 3, 4]}, output_dir=tmp_path / "out",
        dask=local_client, kernel_start="fork",
    )  # fmt: skip
    for result in results:
        assert "millrun-fork-template" in printed(result.output)


def test_a_notebook_gone_after_every_worker_saw_the_files_fails_that_job_naming_worker_and_path(
    local_client: Any, folder: Path, tmp_path: Path
) -> None:
    config = RunConfig(notebook_dir_or_file=folder, output_dir=tmp_path / "out")
    jobs = plan_run(config, [{"x": 1, "y": 3}])
    (folder / "divide.ipynb").unlink()  # gone for the workers after the client planned it
    results = run_on_cluster(local_client, 2, jobs, plan_options())
    assert statuses(results) == [("add.ipynb", "0", "passed"), ("divide.ipynb", "0", "failed")]
    message = results[1].error.message  # type: ignore[union-attr]
    assert f"cannot see the notebook {folder / 'divide.ipynb'}" in message
    assert "Dask worker tcp://127.0.0.1:" in message
    assert "none were shipped" in message


def plan_options() -> Any:
    from pytest_millrun.dispatch.jobs import RunOptions

    return RunOptions(kernel_start="fork")


def test_a_killed_worker_loses_no_job(local_client: Any, tmp_path: Path) -> None:
    """Dask reruns the job of a worker killed once; one that kills every worker is reported.

    Two runs, because every task assigned to a dying worker counts that death.
    """
    marker = tmp_path / "killed-once"
    once = KILL_WORKER.replace('os.environ.get("MILLRUN_TEST_MARKER", "")', repr(str(marker)))
    write_notebook(tmp_path / "nbs" / "once.ipynb", [once])
    write_notebook(tmp_path / "nbs" / "fine.ipynb", ["pass"])
    write_notebook(tmp_path / "always" / "always.ipynb", [KILL_WORKER])
    results = execute_run(tmp_path / "nbs", [{}], output_dir=tmp_path / "out", dask=local_client)
    assert marker.exists()
    assert statuses(results) == [("fine.ipynb", "0", "passed"), ("once.ipynb", "0", "passed")]
    with pytest.raises(RunFailedError) as info:
        execute_run(tmp_path / "always", [{}], output_dir=tmp_path / "out", dask=local_client)
    [failure] = info.value.failures
    assert failure.error is not None
    assert failure.error.ename == "KilledWorker"
    assert "The Dask worker running it died" in failure.error.message
    local_client.wait_for_workers(2, timeout=60)  # the nanny brought them back
    assert_no_kernels_left(local_client.worker_tmp)


def test_several_tasks_at_once_in_one_separate_worker_with_forked_kernels(
    remote_address: tuple[str, Path], tmp_path: Path
) -> None:
    """A `dask worker --nthreads 2`: two notebooks overlap in one worker process."""
    address, worker_tmp = remote_address
    write_notebook(
        tmp_path / "span.ipynb",
        ["import os, time\nstart = time.time()\ntime.sleep(1.5)\nend = time.time()\n"
         "print(start, end, os.environ['JPY_PARENT_PID'])", "result = 1 / x"],
    )  # fmt: skip
    with pytest.raises(RunFailedError) as info:
        execute_run(
            tmp_path / "span.ipynb", {"x": [1, 0, 2]}, output_dir=tmp_path / "out",
            output_prepend_components=["x"], dask=address, kernel_start="fork",
        )  # fmt: skip
    assert statuses(info.value.results) == [
        ("span.ipynb", "1", "passed"), ("span.ipynb", "0", "failed"),
        ("span.ipynb", "2", "passed"),
    ]  # fmt: skip
    spans = []
    for result in info.value.results:
        start, end, worker = printed(result.output).split()
        spans.append((float(start), float(end), worker))
    assert len({worker for _, _, worker in spans}) == 1  # one worker process ran them all
    spans.sort()
    assert any(a[1] > b[0] for a, b in itertools.pairwise(spans))  # and at once
    assert_no_kernels_left(worker_tmp)


def test_unreachable_scheduler_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from pytest_millrun import cli
    from pytest_millrun.dispatch import dask_client

    monkeypatch.setattr(dask_client, "_CONNECT_SECONDS", 1.0)
    write_notebook(tmp_path / "nbs" / "a.ipynb")
    write_params(tmp_path / "p.json", {"x": [1]})
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli.main, ["nbs", "p.json", "--dask", "tcp://127.0.0.1:9"])
    assert done.exit_code == 2
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)


def interrupt_cli(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, float]:
    """Start the CLI, press Ctrl-C (SIGINT to its process group) once a slow run is under way."""
    write_notebook(tmp_path / "nbs" / "quick.ipynb", ["pass"])
    write_notebook(tmp_path / "nbs" / "slow.ipynb", ["import time\ntime.sleep(60)"])
    write_params(tmp_path / "p.json", {"x": [1, 2, 3, 4]})
    process = subprocess.Popen(
        [*MILLRUN, "nbs", "p.json", "--output-dir", "out", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    wait_for_running_cells(tmp_path / "out", "*slow*", 2)  # both workers inside a notebook
    assert process.poll() is None
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:  # never left running, even when it does not stop
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Interrupted" in stdout
    assert "2 interrupted, 2 not run" in stdout
    saved = output_files(tmp_path / "out")
    assert {"0-quick.ipynb", "1-quick.ipynb", "2-quick.ipynb", "3-quick.ipynb"} <= set(saved)
    assert "0-slow.ipynb" in saved  # the partial output of a run that was cut short
    assert not list((tmp_path / "out").glob(".*partial*"))
    return process.returncode, stdout, time.monotonic() - started


def test_ctrl_c_on_a_local_cluster_stops_promptly_and_closes_it(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(private_tmp())}
    _code, _stdout, took = interrupt_cli(tmp_path, env, "--dask", "local", "--workers", "2")
    assert took < 20
    assert_nothing_left(Path(env["TMPDIR"]))  # the local cluster is closed


def test_ctrl_c_on_an_existing_cluster_leaves_it_usable(
    remote_address: tuple[str, Path], tmp_path: Path
) -> None:
    address, worker_tmp = remote_address
    _code, _stdout, took = interrupt_cli(tmp_path, dict(os.environ), "--dask", address)
    assert took < 20
    assert_no_kernels_left(worker_tmp)
    [result] = execute_run(tmp_path / "nbs" / "quick.ipynb", [{}], output_dir=tmp_path / "again",
                           dask=address)  # fmt: skip
    assert result.passed


def test_a_thread_asked_to_stop_before_its_notebook_starts_stops_it_once_it_does(
    kernel_tmp: Path,
) -> None:
    """The race behind a Ctrl-C that waited for a whole notebook: stop_run reached a worker
    thread still reading its notebook, before its execution was registered to be stopped."""
    from pytest_millrun.execution.kernels import KernelSandbox, forget_stop, stop_execution

    stopped: dict[str, bool] = {}
    asked, go = threading.Event(), threading.Event()

    def job() -> None:
        asked.set()
        go.wait(10)
        with KernelSandbox() as sandbox:
            stopped["the execution after the stop"] = sandbox.stopped
        with KernelSandbox() as sandbox:
            stopped["a retry within the same job"] = sandbox.stopped
        forget_stop(threading.get_ident())
        with KernelSandbox() as sandbox:
            stopped["the thread's next job"] = sandbox.stopped

    thread = threading.Thread(target=job)
    thread.start()
    asked.wait(10)
    assert thread.ident is not None
    assert stop_execution(thread.ident) is False  # no notebook was running there yet
    go.set()
    thread.join(10)
    assert stopped == {
        "the execution after the stop": True,
        "a retry within the same job": True,
        "the thread's next job": False,
    }
