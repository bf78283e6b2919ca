"""Runs inside the kernel: gives a pyplot its fork template imported the kernel's backend.

Why: a template that preloaded ``matplotlib.pyplot`` (``--millrun-preload``, or learned
from earlier runs) imported it before ipykernel set ``MPLBACKEND`` to its inline
backend, and before the kernel's shell existed, so pyplot kept another backend and
matplotlib-inline never registered the hook that shows a cell's figures: every
figure would silently vanish from the output.  Here, in the kernel's start request
(its shell now exists), pyplot switches to the backend the kernel's environment
names and the inline integration is set up, as an import in a cell would have done.
Nothing happens in a kernel whose pyplot was not preloaded (a spawned one).

Standard library only at the top: matplotlib is touched only when already imported.
"""

from __future__ import annotations


def rebind_preloaded_pyplot() -> None:
    import os
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")
    wanted = os.environ.get("MPLBACKEND")
    if pyplot is None or not wanted:
        return
    import matplotlib

    matplotlib.rcParams["backend"] = wanted
    pyplot.switch_backend(wanted)
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is not None:  # imported before the shell existed: its hook was never set
        inline._enable_matplotlib_integration()
