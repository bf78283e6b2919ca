"""Helpers for the fork server's tests: kernel managers with the ForkProvisioner installed
the way the execution layer installs it, and probes of the kernel from inside."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psutil
import pytest
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from pytest_millrun.forkserver.provisioner import ForkProvisioner, make_provisioner
from pytest_millrun.forkserver.template_registry import shutdown_templates


class ForkKernelManager(AsyncKernelManager):
    """What the execution layer does in fork mode: install the provisioner before the start."""

    preload: tuple[str, ...] = ()

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        self.provisioner = make_provisioner(self, preload=self.preload)
        return await super()._async_pre_start_kernel(**kw)


class NumpyForkKernelManager(ForkKernelManager):
    preload = ("numpy",)


PROBE = r"""
import gc, json, os, random, sys, threading
def _target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
_fds = {fd: _target(fd) for fd in os.listdir("/proc/self/fd")}
print(json.dumps({
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "sid": os.getsid(0),
    "cwd": os.getcwd(),
    "random": random.random(),
    "numpy_random": float(sys.modules["numpy"].random.random()) if "numpy" in sys.modules else None,
    "env": dict(os.environ),
    "fds": {fd: target for fd, target in _fds.items() if target is not None},
    "stdio_copies": [
        getattr(stream, "_original_stdstream_copy", None) for stream in (sys.stdout, sys.stderr)
    ],
    "threads": sorted(type(t).__name__ for t in threading.enumerate()),
    "argv": sys.argv,
    "orig_argv": sys.orig_argv,
    "path": sys.path,
    "modules": sorted(sys.modules),
    "main_file": getattr(sys.modules["__main__"], "__file__", None),
    "umask": next(l.split()[1] for l in open("/proc/self/status") if l.startswith("Umask:")),
    "gc": [gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()],
}))
"""


async def run_code(kc: AsyncKernelClient, code: str, timeout: float = 30.0) -> tuple[str, Any]:
    """Execute ``code``; return (stdout, error name or None)."""
    msg_id = kc.execute(code)
    out: list[str] = []
    error = None
    deadline = time.monotonic() + timeout
    while True:
        msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            error = msg["content"]["ename"]
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), error


async def probe(kc: AsyncKernelClient) -> dict[str, Any]:
    out, error = await run_code(kc, PROBE)
    assert error is None, out
    result: dict[str, Any] = json.loads(out)
    return result


@contextlib.asynccontextmanager
async def kernel(
    km_class: type[AsyncKernelManager] = ForkKernelManager, **start: Any
) -> AsyncIterator[tuple[AsyncKernelManager, AsyncKernelClient]]:
    km = km_class(kernel_name="python3")
    await km.start_kernel(**start)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def kernel_pid(km: AsyncKernelManager) -> int:
    provisioner = km.provisioner
    assert isinstance(provisioner, ForkProvisioner)
    assert provisioner.forked is not None
    return provisioner.forked.pid


def fd_kinds(probe: dict[str, Any]) -> list[str]:
    """Targets of descriptors above 2, inode numbers and IPython's history files left out.

    ipykernel keeps a copy of the stdout and stderr it was given (to echo the
    output it captures from descriptors 1 and 2); those count as one kind, whatever
    file each kernel was given.
    """
    copies = {str(fd) for fd in probe["stdio_copies"] if fd is not None}
    return sorted(
        "copy of stdout or stderr" if fd in copies else re.sub(r"\[\d+\]", "", target)
        for fd, target in probe["fds"].items()
        if int(fd) > 2 and ".ipython" not in target
    )


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a reaper that is not ours."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(autouse=True, scope="module")
def no_templates_left() -> Iterator[None]:
    yield
    templates = [p for p in psutil.Process().children() if is_template(p)]
    shutdown_templates()
    for process in templates:
        assert wait_gone(process.pid, 5)


def is_template(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "millrun-fork-template" in " ".join(process.cmdline())
    return False  # pragma: no cover
