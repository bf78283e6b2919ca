"""How many threads each kernel's native thread pools get when a machine runs several kernels.

Why: OpenMP, OpenBLAS and MKL size their thread pools to the machine's cores, so two
kernels side by side (``pytest -n 2``, ``millrun --workers 2``) each start as many threads
as there are cores, and an OpenMP pool that spins while it waits for its other threads
slows down badly when the cores are shared: scikit-learn's ``KMeans`` notebook of the
Python Data Science Handbook took 49 s beside another notebook on 2 cores, and 10 s with
one thread per kernel.  So, as joblib's loky does for its workers (Dask's nanny sets 1),
each kernel gets the cores divided by the kernels that may run at once, through the
variables the libraries read when they load (a fork template starts with them too: they
are part of its start-up environment).  A variable the user set is kept; one who sets
``OMP_NUM_THREADS``, which the others fall back to, decides for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
    """The cores this process may use: its affinity (``--cpuset-cpus``), and no more than
    its cgroup's CPU quota (``docker --cpus``, a Kubernetes CPU limit), as loky counts."""
    affinity = getattr(os, "sched_getaffinity", None)  # not on macOS or Windows
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPU quota of this process's cgroup in whole cores (rounded up), None if none."""
    for quota_file, period_file in (
        (root / "cpu.max", None),  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
        (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),  # v1
    ):
        try:
            fields = quota_file.read_text().split()
            if period_file is not None:
                fields += period_file.read_text().split()
            quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # "max", -1, or no such file
        if quota > 0 and period > 0:
            return max(1, -(-quota // period))
    return None


def kernels_at_once(env: Mapping[str, str]) -> int:
    """How many kernels this machine runs side by side, as the running front end says."""
    for name in (KERNELS_AT_ONCE, "PYTEST_XDIST_WORKER_COUNT"):
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def thread_limits(env: Mapping[str, str], cpus: int) -> dict[str, str]:
    """The thread variables to add to a kernel's ``env``: those it does not set, and none
    when one kernel runs at a time or when it sets ``OMP_NUM_THREADS``."""
    at_once = kernels_at_once(env)
    if at_once <= 1 or env.get("OMP_NUM_THREADS"):
        return {}
    threads = str(max(1, cpus // at_once))
    return {name: threads for name in THREAD_VARIABLES if not env.get(name)}
