"""Runs inside each IPython kernel (sent with the silent request before the first cell).

Why: ipykernel redirects file descriptor 2 into a pipe that a thread of the
kernel reads and relays twice, to the notebook and to the kernel's real stderr
(the log a crash report quotes).  When the kernel dies at once after writing,
as ``os.write(2, ...); os._exit(3)`` does, the bytes are still in that pipe or
in the thread's hands, and die with it: the report missed the kernel's last
words in about one crash in four.

Here descriptor 2 is pointed at a new pipe instead, read by ``tee`` started
from the kernel (in a session of its own): it writes each chunk to the log
first and then into ipykernel's pipe (so the notebook still shows it), and,
being a process of its own, outlives the kernel long enough to empty the pipe.
``tee`` rather than a fork of the kernel: a fork of a large Python process
makes every page the kernel then touches a copy (measured: 14 ms more per
notebook in fork mode), and a Python relay costs 9 ms of CPU; ``tee`` costs
about 1 ms.  It holds an ``flock`` on the log until it exits, so the
reader of a dead kernel's log can wait until the last bytes are in
(:func:`~pytest_millrun.execution.kernel_requests.wait_for_relay`).  Linux only
(``/proc``); where ``tee`` is missing, or on other systems, nothing changes.
"""

from __future__ import annotations


def relay_stderr_through_a_process_that_outlives_the_kernel() -> None:
    import contextlib
    import fcntl
    import os
    import sys
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
            try:  # never wait: a relay of an earlier kernel on the same log may still hold it
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock)
                lock = -1
    capture = os.dup(2)  # ipykernel's pipe, towards the notebook
    read_end, write_end = os.pipe()
    # tee: stdin -> stdout (the log, first) and the named pipe (the notebook), in a session
    # of its own so that the kill of the kernel's process group cannot cut it short, with
    # SIGPIPE still ignored so that a dead kernel's pipe is only a failed write.  posix_spawn
    # keeps the GIL: a call that lets it go waits up to 5 ms per switch to get it back from
    # the threads of a kernel that has just started (Popen cost 5-23 ms here, this 1 ms).
    high = max(real, capture, read_end, write_end, lock) + 1
    actions = [
        (os.POSIX_SPAWN_DUP2, read_end, 0),
        (os.POSIX_SPAWN_DUP2, real, 1),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, capture, high),
    ]
    if lock >= 0:  # held for as long as tee lives
        actions.append((os.POSIX_SPAWN_DUP2, lock, high + 1))
    try:
        relay = os.posix_spawnp(
            "tee", ["tee", "-i", f"/proc/self/fd/{high}"], os.environ,
            file_actions=actions, setsid=True,
        )  # fmt: skip
    except OSError:  # no tee here: ipykernel's own relay, as before
        for fd in (capture, read_end, write_end, lock):
            if fd >= 0:
                os.close(fd)
        return
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
    stream.millrun_relay = relay
