"""The plugin's state in a run: the stash keys its hooks, items and glue share.

Why a module of its own: the hooks must reach these keys in every pytest run,
notebooks on or off, while the items and the results and snapshot glue are only
imported once the plugin is on; keeping the keys here keeps that split cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_millrun.config.run_config import RunConfig
    from pytest_millrun.pipeline.stale_outputs import StaleOutputs

#: The run's configuration, resolved once at configure (absent when no millrun option is set).
settings_key: pytest.StashKey[RunConfig] = pytest.StashKey()


#: Strict-params violations found while collecting, refused together before anything runs.
strict_problems_key = pytest.StashKey[list[str]]()


#: Set once this process has started keeping the next kernel ahead (fork mode).
kernels_ahead_key = pytest.StashKey[bool]()


#: The item pytest runs after this one in this process (xdist knows it too), if any.
next_item_key = pytest.StashKey[pytest.Item | None]()


#: Outputs of earlier runs found (and removed, if asked) before this run, for the summary.
stale_key: pytest.StashKey[StaleOutputs] = pytest.StashKey()


#: The report section that carries a run's notes (e.g. the kernel it defaulted to).
NOTES_SECTION = "millrun"
