"""Which modules a fork template preloads because the notebooks imported them last time.

Why: nobody new knows to pass ``--millrun-preload numpy,pandas``, yet every kernel of a
run then imports them again (issue 34).  Each run records the installed third-party
modules its kernel imported (``metadata.millrun.preloads`` of the output, and pytest's
cache for the plugin); the next run's template imports their union, less those found
unfit to fork (a module that starts a thread at import), those ``--cov`` measures (their
import-time lines would be missed), and those already preloaded by name.
``--millrun-preload none`` turns preloading off, learned and named.  Pure logic.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

#: The output metadata's entry (under ``metadata.millrun``) and its keys.
PRELOADS_ENTRY = "preloads"
IMPORTED = "imported"
UNSAFE = "unsafe"
#: The ``preload`` value that turns preloading off, learned preloads included.
NONE = "none"


def preloads_off(preload: Iterable[str]) -> bool:
    """Whether the preload option says ``none``."""
    return any(name.strip().lower() == NONE for name in preload)


def named_preloads(preload: Iterable[str]) -> tuple[str, ...]:
    """The modules the preload option names (none for ``none``)."""
    names = tuple(preload)
    return () if preloads_off(names) else names


def read_record(metadata: Any) -> tuple[list[str], dict[str, str]] | None:
    """(imported modules, unsafe modules and why) from an output's ``metadata.millrun``."""
    entry = metadata.get(PRELOADS_ENTRY) if isinstance(metadata, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    imported = entry.get(IMPORTED)
    unsafe = entry.get(UNSAFE)
    return (
        [str(name) for name in imported] if isinstance(imported, list) else [],
        {str(k): str(v) for k, v in unsafe.items()} if isinstance(unsafe, Mapping) else {},
    )


def output_record(output: Path) -> tuple[list[str], dict[str, str]] | None:
    """The record in an output notebook (None: no output, or it has none)."""
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return None
    metadata = nb.get("metadata") if isinstance(nb, dict) else None
    return read_record(metadata.get("millrun") if isinstance(metadata, dict) else None)


def learned_preloads(
    imported: Iterable[Iterable[str]],
    unsafe: Collection[str] = (),
    *,
    named: Collection[str] = (),
    measured: Collection[str] = (),
) -> tuple[str, ...]:
    """The union of the runs' ``imported`` modules, sorted, less the ``unsafe`` ones, those
    in packages coverage ``measured`` (top-level names) and those already ``named``."""
    skip = {*unsafe, *named}
    names = {str(name) for names in imported for name in names}
    return tuple(
        sorted(
            name
            for name in names
            if all(part.isidentifier() for part in name.split("."))
            and name not in skip
            and name.partition(".")[0] not in measured
        )
    )
