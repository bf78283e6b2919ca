"""Runs in the host: the silent set-up request sent into each kernel, and waiting on its relay.

The functions sent live in :mod:`pytest_millrun.inkernel` (they run inside the
kernel and import only the standard library); here they become the source of one
silent ``execute`` request, built once per process.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable

from pytest_millrun.inkernel.faulthandler import point_faulthandler_at_the_real_stderr
from pytest_millrun.inkernel.stderr_relay import (
    relay_stderr_through_a_process_that_outlives_the_kernel,
)


def _request(function: Callable[[], None]) -> str:
    """The function's source and a call of it, run in a namespace of its own."""
    return f"exec({inspect.getsource(function) + f'{function.__name__}()'!r}, {{}})"


@functools.cache
def setup_request_code() -> str:
    """The silent request run before the first cell: the fault dump's file, then the relay."""
    return "\n".join(
        _request(function)
        for function in (
            point_faulthandler_at_the_real_stderr,
            relay_stderr_through_a_process_that_outlives_the_kernel,
        )
    )


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
