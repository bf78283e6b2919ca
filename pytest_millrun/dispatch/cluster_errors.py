"""What a run on Dask says when the cluster cannot run it, on the client side.

Why a module of its own: the client's connection (:mod:`.dask_client`) and its
check of the workers (:mod:`.worker_checks`) both raise it, and the front ends
catch it, without importing ``distributed``.
"""

from __future__ import annotations

INSTALL_HINT = "Install it with: pip install 'pytest-millrun[dask]'"


class ClusterError(Exception):
    """Dask is not installed, the scheduler cannot be reached or has no workers, the workers
    lack what the run needs, or the files to ship to them exceed the limit."""
