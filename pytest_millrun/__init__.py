"""Run Jupyter notebooks over many parameter sets: a pytest plugin, a Python API and a CLI.

Why lazy (PEP 562): pytest imports this package whenever the plugin is installed,
in every plain ``pytest`` run of the environment, notebooks or not.  Each public
name is imported from its module on first use, so loading the plugin costs a few
small modules and never papermill.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    "ExecutionResult": "pytest_millrun.core.data",
    "Failure": "pytest_millrun.core.data",
    "MillrunSnapshotWarning": "pytest_millrun.snapshots.checks",
    "ParamsError": "pytest_millrun.core.params",
    "RunFailedError": "pytest_millrun.api",
    "RunInterrupted": "pytest_millrun.core.data",
    "SnapshotMismatchError": "pytest_millrun.snapshots.checks",
    "execute_run": "pytest_millrun.api",
    "write_report": "pytest_millrun.report.page",
    "write_results": "pytest_millrun.results",
}

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

if TYPE_CHECKING:
    from pytest_millrun.api import RunFailedError, execute_run
    from pytest_millrun.core.data import ExecutionResult, Failure, RunInterrupted
    from pytest_millrun.core.params import ParamsError
    from pytest_millrun.report.page import write_report
    from pytest_millrun.results import write_results
    from pytest_millrun.snapshots.checks import MillrunSnapshotWarning, SnapshotMismatchError


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
