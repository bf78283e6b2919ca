"""Runs in the host: the kernel session's built-in start parts, and waiting on the relay.

The functions sent live in :mod:`pytest_millrun.inkernel` (they run inside the
kernel and import only the standard library); here each becomes the start code
of a :class:`~pytest_millrun.execution.kernel_session.KernelSessionPart`, sent in
the session's one silent start request of every Python kernel.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable

from pytest_millrun.execution.kernel_session import KernelSessionPart, kernel_source
from pytest_millrun.inkernel import faulthandler, preloaded_plots, stderr_relay


def _call(function: Callable[[], None]) -> str:
    """The in-kernel function's source and a call of it."""
    module = sys.modules[function.__module__]
    return kernel_source(module, function.__name__) + f"\n{function.__name__}()\n"


class FaultDumpPart(KernelSessionPart):
    """A segfault's dump goes to the kernel's log, not into the pipe that dies with it."""

    name = "faulthandler"

    def start_code(self) -> str:
        return _call(faulthandler.point_faulthandler_at_the_real_stderr)


class StderrRelayPart(KernelSessionPart):
    """A dying kernel's last words reach its log (a relay process outlives the kernel)."""

    name = "stderr_relay"

    def start_code(self) -> str:
        return _call(stderr_relay.relay_stderr_through_a_process_that_outlives_the_kernel)


class PreloadedPlotsPart(KernelSessionPart):
    """A pyplot the fork template preloaded draws with the kernel's backend, figures shown."""

    name = "preloaded_plots"

    def start_code(self) -> str:
        return _call(preloaded_plots.rebind_preloaded_pyplot)


def builtin_parts() -> tuple[KernelSessionPart, ...]:
    """The parts every execution has, in order: the fault dump's file first, as it takes the
    real stderr that the relay then hides."""
    return (FaultDumpPart(), StderrRelayPart(), PreloadedPlotsPart())


def wait_for_relay(log: os.PathLike[str] | str, timeout: float = 2.0) -> None:
    """Return once no relay holds ``log``: a dead kernel's last bytes are then in it.

    Only for a kernel known to be dead: a live kernel's relay holds the lock
    for as long as the kernel lives, and this would wait the whole ``timeout``.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no relay either
        return
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)
            except OSError:
                return
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
