"""``import millrun``: the public API of pytest-millrun under the original tool's name."""

from __future__ import annotations

from pytest_millrun import *  # noqa: F403
from pytest_millrun import __all__, __version__  # noqa: F401
