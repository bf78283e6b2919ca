"""Runs in the parent: which job starts first, so a long notebook never starts last.

Why: ten short notebooks and one long one named last, over two workers, wait for the
long one to start after the short ones are done; started first, it runs beside them.
The durations of the last run are known (each output notebook records its own, the
plugin keeps them in pytest's cache too), so the longest known run starts first.  One
ordering for every front end: the CLI and the API order their jobs with
:func:`longest_first`, the plugin's xdist scheduler and its ``-n 0`` item order too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def longest_first(
    items: Sequence[T], durations: Mapping[K, float], key: Callable[[T], K]
) -> list[T]:
    """``items`` with those of known duration longest first, after those of unknown duration.

    Unknown ones (new, or never run) keep their order and come first: any of them may be
    the longest, and known short ones are the best filler at the end of a run.  Equal
    durations keep their order, so with nothing known the order is the given one.
    """
    unknown = [item for item in items if key(item) not in durations]
    known = [item for item in items if key(item) in durations]
    known.sort(key=lambda item: -durations[key(item)])  # stable: ties keep their order
    return [*unknown, *known]


def output_duration(output: Path) -> float | None:
    """The seconds of the last run of an output: its cells' as papermill recorded them, or None.

    The cells' sum is the notebook's own work; the whole run's ``duration`` papermill
    writes into the metadata (the fallback) also holds its kernel's start, which the first
    run of a process pays for a fork template, so the first notebook would look longest.
    """
    try:
        with output.open(encoding="utf-8") as handle:
            nb = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(nb, dict):
        return None
    cells = [
        _seconds(cell.get("metadata", {}).get("papermill"))
        for cell in nb.get("cells") or ()
        if isinstance(cell, dict) and cell.get("cell_type") == "code"
    ]
    known = [seconds for seconds in cells if seconds is not None]
    if known:
        return sum(known)
    metadata = nb.get("metadata")
    return _seconds(metadata.get("papermill") if isinstance(metadata, dict) else None)


def _seconds(papermill: object) -> float | None:
    duration = papermill.get("duration") if isinstance(papermill, dict) else None
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
        return None
    return float(duration)


def outputs_durations(outputs: Iterable[Path]) -> dict[Path, float]:
    """The known durations of these outputs' last runs (an output never written is left out)."""
    found: dict[Path, float] = {}
    for output in outputs:
        duration = output_duration(output)
        if duration is not None:
            found[output] = duration
    return found
