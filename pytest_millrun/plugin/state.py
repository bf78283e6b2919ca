"""The one stash key of the plugin's session, and the report section of a run's notes.

Why a module of its own: the hooks must reach the session in every pytest run,
notebooks on or off, while the session, the items and the glue are only imported
once a millrun option is set; keeping the key here keeps that split cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_millrun.plugin.session import MillrunSession

#: The plugin's session in this process (absent when no millrun option is set).
session_key: pytest.StashKey[MillrunSession] = pytest.StashKey()

#: The items' node ids as collected, before longest first reordered them (``-n 0`` only):
#: the results table and the report keep this order, as they do under xdist.
collection_order_key: pytest.StashKey[list[str]] = pytest.StashKey()

#: The report section that carries a run's notes (e.g. the kernel it defaulted to).
NOTES_SECTION = "millrun"

#: The user property every notebook item carries once it runs: its output's path.
OUTPUT_PROPERTY = "millrun_output"
#: The user property of a run's cells as JSON: ``[[index, seconds, first line], ...]``.
CELLS_PROPERTY = "millrun_cell_seconds"
