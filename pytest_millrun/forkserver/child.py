"""Runs in the freshly forked child only: its set-up from ``os.fork()`` until it is ipykernel.

Why apart from the template's loop (:mod:`.template_process`): this code runs once per
kernel, in a process that must end up indistinguishable from a spawned kernel --
new session, cwd, umask, stdio, environment, reseeded RNGs, ``sys.argv`` and
``/proc`` -- and may never return into the template's code.  Standard library only
until ipykernel takes over (loaded in the template without the package).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

from .proctitle import set_cmdline, set_environ_block
from .protocol import describe_error


@dataclass
class KernelJob:
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
            report = describe_error(exc)
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
        set_cmdline(self.argv)
        set_environ_block(self.env)
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
