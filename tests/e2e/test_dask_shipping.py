"""Dask workers that share no file system with the client: the files travel with the tasks.

A real `dask scheduler` and one `dask worker`, the worker in a mount namespace of its
own with an empty tmpfs over this session's temporary folder, so it sees none of the
tests' notebooks, data files, helper modules or output folders: whatever it runs
came with the task, and whatever the client finds afterwards came back.  One cluster
for the module (seconds to start), shared by the CLI, API and plugin tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from millrun_testing import (
    cannot_hide_folders,
    dask_scheduler_and_worker,
    wait_until,
    write_notebook,
    write_params,
)
from pytest_millrun import RunFailedError, execute_run

pytest.importorskip("distributed")

MILLRUN = [sys.executable, "-m", "pytest_millrun"]
WHY_NOT = cannot_hide_folders()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)

#: Reads a data file and imports a helper module, both beside it; writes a scratch file.
CALC = [
    "import helper\nrows = open('data.csv').read().split()",
    "total = helper.scaled(x) + len(rows)\nopen('scratch.txt', 'w').write(str(total))",
]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and a worker that cannot see this session's temporary folder, and whose
    Python has one distribution the client's lacks (``workeronly``: its environment differs)."""
    hidden = tmp_path_factory.getbasetemp()
    extra = Path(tempfile.mkdtemp(prefix="mr-worker-site-"))
    info = extra / "workeronly-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: workeronly\nVersion: 1.0\n")
    try:
        with dask_scheduler_and_worker(
            nthreads=2, hide=hidden, worker_env={"PYTHONPATH": str(extra)}
        ) as (found, _tmp):
            yield found
    finally:
        shutil.rmtree(extra)


def project(root: Path) -> Path:
    """``nbs/calc.ipynb`` with ``helper.py`` (raises for x == 3) and ``data.csv`` beside it."""
    nbs = root / "nbs"
    write_notebook(nbs / "calc.ipynb", CALC, params="x = 1")
    (nbs / "helper.py").write_text(
        "def scaled(x):\n    if x == 3:\n        raise ValueError('three is not allowed')\n"
        "    return 10 * x\n"
    )
    (nbs / "data.csv").write_text("a\nb\nc\n")
    return nbs


def recorded_total(output: Path) -> str:
    nb = nbformat.read(str(output), as_version=4)
    return str(nb.metadata["millrun"]["recorded"]["total"])


def test_cli_ships_the_notebook_its_data_and_helper_and_brings_each_output_back(
    address: str, tmp_path: Path
) -> None:
    project(tmp_path)
    write_params(tmp_path / "p.json", {"x": [1, 2, 3]})
    done = subprocess.run(
        [*MILLRUN, "nbs", "p.json", "--output-dir", "out", "--dask", address, "--record", "total"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
    assert "1 failed" in done.stdout
    assert "ValueError: three is not allowed" in done.stdout
    assert "millrun-task-" not in done.stdout  # paths named as the client's
    outputs = sorted((tmp_path / "out").rglob("*.ipynb"))
    assert len(outputs) == 3  # the failed one too, with its error
    assert [recorded_total(p) for p in outputs[:2]] == ["13", "23"]
    failed = nbformat.read(str(outputs[2]), as_version=4)
    assert "three is not allowed" in json.dumps([c.get("outputs") for c in failed.cells])
    assert not (tmp_path / "nbs" / "scratch.txt").exists()  # written on the worker, not brought


def test_api_ships_what_the_last_run_read_outside_the_notebook_folder(
    address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``../data`` and ``../src`` are not in the notebook's folder: the read set the last run
    recorded (here a local run with the cache on) makes the next task carry them, and
    ``src`` goes on the worker kernel's ``sys.path`` as an editable install put it at home.

    The local run's kernel gets a temp folder of its own: files in the temp folder that
    lie outside the notebook's folder are not reads, and ``tmp_path`` is in it."""
    write_notebook(
        tmp_path / "nbs" / "reader.ipynb",
        ["import mylib.core",
         "value = mylib.core.VALUE + open('../data/shared.txt').read().strip()"],
        params="x = 1",
    )  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shared.txt").write_text("-shared")
    (tmp_path / "src" / "mylib").mkdir(parents=True)
    (tmp_path / "src" / "mylib" / "__init__.py").write_text("")
    (tmp_path / "src" / "mylib" / "core.py").write_text("VALUE = 'from-src'\n")
    out = tmp_path / "out"
    with monkeypatch.context() as patched:
        (tmp_path / "kernel-tmp").mkdir()
        patched.setenv("TMPDIR", str(tmp_path / "kernel-tmp"))
        patched.setenv("PYTHONPATH", str(tmp_path / "src"))  # as an editable install would
        execute_run(
            tmp_path / "nbs", {"x": [1]}, output_dir=out, cache=True, record=["value"],
            kernel_start="spawn",
        )  # fmt: skip
    (tmp_path / "src" / "mylib" / "core.py").write_text("VALUE = 'changed'\n")
    [result] = execute_run(
        tmp_path / "nbs", {"x": [1]}, output_dir=out, dask=address, record=["value"]
    )
    assert result.passed, result.error
    assert result.recorded["value"] == "changed-shared"
    assert result.output is not None
    assert Path(result.output).is_relative_to(out)
    assert recorded_total_value(Path(result.output)) == "changed-shared"


def recorded_total_value(output: Path) -> str:
    nb = nbformat.read(str(output), as_version=4)
    return str(nb.metadata["millrun"]["recorded"]["value"])


def test_a_notebook_missing_a_file_at_first_finds_it_on_the_next_run(
    address: str, tmp_path: Path
) -> None:
    """The file a failed run looked for and did not find is in its read set: shipped next."""
    write_notebook(
        tmp_path / "nbs" / "late.ipynb", ["text = open('../data/late.txt').read()"], params="x = 1"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "late.txt").write_text("here")
    with pytest.raises(RunFailedError) as first:
        execute_run(tmp_path / "nbs", {"x": [1]}, output_dir=tmp_path / "out", dask=address)
    [failed] = first.value.results
    assert failed.error is not None
    assert failed.error.ename == "FileNotFoundError"
    # recorded for shipping, with no cache asked for, naming the client's paths
    assert failed.kernel_report["reads"]["missing"] == [str(tmp_path / "data" / "late.txt")]
    [result] = execute_run(
        tmp_path / "nbs", {"x": [1]}, output_dir=tmp_path / "out", dask=address, record=["text"]
    )
    assert result.recorded["text"] == "here"
    [plain] = execute_run(tmp_path / "nbs", {"x": [1]}, output_dir=tmp_path / "plain")
    assert "reads" not in plain.kernel_report  # nothing uses a read set: no recorder installed


def test_plugin_ships_only_the_selected_items_and_reports_them_as_usual(
    address: str, tmp_path: Path
) -> None:
    nbs = project(tmp_path)
    write_notebook(nbs / "other.ipynb", ["result = x"], params="x = 1")
    write_params(tmp_path / "p.json", {"x": [1, 2, 3]})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--millrun-params", "p.json", "nbs", "--millrun-dask", address,
         "-k", "calc and not calc[0]", "--millrun-record", "total"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed, 4 deselected" in done.stdout
    assert "ValueError: three is not allowed" in done.stdout
    outputs = sorted((tmp_path / ".millrun").rglob("*.ipynb"))
    assert [p.name for p in outputs] == ["1-calc.ipynb", "2-calc.ipynb"]
    assert recorded_total(outputs[0]) == "23"


def test_pytest_cov_counts_the_lines_a_shipped_kernel_ran_at_the_clients_paths(
    address: str, tmp_path: Path
) -> None:
    """The worker's kernel measures the files as they lie in its task folder; the lines come
    back with the result and count as the client's ``nbs/helper.py``."""
    project(tmp_path)
    write_params(tmp_path / "p.json", {"x": [1]})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--millrun-params", "p.json", "nbs", "--millrun-dask", address,
         "--cov=nbs", "--cov-report=term-missing"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KernelCoverageWarning" not in done.stdout + done.stderr
    from coverage import CoverageData

    data = CoverageData(str(tmp_path / ".coverage"))
    data.read()
    assert sorted(data.lines(str(tmp_path / "nbs" / "helper.py")) or ()) == [1, 2, 4]
    assert not [name for name in data.measured_files() if "millrun-task-" in name]


def test_a_worker_lacking_a_kernel_is_named_before_anything_runs(
    address: str, tmp_path: Path
) -> None:
    """The client has a kernel (in a folder the worker does not see), the worker has not."""
    spec = tmp_path / "jupyter" / "kernels" / "client-only"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "client only", "language": "python"})
    )
    write_notebook(tmp_path / "nbs" / "a.ipynb", ["y = x"], params="x = 1", kernel="client-only")
    write_params(tmp_path / "p.json", {"x": [1, 2]})
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter")}
    done = subprocess.run(
        [*MILLRUN, "nbs", "p.json", "--output-dir", "out", "--dask", address],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Some Dask workers cannot run these notebooks: tcp://127.0.0.1:" in done.stderr
    assert "lacks the kernel client-only (it has " in done.stderr
    assert "nothing was submitted" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_cache_key_holds_the_workers_environment_and_a_second_run_is_cached(
    address: str, tmp_path: Path
) -> None:
    nbs = project(tmp_path)
    out = tmp_path / "out"
    [first] = execute_run(nbs / "calc.ipynb", {"x": [1]}, output_dir=out, dask=address, cache=True)
    assert first.passed, first.error
    assert first.output is not None
    entry = nbformat.read(str(first.output), as_version=4).metadata["millrun"]["cache"]
    assert entry["distributions"]["workeronly"] == "1.0"  # the worker's, not this process's
    [again] = execute_run(nbs / "calc.ipynb", {"x": [1]}, output_dir=out, dask=address, cache=True)
    assert again.cached
    (nbs / "helper.py").write_text("def scaled(x):\n    return 0\n")  # shipped, read: re-runs
    [third] = execute_run(
        nbs / "calc.ipynb", {"x": [1]}, output_dir=out, dask=address, cache=True, record=["total"]
    )
    assert not third.cached
    assert third.recorded["total"] == 3


def test_ctrl_c_brings_the_partial_output_of_a_shipped_run_back(
    address: str, tmp_path: Path
) -> None:
    """The marker is written where both sides see (outside the hidden folder) once the slow
    cell runs on the worker; Ctrl-C then stops it, and its partial output comes back."""
    seen = Path(tempfile.mkdtemp(prefix="mr-marker-"))
    try:
        marker = seen / "running"
        write_notebook(
            tmp_path / "nbs" / "slow.ipynb",
            [f"import time\nopen({str(marker)!r}, 'w').close()", "time.sleep(60)"],
            params="x = 1",
        )
        write_params(tmp_path / "p.json", {"x": [1]})
        process = subprocess.Popen(
            [*MILLRUN, "nbs", "p.json", "--output-dir", "out", "--dask", address], cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: marker.exists() or process.poll() is not None, 60,
                "the slow cell to start on the worker",
            )  # fmt: skip
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        assert process.returncode == 130, stdout + stderr
        [output] = (tmp_path / "out").rglob("*.ipynb")
        cells = nbformat.read(str(output), as_version=4).cells
        assert any("running" in cell.source and cell.get("execution_count") for cell in cells)
    finally:
        shutil.rmtree(seen)
