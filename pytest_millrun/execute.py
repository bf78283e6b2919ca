"""Running one notebook with one variation, and saying what happened.

This module knows nothing about pytest or the command line: it takes paths and
parameters, runs papermill, and returns an :class:`ExecutionResult` whose
:class:`Failure` is already phrased for a person.  The three front ends only
decide how to show it.

The papermill call is the ordinary one, tuned through papermill's and
nbclient's own extension points:

* a kernel manager class (``kernel_manager_class``) whose kernels listen on
  ZeroMQ ``ipc`` sockets in a private 0700 folder, so concurrent starts can
  never race for TCP ports, and whose stdout/stderr go to a log file instead of
  the user's terminal (the log's tail is quoted when a kernel dies);
* ``shutdown_kernel="immediate"``: the outputs are all in once the last cell
  replies, so waiting on the graceful handshake only costs time;
* the kernel's working directory set through nbclient's ``resources`` instead
  of papermill's process-wide ``chdir``, so nothing here touches global state.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from . import engine, expected_errors, failures, kernel_faulthandler, recording
from .discovery import (
    OUTPUT_MARKER,
    NotebookError,
    absolute,
    is_output_notebook,
    read_notebook_json,
)
from .failures import API_OPTION_NAMES, Failure, OptionNames, cell_words, format_failure
from .naming import OutputPathError, check_output_folder, partial_path
from .params import Variation

Status = Literal["passed", "failed", "interrupted"]
KernelStart = Literal["auto", "fork", "spawn"]
KERNEL_START_MODES: tuple[KernelStart, ...] = ("auto", "fork", "spawn")
#: The kernel of a notebook whose metadata names none (nbclient's and nbmake's choice too).
DEFAULT_KERNEL = "python3"


class KernelProcess(Protocol):
    """What the bookkeeping needs of a kernel process: a Popen, or a forked kernel's handle."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def resolve_kernel_start(mode: str) -> KernelStart:
    """``auto`` becomes ``$MILLRUN_KERNEL_START`` when set (a CI matrix knob), else fork."""
    if mode == "auto":
        mode = os.environ.get("MILLRUN_KERNEL_START", "fork") or "fork"
    if mode not in ("fork", "spawn"):
        raise ValueError(f"kernel start mode must be one of auto, fork, spawn, not {mode!r}")
    return "fork" if mode == "fork" else "spawn"


@contextlib.contextmanager
def kernels_ahead(kernel_start: str) -> Iterator[None]:
    """Around a run of many executions: in fork mode each kernel's start overlaps the last run.

    See :func:`pytest_millrun.forkserver.spare_kernels`; nothing happens in spawn mode.
    """
    if resolve_kernel_start(kernel_start) != "fork" or _fork_broken.is_set():
        yield
        return
    from . import forkserver

    with forkserver.spare_kernels():
        yield


def expect_next_execution(
    notebook: Path | None, env_updates: Mapping[str, str] | None = None
) -> None:
    """Tell fork mode which notebook runs next (``None``: none), so its kernel is started ahead
    in the right folder with the right environment; see :func:`kernels_ahead`."""
    forkserver = sys.modules.get(f"{__package__}.forkserver")
    if forkserver is None:  # fork mode not in use in this process
        return
    if notebook is None:
        forkserver.expect_next_launch(last=True)
    else:
        forkserver.expect_next_launch(str(absolute(notebook).parent), env_updates)


#: Set once the fork template failed in this process: later kernels spawn directly.
_fork_broken = threading.Event()
_FORK_LOCK = threading.Lock()


class ForkFallbackWarning(UserWarning):
    """Fork mode was asked for but could not serve; kernels are spawned instead."""


#: The execution running in each thread, by thread id, so another thread can stop it.
_RUNNING: dict[int, _KernelSandbox] = {}

#: Kernels started by this process and not yet reaped; killed at exit whatever happens.
_LIVE_KERNELS: set[KernelProcess] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one (notebook, variation) pair."""

    notebook: Path
    variation_id: str
    parameters: Variation
    output: Path | None
    status: Status
    duration: float
    error: Failure | None = None
    #: What a person should know about a run that is not a failure (the kernel it defaulted to).
    notes: tuple[str, ...] = ()
    #: name -> plain JSON value (nan/inf as floats); see :mod:`pytest_millrun.recording`
    recorded: Mapping[str, Any] = field(default_factory=dict)
    #: name -> why that scrap or variable is not (exactly) recorded
    record_notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class ExecutionInterrupted(KeyboardInterrupt):
    """A signal stopped the run while a notebook was executing; its partial output is saved."""

    def __init__(self, result: ExecutionResult) -> None:
        super().__init__(f"Interrupted while running {result.notebook} [{result.variation_id}]")
        self.result = result

    def __reduce__(self) -> tuple[type[ExecutionInterrupted], tuple[ExecutionResult]]:
        # rebuilt from its result, as a process pool's worker sends it to the parent
        return (type(self), (self.result,))


class OverwriteError(ValueError):
    """Raised instead of writing over a file that is not an output of this tool."""


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Variation,
    *,
    variation_id: str = "",
    kernel_name: str | None = None,
    cell_timeout: float | None = None,
    notebook_timeout: float | None = None,
    kernel_start: KernelStart = "auto",
    preload: Sequence[str] = (),
    option_names: OptionNames = API_OPTION_NAMES,
    record: Sequence[str] = (),
    **papermill_kwargs: Any,
) -> ExecutionResult:
    """Run ``notebook`` with ``parameters`` through papermill and save it to ``output``.

    Never raises for a failure of the notebook or its kernel: that is the
    result's ``error``.  Raises :class:`ExecutionInterrupted` when SIGINT or
    SIGTERM stopped the run, after the partial output is saved and the kernel
    is gone, so the caller can stop everything else too.

    ``kernel_start`` picks how the kernel process starts: ``fork`` from a warm
    template (see :mod:`pytest_millrun.forkserver`) where the kernelspec runs
    ipykernel on this interpreter, ``spawn`` as papermill does, or ``auto``
    (``$MILLRUN_KERNEL_START`` if set, else fork where it can serve).
    ``preload`` names modules the fork template imports once.  A notebook
    whose metadata names no kernel runs on :data:`DEFAULT_KERNEL` (the result
    notes it).  ``option_names`` are the calling front end's spellings of the
    options that a failure's advice names.  ``record`` names variables read
    after the last cell (see :mod:`pytest_millrun.recording`).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.monotonic()
    notebook = absolute(notebook)
    output = Path(output)
    notes: list[str] = []
    recorder = recording.Recorder(record)

    def finish(status: Status, error: Failure | None = None) -> ExecutionResult:
        return ExecutionResult(
            notebook=notebook,
            variation_id=variation_id,
            parameters=dict(parameters),
            output=output if output.exists() else None,
            status=status,
            duration=time.monotonic() - started,
            error=error,
            notes=tuple(notes),
            recorded=recorder.values,
            record_notes=recorder.notes,
        )

    try:
        nb = _load_input(notebook, variation_id)
        check_output_target(notebook, output)
        check_output_folder(output.parent)
        output.parent.mkdir(parents=True, exist_ok=True)
    except (NotebookError, OverwriteError, OutputPathError) as exc:
        return finish("failed", Failure("error", str(exc)))
    except OSError as exc:  # the folder changed since the plan: this run fails, not the others
        return finish("failed", failures.output_folder_failure(exc, option_names))
    if kernel_name is None and not nb.metadata.get("kernelspec", {}).get("name"):
        kernel_name = DEFAULT_KERNEL  # as nbclient and nbmake do
        notes.append(
            f"{notebook.name} names no kernel in its metadata, so it ran on the default kernel "
            f"{DEFAULT_KERNEL} (choose another with {option_names.kernel})."
        )
    if not papermill_kwargs.get("language") and not _notebook_language(nb):
        # papermill needs the language to write the parameters; the kernel's spec knows it
        papermill_kwargs["language"] = _kernel_language(kernel_name)

    partial = partial_path(output)
    with _KernelSandbox(resolve_kernel_start(kernel_start), tuple(preload)) as sandbox:
        engine_kwargs: dict[str, Any] = {
            "engine_name": engine.register(),
            "progress_bar": False,
            "shutdown_kernel": "immediate",
            "resources": {"metadata": {"path": str(notebook.parent)}},
            **papermill_kwargs,
            "kernel_name": kernel_name,
            "kernel_manager_class": sandbox.kernel_manager_class(),
        }
        if engine_kwargs["engine_name"] == engine.ENGINE_NAME:  # the paths papermill would record
            engine_kwargs["millrun_paths"] = (str(notebook), str(output))
            engine_kwargs["millrun_recorder"] = recorder
        if cell_timeout is not None:
            engine_kwargs["execution_timeout"] = cell_timeout
        watchdog = None
        if notebook_timeout is not None:
            watchdog = threading.Timer(notebook_timeout, sandbox.expire)
            watchdog.daemon = True
            watchdog.start()
        error: Failure | None = None
        interrupted = retry = False
        try:
            papermill.execute_notebook(
                nb, str(partial), parameters=dict(parameters), **engine_kwargs
            )
        except PapermillExecutionError as exc:
            standing = expected_errors.settle(partial, exc)  # raises-exception cells may pass
            if standing is not None:
                error = failures.cell_failure(standing)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:
            if sandbox.fork_failed(exc):
                retry = True
            elif sandbox.signalled(exc):
                interrupted = True
            else:
                error = failures.explain(
                    exc,
                    notebook=notebook,
                    partial=partial,
                    kernel=sandbox,
                    kernel_name=kernel_name,
                    parameters=parameters,
                    notebook_timeout=notebook_timeout,
                    names=option_names,
                )
        finally:
            if watchdog is not None:
                watchdog.cancel()
            _keep_partial(partial, output, checked=error is not None or interrupted or retry)
            foreign = engine_kwargs["engine_name"] != engine.ENGINE_NAME
            if foreign and output.exists():  # another engine ran it: its scraps at least
                with contextlib.suppress(NotebookError):
                    recorder.finish(read_notebook_json(output))
    if retry:  # the fork template could not serve: run this one again the usual way
        again = execute_notebook(
            notebook, output, parameters, variation_id=variation_id, kernel_name=kernel_name,
            cell_timeout=cell_timeout, notebook_timeout=notebook_timeout, kernel_start="spawn",
            option_names=option_names, record=record, **papermill_kwargs,
        )  # fmt: skip
        return dataclasses.replace(again, notes=(*notes, *again.notes))
    if interrupted:
        raise ExecutionInterrupted(
            finish("interrupted", Failure("interrupted", "Interrupted by a signal."))
        )
    if error is None and (problem := recorder.problem(notebook)):
        error = Failure("record", problem[1], ename="RecordError", evalue=problem[0])
    return finish("failed" if error else "passed", error)


def _notebook_language(nb: Any) -> str | None:
    """The language papermill reads from a notebook (``language_info``, then the kernelspec)."""
    metadata = nb.metadata
    name = metadata.get("language_info", {}).get("name")
    return name or metadata.get("kernelspec", {}).get("language") or None


def _kernel_language(kernel_name: str | None) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    if kernel_name is None:
        return None
    try:
        language: str = KernelSpecManager().get_kernel_spec(kernel_name).language
    except NoSuchKernel:
        return None  # the run then fails saying no such kernel is installed
    return language or None


def _keep_partial(partial: Path, output: Path, *, checked: bool) -> None:
    """Give the partial output its final name; after a failure, only if it is a whole notebook.

    A write cut short (a value that cannot be encoded, a full disk, a signal)
    leaves a truncated file, which would then block the next run as "not an
    output of millrun".
    """
    if not partial.is_file():
        return
    if checked:
        try:
            whole = is_output_notebook(read_notebook_json(partial))
        except NotebookError:
            whole = False
        if not whole:
            partial.unlink()
            return
    os.replace(partial, output)


def check_output_target(notebook: Path, output: Path) -> None:
    """Refuse to write over the input notebook or any file this tool did not write."""
    if output.resolve() == notebook.resolve():
        raise OverwriteError(
            f"The output path {output} is the input notebook itself. Choose an output "
            f"directory or prepend/append components so the names differ."
        )
    if output.exists():
        try:
            ours = is_output_notebook(read_notebook_json(output))
        except NotebookError:
            ours = False
        if not ours:
            raise OverwriteError(
                f"The output path {output} already holds a file that is not an output of "
                f"millrun (an input notebook?); it is left untouched. Choose another output "
                f"directory or other prepend/append components."
            )


def _load_input(notebook: Path, variation_id: str) -> Any:
    """Read the notebook and mark it, so every save of its output says it is an output."""
    import nbformat

    if not notebook.exists():
        raise NotebookError(f"Notebook {notebook} does not exist (was it moved or deleted?).")
    read_notebook_json(notebook)  # a clear message for broken JSON, before nbformat's
    try:
        nb = nbformat.read(str(notebook), as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise NotebookError(f"Notebook {notebook} is not a valid notebook: {exc}") from None
    nb.metadata[OUTPUT_MARKER] = {"input": str(notebook), "variation": variation_id}
    return nb


class _KernelSandbox:
    """A private folder and the bookkeeping for the one kernel of one execution.

    The kernel manager class it hands to nbclient records the kernel process
    here, which lets a watchdog thread kill it on a notebook timeout, lets the
    failure report say how it died, and guarantees it is reaped.
    """

    def __init__(self, kernel_start: KernelStart = "spawn", preload: tuple[str, ...] = ()) -> None:
        self.kernel_start: KernelStart = "spawn" if _fork_broken.is_set() else kernel_start
        self.preload = preload
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

    def __enter__(self) -> _KernelSandbox:
        with _LIVE_LOCK:
            _RUNNING[threading.get_ident()] = self
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

            async def _async_kill_kernel(self, restart: bool = False) -> None:
                # jupyter_client polls every 0.1 s until the killed kernel is gone; the
                # outputs are already in, so the sandbox reaps it in the background.
                if self.has_kernel and self.provisioner is not None:
                    await self.provisioner.kill(restart=restart)

            async def _async_pre_start_kernel(self, **kw: Any) -> Any:
                if sandbox.kernel_start == "fork" and self.provisioner is None:
                    from . import forkserver

                    if forkserver.fork_available(self.kernel_spec):
                        self.provisioner = forkserver.make_provisioner(self, sandbox.preload)
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
            first = not _fork_broken.is_set()
            _fork_broken.set()
        if first:
            warnings.warn(
                f"Fork kernel start is unavailable here ({failures.first_line(str(exc))}); "
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
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        return f" The kernel's last output was:\n{failures.indent(failures.crash_lines(text))}"


def stop_execution(thread_id: int) -> bool:
    """Stop the notebook that thread ``thread_id`` runs, as SIGINT stops one in the main thread.

    Why: an execution in a worker thread (a Dask worker's) gets no signal; killing
    its kernel ends the running cell, and the execution then saves its partial
    output and raises :class:`ExecutionInterrupted` as after a signal.  False if
    that thread runs no notebook.
    """
    with _LIVE_LOCK:
        sandbox = _RUNNING.get(thread_id)
    if sandbox is None:
        return False
    sandbox.stop()
    return True


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
    check, same messages, shorter steps.
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
                if reply["content"].get("implementation") == "ipython":
                    await self._silently(kernel_faulthandler.request_code(), deadline)
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
def _kill_leftover_kernels() -> None:
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
    "ExecutionInterrupted",
    "ExecutionResult",
    "Failure",
    "OptionNames",
    "OverwriteError",
    "cell_words",
    "check_output_target",
    "execute_notebook",
    "format_failure",
]
