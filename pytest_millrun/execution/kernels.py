"""The kernel of one execution: its private folder, its process, and its end.

Why a module of its own: this is the part of an execution that owns an
operating-system process.  :class:`KernelSandbox` gives nbclient a kernel
manager class whose kernel listens on ``ipc`` sockets in a private 0700 folder,
logs to a file, and is recorded here, so a watchdog or another thread can kill
it, a failure report can say how it died, and it is always reaped (at exit too,
see :func:`kill_leftover_kernels`).  :mod:`pytest_millrun.execution.execute` runs the
notebook and phrases what happened; it imports this module, never the reverse.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

from pytest_millrun.core.data import KernelStart
from pytest_millrun.core.text import first_line, quote_log
from pytest_millrun.coverage.kernel_settings import PROCESS_START_VARIABLES
from pytest_millrun.execution.kernel_requests import builtin_parts, wait_for_relay
from pytest_millrun.execution.kernel_session import KernelSession
from pytest_millrun.execution.kernel_threads import KERNELS_AT_ONCE, thread_limits, usable_cpus

#: What pytest and pytest-xdist set in their own process's environment for its tests.  A
#: kernel never sees them, whichever front end starts it: ipykernel captures no file
#: descriptors under ``PYTEST_CURRENT_TEST``, so ``os.system``'s and a C library's output
#: would go to the kernel's log under the plugin and into the notebook under the CLI.
PYTEST_VARIABLES = frozenset(
    {
        "PYTEST_CURRENT_TEST",
        "PYTEST_VERSION",
        "PYTEST_XDIST_TESTRUNUID",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
    }
)


def kernel_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a kernel starts with: ``env`` (default: this process's) minus
    :data:`PYTEST_VARIABLES`, so an output notebook does not depend on the front end, and
    minus coverage's start-up variables (a fork template starts with this environment too),
    so that ``[run] patch = subprocess`` measures neither: millrun measures kernels itself
    (see :mod:`pytest_millrun.coverage`), and would count their lines twice.  Plus, when
    several kernels run at once, their share of the cores for the native thread pools
    (see :mod:`pytest_millrun.execution.kernel_threads`)."""
    source = os.environ if env is None else env
    left_out = PYTEST_VARIABLES | PROCESS_START_VARIABLES | {KERNELS_AT_ONCE}
    kept = {key: value for key, value in source.items() if key not in left_out}
    return {**kept, **thread_limits(source, usable_cpus())}


class KernelProcess(Protocol):
    """What the bookkeeping needs of a kernel process: a Popen, or a forked kernel's handle."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


#: Set once the fork template failed in this process: later kernels spawn directly.
fork_broken = threading.Event()
_FORK_LOCK = threading.Lock()


class ForkFallbackWarning(UserWarning):
    """Fork mode was asked for but could not serve; kernels are spawned instead."""


#: The execution running in each thread, by thread id, so another thread can stop it.
_RUNNING: dict[int, KernelSandbox] = {}
#: Threads asked to stop before (or between) their executions: see :func:`stop_execution`.
_STOP_ASKED: set[int] = set()

#: Kernels started by this process and not yet reaped; killed at exit whatever happens.
_LIVE_KERNELS: set[KernelProcess] = set()
_LIVE_LOCK = threading.Lock()


class KernelSandbox:
    """A private folder and the bookkeeping for the one kernel of one execution.

    The kernel manager class it hands to nbclient records the kernel process
    here, which lets a watchdog thread kill it on a notebook timeout, lets the
    failure report say how it died, and guarantees it is reaped.
    """

    def __init__(
        self,
        kernel_start: KernelStart = "spawn",
        preload: tuple[str, ...] = (),
        session: KernelSession | None = None,
        *,
        learned: tuple[str, ...] = (),
    ) -> None:
        self.kernel_start: KernelStart = "spawn" if fork_broken.is_set() else kernel_start
        self.preload = preload
        self.learned = learned
        #: what the kernel is asked besides cells; its start request goes once the kernel answers
        self.session = session if session is not None else KernelSession(builtin_parts())
        self.forked = False
        # mkdtemp makes it 0700.  Unix socket paths are limited to ~107 bytes, so a
        # long TMPDIR falls back to /tmp rather than failing every kernel start.
        base = tempfile.gettempdir()
        self.folder = Path(
            tempfile.mkdtemp(prefix="millrun-", dir=base if len(base) <= 64 else "/tmp")
        )
        self.log_path = self.folder / "kernel.log"
        self.log: IO[bytes] | None = None
        self.spare_folder: Path | None = None
        self.process: KernelProcess | None = None
        self.started = False
        self.timed_out = False
        self.shut_down_alive = False
        self.stopped = False
        self.lock = threading.Lock()

    def __enter__(self) -> KernelSandbox:
        with _LIVE_LOCK:
            _RUNNING[threading.get_ident()] = self
            if threading.get_ident() in _STOP_ASKED:
                self.stopped = True  # its kernel is killed as soon as it is launched
        return self

    def __exit__(self, *exc: object) -> None:
        with _LIVE_LOCK:
            _RUNNING.pop(threading.get_ident(), None)
        self.kill()
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.spare_folder is not None:
            shutil.rmtree(self.spare_folder, ignore_errors=True)

    def kernel_manager_class(self) -> type:
        from jupyter_client.manager import AsyncKernelManager

        sandbox = self

        class MillrunKernelManager(AsyncKernelManager):
            """Private ipc sockets, a quiet kernel, and a recorded process."""

            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.transport = "ipc"
                self.connection_file = str(sandbox.folder / "kernel.json")
                self.ip = str(sandbox.folder / "ipc")
                self.client_factory = _quick_ready_client_class()
                self.millrun_session = sandbox.session  # read by the client, see wait_for_ready

            async def _async_kill_kernel(self, restart: bool = False) -> None:
                # jupyter_client polls every 0.1 s until the killed kernel is gone; the
                # outputs are already in, so the sandbox reaps it in the background.
                if self.has_kernel and self.provisioner is not None:
                    await self.provisioner.kill(restart=restart)

            async def _async_pre_start_kernel(self, **kw: Any) -> Any:
                kw["env"] = kernel_environment(kw.get("env"))
                if sandbox.kernel_start == "fork" and self.provisioner is None:
                    from pytest_millrun import forkserver

                    if forkserver.fork_available(self.kernel_spec):
                        self.provisioner = forkserver.make_provisioner(
                            self, sandbox.preload, sandbox.learned
                        )
                        sandbox.forked = True
                return await super()._async_pre_start_kernel(**kw)

            async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
                sandbox.log = sandbox.log_path.open("wb")
                kw["stdout"] = kw["stderr"] = sandbox.log
                await super()._async_launch_kernel(kernel_cmd, **kw)
                # a spare kernel taken over (see forkserver.spare_kernels) brings its folder,
                # and its own log if it was adopted as it was
                sandbox.spare_folder = getattr(self.provisioner, "spare_folder", None)
                spare_log = getattr(self.provisioner, "spare_log", None)
                if spare_log is not None:
                    sandbox.log.close()
                    sandbox.log, sandbox.log_path = None, spare_log
                process = getattr(self.provisioner, "process", None) or getattr(
                    self.provisioner, "forked", None
                )
                if process is not None:
                    with sandbox.lock:
                        sandbox.process = process
                    with _LIVE_LOCK:
                        _LIVE_KERNELS.add(process)
                    if sandbox.timed_out:  # the limit ran out while it started: expire missed it
                        sandbox.expire()
                    if sandbox.stopped:  # stopped while its kernel was starting
                        sandbox.stop()
                sandbox.started = True

            async def shutdown_kernel(  # type: ignore[override]
                self, now: bool = False, restart: bool = False
            ) -> None:
                # A shutdown that finds the kernel alive while a cell still waits for
                # its reply comes from nbclient's SIGINT/SIGTERM handler; see
                # ``signalled``.
                if sandbox.process is not None and sandbox.process.poll() is None:
                    sandbox.shut_down_alive = True
                await super().shutdown_kernel(now=now, restart=restart)

        return MillrunKernelManager

    def fork_failed(self, exc: Exception) -> bool:
        """The fork template could not start or serve; say so once, and spawn from now on."""
        if not self.forked or type(exc).__name__ != "ForkUnavailable":
            return False
        with _FORK_LOCK:
            first = not fork_broken.is_set()
            fork_broken.set()
        if first:
            warnings.warn(
                f"Fork kernel start is unavailable here ({first_line(str(exc))}); "
                f"kernels are spawned the usual way instead, which is slower but otherwise "
                f"the same.",
                ForkFallbackWarning,
                stacklevel=2,
            )
        return True

    def signalled(self, exc: Exception) -> bool:
        """Whether SIGINT/SIGTERM, not the notebook, ended the execution.

        nbclient handles those signals during execution by shutting the kernel
        down, and the running cell then sees a dead kernel.  A kernel that died
        by itself is already dead when shut down; one our watchdog killed is
        marked ``timed_out``.
        """
        from nbclient.exceptions import DeadKernelError

        if self.stopped:
            return True
        return isinstance(exc, DeadKernelError) and self.shut_down_alive and not self.timed_out

    def stop(self) -> None:
        """Called from another thread (see :func:`stop_execution`): end it as a signal would."""
        with self.lock:
            self.stopped = True
        self._signal(signal.SIGKILL)

    def expire(self) -> None:
        """Called by the watchdog: stop the kernel so nbclient gives up on the running cell."""
        self.timed_out = True
        self._signal(signal.SIGKILL)

    def kill(self) -> None:
        """Make sure the kernel and its process group are gone; reap it off the critical path.

        Signals go out only while the kernel is unreaped: once it is reaped its
        pid (and so its process-group id) can be reused by a new kernel, which a
        late ``killpg`` would kill.
        """
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGKILL)
        _REAPER.submit(_reap, process)

    def _signal(self, sig: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return  # already reaped: its pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_description(self) -> str:
        process = self.process
        if process is None:
            return "no kernel process was started"
        code = process.poll()
        if code is None:
            return "the process was still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (also what the out-of-memory killer sends)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exit code {code}"

    def log_tail(self, lines: int = 8) -> str:
        """The last lines the kernel wrote to stderr, for the report of a crash."""
        if self.log is not None:
            self.log.flush()
        if self.process is not None and self.process.poll() is not None:
            wait_for_relay(self.log_path)  # its last bytes may still be coming
        return quote_log(self.log_path, "The kernel's last output was", lines)


def stop_execution(thread_id: int) -> bool:
    """Stop the notebook that thread ``thread_id`` runs, as SIGINT stops one in the main thread.

    Why: an execution in a worker thread (a Dask worker's) gets no signal; killing
    its kernel ends the running cell, and the execution then saves its partial
    output and raises :class:`ExecutionInterrupted` as after a signal.  The thread
    stays asked to stop until :func:`forget_stop`, so an execution it has not
    started yet (its job is still reading the notebook) or starts again (the
    spawn retry after a fork failure) is stopped too.  True if a notebook was
    running there.
    """
    with _LIVE_LOCK:
        _STOP_ASKED.add(thread_id)
        sandbox = _RUNNING.get(thread_id)
    if sandbox is None:
        return False
    sandbox.stop()
    return True


def forget_stop(thread_id: int) -> None:
    """The job that thread ``thread_id`` ran is over: its next execution runs normally."""
    with _LIVE_LOCK:
        _STOP_ASKED.discard(thread_id)


def _reap(process: KernelProcess) -> None:
    """Wait for a SIGKILLed kernel in the background and drop it from the leftovers."""
    with contextlib.suppress(Exception):
        process.wait(timeout=10)
    if process.poll() is not None:
        with _LIVE_LOCK:
            _LIVE_KERNELS.discard(process)


#: Reaps killed kernels so that an execution returns as soon as its outputs are saved.
_REAPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="millrun-reaper")


@functools.cache
def _quick_ready_client_class() -> type:
    """A kernel client that checks readiness in 20 ms steps and starts no heartbeat.

    jupyter_client's ``wait_for_ready`` confirms IOPub is subscribed by waiting
    up to 0.2 s for the status message of its kernel_info request; a subscriber
    that joined a moment too late misses it and sits out the whole 0.2 s before
    trying again.  For a fresh kernel that is most of the start-up time.  Same
    check, same messages, shorter steps.  Once the kernel is ready, the kernel
    session's start request goes (its manager's ``millrun_session``, see
    :mod:`pytest_millrun.execution.kernel_session`), whichever engine runs the cells.
    """
    from queue import Empty

    from jupyter_client.asynchronous.client import AsyncKernelClient

    class QuickReadyClient(AsyncKernelClient):
        def start_channels(
            self,
            shell: bool = True,
            iopub: bool = True,
            stdin: bool = True,
            hb: bool = False,
            control: bool = True,
        ) -> None:
            # No heartbeat: its thread, event loop and socket per kernel cost more than the
            # rest of the client, and with a kernel manager as parent liveness is asked of
            # the manager (the process itself), never of the heartbeat.
            super().start_channels(shell, iopub, stdin, hb, control)

        async def wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (timeout if timeout is not None else 60.0)
            while time.monotonic() < deadline:
                self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    if not await self._async_is_alive():
                        raise RuntimeError("Kernel died before replying to kernel_info") from None
                    continue
                if reply["msg_type"] != "kernel_info_reply":
                    continue
                try:
                    await self.iopub_channel.get_msg(timeout=0.02)
                except Empty:
                    continue  # IOPub not subscribed yet: ask again
                self._handle_kernel_info_reply(reply)
                session = getattr(self.parent, "millrun_session", None)
                content = reply["content"]
                language = content.get("language_info", {}).get("name")
                code = session.start(language, content.get("implementation")) if session else None
                if code:  # the kernel session's start request, in the kernel itself
                    await self._silently(code, deadline)
                return
            raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

        async def _silently(self, code: str, deadline: float) -> None:
            """Run ``code`` before the first cell: no output, no execution count, no history."""
            msg_id = self.execute(code, silent=True, store_history=False)
            while time.monotonic() < deadline:
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    if not await self._async_is_alive():
                        raise RuntimeError("Kernel died before running its first cell") from None
                    continue
                if reply["parent_header"].get("msg_id") == msg_id:
                    return
            raise RuntimeError("Kernel didn't answer its set-up request in time")

    return QuickReadyClient


@atexit.register
def kill_leftover_kernels() -> None:
    with _LIVE_LOCK:
        leftovers = list(_LIVE_KERNELS)
        _LIVE_KERNELS.clear()
    for process in leftovers:
        if process.poll() is not None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(timeout=2)


__all__ = [
    "ForkFallbackWarning",
    "KernelProcess",
    "KernelSandbox",
    "KernelStart",
    "fork_broken",
    "kernel_environment",
    "kill_leftover_kernels",
    "stop_execution",
]
