"""The read set a run's kernel recorded, kept in its output for the next run to use.

Why apart from the cache key's ``reads`` part: that part exists only for a
passing run with the cache on, and holds digests for the cache's check; what
the next run needs to ship a notebook to a Dask worker without the client's
file system (:mod:`pytest_millrun.dispatch.ship_manifest`) is only the paths:
every file read or imported, every folder listed, every file looked for and not
found (a failed run's too: the file it missed is what the next run must carry).
So any run that recorded its reads (the cache or shipping asked for it) keeps
them in ``metadata.millrun.reads``, named as the key names them (relative to the
notebook's folder where they lie under it, absolute otherwise).

A run that ran in a Dask task's private folder recorded the folder's paths;
``moved_from`` (the folder) is taken off them, so what is kept names the
client's files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_millrun.cache.reads import home_path, name_of, path_of
from pytest_millrun.cache.verdicts import replace_json
from pytest_millrun.core.discovery import OUTPUT_MARKER

#: The entry of ``metadata.millrun`` that holds the last run's read set.
READS_ENTRY = "reads"
_KINDS = ("files", "modules", "listings", "missing")


def read_set_entry(
    payload: Mapping[str, Any], notebook_dir: Path, moved_from: str = ""
) -> dict[str, list[str]]:
    """The recorder's payload as the output keeps it: names only, no digests or stats."""
    entry: dict[str, list[str]] = {}
    for kind in _KINDS:
        paths = payload.get(kind) or ()
        entry[kind] = sorted(name_of(home_path(p, moved_from), notebook_dir) for p in paths)
    return entry


def keep_read_set(
    output: Path, payload: Mapping[str, Any], notebook_dir: Path, moved_from: str = ""
) -> None:
    """Write the run's read set into its output (before the cache stamps it, if it does)."""
    if not isinstance(payload, Mapping) or payload.get("problem") or "files" not in payload:
        return
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return
    marker = nb.setdefault("metadata", {}).setdefault(OUTPUT_MARKER, {})
    marker[READS_ENTRY] = read_set_entry(payload, notebook_dir, moved_from)
    replace_json(output, nb)


def last_read_set(output: Path, notebook_dir: Path) -> dict[str, list[str]]:
    """The read set an output's run recorded, as absolute client paths; empty when none."""
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return {}
    metadata = nb.get("metadata") if isinstance(nb, dict) else None
    marker = metadata.get(OUTPUT_MARKER) if isinstance(metadata, dict) else None
    entry = marker.get(READS_ENTRY) if isinstance(marker, dict) else None
    if not isinstance(entry, dict):
        return {}
    return {
        kind: [path_of(str(name), notebook_dir) for name in entry.get(kind) or ()]
        for kind in _KINDS
    }
