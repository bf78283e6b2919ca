"""How many threads each kernel's native thread pools get when a machine runs several kernels.

Why: OpenMP, OpenBLAS and MKL size their thread pools to the machine's cores, so two
kernels side by side (``pytest -n 2``, ``millrun --workers 2``) each start as many threads
as there are cores, and an OpenMP pool that spins while it waits for its other threads
slows down badly when the cores are shared: scikit-learn's ``KMeans`` notebook of the
Python Data Science Handbook took 49 s beside another notebook on 2 cores, and 10 s with
one thread per kernel.  So, as Dask's nanny and joblib's loky do for their workers, each
kernel gets the cores divided by the kernels running at once, through the variables the
libraries read when they load (a fork template starts with them too: they are part of
its start-up environment).  A user who sets any of them decides for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The variables that size the native thread pools a notebook's libraries start.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

#: Set by the process pool in its workers' environment: how many kernels run at once.
#: (pytest-xdist's workers have ``PYTEST_XDIST_WORKER_COUNT``.)
KERNELS_AT_ONCE = "MILLRUN_KERNELS_AT_ONCE"


def usable_cpus() -> int:
    """The cores this process may run on (its affinity, as a container's limits set it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def kernels_at_once(env: Mapping[str, str]) -> int:
    """How many kernels this machine runs side by side, as the running front end says."""
    for name in (KERNELS_AT_ONCE, "PYTEST_XDIST_WORKER_COUNT"):
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def thread_limits(env: Mapping[str, str], cpus: int) -> dict[str, str]:
    """The thread variables to add to a kernel's ``env``: none when one kernel runs at a
    time or when the user set any of them."""
    at_once = kernels_at_once(env)
    if at_once <= 1 or any(name in env for name in THREAD_VARIABLES):
        return {}
    threads = str(max(1, cpus // at_once))
    return dict.fromkeys(THREAD_VARIABLES, threads)
