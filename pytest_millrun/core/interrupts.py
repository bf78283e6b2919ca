"""SIGTERM handled as Ctrl-C, for every front end.

Why: CI systems cancel a job with SIGTERM, and Python's default for it kills the
process on the spot, so kernels would be orphaned and partial outputs lost.
Raising ``KeyboardInterrupt`` instead sends SIGTERM down the path Ctrl-C already
takes (partial outputs saved, kernels stopped, an interrupted summary).  The
plugin, the API and the Dask client share this one handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread.

    Only where the handler is Python's default and we are in the main thread, so
    a program's own SIGTERM handling is left alone; restored afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
