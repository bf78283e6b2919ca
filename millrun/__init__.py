"""``import millrun``: the public API of pytest-millrun under the original tool's name.

As lazy as :mod:`pytest_millrun`: each name is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest_millrun
from pytest_millrun import __all__ as __all__
from pytest_millrun import __version__ as __version__

if TYPE_CHECKING:
    # ``X as X``: exported, so a type checker of a user's code (mypy --strict, which
    # turns off implicit re-exports) sees each name with its type, not an error
    from pytest_millrun import ExecutionResult as ExecutionResult
    from pytest_millrun import Failure as Failure
    from pytest_millrun import MillrunSnapshotWarning as MillrunSnapshotWarning
    from pytest_millrun import ParamsError as ParamsError
    from pytest_millrun import RunFailedError as RunFailedError
    from pytest_millrun import RunInterrupted as RunInterrupted
    from pytest_millrun import SnapshotMismatchError as SnapshotMismatchError
    from pytest_millrun import execute_run as execute_run
    from pytest_millrun import write_report as write_report
    from pytest_millrun import write_results as write_results


def __getattr__(name: str) -> Any:
    return getattr(pytest_millrun, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
