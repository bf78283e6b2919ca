"""Runs inside each IPython kernel (sent as a silent request before the first cell).

Why: ipykernel captures file descriptor 2 into a pipe that a thread of the
kernel relays to the notebook and to the kernel's real stderr (our log), and it
makes ``faulthandler.enable()`` write to ``sys.__stderr__``, which is that same
descriptor.  A segfault kills the relay thread with the dump still in the pipe,
so the dump never reaches the log the failure report quotes.  Pointed at
ipykernel's saved copy of the real stderr instead, the dump is written where
it survives the crash.  Nothing is enabled here: only the default file of
``faulthandler.enable`` and ``faulthandler.register`` changes.
"""

from __future__ import annotations


def point_faulthandler_at_the_real_stderr() -> None:
    import faulthandler
    import sys
    from typing import Any

    real = getattr(sys.stderr, "_original_stdstream_copy", None)
    if real is None or getattr(faulthandler.enable, "millrun", False):
        return  # no descriptor capture in this kernel, or done already
    enable, register = faulthandler.enable, getattr(faulthandler, "register", None)

    def enable_on_real_stderr(file: Any = real, all_threads: bool = True, **kwargs: Any) -> Any:
        return enable(file=file, all_threads=all_threads, **kwargs)

    setattr(enable_on_real_stderr, "millrun", True)  # noqa: B010
    faulthandler.enable = enable_on_real_stderr
    if register is not None:

        def register_on_real_stderr(
            signum: int, file: Any = real, all_threads: bool = True, chain: bool = False
        ) -> Any:
            return register(signum, file=file, all_threads=all_threads, chain=chain)

        faulthandler.register = register_on_real_stderr
