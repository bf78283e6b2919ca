# Runs inside every kernel the test suite starts: conftest.py names it in $PYTHONSTARTUP,
# which IPython runs when a kernel starts (after the fork, for a forked kernel). When
# $MILLRUN_TEST_START_LOG is set it appends one line there, "fork" or "spawn": how this
# kernel was actually started, judged by its parent (a fork template or not). The
# ``kernel_start`` fixture reads the log to check that the mode asked for is the mode that
# ran, in whatever process or front end the test started its kernels.
# Comments, not a docstring, and one exec with its own namespace: the notebook's namespace
# must not gain a single name (``__doc__`` included).
exec(
    """
import os
log = os.environ.get("MILLRUN_TEST_START_LOG")
if log:
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
        forked = parent.read().startswith(b"millrun-fork-template")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"fork\\n" if forked else b"spawn\\n")
    finally:
        os.close(fd)
""",
    {},
)
