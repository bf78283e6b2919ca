"""Runs in the template process: its entry point, its request loop and the fork.

Why: the template is a warm interpreter (ipykernel, IPython, zmq and preloads
imported) whose only job is to fork kernels on request.  The bootstrap
(:data:`.bootstrap.BOOTSTRAP`) imports the kernel's modules first and then this
module from the package's folder as ``_millrun_forkserver.template_process``, without
``pytest_millrun``: this module and the ones it imports (:mod:`.protocol`,
:mod:`.proctitle`, :mod:`.child`) use the standard library only.  It stays
single-threaded: only then is fork safe.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .child import KernelJob
from .proctitle import set_cmdline
from .protocol import PAD_NAME, describe_error, recv, send

_POLL_MS: Final = 250


class _TemplateServer:
    """The template's request loop.  Single-threaded on purpose: only then is fork safe."""

    def __init__(
        self,
        channel: socket.socket,
        parent_pid: int,
        drop_modules: list[str],
        import_env: dict[str, str],
    ) -> None:
        self.channel = channel
        self.parent_pid = parent_pid
        self.drop_modules = drop_modules
        self.import_env = import_env
        self.pid = os.getpid()
        self.children: dict[int, bool] = {}  # live kernel pid -> independent
        self.statuses: dict[int, int] = {}  # reaped kernel pid -> Popen-style returncode

    def run(self) -> Callable[[], None] | None:
        """Serve until EOF, shutdown or parent death; in a forked child, return its job.

        No ``try/finally`` or ``with`` encloses the loop: the child leaves through
        here, and none of the template's clean-up may run in it.
        """
        poller = select.poll()
        poller.register(self.channel.fileno(), select.POLLIN)
        # The template's heap (ipykernel, IPython, preloads) goes to the collector's permanent
        # generation, so the full collections of a kernel's start-up skip it: without this,
        # each one walks and writes every inherited object, which copies the pages they sit
        # on (about a quarter of a forked kernel's CPU time, measured).  The kernel thaws them
        # once it is initialised, so user code sees the collector as in a spawned kernel.
        gc.collect()
        gc.freeze()
        while True:
            events = poller.poll(_POLL_MS)
            self._reap()
            if os.getppid() != self.parent_pid:
                break
            if not events:
                continue
            try:
                message, fds = recv(self.channel)
            except (OSError, EOFError, ValueError):
                break
            op = message.get("op")
            try:
                if op == "fork":
                    job = self._fork(message, fds)
                    if job is not None:
                        return job
                elif op == "status":
                    self._status(int(message["pid"]))
                elif op == "release":
                    self.statuses.pop(int(message["pid"]), None)
                    send(self.channel, {"ok": True})
                elif op == "shutdown":
                    self._stop_children()
                    send(self.channel, {"ok": True})
                    break
                else:
                    send(self.channel, {"ok": False, "error": {"message": f"unknown op {op!r}"}})
            except (OSError, ValueError, KeyError, TypeError):
                break
        if os.getpid() != self.pid:  # never the template's clean-up in a forked child
            os._exit(70)
        self._stop_children()
        self.channel.close()
        return None

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            self.statuses[pid] = os.waitstatus_to_exitcode(status)

    def _status(self, pid: int) -> None:
        if pid not in self.statuses and pid in self.children:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.children.pop(pid, None)
                    self.statuses[pid] = os.waitstatus_to_exitcode(status)
        if pid in self.statuses:
            send(self.channel, {"ok": True, "status": self.statuses[pid]})
        else:
            send(self.channel, {"ok": True, "status": None, "known": pid in self.children})

    def _fork(self, message: dict[str, Any], fds: list[int]) -> Callable[[], None] | None:
        def fd_at(key: str) -> int:
            index = message.get(key)
            return fds[index] if isinstance(index, int) and 0 <= index < len(fds) else -1

        try:  # everything that can fail on a malformed request fails here, before the fork
            umask = message.get("umask")
            job = KernelJob(
                argv=[str(arg) for arg in message["argv"]],
                module=str(message["module"]),
                cwd=str(message["cwd"]),
                env={str(k): str(v) for k, v in message["env"].items()},
                stdout_fd=fd_at("stdout"),
                stderr_fd=fd_at("stderr"),
                independent=bool(message.get("independent")),
                template_pid=self.pid,
                status_fd=-1,
                drop_modules=self.drop_modules,
                import_env=self.import_env,
                umask=umask if isinstance(umask, int) else None,
            )
            job.argv.index("-m")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            for fd in fds:
                os.close(fd)
            send(self.channel, {"ok": False, "error": {"message": f"bad request: {exc!r}"}})
            return None
        status_read, status_write = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # or the child would write them out again
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (status_read, status_write, *fds):
                os.close(fd)
            send(self.channel, {"ok": False, "error": describe_error(exc)})
            return None
        if pid == 0:
            try:
                os.close(status_read)
                self.channel.close()
                job.status_fd = status_write
            except BaseException:
                os._exit(127)
            return job
        os.close(status_write)
        for fd in fds:
            os.close(fd)
        report = bytearray()
        while chunk := os.read(status_read, 65536):
            report += chunk
        os.close(status_read)
        self.children[pid] = bool(message.get("independent"))
        if report:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)
            try:
                error = json.loads(report)
            except ValueError:
                error = {"message": report.decode(errors="replace")}
            send(self.channel, {"ok": False, "error": error})
            return None
        pidfd: list[int] = []
        with contextlib.suppress(OSError, AttributeError):
            pidfd.append(os.pidfd_open(pid))
        try:
            send(self.channel, {"ok": True, "pid": pid, "pidfd": bool(pidfd)}, pidfd)
        finally:
            for fd in pidfd:
                os.close(fd)
        return None

    def _stop_children(self) -> None:
        """The parent is leaving: its kernels go too, with anything they started."""
        self._reap()
        for pid, independent in list(self.children.items()):
            if not independent:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while any(not ind for ind in self.children.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
            self._reap()


def _warm_first_use_caches() -> None:
    """Fill the caches a kernel's first cell fills, so that every fork inherits them full.

    IPython turns each cell's source into Python with ``tokenize`` and regular
    expressions that are compiled on first use (into ``re``'s and ``tokenize``'s
    caches): 1.4 ms of a fresh kernel's first cell, about 5 % of a forked kernel's CPU
    time, measured.  Only caches are filled; the transformer is thrown away.
    """
    with contextlib.suppress(Exception):
        from IPython.core.inputtransformer2 import TransformerManager

        TransformerManager().transform_cell("y = x * 2 + 1\nassert y\ny\n")  # type: ignore[no-untyped-call]


def local_files(names: list[str]) -> dict[str, list[int]]:
    """The files of the modules ``names`` that are neither the standard library nor installed
    (a module beside the notebooks, an editable install), with their ``[mtime_ns, size]``:
    the parent restarts the template when one changes, so no kernel runs stale code."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    shared = [paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    with contextlib.suppress(Exception):
        shared += [*site.getsitepackages(), site.getusersitepackages()]
    roots = tuple(os.path.join(os.path.realpath(root), "") for root in shared if root)
    found: dict[str, list[int]] = {}
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not isinstance(file, str) or not os.path.isabs(file):
            continue
        path = os.path.realpath(file)
        if path.startswith(roots):
            continue
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            found[path] = [stat.st_mtime_ns, stat.st_size]
    return found


def serve(
    parent_pid: int,
    channel_fd: int,
    spec: dict[str, Any],
    problems: dict[str, str],
    added_modules: list[str],
    import_env: dict[str, str],
) -> Callable[[], None] | None:
    """Entry point of the template (called by :data:`.bootstrap.BOOTSTRAP`)."""
    channel = socket.socket(fileno=channel_fd)
    channel.setblocking(True)
    preload = [str(name) for name in spec.get("preload", [])]
    set_cmdline(
        [
            "millrun-fork-template",
            f"parent={parent_pid}",
            *([f"preload={','.join(preload)}"] if preload else []),
        ]
    )
    fatal = [f"{name}: {problems[name]}" for name in spec.get("essential", []) if name in problems]
    failed: dict[str, Any] = {"ok": False}
    unsafe = spec.get("unsafe")
    names = ", ".join(thread.name for thread in threading.enumerate())
    if unsafe:  # a learned preload: the parent starts a template without it
        why = f"importing it started Python threads ({names}), which makes fork unsafe"
        fatal.append(f"{unsafe}: {why}")
        failed["unsafe"] = [unsafe, why]
    elif threading.active_count() > 1:
        fatal.append(f"importing the preloads started Python threads ({names}); fork is unsafe")
    if os.getppid() != parent_pid:
        fatal.append("the parent exited before the template was ready")
    if fatal:
        with contextlib.suppress(OSError):
            send(channel, {**failed, "error": {"message": "; ".join(fatal)}})
        channel.close()
        return None
    notes = [
        f"could not preload {name!r} ({problems[name]}); kernels will import it themselves"
        for name in preload
        if name in problems
    ]
    dropped = {name: problems[name] for name in spec.get("learned", []) if name in problems}
    native_threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    ready = {"ok": True, "pid": os.getpid(), "notes": notes, "native_threads": native_threads}
    send(channel, {**ready, "dropped": dropped, "local": spec.get("local", {})})
    import_env.pop(PAD_NAME, None)
    _warm_first_use_caches()
    return _TemplateServer(channel, parent_pid, added_modules, import_env).run()
