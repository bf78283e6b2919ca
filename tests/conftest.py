"""Fixtures and hooks of the suite; the helpers test modules import are in ``millrun_testing``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from millrun_testing import MakeNotebook, kernels_under, write_notebook

# pytester's in-process runs drop the modules they imported when they end, so a
# later run would import traitlets classes anew while the fork template's
# provisioner class still holds the old ones. Importing the kernel stack here
# makes every in-process run share one copy, as a real pytest process does.
import jupyter_client.manager  # noqa: F401  isort: skip
import papermill  # noqa: F401  isort: skip
import pytest_millrun.execution.execute  # isort: skip
import pytest_millrun.execution.kernels  # isort: skip
import pytest_millrun.forkserver  # isort: skip

#: Every kernel of the suite runs this at start-up (IPython runs ``$PYTHONSTARTUP`` in a
#: kernel too); it logs how the kernel was started, for the ``kernel_start`` fixture.
#: Set once for the whole session, so every fork template serves every test alike.
os.environ["PYTHONSTARTUP"] = str(Path(__file__).with_name("kernel_startup.py"))


@pytest.fixture
def kernel_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private TMPDIR: kernel sockets of this test land there, and only there.

    Set for this process and inherited by subprocesses, so the process table
    tells this test's kernels apart from those of tests running beside it.
    """
    folder = Path(tempfile.mkdtemp(prefix="mrt-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    for process in kernels_under(folder):  # never leave one behind, even when a test fails
        process.kill()


@pytest.fixture(params=["fork", "spawn"])
def kernel_start(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Run the test once per kernel start mode; results must not depend on it.

    Every kernel the test starts, in this process or any other, logs how it was really
    started (``kernel_startup.py``). Afterwards at least one must have started, and all
    the way asked: a fork-mode test that silently fell back to spawning, or a test that
    starts no kernel at all (so running it twice proves nothing), is an error.
    """
    mode: str = request.param
    log = tmp_path_factory.mktemp("kernel-start") / "started.log"
    monkeypatch.setenv("MILLRUN_KERNEL_START", mode)
    monkeypatch.setenv("MILLRUN_TEST_START_LOG", str(log))
    yield mode
    started = log.read_text().split() if log.exists() else []
    assert started, "no kernel started: a test that starts none needs no kernel_start"
    assert set(started) == {mode}, f"asked for {mode}, kernels started: {started}"


def fork_state_is_spoilt() -> bool:
    """Whether fork mode, in this process, would not serve the next test as it would a
    fresh process: given up (``kernels.fork_broken``), a template remembered as broken, a
    template that died, or a spare kernel left over."""
    templates = pytest_millrun.forkserver.template_registry
    return bool(
        pytest_millrun.execution.kernels.fork_broken.is_set()
        or templates._BROKEN
        or any(not template.alive() for template in templates._TEMPLATES.values())
        or pytest_millrun.forkserver.spares._SPARES.pending is not None
    )


def reset_fork_state() -> None:
    """What a new process would start with: no templates, no spare, fork not given up."""
    pytest_millrun.forkserver.shutdown_templates()  # also the spare and the broken marks
    pytest_millrun.execution.kernels.fork_broken.clear()


@pytest.fixture(autouse=True)
def _fresh_fork_state() -> Iterator[None]:
    """In-process ``runpytest`` runs share this process's fork state: one fork failure would
    silently turn every later fork-mode test in this worker into a spawn test. A healthy
    template is kept (starting one per test would cost seconds); anything else is reset
    before and after each test."""
    if fork_state_is_spoilt():
        reset_fork_state()
    yield
    if fork_state_is_spoilt():
        reset_fork_state()


@pytest.fixture
def make_notebook(tmp_path: Path) -> MakeNotebook:
    def make(name: str, cells: Sequence[str] = ("result = x + y",), **kwargs: Any) -> Path:
        return write_notebook(tmp_path / name, cells, **kwargs)

    return make


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty folder nobody can write to: a read-only tmpfs for root, mode 0555 otherwise."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("root cannot mount a read-only tmpfs here, and mode 0555 does not stop root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="session")
def bash_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bash_kernel's kernelspec installed into a private JUPYTER_PATH for the session.

    Installed the way its README says (``python -m bash_kernel.install``), with
    ``--prefix`` so no other test, nor the machine, sees it; skipped with the
    reason when bash_kernel is not installed (it is in the test extra).
    """
    pytest.importorskip("bash_kernel", reason="bash_kernel (in the test extra) is not installed")
    prefix = tmp_path_factory.mktemp("bash-kernel")
    subprocess.run(
        [sys.executable, "-m", "bash_kernel.install", "--prefix", str(prefix)],
        check=True,
        capture_output=True,
    )
    saved = os.environ.get("JUPYTER_PATH")
    path = str(prefix / "share" / "jupyter")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([path, saved]) if saved else path
    try:
        yield "bash"
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved



@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """A real S3 endpoint: moto's server on 127.0.0.1, its own process, stopped at the end."""
    import socket

    from millrun_testing import free_port, wait_until

    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("no moto server (pip install 'moto[server]')")
    port = free_port()
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(up, 60, f"moto's server to listen on {url}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An s3fs filesystem on the endpoint, with a fresh bucket ``runs``; this process's fsspec
    configured to reach it, as a user's config file would."""
    from millrun_testing import S3_CREDENTIALS

    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs")
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)  # for processes started meanwhile
    filesystem = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    if filesystem.exists("runs"):
        filesystem.rm("runs", recursive=True)
    filesystem.mkdir("runs")
    return filesystem
