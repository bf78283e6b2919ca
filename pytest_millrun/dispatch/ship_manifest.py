"""Runs on the client: which files a Dask task carries, so its notebook runs as at home.

A worker that does not see the client's file system (Kubernetes, cloud VMs, a
colleague's machine) gets, with each task, the notebook, the files of its
folder tree (:func:`tree_files`: bounded in depth and count, hidden folders,
caches and the run's outputs left out) and what the notebook's last run read
(:func:`pytest_millrun.cache.read_sets.last_read_set`: files read or imported
anywhere, the files of folders it listed, files it looked for that exist now).
Each lands at its client path below the task's private folder, so ``../data/x.csv``
and a ``src/`` folder resolve as at home.  Each distinct file is sent once per run
(the tasks' manifests name it by digest); a run's files together stay under a size
limit (:func:`check_size`), whose message names the biggest and how to go on.

Pure file-system logic, no Dask: :mod:`pytest_millrun.dispatch.shipping` sends what
this lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_millrun.core.globs import matches_any

#: The default limit (MiB) on the files one run ships to Dask workers.
DEFAULT_SHIP_LIMIT_MIB = 200
#: How deep below the notebook's folder its tree is shipped, and at most how many files.
TREE_DEPTH = 4
TREE_FILES = 2000
#: Folders never shipped with a tree (besides hidden ones): caches and environments.
SKIPPED_FOLDERS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", "env", "build", "dist"}
)
#: At most this many files are named by the size limit's message.
_NAMED = 5


class ShipLimitError(Exception):
    """The files a run would ship to Dask workers exceed the limit."""


@dataclass(frozen=True)
class ShipSettings:
    """How a run ships files to workers that do not see the client's file system."""

    limit_mib: int = DEFAULT_SHIP_LIMIT_MIB
    #: Regular expressions of absolute paths never shipped (:func:`core.globs.path_regexes`).
    exclude: tuple[str, ...] = ()
    #: How the front end spells the two options, for the size limit's message.
    limit_option: str = "ship_limit="
    exclude_option: str = "ship_exclude="


def tree_files(folder: Path, skip: Iterable[Path] = ()) -> list[str]:
    """The files of ``folder``'s tree a task carries, as absolute paths.

    Hidden files and folders, :data:`SKIPPED_FOLDERS` and the folders in ``skip``
    (the run's output folder) are left out; at most :data:`TREE_DEPTH` levels and
    :data:`TREE_FILES` files (the closest to the notebook first), so a notebook in a
    project's root does not ship the whole project.
    """
    skipped = {os.path.abspath(path) for path in skip}
    found: list[str] = []
    level = [os.path.abspath(folder)]
    for _depth in range(TREE_DEPTH + 1):
        below: list[str] = []
        for current in level:
            try:
                entries = sorted(os.scandir(current), key=lambda entry: entry.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or entry.path in skipped:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in SKIPPED_FOLDERS and not entry.name.endswith(".egg-info"):
                        below.append(entry.path)
                elif entry.is_file():
                    found.append(entry.path)
                    if len(found) >= TREE_FILES:
                        return found
        level = below
    return found


def read_set_files(read_set: Mapping[str, Sequence[str]]) -> list[str]:
    """The files a last run's read set (absolute client paths) makes a task carry.

    Files read and modules imported; files looked for and not found, if they exist
    now; the files directly in each listed folder, so that a ``glob`` sees on the
    worker what it would see at home, a new file included.
    """
    found = [*read_set.get("files", ()), *read_set.get("modules", ())]
    found += [path for path in read_set.get("missing", ()) if os.path.isfile(path)]
    for folder in read_set.get("listings", ()):
        try:
            found += [entry.path for entry in os.scandir(folder) if entry.is_file()]
        except OSError:
            continue
    return found


def job_files(
    notebook: Path, tree: Sequence[str], read_set: Sequence[str], exclude: Sequence[str]
) -> list[str]:
    """One task's files: its notebook, its folder's tree and its last read set, deduplicated,
    those that exist as regular files and are not excluded."""
    found: dict[str, None] = {}
    for path in (os.path.abspath(notebook), *tree, *read_set):
        if path in found or (exclude and matches_any(path, exclude)):
            continue
        if os.path.isfile(path):
            found[path] = None
    return list(found)


def check_size(sizes: Mapping[str, int], settings: ShipSettings) -> None:
    """Refuse a run whose distinct files exceed the limit, naming the biggest and the fixes."""
    total = sum(sizes.values())
    if total <= settings.limit_mib * (1 << 20):
        return
    biggest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:_NAMED]
    named = ", ".join(f"{path} ({_mib(size)})" for path, size in biggest)
    raise ShipLimitError(
        f"The Dask workers do not see this machine's files, so each task would carry its "
        f"notebook, its folder and what its last run read: {len(sizes)} files, "
        f"{_mib(total)} in all, above the limit of {settings.limit_mib} MiB. The biggest: "
        f"{named}. Raise the limit ({_given(settings.limit_option, 'MIB')}), leave files out "
        f"({_given(settings.exclude_option, 'GLOBS')}, e.g. data/raw/**), or give the workers "
        f"a shared file system with the same paths, where nothing is shipped."
    )


def _given(option: str, value: str) -> str:
    """``--ship-limit MIB`` or ``ship_limit=MIB``, as the front end spells its option."""
    return f"{option}{value}" if option.endswith("=") else f"{option} {value}"


def _mib(size: int) -> str:
    if size < 1 << 10:
        return f"{size} B"
    if size < 1 << 20:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size / (1 << 20):.1f} MiB"
