"""Spare kernels (pytest_millrun.forkserver.spares): forked one launch ahead, adopted only by
a launch they match, and none outliving the run; real templates and kernels throughout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyter_client.connect
import pytest

from forkserver_kernels import (
    ForkKernelManager,
    kernel,
    kernel_pid,
    no_templates_left,  # noqa: F401  (autouse, module scope)
    probe,
    wait_gone,
)
from pytest_millrun import forkserver

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork mode is Linux")


_IPC_FOLDERS: list[str] = []


class IpcForkKernelManager(ForkKernelManager):
    """Private ipc sockets in a folder of their own, as the execution layer's kernels have."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transport = "ipc"
        _IPC_FOLDERS.append(tempfile.mkdtemp(prefix="millrun-test-"))  # short socket paths
        self.ip = os.path.join(_IPC_FOLDERS[-1], "ipc")


@pytest.fixture(autouse=True, scope="module")
def _remove_ipc_folders() -> Iterator[None]:
    yield
    for folder in _IPC_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def waiting_spare_pid() -> int:
    pending = forkserver.spares._SPARES.pending
    assert pending is not None, "a spare should have been forked"
    spare = pending.result(timeout=30)
    assert spare is not None
    return spare.kernel.pid


def test_spare_kernel_is_taken_by_the_next_matching_launch_and_none_outlives_the_run(
    tmp_path: Path,
) -> None:
    async def main() -> list[dict[str, Any]]:
        seen = []
        spares = []
        with forkserver.spare_kernels():
            for _ in range(3):
                async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (km, kc):
                    seen.append(await probe(kc))
                    seen[-1]["provisioner_pid"] = kernel_pid(km)
                    spares.append(waiting_spare_pid())
            assert forkserver.spares._SPARES.pending is not None
        assert forkserver.spares._SPARES.pending is None  # the last spare went with the block
        assert wait_gone(spares[-1])
        return [*seen, {"spares": spares}]

    *seen, extra = asyncio.run(main())
    spares = extra["spares"]
    # the second and third kernels are the spares forked while the one before ran
    assert [s["pid"] for s in seen[1:]] == spares[:2]
    assert all(s["pid"] == s["provisioner_pid"] for s in seen)
    assert len({s["pid"] for s in seen}) == 3
    assert len({s["random"] for s in seen}) == 3
    assert all(s["cwd"] == str(tmp_path) for s in seen)
    assert all(wait_gone(s["pid"]) for s in seen)


def test_spare_kernel_for_another_environment_or_folder_is_not_used(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()

    async def main() -> list[tuple[dict[str, Any], int]]:
        runs = []
        with forkserver.spare_kernels():
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (_km, kc):
                await probe(kc)
                spare = waiting_spare_pid()
            env = dict(os.environ, MILLRUN_FORK_TEST="changed")
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path), env=env) as (_km, kc):
                runs.append((await probe(kc), spare))
                spare = waiting_spare_pid()
            async with kernel(IpcForkKernelManager, cwd=str(other), env=env) as (_km, kc):
                runs.append((await probe(kc), spare))
        return runs

    (changed_env, spare1), (changed_cwd, spare2) = asyncio.run(main())
    assert changed_env["pid"] != spare1
    assert changed_env["env"]["MILLRUN_FORK_TEST"] == "changed"
    assert changed_cwd["pid"] != spare2
    assert changed_cwd["cwd"] == str(other)
    assert wait_gone(spare1)
    assert wait_gone(spare2)


_SECURE_WRITE = jupyter_client.connect.secure_write


def test_adopted_spare_starts_from_the_connection_file_it_was_forked_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spare starts, reading its connection file, while the kernel before it runs. A
    # manager that wrote the file again on adopting it (jupyter_core's secure_write: remove,
    # create empty, fill) would leave it empty for an instant under a spare still starting;
    # here that instant lasts half a second, and every write is recorded.
    written: list[str] = []

    @contextlib.contextmanager
    def held_empty(fname: str, binary: bool = False) -> Iterator[Any]:
        written.append(fname)
        with _SECURE_WRITE(fname, binary) as file:
            time.sleep(0.5)
            yield file

    monkeypatch.setattr(jupyter_client.connect, "secure_write", held_empty)

    async def main() -> tuple[Any, dict[str, Any], str]:
        with forkserver.spare_kernels():
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (_km, kc):
                await probe(kc)
                pending = forkserver.spares._SPARES.pending
                assert pending is not None
            # adopted the moment the spare is forked, as when notebooks are short
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (km, kc):
                seen = await probe(kc)  # a spare that read an empty file never answers
                connection_file = km.connection_file
        return pending.result(timeout=30), seen, connection_file

    spare, seen, connection_file = asyncio.run(main())
    log = (spare.folder / "kernel.log").read_text(errors="replace")
    shutil.rmtree(spare.folder, ignore_errors=True)
    assert seen["pid"] == spare.kernel.pid, f"the spare died, not adopted:\n{log[-600:]}"
    assert connection_file == spare.connection_file
    assert written.count(spare.connection_file) == 1  # by the spare's preparation only


def test_restart_keeps_its_connection_and_leaves_the_spare_for_the_next_launch(
    tmp_path: Path,
) -> None:
    # The client stays connected across a restart: a spare's other ports and key would
    # leave it talking to no one.
    async def main() -> tuple[int, int, int]:
        with forkserver.spare_kernels():
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (km, kc):
                await probe(kc)
                spare = waiting_spare_pid()
                await km.restart_kernel(now=True)
                await kc.wait_for_ready(timeout=30)
                restarted = (await probe(kc))["pid"]
            async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (_km, kc):
                following = (await probe(kc))["pid"]
        return spare, restarted, following

    spare, restarted, following = asyncio.run(main())
    assert restarted != spare
    assert following == spare


def test_told_there_is_no_next_launch_no_spare_is_forked(tmp_path: Path) -> None:
    async def main() -> None:
        with forkserver.spare_kernels():
            forkserver.expect_next_launch(last=True)
            try:
                async with kernel(IpcForkKernelManager, cwd=str(tmp_path)) as (_km, kc):
                    await probe(kc)
                    assert forkserver.spares._SPARES.pending is None
            finally:
                forkserver.expect_next_launch()

    asyncio.run(main())
