"""Run Jupyter notebooks over many parameter sets: a pytest plugin, a Python API and a CLI.

The public API is importable without loading papermill: the heavy modules are
imported on first use, so the pytest plugin costs nothing when it is off.
"""

from __future__ import annotations

from .api import RunFailedError, RunInterrupted, execute_run
from .execute import ExecutionResult, Failure
from .params import ParamsError
from .report import write_report
from .results import write_results
from .snapshots import MillrunSnapshotWarning, SnapshotMismatchError

__version__ = "0.1.0"

__all__ = [
    "ExecutionResult",
    "Failure",
    "MillrunSnapshotWarning",
    "ParamsError",
    "RunFailedError",
    "RunInterrupted",
    "SnapshotMismatchError",
    "__version__",
    "execute_run",
    "write_report",
    "write_results",
]
