"""Helpers the test modules share: real notebooks on disk, waiting for a state, a look at
the process table for kernels, and the read recorder run without a kernel.

A module of its own rather than ``conftest.py``, which pytest loads as a plugin and advises
against importing; the fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import nbformat
import psutil
from nbformat.v4 import new_code_cell, new_notebook

T = TypeVar("T")

MakeNotebook = Callable[..., Path]

#: The repository's root, wherever the test modules sit below it.
REPO = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    every: float = 0.1,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    In place of a fixed sleep, which waits too long on an idle machine and not long enough
    on a loaded one. After ``timeout`` seconds the test fails, saying what it waited for
    (``what``, or what ``what()`` says then, for a description of the state it found).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"Waited {timeout:g} s in vain for {text}")
        time.sleep(every)


def write_notebook(
    path: Path,
    cells: Sequence[str] = ("result = x + y",),
    *,
    params: str | None = "x = 1\ny = 2",
    kernel: str | None = "python3",
    language: str = "python",
) -> Path:
    """A notebook with an optional cell tagged ``parameters`` followed by ``cells``."""
    nb = new_notebook()
    if kernel is not None:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": language}
    if params is not None:
        cell = new_code_cell(params)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(new_code_cell(source) for source in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_params(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def output_files(folder: Path) -> list[str]:
    """Every executed notebook under ``folder``, as sorted relative paths."""
    return sorted(
        os.path.relpath(p, folder) for p in folder.rglob("*.ipynb") if not p.name.startswith(".")
    )


def notebooks_running_a_cell(folder: Path, pattern: str, cell_text: str) -> list[Path]:
    """Output notebooks under ``folder`` matching ``pattern`` (partial ones included) whose
    cell containing ``cell_text`` is executing now.

    Every engine papermill runs writes the output notebook as a cell starts, with the
    cell's ``metadata.papermill.status`` set to ``running``, just before the cell is sent
    to the kernel; a file caught mid-write, or renamed meanwhile, does not count yet.
    """
    found = []
    for path in folder.glob(pattern):
        try:
            cells = json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            continue
        for cell in cells:
            status = cell.get("metadata", {}).get("papermill", {}).get("status")
            if status == "running" and cell_text in "".join(cell.get("source", "")):
                found.append(path)
                break
    return found


def wait_for_running_cells(
    folder: Path,
    pattern: str,
    count: int = 1,
    *,
    cell_text: str = "time.sleep",
    timeout: float = 90,
) -> list[Path]:
    """Until ``count`` notebooks matching ``pattern`` run their cell containing ``cell_text``
    (the slow cell, which a test then interrupts or times out); those notebooks."""

    def running() -> list[Path]:
        found = notebooks_running_a_cell(folder, pattern, cell_text)
        return found if len(found) >= count else []

    def seen() -> str:
        names = sorted(p.name for p in folder.glob(pattern)) if folder.exists() else []
        return (
            f"{count} notebook(s) matching {pattern!r} under {folder} to run their cell with "
            f"{cell_text!r}; files there now: {names}"
        )

    return wait_until(running, timeout, seen, every=0.1)


def kernels_under(folder: Path) -> list[psutil.Process]:
    """Kernels whose connection file lies under ``folder`` (our TMPDIR), and fork templates
    started under it by another process (this process keeps its own template for reuse)."""
    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if "ipykernel" in cmdline and str(folder) in cmdline:
            found.append(process)
        elif "forkserver" in cmdline and process.info["ppid"] != os.getpid():
            try:
                if process.environ().get("TMPDIR") == str(folder):
                    found.append(process)
            except psutil.Error:
                continue
    return found


def assert_no_kernels_left(folder: Path, within: float = 5.0) -> None:
    wait_until(
        lambda: not kernels_under(folder),
        within,
        lambda: f"the kernels under {folder} to end; left: {kernels_under(folder)}",
    )


@contextlib.contextmanager
def kernels_not_logged() -> Iterator[None]:
    """Around a reference run that starts a kernel of its own (papermill's own engine) in a
    ``kernel_start`` test: that kernel is spawned whatever the mode under test."""
    saved = os.environ.pop("MILLRUN_TEST_START_LOG", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MILLRUN_TEST_START_LOG"] = saved


def load_docs_tools() -> ModuleType:
    """``tools/docs_reference.py`` (the docs site's generator), which is not a package module."""
    spec = importlib.util.spec_from_file_location(
        "docs_reference", REPO / "tools" / "docs_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


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


#: Runs the in-kernel read recorder as a kernel would (its source exec'd) in a plain python.
_DRIVER = """
import json, os, sys
_ns = {{"__name__": "millrun_reads"}}
exec(compile(open({source!r}).read(), "<millrun-reads>", "exec"), _ns)
{before}
_ns["start"]({settings!r})
{code}
print("PAYLOAD" + json.dumps(_ns["finish"]()))
"""


def recorded(
    folder: Path, code: str, *, before: str = "", **settings: Any
) -> dict[str, Any]:
    """What the read recorder reports after ``code`` ran in a fresh python in ``folder``.

    No kernel: the source of ``pytest_millrun/inkernel/read_recorder.py`` is exec'd in a namespace
    of its own, as the kernel session sends it, then ``start`` and ``finish`` are called.
    """
    from pytest_millrun.inkernel import read_recorder as reads

    settings.setdefault("roots", [str(folder)])
    script = _DRIVER.format(
        source=reads.__file__,
        before=textwrap.dedent(before),
        settings=settings,
        code=textwrap.dedent(code),
    )
    env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("PAYLOAD"))
    payload: dict[str, Any] = json.loads(line.removeprefix("PAYLOAD"))
    return payload


# --- Dask clusters started by a test -------------------------------------------------------


def private_tmp() -> Path:
    """A short private TMPDIR for a cluster's processes, so the process table tells them apart."""
    return Path(tempfile.mkdtemp(prefix="mrd-", dir="/tmp"))


def processes_with_tmp(tmp: Path) -> list[str]:
    """The command lines of every process whose TMPDIR is ``tmp``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.environ().get("TMPDIR") == str(tmp):
                found.append(" ".join(process.info["cmdline"] or ())[:80])
        except psutil.Error:
            continue
    return found


def assert_nothing_left(tmp: Path, within: float = 15.0) -> None:
    """No process of the cluster is left: worker, fork template or kernel (all have ``tmp``
    as TMPDIR, and a template's command line no longer says what it is)."""
    wait_until(
        lambda: not processes_with_tmp(tmp),
        within,
        lambda: f"the processes with TMPDIR {tmp} to end; left: {processes_with_tmp(tmp)}",
    )


def cannot_hide_folders() -> str:
    """Why a worker cannot be given its own view of the file system here ('' when it can):
    it needs root (as CI runs) and ``unshare -m`` to mount an empty tmpfs in its namespace."""
    if sys.platform != "linux":
        return "a private mount namespace needs Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs in a private mount namespace needs root (CI runs as root)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", "/mnt"],
        capture_output=True, text=True,
    )  # fmt: skip
    return "" if probe.returncode == 0 else f"unshare -m cannot mount: {probe.stderr.strip()}"


@contextlib.contextmanager
def dask_scheduler_and_worker(
    nthreads: int = 1, hide: Path | None = None, worker_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """`dask scheduler` and one `dask worker`, separate processes on 127.0.0.1: (the
    scheduler's address, the TMPDIR they share); stopped, and checked gone, afterwards.

    ``hide``: the worker runs in a mount namespace of its own with an empty tmpfs over
    this folder, as a machine that shares no file system with the client (see
    :func:`cannot_hide_folders`); ``worker_env``: its environment variables besides."""
    import distributed

    dask = Path(sys.executable).with_name("dask")
    tmp = private_tmp()
    env = {**os.environ, "TMPDIR": str(tmp)}
    scheduler_file = tmp / "scheduler.json"
    common: dict[str, Any] = {
        "env": env, "start_new_session": True, "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }  # fmt: skip
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    processes = [subprocess.Popen([*scheduler, "--scheduler-file", scheduler_file], **common)]
    try:
        wait_until(scheduler_file.exists, 60, f"the scheduler to write {scheduler_file}")
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = [dask, "worker", address, "--host", "127.0.0.1", "--no-dashboard"]
        worker += ["--nthreads", str(nthreads)]
        if hide is not None:
            mount = f"mount -t tmpfs tmpfs {shlex.quote(str(hide))} && exec \"$@\""
            worker = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh", *worker]
        processes.append(
            subprocess.Popen(worker, **{**common, "env": {**env, **(worker_env or {})}})
        )
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        yield address, tmp
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
    assert_nothing_left(tmp)


#: The credentials the tests' S3 endpoint (moto's server, conftest.py's ``endpoint``) takes.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "sEcReT-test-key",
                  "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def read_s3_notebook(s3: Any, key: str) -> Any:
    """A notebook on the tests' S3 endpoint, read with its s3fs filesystem (``s3`` fixture)."""
    with s3.open(key, "r") as handle:
        return nbformat.read(handle, as_version=4)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
