"""Runs in the parent (pytest or CLI worker): its handles on one template and on one forked kernel.

Why: the parent starts the template (``sys.executable -c BOOTSTRAP``), talks to it
over a socketpair (:mod:`.protocol`) and holds, for each kernel forked from it, a
``Popen``-like :class:`ForkedKernel` built on the kernel's pidfd.  Which templates a
process has, and when they start and stop, is :mod:`.template_registry`'s concern.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .bootstrap import BOOTSTRAP, ESSENTIAL_IMPORTS, WARM_IMPORTS
from .command import KernelCommand
from .protocol import PAD_NAME, recv, send


class ForkUnavailable(RuntimeError):
    """Fork mode cannot start this kernel; the caller should spawn it the ordinary way.

    Raised for a kernel command that is not ``ipykernel_launcher`` on this
    interpreter, a template that cannot start (its log's tail is quoted), a
    template that crashed twice in a row, or a platform without fork/pidfd
    plumbing.  Never raised for an error the spawned kernel would hit as well
    (a missing ``cwd`` is a :class:`FileNotFoundError` either way).
    """


#: (owner pid, interpreter flags, preloads, learned preloads, start-up environment)
TemplateKey = tuple[
    int, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]
]

_START_TIMEOUT: Final = 120.0
REQUEST_TIMEOUT: Final = 30.0
_PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))


class TemplateGone(Exception):
    """The template stopped answering (crashed, killed, or inherited across a fork)."""


class PreloadUnsafe(ForkUnavailable):
    """A learned preload made the template unfit to fork (it started a thread, or killed the
    template while it was imported): the registry starts a template without it."""

    def __init__(self, module: str, why: str) -> None:
        super().__init__(f"{module}: {why}")
        self.module = module
        self.why = why


@dataclass(frozen=True)
class TemplateInfo:
    """A running template, as :func:`start_template` reports it.

    ``notes`` say which preloads failed (kernels then import them themselves).
    ``native_threads`` counts the template's OS threads: more than one means a
    preloaded extension started a pool of its own (OpenBLAS does, and stops it
    around fork by itself); Python threads would have refused the template.
    """

    pid: int
    preload: tuple[str, ...]
    notes: tuple[str, ...]
    native_threads: int = 1
    #: The learned preloads it imported (those that failed to import are in ``dropped``).
    learned: tuple[str, ...] = ()
    #: Learned preloads that failed to import, and why (kernels import them themselves).
    dropped: Mapping[str, str] = field(default_factory=dict)


class Template:
    """The parent's handle on one template process and its channel."""

    def __init__(
        self, key: TemplateKey, env: Mapping[str, str], learned: Sequence[str] = ()
    ) -> None:
        self.key = key
        self.owner_pid, self.flags, self.preload, _learned, _startup = key
        #: The learned preloads it tries (the key's, less those known unsafe).
        self.learned = tuple(learned)
        #: Files of preloaded modules outside site-packages and the standard library, with
        #: their ``[mtime_ns, size]`` when the template imported them (see :meth:`stale`).
        self.local: dict[str, list[int]] = {}
        self.env = dict(env)
        self.lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="millrun-fork-"))  # 0700
        self.log_path = self.folder / "template.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.info: TemplateInfo | None = None
        self.gone = False
        self.handed: set[int] = set()  # kernel pids forked for this parent, not yet released
        self.last_used = time.monotonic()

    def idle(self) -> bool:
        """No kernel of this template is still running, so it can be stopped safely."""
        try:
            for pid in list(self.handed):
                status, known = self.status(pid)
                if status is None and known:
                    return False
        except TemplateGone:
            pass
        return True

    def start(self) -> TemplateInfo:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {name: value for name, value in self.env.items() if not name.startswith("JPY_")}
        env_bytes = sum(len(name) + len(value) + 2 for name, value in env.items())
        env[PAD_NAME] = "x" * max(8192, 2 * env_bytes)  # room to show each kernel's environ
        spec = {
            "essential": list(ESSENTIAL_IMPORTS),
            "warm": list(WARM_IMPORTS),
            "preload": list(self.preload),
            "learned": list(self.learned),
        }
        cmd = [
            sys.executable,
            *self.flags,
            "-c",
            BOOTSTRAP,
            _PACKAGE_DIR,
            str(os.getpid()),
            str(child_end.fileno()),
            json.dumps(spec),
        ]
        cmd.append("-" * max(0, 4096 - sum(len(arg) + 1 for arg in cmd)))  # room for argv
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "/"
        try:
            with open(self.log_path, "wb") as log:
                self.popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(child_end.fileno(),),
                    env=env,
                    cwd=cwd,
                    start_new_session=True,  # the terminal's Ctrl-C is for the parent
                )
        except OSError as exc:
            parent_end.close()
            self.close()
            raise ForkUnavailable(f"could not start a kernel template: {exc}") from exc
        finally:
            child_end.close()
        self.channel = parent_end
        self.info = self._ready(parent_end)
        return self.info

    def _ready(self, channel: socket.socket) -> TemplateInfo:
        """The template's first message: what it is, or why it could not start."""
        assert self.popen is not None
        try:
            channel.settimeout(_START_TIMEOUT)
            ready, _fds = recv(channel)
        except (OSError, EOFError, ValueError) as exc:
            culprit = self._probing_when_it_died()
            pid = self.popen.pid
            tail = self.log_tail()
            self.close()
            if culprit is not None:
                why = f"the kernel template died importing it.{tail}"
                raise PreloadUnsafe(culprit, why) from None
            raise ForkUnavailable(
                f"the kernel template (pid {pid}) did not start: {exc}.{tail}"
            ) from None
        if not ready.get("ok"):
            message = ready.get("error", {}).get("message", "unknown error")
            unsafe = ready.get("unsafe")
            self.close()
            if isinstance(unsafe, list) and len(unsafe) == 2:
                raise PreloadUnsafe(str(unsafe[0]), str(unsafe[1]))
            raise ForkUnavailable(f"the kernel template could not start: {message}")
        dropped = {str(k): str(v) for k, v in (ready.get("dropped") or {}).items()}
        self.local = {str(k): list(v) for k, v in (ready.get("local") or {}).items()}
        return TemplateInfo(
            pid=int(ready["pid"]),
            preload=self.preload,
            notes=tuple(str(note) for note in ready.get("notes", [])),
            native_threads=int(ready.get("native_threads", 1)),
            learned=tuple(name for name in self.learned if name not in dropped),
            dropped=dropped,
        )

    def _probing_when_it_died(self) -> str | None:
        """The learned preload the template was importing when it died, if it was."""
        if not self.learned:
            return None
        try:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return None
        marks = [line for line in lines if line.startswith("millrun-prob")]
        if marks and marks[-1].startswith("millrun-probing "):
            return marks[-1].split(" ", 1)[1].strip()
        return None

    def stale(self) -> str | None:
        """Which preloaded local module's file changed since the template imported it, if any.

        A stat per file (size and modification time), so it is cheap before each fork.
        """
        for path, (mtime_ns, size) in self.local.items():
            try:
                stat = os.stat(path)
            except OSError:
                return path
            if (stat.st_mtime_ns, stat.st_size) != (mtime_ns, size):
                return path
        return None

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else -1

    def alive(self) -> bool:
        return not self.gone and self.popen is not None and self.popen.poll() is None

    def request(
        self, message: Mapping[str, Any], fds: Sequence[int] = (), timeout: float = 10.0
    ) -> tuple[dict[str, Any], list[int]]:
        """One round trip.  Any failure marks the template gone: it is never half-trusted."""
        if os.getpid() != self.owner_pid:
            raise TemplateGone("this template belongs to the process this one was forked from")
        with self.lock:
            if self.gone or self.channel is None:
                raise TemplateGone("the template is gone")
            try:
                self.channel.settimeout(timeout)
                send(self.channel, message, fds)
                return recv(self.channel)
            except (OSError, EOFError, ValueError) as exc:
                self.gone = True
                raise TemplateGone(f"the template stopped answering: {exc}") from exc

    def fork(
        self,
        command: KernelCommand,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        stdout_fd: int,
        stderr_fd: int,
        independent: bool,
    ) -> tuple[int, int | None]:
        fds: list[int] = []
        message: dict[str, Any] = {
            "op": "fork",
            "argv": list(argv),
            "module": command.module,
            "cwd": cwd,
            "env": dict(env),
            "independent": independent,
            "umask": _current_umask(),
        }
        for key, fd in (("stdout", stdout_fd), ("stderr", stderr_fd)):
            if fd >= 0:
                if fd not in fds:
                    fds.append(fd)
                message[key] = fds.index(fd)
        reply, received = self.request(message, fds, timeout=REQUEST_TIMEOUT)
        if not reply.get("ok"):
            for fd in received:
                os.close(fd)
            raise _launch_error(reply.get("error") or {})
        pidfd = received[0] if received else None
        for fd in received[1:]:
            os.close(fd)
        self.handed.add(int(reply["pid"]))
        self.last_used = time.monotonic()
        return int(reply["pid"]), pidfd

    def status(self, pid: int) -> tuple[int | None, bool]:
        """(returncode or None, whether the template knows the pid)."""
        reply, _fds = self.request({"op": "status", "pid": pid})
        status = reply.get("status")
        known = status is not None or bool(reply.get("known"))
        return (int(status) if status is not None else None), known

    def release(self, pid: int) -> None:
        self.handed.discard(pid)
        with contextlib.suppress(TemplateGone):
            self.request({"op": "release", "pid": pid})

    def log_tail(self, lines: int = 8) -> str:
        from pytest_millrun.core.text import quote_log

        return quote_log(self.log_path, "Its last output was", lines)

    def close(self, timeout: float = 3.0) -> None:
        """Ask the template to stop (it kills its kernels), then make sure it is reaped."""
        if os.getpid() == self.owner_pid and not self.gone and self.channel is not None:
            with contextlib.suppress(TemplateGone):
                self.request({"op": "shutdown"}, timeout=timeout)
        self.gone = True
        if self.channel is not None:
            self.channel.close()
        popen = self.popen
        if popen is not None and os.getpid() == self.owner_pid:
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=timeout)
        shutil.rmtree(self.folder, ignore_errors=True)

    def abandon(self) -> None:
        """In a forked child of the owner: drop our copy of the channel, touch nothing else.

        Closing the copy matters: the template notices its parent's death by EOF,
        which never comes while a forked child still holds the other end.
        """
        self.gone = True
        if self.channel is not None:
            with contextlib.suppress(OSError):
                self.channel.close()


def _current_umask() -> int | None:
    """This process's umask, read without the set-and-restore race of ``os.umask``."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _launch_error(error: Mapping[str, Any]) -> Exception:
    """Re-raise a child's set-up failure the way ``Popen`` would have raised it."""
    number = error.get("errno")
    if isinstance(number, int):
        strerror = error.get("strerror") or os.strerror(number)
        filename = error.get("filename")
        if filename is not None:
            return OSError(number, strerror, filename)
        return OSError(number, strerror)
    return ForkUnavailable(
        f"the forked kernel failed to set itself up: {error.get('type', 'Error')}: "
        f"{error.get('message', '')}"
    )


def _fd_readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class ForkedKernel:
    """A ``subprocess.Popen``-like handle on a kernel forked by a template.

    Offers what kernel bookkeeping uses of ``Popen`` -- ``pid``, ``args``,
    ``returncode``, ``poll()``, ``wait(timeout)``, ``send_signal()``,
    ``kill()``, ``terminate()`` -- and is safe to use from a watchdog thread.
    Liveness comes from the kernel's pidfd (no pid-reuse race), the exit
    status from the template, which is the kernel's real parent.
    """

    def __init__(self, template: Template, pid: int, pidfd: int | None, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._template = template
        self._pidfd = pidfd
        self._lock = threading.Lock()

    @property
    def template_pid(self) -> int:
        return self._template.pid

    def template_current(self) -> bool:
        """Whether a launch now would still fork from this kernel's template: a spare of a
        template whose preloaded local module changed is not adopted (see ``Template.stale``)."""
        return self._template.alive() and self._template.stale() is None

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            if self._pidfd is not None and not _fd_readable(self._pidfd):
                return None
            try:
                status, known = self._template.status(self.pid)
            except TemplateGone:
                status, known = None, False
            if status is None and not known:
                status = self._status_without_template()
            self.returncode = status
            return status

    def _status_without_template(self) -> int | None:
        """The template that knew the exit status is gone; all we can tell is dead or alive."""
        if self._pidfd is not None:
            dead = _fd_readable(self._pidfd)
        else:
            try:
                os.kill(self.pid, 0)
                dead = False
            except ProcessLookupError:
                dead = True
            except PermissionError:
                dead = False
        # A kernel outlives its template only by PR_SET_PDEATHSIG's SIGKILL.
        return -signal.SIGKILL if dead else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.002
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, signum: int) -> None:
        """Signal the kernel process alone (as Popen does); nothing if it has exited."""
        with self._lock:
            if self.returncode is not None:
                return
            if self._pidfd is not None and hasattr(signal, "pidfd_send_signal"):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signum)
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Drop the pidfd and the template's record of the exit status."""
        with self._lock:
            pidfd, self._pidfd = self._pidfd, None
            finished = self.returncode is not None
        if pidfd is not None:
            os.close(pidfd)
        if finished:
            self._template.release(self.pid)
