"""Runs in the parent: kernels forked ahead of need, one launch in advance.

Why: a kernel's own start-up (ipykernel's initialisation, about two thirds of a
forked kernel's CPU time) can run while the current notebook executes instead of
in front of the next one.  A spare is adopted by the provisioner (:mod:`.provisioner`)
only when it matches the launch exactly, else discarded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import REQUEST_TIMEOUT, ForkedKernel, TemplateInfo
from .command import KernelCommand
from .template_registry import launch, on_fork_child, on_shutdown


@dataclass
class Spare:
    """A kernel forked ahead of need, for the next launch with the same command and folder.

    It has run no code, so it is as fresh as one forked on demand, only started a
    moment earlier.  Its connection file, sockets and log are in ``folder``, which
    the launch that adopts it takes over.
    """

    kernel: ForkedKernel
    folder: Path
    connection_file: str
    info: dict[str, Any]
    argv: list[str]
    cwd: str
    env: dict[str, str]
    #: The template's (preloads, learned preloads).
    preload: tuple[tuple[str, ...], tuple[str, ...]]

    def alive(self) -> bool:
        return self.kernel.poll() is None

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError):
                os.killpg(self.kernel.pid, signal.SIGKILL)  # it leads its own group
        self.kernel.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.kernel.wait(timeout=2.0)
        self.kernel.close()
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.info.get('ip')}-{self.info.get(name)}")

    def discard(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class _SpareState:
    """One pending spare per process, wanted while at least one ``spare_kernels()`` is open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner_pid = os.getpid()
        self.depth = 0
        self.pending: Future[Spare | None] | None = None
        #: What the caller said of the next launch: ``None`` none is coming; otherwise its
        #: working directory (``None`` for the current one's) and environment changes.
        self.next: tuple[str | None, dict[str, str]] | None = (None, {})


_SPARES = _SpareState()


def _forget_spare_in_child() -> None:
    """After ``os.fork()`` in a parent: the parent's spare is the parent's."""
    global _SPARES
    _SPARES = _SpareState()


@contextlib.contextmanager
def spare_kernels() -> Iterator[None]:
    """While inside, each forked kernel's launch also forks the *next* kernel in the background.

    Why: a kernel's own start-up (ipykernel's initialisation, about two thirds of
    a forked kernel's CPU time) then runs while the current notebook executes,
    instead of in front of the next one.  The spare is adopted only by a launch
    with exactly its command line (up to the connection file), environment and
    working directory, and only while it is alive; otherwise it is discarded and
    the kernel forked as usual.  Leaving the outermost block discards the spare
    left over, so no kernel outlives the run.  Use it around a run of many
    executions (a pytest session, a worker's life), not around a single one.
    """
    with _SPARES.lock:
        _SPARES.depth += 1
    try:
        yield
    finally:
        with _SPARES.lock:
            _SPARES.depth -= 1
            last = _SPARES.depth == 0
            if last:
                _SPARES.next = (None, {})
        if last:
            discard_spare()


def expect_next_launch(
    cwd: str | None = None, env_updates: Mapping[str, str] | None = None, *, last: bool = False
) -> None:
    """Say what the next launch in this process will look like, so its spare matches it.

    By default a spare copies the launch it follows.  A caller that knows better
    (pytest: the next item's folder) says so before each launch; ``last=True``
    means no launch follows, so no spare is forked for nothing.  It holds for the
    next launch only.  A wrong guess costs only the spare.
    """
    _SPARES.next = None if last else (cwd, dict(env_updates or {}))


def discard_spare() -> None:
    """Kill the spare kernel, if one is waiting, and remove its files."""
    spare = take_spare()
    if spare is not None:
        spare.discard()


def take_spare() -> Spare | None:
    with _SPARES.lock:
        pending, _SPARES.pending = _SPARES.pending, None
    if pending is None:
        return None
    try:
        return pending.result(timeout=REQUEST_TIMEOUT)
    except Exception:  # a spare is an optimisation: any trouble means there is none
        return None


def prepare_spare(
    command: KernelCommand,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    preload: tuple[tuple[str, ...], tuple[str, ...]],
    kernel_name: str,
) -> None:
    """Fork the next kernel in a background thread, as :func:`expect_next_launch` predicts."""
    if "-f" not in argv[:-1]:
        return
    with _SPARES.lock:
        expected, _SPARES.next = _SPARES.next, (None, {})  # said of one launch only
        if (
            expected is None
            or _SPARES.depth <= 0
            or _SPARES.owner_pid != os.getpid()
            or _SPARES.pending
        ):
            return
        future: Future[Spare | None] = Future()
        _SPARES.pending = future
    next_cwd, env_updates = expected
    thread = threading.Thread(
        target=_fork_spare,
        args=(
            future,
            command,
            list(argv),
            next_cwd or cwd,
            {**env, **env_updates},
            preload,
            kernel_name,
        ),
        name="millrun-spare-kernel",
        daemon=True,
    )
    thread.start()


def _no_notes(info: TemplateInfo) -> None:
    """Spares report nothing: a template's notes are told by the launch that starts it, and a
    spare's template is the one the launch before it used, unless the environment changed."""


def _fork_spare(
    future: Future[Spare | None],
    command: KernelCommand,
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    preload: tuple[tuple[str, ...], tuple[str, ...]],
    kernel_name: str,
) -> None:
    """Write the spare's connection file, then fork the spare.

    The file is complete before the kernel exists, and nothing writes it again: the
    adopting manager takes it as written (see :meth:`ForkProvisioner.pre_launch`).  It
    holds what that manager would write, kernel name included.
    """
    from jupyter_client.connect import write_connection_file
    from jupyter_client.session import new_id_bytes

    spare: Spare | None = None
    base = tempfile.gettempdir()  # as the executions' folders: socket paths must stay short
    folder = Path(tempfile.mkdtemp(prefix="millrun-", dir=base if len(base) <= 64 else "/tmp"))
    try:
        connection_file, info = write_connection_file(
            str(folder / "kernel.json"),
            ip=str(folder / "ipc"),
            transport="ipc",
            key=new_id_bytes(),
            kernel_name=kernel_name,
        )
        argv[argv.index("-f") + 1] = connection_file
        log_fd = os.open(folder / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            plain, learned = preload
            kernel = launch(
                command, argv, cwd, env, log_fd, log_fd, False, plain, _no_notes, learned
            )
        finally:
            os.close(log_fd)
        spare = Spare(kernel, folder, connection_file, dict(info), argv, cwd, env, preload)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        future.set_result(spare)  # whoever takes the future adopts or discards the spare


on_shutdown(discard_spare)
on_fork_child(_forget_spare_in_child)
