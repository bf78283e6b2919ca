"""Fresh Jupyter kernels at fork speed: a kernel provisioner that forks from a warm template.

Why: most of a small notebook's papermill run is kernel boot -- starting
Python and importing ipykernel, IPython, zmq, tornado and debugpy -- repeated
identically for every variation.  A *template* process pays those imports
once; each kernel is then an ``os.fork()`` of it that runs
``ipykernel_launcher``'s own entry point and answers its first request
several times sooner.

How it fits in: :class:`ForkProvisioner` is an ordinary jupyter_client kernel
provisioner (a :class:`~jupyter_client.provisioning.LocalProvisioner` whose
``launch_kernel`` asks the template instead of ``subprocess.Popen``), so the
kernel manager, nbclient and papermill work unchanged.  A kernel manager
installs it with ``self.provisioner = make_provisioner(self)`` before
``super()._async_pre_start_kernel()`` when :func:`fork_available` says the
kernelspec runs ``ipykernel_launcher`` on this very interpreter.

Process tree and lifetimes::

    parent (pytest worker / CLI worker) ── template (one per parent pid, lazy)
                                              ├── kernel (own session, fork of template)
                                              └── kernel ...

* The template is spawned with ``sys.executable -c <bootstrap>``; it talks to
  its parent over an inherited Unix socketpair (never a TCP port, nothing on
  disk), stays single-threaded, reaps its children between requests, and
  exits when the socket reaches EOF or its parent pid changes.  It is shut
  down at the parent's exit (``atexit``).
* A kernel cannot be waited for by the parent (it is a grandchild), so the
  template sends back a *pidfd* for it over the socket (``SCM_RIGHTS``): the
  parent polls it for exit and signals through it without pid-reuse races,
  and asks the template for the exit status.  Each kernel also has
  ``PR_SET_PDEATHSIG=SIGKILL`` towards the template, so the chain "parent
  dies -> template exits -> kernels die" holds even for a SIGKILLed template.
* The child makes itself indistinguishable from a spawned kernel: new session,
  cwd, umask, environment (``os.environ`` and the ``/proc`` environ block),
  stdio (stdin a closed pipe, stdout/stderr the descriptors the manager
  passed, sent over the socket), no inherited descriptors beyond 0/1/2,
  reseeded ``random``/``numpy.random``, ``sys.argv``/``sys.orig_argv`` and
  ``/proc/<pid>/cmdline`` as ``python -m ipykernel_launcher -f <connection
  file>`` (so process-table tools such as ``pgrep -f ipykernel`` still find
  it), and then does what ``ipykernel.kernelapp.launch_new_instance()`` does
  for the launcher, returning through the bootstrap so that interpreter
  shutdown (atexit, flushing) is the normal one.
* The template's objects sit in the collector's permanent generation
  (``gc.freeze()``) while a kernel initialises, and are thawed before it runs
  any user code.
* Inside :func:`spare_kernels` (a pytest session, a run, a pool worker's life)
  each launch also forks the *next* kernel in the background, with its own
  connection file and folder; the next launch adopts it only if command line,
  environment and working directory match exactly (the caller can announce
  them with :func:`expect_next_launch`), else discards it.  A spare has run no
  code, so it is as fresh as a kernel forked on demand.
* ``launch_kernel`` returns once the kernel listens on its ports (a few tens
  of milliseconds), so the client's first connection succeeds instead of
  waiting out ZeroMQ's reconnect interval.

Known differences from a spawned kernel, inherent to fork: ``os.getppid()`` is
the template; the str-hash secret (``PYTHONHASHSEED`` randomisation) is shared
by the kernels of one template; modules imported in the template read their
import-time configuration from the template's environment -- templates are
therefore keyed by the variables that matter (``PYTHON*``, locale,
``*_NUM_THREADS``, ``HOME``, ``IPYTHON*``, ``JUPYTER*``, ``PYDEVD_*``...), and
the known import-time reads of ipykernel are redone in each kernel; resource
limits and ignored signals are the parent's as of the template's start.
Stopping a template (:func:`shutdown_templates`, parent exit) ends the kernels
still running from it, as a spawned kernel ends when its manager's process dies.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

__all__ = [
    "ForkProvisioner",
    "ForkUnavailable",
    "ForkedKernel",
    "TemplateInfo",
    "discard_spare",
    "expect_next_launch",
    "fork_available",
    "make_provisioner",
    "shutdown_templates",
    "spare_kernels",
    "start_template",
]


class ForkUnavailable(RuntimeError):
    """Fork mode cannot start this kernel; the caller should spawn it the ordinary way.

    Raised for a kernel command that is not ``ipykernel_launcher`` on this
    interpreter, a template that cannot start (its log's tail is quoted), a
    template that crashed twice in a row, or a platform without fork/pidfd
    plumbing.  Never raised for an error the spawned kernel would hit as well
    (a missing ``cwd`` is a :class:`FileNotFoundError` either way).
    """


# --------------------------------------------------------------------------------------
# Which kernels can be forked
# --------------------------------------------------------------------------------------

#: Imported by the template before anything else: without them there is nothing to gain.
_ESSENTIAL_IMPORTS: Final = ("ipykernel.kernelapp",)

#: Imported by every ipykernel 7 kernel during its start anyway, so importing them in the
#: template changes nothing the user can see (``sys.modules`` stays a subset of a spawned
#: kernel's) but takes them off each kernel's critical path.  Missing ones are skipped.
_WARM_IMPORTS: Final = (
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "sqlite3",
    # debugpy/pydevd, the largest part of a kernel's own start-up.  Its import reads
    # PYDEVD_*/DEBUGPY_* and sets PYDEVD_USE_FRAME_EVAL; both are handled (template key,
    # replayed environment changes).
    "ipykernel.debugger",
)

#: Interpreter options that may precede ``-m ipykernel_launcher`` in a kernelspec; the
#: template is started with the same ones, since they cannot change after start-up.
_SIMPLE_FLAGS: Final = frozenset(
    {"-B", "-b", "-bb", "-d", "-E", "-I", "-O", "-OO", "-P", "-q", "-R", "-s", "-S", "-u", "-v"}
)

#: Environment variables read once at interpreter start-up or at import time by the
#: preloaded libraries.  A fork inherits the template's reading of them, so kernels whose
#: values differ get a template of their own.
_STARTUP_ENV_NAMES: Final = frozenset({"DISPLAY", "HOME", "LANG", "LANGUAGE", "MPLBACKEND"})
_STARTUP_ENV_PREFIXES: Final = ("PYTHON", "LC_", "IPYTHON", "JUPYTER", "PYDEVD_", "DEBUGPY_")

_KERNEL_MODULES: Final = ("ipykernel_launcher", "ipykernel")

#: At most this many templates (distinct preload/flags/start-up environments) per process.
_MAX_TEMPLATES: Final = 4


@dataclass(frozen=True)
class _KernelCommand:
    """A kernel command line split the way ``python [flags] -m module args`` reads it."""

    flags: tuple[str, ...]
    module: str
    args: tuple[str, ...]


def _is_this_interpreter(executable: str) -> bool:
    """Whether ``executable`` runs the very interpreter (and environment) we run in.

    ``python``/``python3``/``python3.X`` are what jupyter_client itself replaces
    with ``sys.executable``.  A path must resolve to the same binary *from the
    same directory*: a virtualenv's ``bin/python`` is a symlink to the base
    interpreter, yet a different environment (its ``pyvenv.cfg`` is found next
    to the link), so realpath alone would confuse the two.
    """
    if not sys.executable:
        return False
    major, minor = sys.version_info[:2]
    if executable in {"python", f"python{major}", f"python{major}.{minor}"}:
        return True
    path = os.path.expanduser(executable)
    if os.sep not in path:
        found = shutil.which(path)
        if found is None:
            return False
        path = found
    path = os.path.abspath(path)
    here = os.path.abspath(sys.executable)
    return os.path.realpath(os.path.dirname(path)) == os.path.realpath(
        os.path.dirname(here)
    ) and os.path.realpath(path) == os.path.realpath(here)


def _parse_kernel_argv(argv: Sequence[str]) -> _KernelCommand | None:
    """Split ``[python, *flags, -m, ipykernel_launcher, *args]``; None for anything else."""
    if len(argv) < 3 or not _is_this_interpreter(argv[0]):
        return None
    flags: list[str] = []
    index = 1
    while index < len(argv) and argv[index] != "-m":
        arg = argv[index]
        if arg in ("-X", "-W"):
            if index + 1 >= len(argv):
                return None
            flags += [arg, argv[index + 1]]
            index += 2
        elif (arg.startswith(("-X", "-W")) and len(arg) > 2) or arg in _SIMPLE_FLAGS:
            flags.append(arg)
            index += 1
        else:
            return None
    if index + 1 >= len(argv) or argv[index + 1] not in _KERNEL_MODULES:
        return None
    return _KernelCommand(tuple(flags), argv[index + 1], tuple(argv[index + 2 :]))


def _platform_supports_fork() -> bool:
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(socket, "send_fds")
        and hasattr(socket, "AF_UNIX")
    )


def fork_available(kernel_spec: Any) -> bool:
    """Whether kernels of ``kernel_spec`` can be forked from a template here.

    True on Linux when the spec's ``argv`` runs ``ipykernel_launcher`` (or
    ``ipykernel``) with the running interpreter and the spec does not ask for a
    provisioner of its own.  ``kernel_spec`` is a jupyter_client ``KernelSpec``
    (or anything with ``argv``), or an argv list.
    """
    if not _platform_supports_fork() or kernel_spec is None:
        return False
    if isinstance(kernel_spec, (list, tuple)):
        argv = list(kernel_spec)
    else:
        argv = list(getattr(kernel_spec, "argv", None) or [])
        metadata = getattr(kernel_spec, "metadata", None) or {}
        wanted = metadata.get("kernel_provisioner") if isinstance(metadata, dict) else None
        if isinstance(wanted, dict) and wanted.get("provisioner_name") not in (
            None,
            "local-provisioner",
        ):
            return False
    if not all(isinstance(arg, str) for arg in argv):
        return False
    return _parse_kernel_argv(argv) is not None


def _startup_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The part of ``env`` a template bakes in at start-up (see ``_STARTUP_ENV_NAMES``)."""
    return tuple(
        sorted(
            (name, value)
            for name, value in env.items()
            if name.startswith(_STARTUP_ENV_PREFIXES)
            or name.endswith("_NUM_THREADS")
            or name in _STARTUP_ENV_NAMES
        )
    )


def _normalize_preload(preload: Iterable[str]) -> tuple[str, ...]:
    names: list[str] = []
    for name in preload:
        name = name.strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


# --------------------------------------------------------------------------------------
# Wire protocol: a 4-byte length, a JSON body, descriptors riding on the length's bytes
# --------------------------------------------------------------------------------------

_HEADER: Final = struct.Struct("!I")
_MAX_MESSAGE: Final = 64 * 1024 * 1024
_MAX_FDS: Final = 4


def _send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one message; ``fds`` travel as SCM_RIGHTS with its first bytes."""
    body = json.dumps(message).encode()
    header = _HEADER.pack(len(body))
    if fds:
        sent = socket.send_fds(sock, [header], list(fds))
        if sent < len(header):
            sock.sendall(header[sent:])
    else:
        sock.sendall(header)
    sock.sendall(body)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive one message and the descriptors sent with it.  EOFError at a clean end."""
    header = b""
    fds: list[int] = []
    while len(header) < _HEADER.size:
        chunk, received, _flags, _addr = socket.recv_fds(sock, _HEADER.size - len(header), _MAX_FDS)
        fds += received
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise EOFError("the other end closed the channel")
        header += chunk
    (size,) = _HEADER.unpack(header)
    if size > _MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is too large")
    body = bytearray()
    while len(body) < size:
        chunk = sock.recv(min(size - len(body), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the channel mid-message")
        body += chunk
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    return message, fds


# --------------------------------------------------------------------------------------
# /proc cosmetics: the forked kernel shows its own argv and environment
# --------------------------------------------------------------------------------------


def _proc_area(first_field: int) -> tuple[int, int]:
    """(start, end) addresses from /proc/self/stat fields 48/49 (argv) or 50/51 (environ)."""
    with open("/proc/self/stat", "rb") as stat:
        data = stat.read()
    fields = data[data.rindex(b")") + 2 :].split()  # fields[0] is field 3 of proc(5)
    return int(fields[first_field - 3]), int(fields[first_field - 2])


def _rewrite_proc_area(first_field: int, payload: bytes, *, title: bool) -> bool:
    """Overwrite the original argv/environ block so /proc shows ``payload``.

    The block cannot grow, so the template is started with padding that makes
    room.  ``title=True`` ends the argv block with a non-NUL byte, the
    ``setproctitle`` convention: /proc/<pid>/cmdline then stops at the first
    NUL, and psutil splits the single string at spaces into the argv we want.
    """
    try:
        start, end = _proc_area(first_field)
        size = end - start
        if size <= 0 or len(payload) + 1 >= size:
            return False
        filler = b"\0" * (size - len(payload) - 1) + (b" " if title else b"\0")
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(payload + filler)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _set_cmdline(argv: Sequence[str]) -> bool:
    return _rewrite_proc_area(48, " ".join(argv).encode(errors="surrogateescape"), title=True)


def _set_environ_block(env: Mapping[str, str]) -> bool:
    block = b"".join(
        f"{name}={value}".encode(errors="surrogateescape") + b"\0" for name, value in env.items()
    )
    return _rewrite_proc_area(50, block, title=False)


_PAD_NAME: Final = "MILLRUN_FORK_PAD"


# --------------------------------------------------------------------------------------
# The template process
# --------------------------------------------------------------------------------------

#: The template's program.  It imports the kernel's modules *before* loading this file
#: (by path, under a private name, not as part of the package), so ``sys.modules`` entries
#: added only by the fork machinery can be dropped in each kernel.  The forked child
#: returns from ``_serve`` with a job and runs it here, at the top of the stack, so the
#: kernel ends through the interpreter's normal shutdown like ipykernel_launcher.
_BOOTSTRAP: Final = """\
import sys
if sys.path and sys.path[0] == '' and not getattr(sys.flags, 'safe_path', False):
    del sys.path[0]


def _millrun_template():
    import importlib
    import importlib.util
    import json
    import os

    spec = json.loads(sys.argv[4])
    env_before = dict(os.environ)
    problems = {}
    for name in spec['essential'] + spec['warm'] + spec['preload']:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            problems[name] = f'{type(exc).__name__}: {exc}'
    before = set(sys.modules)
    found = importlib.util.spec_from_file_location('_millrun_forkserver', sys.argv[1])
    module = importlib.util.module_from_spec(found)
    sys.modules[found.name] = module
    found.loader.exec_module(module)
    added = sorted(set(sys.modules) - before)
    env_set = {k: v for k, v in os.environ.items() if env_before.get(k) != v}
    return module._serve(int(sys.argv[2]), int(sys.argv[3]), spec, problems, added, env_set)


_millrun_job = _millrun_template()
del _millrun_template
if _millrun_job is not None:
    _millrun_job()
"""

_POLL_MS: Final = 250


@dataclass
class _KernelJob:
    """What the forked child does to become the kernel; runs at the top of its stack."""

    argv: list[str]
    module: str
    cwd: str
    env: dict[str, str]
    stdout_fd: int
    stderr_fd: int
    independent: bool
    template_pid: int
    status_fd: int
    drop_modules: list[str]
    import_env: dict[str, str]
    umask: int | None

    def __call__(self) -> None:
        try:
            self._prepare()
        except BaseException as exc:  # report, then die: nothing may run on in this child
            report = {
                "type": type(exc).__name__,
                "errno": getattr(exc, "errno", None),
                "strerror": getattr(exc, "strerror", None),
                "filename": getattr(exc, "filename", None),
                "message": str(exc),
            }
            with contextlib.suppress(OSError):
                os.write(self.status_fd, json.dumps(report, default=str).encode())
            os._exit(127)
        _close_fds_from(3)  # also closes status_fd: EOF tells the template all went well
        from ipykernel import kernelapp as app

        # ``launch_new_instance()`` (traitlets' ``launch_instance``) spelt out, to thaw the
        # template's objects between the two steps: see ``_TemplateServer.run``.
        kernel_app = app.IPKernelApp.instance()
        kernel_app.initialize()  # type: ignore[no-untyped-call]
        gc.unfreeze()  # from here on the collector sees every object, as in a spawned kernel
        kernel_app.start()  # type: ignore[no-untyped-call]

    def _prepare(self) -> None:
        os.setsid()
        if not self.independent:
            _set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.template_pid:  # the template died before prctl took hold
                os._exit(1)
        os.chdir(self.cwd)
        if self.umask is not None:
            os.umask(self.umask)  # the parent's now, not as it was when the template started
        # stdin like jupyter_client's launcher gives it: a pipe whose writer is gone.
        read_end, write_end = os.pipe()
        os.close(write_end)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(read_end, 0)
        os.dup2(self.stdout_fd if self.stdout_fd >= 0 else null, 1)
        os.dup2(self.stderr_fd if self.stderr_fd >= 0 else null, 2)
        os.environ.clear()
        os.environ.update(self.env)
        for name, value in self.import_env.items():  # what the preloads' imports set
            os.environ.setdefault(name, value)
        _refresh_import_time_defaults()
        if hasattr(time, "tzset"):
            time.tzset()
        tempfile.tempdir = None
        if self.module == "ipykernel_launcher":
            script = _module_origin("ipykernel_launcher")
        else:
            script = _module_origin("ipykernel.__main__")
            if not getattr(sys.flags, "safe_path", False):
                sys.path.insert(0, os.getcwd())  # what `python -m ipykernel` starts with
        index = self.argv.index("-m") + 2
        sys.argv = [script, *self.argv[index:]]
        sys.orig_argv = list(self.argv)
        _reseed()
        for name in self.drop_modules:
            sys.modules.pop(name, None)
        _set_cmdline(self.argv)
        _set_environ_block(self.env)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()


def _refresh_import_time_defaults() -> None:
    """Redo the trait defaults ipykernel computes from the environment at import time.

    ``IPKernelApp.parent_handle`` is ``JPY_PARENT_PID`` as it was when the
    *template* imported ipykernel; left alone, every kernel would believe it has
    no parent (and print the "ipython kernel entry point" banner).
    """
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    app_class = getattr(kernelapp, "IPKernelApp", None)
    if app_class is None:
        return
    for name, variable in (
        ("parent_handle", "JPY_PARENT_PID"),
        ("interrupt", "JPY_INTERRUPT_EVENT"),
    ):
        with contextlib.suppress(Exception):
            value = int(os.environ.get(variable) or 0)
            app_class.class_traits()[name].default_value = value
            for klass in app_class.__mro__:
                initial = vars(klass).get("_static_immutable_initial_values")
                if isinstance(initial, dict) and name in initial:
                    initial[name] = value


def _module_origin(name: str) -> str:
    import importlib.util

    with contextlib.suppress(ImportError, ValueError):
        found = importlib.util.find_spec(name)
        if found is not None and found.origin:
            return found.origin
    return name


def _reseed() -> None:
    """Fresh entropy for the global RNGs, which a fork would otherwise share."""
    import random

    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


def _set_parent_death_signal(signum: int) -> bool:
    """Linux ``prctl(PR_SET_PDEATHSIG)``: die with the template, however it ends."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(1, int(signum), 0, 0, 0)) == 0  # 1 == PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _close_fds_from(lowest: int) -> None:
    try:
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        highest = int(os.sysconf("SC_OPEN_MAX")) - 1
    os.closerange(lowest, max(highest + 1, lowest))


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
                message, fds = _recv(self.channel)
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
                    _send(self.channel, {"ok": True})
                elif op == "shutdown":
                    self._stop_children()
                    _send(self.channel, {"ok": True})
                    break
                else:
                    _send(self.channel, {"ok": False, "error": {"message": f"unknown op {op!r}"}})
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
            _send(self.channel, {"ok": True, "status": self.statuses[pid]})
        else:
            _send(self.channel, {"ok": True, "status": None, "known": pid in self.children})

    def _fork(self, message: dict[str, Any], fds: list[int]) -> Callable[[], None] | None:
        def fd_at(key: str) -> int:
            index = message.get(key)
            return fds[index] if isinstance(index, int) and 0 <= index < len(fds) else -1

        try:  # everything that can fail on a malformed request fails here, before the fork
            umask = message.get("umask")
            job = _KernelJob(
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
            _send(self.channel, {"ok": False, "error": {"message": f"bad request: {exc!r}"}})
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
            _send(self.channel, {"ok": False, "error": _describe(exc)})
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
            _send(self.channel, {"ok": False, "error": error})
            return None
        pidfd: list[int] = []
        with contextlib.suppress(OSError, AttributeError):
            pidfd.append(os.pidfd_open(pid))
        try:
            _send(self.channel, {"ok": True, "pid": pid, "pidfd": bool(pidfd)}, pidfd)
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


def _describe(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "errno": getattr(exc, "errno", None),
        "strerror": getattr(exc, "strerror", None),
        "filename": getattr(exc, "filename", None),
        "message": str(exc),
    }


def _serve(
    parent_pid: int,
    channel_fd: int,
    spec: dict[str, Any],
    problems: dict[str, str],
    added_modules: list[str],
    import_env: dict[str, str],
) -> Callable[[], None] | None:
    """Entry point of the template (called by ``_BOOTSTRAP``)."""
    channel = socket.socket(fileno=channel_fd)
    channel.setblocking(True)
    preload = [str(name) for name in spec.get("preload", [])]
    _set_cmdline(
        [
            "millrun-fork-template",
            f"parent={parent_pid}",
            *([f"preload={','.join(preload)}"] if preload else []),
        ]
    )
    fatal = [f"{name}: {problems[name]}" for name in spec.get("essential", []) if name in problems]
    if threading.active_count() > 1:
        names = ", ".join(thread.name for thread in threading.enumerate())
        fatal.append(f"importing the preloads started Python threads ({names}); fork is unsafe")
    if os.getppid() != parent_pid:
        fatal.append("the parent exited before the template was ready")
    if fatal:
        with contextlib.suppress(OSError):
            _send(channel, {"ok": False, "error": {"message": "; ".join(fatal)}})
        channel.close()
        return None
    notes = [
        f"could not preload {name!r} ({problems[name]}); kernels will import it themselves"
        for name in preload
        if name in problems
    ]
    native_threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    _send(
        channel,
        {"ok": True, "pid": os.getpid(), "notes": notes, "native_threads": native_threads},
    )
    import_env.pop(_PAD_NAME, None)
    _warm_first_use_caches()
    return _TemplateServer(channel, parent_pid, added_modules, import_env).run()


# --------------------------------------------------------------------------------------
# Parent side: templates
# --------------------------------------------------------------------------------------

_TemplateKey = tuple[int, tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]

_START_TIMEOUT: Final = 120.0
_REQUEST_TIMEOUT: Final = 30.0
_THIS_FILE: Final = os.path.abspath(__file__)


class _TemplateGone(Exception):
    """The template stopped answering (crashed, killed, or inherited across a fork)."""


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


class _Template:
    """The parent's handle on one template process and its channel."""

    def __init__(self, key: _TemplateKey, env: Mapping[str, str]) -> None:
        self.key = key
        self.owner_pid, self.flags, self.preload, _startup = key
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
        except _TemplateGone:
            pass
        return True

    def start(self) -> TemplateInfo:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {name: value for name, value in self.env.items() if not name.startswith("JPY_")}
        env_bytes = sum(len(name) + len(value) + 2 for name, value in env.items())
        env[_PAD_NAME] = "x" * max(8192, 2 * env_bytes)  # room to show each kernel's environ
        spec = {
            "essential": list(_ESSENTIAL_IMPORTS),
            "warm": list(_WARM_IMPORTS),
            "preload": list(self.preload),
        }
        cmd = [
            sys.executable,
            *self.flags,
            "-c",
            _BOOTSTRAP,
            _THIS_FILE,
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
        try:
            parent_end.settimeout(_START_TIMEOUT)
            ready, _fds = _recv(parent_end)
        except (OSError, EOFError, ValueError) as exc:
            self.close()
            raise ForkUnavailable(
                f"the kernel template (pid {self.popen.pid}) did not start: {exc}.{self.log_tail()}"
            ) from None
        if not ready.get("ok"):
            message = ready.get("error", {}).get("message", "unknown error")
            self.close()
            raise ForkUnavailable(f"the kernel template could not start: {message}")
        self.info = TemplateInfo(
            pid=int(ready["pid"]),
            preload=self.preload,
            notes=tuple(str(note) for note in ready.get("notes", [])),
            native_threads=int(ready.get("native_threads", 1)),
        )
        return self.info

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
            raise _TemplateGone("this template belongs to the process this one was forked from")
        with self.lock:
            if self.gone or self.channel is None:
                raise _TemplateGone("the template is gone")
            try:
                self.channel.settimeout(timeout)
                _send(self.channel, message, fds)
                return _recv(self.channel)
            except (OSError, EOFError, ValueError) as exc:
                self.gone = True
                raise _TemplateGone(f"the template stopped answering: {exc}") from exc

    def fork(
        self,
        command: _KernelCommand,
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
        reply, received = self.request(message, fds, timeout=_REQUEST_TIMEOUT)
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
        with contextlib.suppress(_TemplateGone):
            self.request({"op": "release", "pid": pid})

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        tail = "\n".join("    " + line for line in text.splitlines()[-lines:])
        return f" Its last output was:\n{tail}"

    def close(self, timeout: float = 3.0) -> None:
        """Ask the template to stop (it kills its kernels), then make sure it is reaped."""
        if os.getpid() == self.owner_pid and not self.gone and self.channel is not None:
            with contextlib.suppress(_TemplateGone):
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


_TEMPLATES: dict[_TemplateKey, _Template] = {}
_BROKEN: dict[_TemplateKey, str] = {}
_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _forget_templates_in_child() -> None:
    """After ``os.fork()`` in a parent (ProcessPoolExecutor, xdist): start from scratch."""
    global _LOCK, _SPARES
    _LOCK = threading.Lock()
    _SPARES = _SpareState()  # the parent's spare is the parent's
    for template in list(_TEMPLATES.values()):
        template.abandon()
    _TEMPLATES.clear()
    _BROKEN.clear()


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if not _HOOKS_INSTALLED:
        _HOOKS_INSTALLED = True
        atexit.register(shutdown_templates)
        os.register_at_fork(after_in_child=_forget_templates_in_child)


def _template_key(
    flags: Sequence[str], preload: Sequence[str], env: Mapping[str, str]
) -> _TemplateKey:
    return (os.getpid(), tuple(flags), _normalize_preload(preload), _startup_env(env))


def _get_template(key: _TemplateKey, env: Mapping[str, str]) -> tuple[_Template, bool]:
    """The running template for ``key``, starting one if needed.  (template, fresh)."""
    if not _platform_supports_fork():
        raise ForkUnavailable("fork mode needs Linux with fork and SCM_RIGHTS support")
    with _LOCK:
        _install_hooks()
        current = _TEMPLATES.get(key)
        if current is not None and current.alive():
            return current, False
        if current is not None:  # it died unasked: no second template for this key
            _TEMPLATES.pop(key, None)
            current.close(timeout=1.0)
            _BROKEN[key] = f"the kernel template (pid {current.pid}) died"
        if key in _BROKEN:
            raise ForkUnavailable(_BROKEN[key])
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _evict_idle_template()
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            raise ForkUnavailable(
                f"already {_MAX_TEMPLATES} kernel templates in this process (one per distinct "
                f"preload list, interpreter flags and start-up environment)"
            )
        template = _Template(key, env)
        try:
            template.start()
        except ForkUnavailable as exc:
            _BROKEN[key] = str(exc)
            raise
        _TEMPLATES[key] = template
        return template, True


def _evict_idle_template() -> None:
    """Stop the least recently used template that has no kernel running (caller holds _LOCK).

    One process rarely needs more than one template; a long-lived one that
    cycles through many preload lists or environments keeps the recent ones.
    """
    for key, template in sorted(_TEMPLATES.items(), key=lambda item: item[1].last_used):
        if template.idle():
            _TEMPLATES.pop(key, None)
            template.close(timeout=1.0)
            return


def start_template(
    preload: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    python_flags: Sequence[str] = (),
) -> TemplateInfo:
    """Start (or find) this process's template now instead of at the first kernel launch.

    Useful to take the template's own boot off the first execution's clock,
    e.g. at pytest session start.  ``env`` defaults to ``os.environ``.
    """
    environment = dict(os.environ if env is None else env)
    template, _fresh = _get_template(_template_key(python_flags, preload, environment), environment)
    assert template.info is not None
    return template.info


def shutdown_templates() -> None:
    """Stop this process's templates (and any kernels still running from them).

    Registered with ``atexit`` when the first template starts; safe to call any
    time -- the next launch starts a new template.
    """
    discard_spare()
    with _LOCK:
        mine = [key for key in _TEMPLATES if key[0] == os.getpid()]
        templates = [_TEMPLATES.pop(key) for key in mine]
        _BROKEN.clear()
    for template in templates:
        template.close()


def _launch(
    command: _KernelCommand,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    stdout_fd: int,
    stderr_fd: int,
    independent: bool,
    preload: Sequence[str],
    on_new_template: Callable[[TemplateInfo], None],
) -> ForkedKernel:
    """Fork a kernel from this process's template for ``env``.

    A template that died under us (killed, out of memory) is not restarted:
    fork mode is given up for the process with :class:`ForkUnavailable`, so the
    caller can fall back to spawning and say so once.
    """
    key = _template_key(command.flags, preload, env)
    template, fresh = _get_template(key, env)
    if fresh and template.info is not None:
        on_new_template(template.info)
    try:
        pid, pidfd = template.fork(command, argv, cwd, env, stdout_fd, stderr_fd, independent)
    except _TemplateGone as exc:
        raise _crashed(key, template, str(exc)) from None
    return ForkedKernel(template, pid, pidfd, list(argv))


def _crashed(key: _TemplateKey, template: _Template, why: str) -> ForkUnavailable:
    """Remember that this template died unasked; later launches fail at once."""
    message = f"the kernel template (pid {template.pid}) died: {why}.{template.log_tail()}"
    with _LOCK:
        _BROKEN[key] = message
        if _TEMPLATES.get(key) is template:
            _TEMPLATES.pop(key, None)
    template.close(timeout=1.0)
    return ForkUnavailable(message)


# --------------------------------------------------------------------------------------
# Parent side: one forked kernel
# --------------------------------------------------------------------------------------


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

    def __init__(self, template: _Template, pid: int, pidfd: int | None, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._template = template
        self._pidfd = pidfd
        self._lock = threading.Lock()

    @property
    def template_pid(self) -> int:
        return self._template.pid

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            if self._pidfd is not None and not _fd_readable(self._pidfd):
                return None
            try:
                status, known = self._template.status(self.pid)
            except _TemplateGone:
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


# --------------------------------------------------------------------------------------
# Spare kernels: the next kernel starts while the current notebook runs
# --------------------------------------------------------------------------------------


@dataclass
class _Spare:
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
    preload: tuple[str, ...]

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
        self.pending: Future[_Spare | None] | None = None
        #: What the caller said of the next launch: ``None`` none is coming; otherwise its
        #: working directory (``None`` for the current one's) and environment changes.
        self.next: tuple[str | None, dict[str, str]] | None = (None, {})


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
    (pytest: the next item, its folder and its ``PYTEST_CURRENT_TEST``) says so
    before each launch; ``last=True`` means no launch follows, so no spare is
    forked for nothing.  It holds for the next launch only.  A wrong guess
    costs only the spare.
    """
    _SPARES.next = None if last else (cwd, dict(env_updates or {}))


def discard_spare() -> None:
    """Kill the spare kernel, if one is waiting, and remove its files."""
    spare = _take_spare()
    if spare is not None:
        spare.discard()


def _take_spare() -> _Spare | None:
    with _SPARES.lock:
        pending, _SPARES.pending = _SPARES.pending, None
    if pending is None:
        return None
    try:
        return pending.result(timeout=_REQUEST_TIMEOUT)
    except Exception:  # a spare is an optimisation: any trouble means there is none
        return None


def _prepare_spare(
    command: _KernelCommand,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    preload: tuple[str, ...],
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
        future: Future[_Spare | None] = Future()
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
    future: Future[_Spare | None],
    command: _KernelCommand,
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    preload: tuple[str, ...],
    kernel_name: str,
) -> None:
    """Write the spare's connection file, then fork the spare.

    The file is complete before the kernel exists, and nothing writes it again: the
    adopting manager takes it as written (see :meth:`ForkProvisioner.pre_launch`).  It
    holds what that manager would write, kernel name included.
    """
    from jupyter_client.connect import write_connection_file
    from jupyter_client.session import new_id_bytes

    spare: _Spare | None = None
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
            kernel = _launch(command, argv, cwd, env, log_fd, log_fd, False, preload, _no_notes)
        finally:
            os.close(log_fd)
        spare = _Spare(kernel, folder, connection_file, dict(info), argv, cwd, env, preload)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        future.set_result(spare)  # whoever takes the future adopts or discards the spare


# --------------------------------------------------------------------------------------
# The provisioner
# --------------------------------------------------------------------------------------


_LISTEN_WAIT: Final = 5.0


def _tcp_listening_ports() -> set[int] | None:
    """Local TCP ports in LISTEN state in this network namespace; None if unknowable."""
    ports: set[int] = set()
    readable = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii", errors="replace") as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # 0A == TCP_LISTEN
                with contextlib.suppress(ValueError):
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if readable else None


def _stream_fd(stream: Any, default_fd: int) -> tuple[int, int | None]:
    """(fd to hand the kernel, fd we opened and must close) for a Popen-style argument.

    ``None`` inherits the parent's stream as Popen would; ``DEVNULL`` and
    ``PIPE`` (which needs a Popen to read it) become /dev/null (-1); a file
    object gives its descriptor, or -- without one -- its ``.name`` is opened.
    """
    if stream is None:
        try:
            os.fstat(default_fd)
        except OSError:
            return -1, None
        return default_fd, None
    if isinstance(stream, int):
        return (stream, None) if stream >= 0 else (-1, None)
    with contextlib.suppress(Exception):
        stream.flush()
    try:
        return int(stream.fileno()), None
    except (AttributeError, OSError, ValueError):
        pass
    name = getattr(stream, "name", None)
    if isinstance(name, (str, Path)):
        with contextlib.suppress(OSError):
            opened = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            return opened, opened
    return -1, None


class ForkProvisioner(LocalProvisioner):
    """A LocalProvisioner that forks kernels from a warm template instead of spawning them.

    Everything before the launch (connection file, ports, kernel command,
    environment) is LocalProvisioner's; only the process differs.  ``preload``
    names extra modules for the template to import (a separate template per
    distinct list).  The kernel handle is :attr:`forked` (a :class:`ForkedKernel`);
    ``process`` stays None because there is no ``Popen``.
    """

    preload: tuple[str, ...] = ()
    forked: ForkedKernel | None = None
    #: The folder of a spare kernel this launch took over (its connection file and
    #: sockets; see :func:`spare_kernels`), for the caller to remove when done; and
    #: the spare's log, which holds the kernel's stdout and stderr when it was adopted.
    spare_folder: Path | None = None
    spare_log: Path | None = None
    _spare: _Spare | None = None
    _launched = False

    @property
    def has_process(self) -> bool:
        return self.forked is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        if self.kernel_id is None and km is not None:
            self.kernel_id = km.kernel_id  # made after the provisioner, on first start
        # A restart keeps the manager's connection file and the client connected to it,
        # so only a first launch may take a spare (with its own ports and key).
        spare = None if self._launched else _take_spare()
        if spare is not None:
            if (
                km is not None
                and km.transport == spare.info.get("transport")
                and km.kernel_name == spare.info.get("kernel_name")
                and str(getattr(km, "transport_encryption", "disabled")).lower() == "disabled"
                and not self.ports_cached
                and spare.cwd == kwargs.get("cwd")
            ):
                # The manager takes the spare's connection file as its own, so that the
                # kernel command matches it (launch_kernel checks the rest), and as already
                # written: the spare may still be starting, reading that file, and the
                # manager's write (remove, create empty, fill) would let it read nothing.
                km.load_connection_info(spare.info)
                km.connection_file = spare.connection_file
                km._connection_file_written = True
                self._spare = spare
                self.spare_folder = spare.folder
            else:
                spare.discard()
        try:
            result: dict[str, Any] = await super().pre_launch(**kwargs)
        except BaseException:
            taken, self._spare = self._spare, None
            if taken is not None:
                taken.discard()
            raise
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Fork the kernel from the template, or take the spare forked for it (see
        :func:`spare_kernels`); kwargs as for ``subprocess.Popen``."""
        spare, self._spare = self._spare, None
        try:
            forked, command, argv, cwd, env, independent = self._fork_or_adopt(cmd, spare, kwargs)
        except BaseException:
            if spare is not None:
                spare.kill()
            if self.spare_folder is not None:
                shutil.rmtree(self.spare_folder, ignore_errors=True)
            raise
        self._launched = True
        if not independent:
            kernel_name = str(getattr(self.parent, "kernel_name", ""))
            _prepare_spare(command, argv, cwd, env, self.preload, kernel_name)
        self.forked = forked
        self.pid = forked.pid
        self.pgid = forked.pid  # the kernel leads its own session and process group
        self.cwd = cwd
        await self._wait_until_listening(forked)
        connection_info: KernelConnectionInfo = self.connection_info
        return connection_info

    def _fork_or_adopt(
        self, cmd: list[str], spare: _Spare | None, kwargs: dict[str, Any]
    ) -> tuple[ForkedKernel, _KernelCommand, list[str], str, dict[str, str], bool]:
        scrubbed = LocalProvisioner._scrub_kwargs(kwargs)
        argv = [os.path.expanduser(str(arg)) for arg in cmd]
        command = _parse_kernel_argv(argv)
        if command is None:
            raise ForkUnavailable(
                f"the kernel command {argv!r} does not run ipykernel_launcher on this "
                f"interpreter ({sys.executable})"
            )
        given_env = scrubbed.get("env")
        env = {str(k): str(v) for k, v in (os.environ if given_env is None else given_env).items()}
        independent = bool(scrubbed.get("independent", False))
        if not independent:
            env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher does
        cwd = os.fspath(scrubbed.get("cwd") or os.getcwd())
        if spare is not None:
            wanted = (argv, env, cwd, self.preload)
            if (spare.argv, spare.env, spare.cwd, spare.preload) == wanted and spare.alive():
                self.spare_log = spare.folder / "kernel.log"
                return spare.kernel, command, argv, cwd, env, independent
            spare.kill()  # its connection file and socket paths are this launch's now
        stdout_fd, opened_out = _stream_fd(scrubbed.get("stdout"), 1)
        stderr_arg = scrubbed.get("stderr")
        if stderr_arg == subprocess.STDOUT:
            stderr_fd, opened_err = stdout_fd, None
        else:
            stderr_fd, opened_err = _stream_fd(stderr_arg, 2)
        try:
            forked = _launch(
                command,
                argv,
                cwd,
                env,
                stdout_fd,
                stderr_fd,
                independent,
                self.preload,
                self._note_template,
            )
        finally:
            for fd in (opened_out, opened_err):
                if fd is not None:
                    os.close(fd)
        return forked, command, argv, cwd, env, independent

    async def _wait_until_listening(self, forked: ForkedKernel) -> None:
        """Return once the kernel has bound its ports (or died, or ``_LISTEN_WAIT`` passed).

        A forked kernel binds within tens of milliseconds, but a client that
        connects before that is refused and retries only after ZeroMQ's 100 ms
        reconnect interval, and ``wait_for_ready`` then also misses its first
        IOPub probe (another 200 ms).  Waiting here, cheaply, lets the client's
        first connection succeed, which is most of fork mode's gain in
        ready-time.  Best effort: when readiness cannot be observed it returns.
        """
        info = self.connection_info
        ports = {
            port
            for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
            if isinstance(port := info.get(name), int) and port > 0
        }
        transport, ip = info.get("transport"), info.get("ip")
        if not ports or not isinstance(ip, str):
            return

        def listening() -> bool:
            if transport == "ipc":
                return all(os.path.exists(f"{ip}-{port}") for port in ports)
            if transport == "tcp":
                bound = _tcp_listening_ports()
                return bound is None or ports <= bound
            return True

        deadline = time.monotonic() + _LISTEN_WAIT
        while not listening():
            if forked.poll() is not None or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.005)

    def _note_template(self, info: TemplateInfo) -> None:
        self.log.debug("Started kernel template pid %d (preload %s)", info.pid, info.preload)
        for note in info.notes:
            self.log.warning("Kernel template: %s", note)

    async def poll(self) -> int | None:
        if self.forked is None:
            return 0
        return self.forked.poll()

    async def wait(self) -> int | None:
        forked = self.forked
        if forked is None:
            return 0
        while (code := forked.poll()) is None:
            await asyncio.sleep(0.02)
        forked.close()
        self.forked = None  # has_process is now False, as after LocalProvisioner.wait
        return code

    async def send_signal(self, signum: int) -> None:
        """Signal the kernel's process group (the kernel and what it started), like spawn."""
        forked = self.forked
        if forked is None:
            return
        if forked.poll() is None:
            try:
                os.killpg(forked.pid, signum)
                return
            except OSError:
                pass
        else:  # leftovers of its group, if any; an empty group is fine
            with contextlib.suppress(OSError):
                os.killpg(forked.pid, signum)
        forked.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        if self.forked is not None:
            await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if self.forked is not None:
            await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        forked = self.forked
        if forked is not None and forked.poll() is not None:
            forked.close()
            self.forked = None
        await super().cleanup(restart=restart)


def make_provisioner(km: Any, preload: tuple[str, ...] = ()) -> ForkProvisioner:
    """A ForkProvisioner for kernel manager ``km``, built as KernelProvisionerFactory does.

    Install it with ``self.provisioner = make_provisioner(self)`` before calling
    ``super()._async_pre_start_kernel()``.  On a restart ``km`` already has a
    provisioner, and it must survive: it holds the cached ports, and a fresh one
    would pick new ports that the kernel (reading the kept connection file) and
    the connected client never hear of.  So the ForkProvisioner already
    installed is returned as it is, and one replacing a LocalProvisioner (a
    kernel first spawned) takes over its ports.
    """
    existing = getattr(km, "provisioner", None)
    if isinstance(existing, ForkProvisioner):
        existing.preload = _normalize_preload(preload)
        return existing
    provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
    provisioner.preload = _normalize_preload(preload)
    if isinstance(existing, LocalProvisioner):
        provisioner.ports_cached = existing.ports_cached
        provisioner.connection_info = existing.connection_info
    return provisioner
