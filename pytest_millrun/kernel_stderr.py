"""Runs inside each IPython kernel (sent with the silent request before the first cell).

Why: ipykernel redirects file descriptor 2 into a pipe that a thread of the
kernel reads and relays twice, to the notebook and to the kernel's real stderr
(the log a crash report quotes).  When the kernel dies at once after writing,
as ``os.write(2, ...); os._exit(3)`` does, the bytes are still in that pipe or
in the thread's hands, and die with it: the report missed the kernel's last
words in about one crash in four.

Here descriptor 2 is pointed at a new pipe instead, read by a small relay
process forked from the kernel.  The relay writes each chunk to the log first
and then into ipykernel's pipe (so the notebook still shows it), and, being a
process of its own, outlives the kernel long enough to empty the pipe.  It
holds an ``flock`` on the log until it exits, so the reader of a dead kernel's
log can wait until the last bytes are in (:func:`wait_for_relay`).  Linux only
(where the log's path is read from ``/proc``); elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time


def relay_stderr_through_a_process_that_outlives_the_kernel() -> None:
    import contextlib
    import fcntl
    import os
    import signal
    import sys
    import warnings
    from typing import Any

    stream: Any = sys.stderr
    real = getattr(stream, "_original_stdstream_copy", None)
    if (
        real is None
        or getattr(stream, "_fid", None) is None
        or getattr(stream, "_original_stdstream_fd", None) != 2
        or getattr(stream, "millrun_relay", False)
        or not sys.platform.startswith("linux")
    ):
        return  # no descriptor capture in this kernel, another ipykernel, or done already
    lock = -1
    with contextlib.suppress(OSError):  # a pipe or a deleted file has nothing to wait on
        path = os.readlink(f"/proc/self/fd/{real}")
        if path.startswith("/"):
            lock = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            fcntl.flock(lock, fcntl.LOCK_EX)
    capture = os.dup(2)  # ipykernel's pipe, towards the notebook
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # the kernel's threads do not exist in the relay
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel
            keep = {read_end, real, capture, lock}
            for name in os.listdir("/proc/self/fd"):
                if int(name) not in keep:
                    with contextlib.suppress(OSError):
                        os.close(int(name))
            targets = [real, capture]
            while True:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                for target in list(targets):  # the log first: it must outlive the kernel
                    try:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(target, view) :]
                    except OSError:  # the kernel is gone, and its pipe with it
                        targets.remove(target)
        finally:
            os._exit(0)
    os.close(read_end)
    if lock >= 0:
        os.close(lock)  # the relay holds the lock now, until it exits
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    stream._original_stdstream_copy = devnull  # the relay writes the log; no second copy
    os.dup2(write_end, 2)
    os.close(write_end)
    close = stream.close

    def fileno() -> int:
        return int(real)  # what ``sys.stderr.fileno()`` gave before: the real stderr

    def close_and_restore() -> None:
        # ipykernel's close wakes its thread through descriptor 2 and then puts the real
        # stderr back there: give it back its own pipe first, and the real copy.
        os.dup2(capture, 2)
        os.close(capture)
        stream._original_stdstream_copy = real
        os.close(devnull)
        close()

    stream.fileno = fileno
    stream.close = close_and_restore
    stream.millrun_relay = pid


@functools.cache
def request_code() -> str:
    """The code of the silent request: the function above, run in a namespace of its own."""
    function = relay_stderr_through_a_process_that_outlives_the_kernel
    source = inspect.getsource(function)
    call = f"{function.__name__}()"
    return f"exec({source + call!r}, {{}})"


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
