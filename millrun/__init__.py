"""``import millrun``: the public API of pytest-millrun under the original tool's name.

As lazy as :mod:`pytest_millrun`: each name is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest_millrun
from pytest_millrun import __all__, __version__  # noqa: F401

if TYPE_CHECKING:
    from pytest_millrun import (  # noqa: F401
        ExecutionResult,
        Failure,
        MillrunSnapshotWarning,
        ParamsError,
        RunFailedError,
        RunInterrupted,
        SnapshotMismatchError,
        execute_run,
        write_report,
        write_results,
    )


def __getattr__(name: str) -> Any:
    return getattr(pytest_millrun, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
