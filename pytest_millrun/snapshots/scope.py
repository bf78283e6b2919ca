"""Which snapshot entries a run may call unused: syrupy's rule, by exact variation ids.

A run that names a folder (``pytest nbs``, ``testpaths``, the CLI's and the
API's notebook folder) or selects some variations still knows, for each
notebook that ran whole, every variation it has: entries of that notebook's
snapshot file with any other id are unused.  A snapshot file whose notebook
no longer exists is unused as a whole when the notebook's folder was
collected, unfiltered, by this run.  Anything else is left unchecked, never
guessed: a notebook that ran in part (``-k``, ``-m``, ``--deselect``,
``--lf``/``--sw``, a node id, an ``-x`` stop), a notebook that exists but
was not collected (another path argument, ``--ignore``), a folder with a
collection error.

Pure logic over paths and ids, shared by the plugin, the command and the API.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pytest_millrun.snapshots.store import (
    SnapshotFileError,
    Unused,
    read_file,
    snapshot_file,
)


@dataclass(frozen=True)
class Folder:
    """A folder (relative to the root, posix; ``.`` the root) a run collected unfiltered."""

    path: str
    #: whether the folders below it were collected too
    recursive: bool = True

    def holds(self, folder: PurePosixPath) -> bool:
        mine = PurePosixPath(self.path)
        if folder == mine:
            return True
        return self.recursive and (mine == PurePosixPath(".") or mine in folder.parents)


@dataclass(frozen=True)
class Scope:
    """What a run saw: the basis of its unused entries.

    ``whole`` maps each notebook (relative to the root, as in the snapshot
    file names) that ran every variation it has to those ids; ``partial``
    names the notebooks collected but not run whole.  ``folders`` are the
    folders collected without filters, ``filtered`` those that were not
    (a deselected variation, a collection error), which wins.
    """

    root: Path
    whole: Mapping[str, Collection[str]] = field(default_factory=dict)
    partial: Collection[str] = ()
    folders: Collection[Folder] = ()
    filtered: Collection[str] = ()


def _exists(root: Path, name: PurePosixPath) -> bool:
    """Whether a notebook (by any suffix: ``.ipynb``, a text notebook) is still there."""
    folder = root / name.parent
    if not folder.is_dir():
        return False
    return any(p.stem == name.name and not p.is_dir() for p in folder.iterdir())


def unused_in_scope(
    directory: Path, scope: Scope, ignored: Callable[[Path], bool] = lambda path: False
) -> Unused:
    """The unused entries of the snapshot files under ``directory`` that ``scope`` decides.

    ``ignored`` tells whether the run would not have collected a path (a
    notebook or a folder, as ``--ignore`` does); a deleted notebook that
    would have been ignored is not called unused.  Files that do not read as
    snapshot files are not ours and are skipped.
    """
    entries: dict[Path, list[str]] = {}
    unchecked: list[Path] = []
    if not directory.is_dir():
        return Unused()
    by_file = {snapshot_file(directory, nb): nb for nb in scope.whole}
    partial = {snapshot_file(directory, nb) for nb in scope.partial}
    filtered = {PurePosixPath(f) for f in scope.filtered}
    for path in sorted(directory.rglob("*.json")):
        try:
            stored = read_file(path)
        except SnapshotFileError:
            continue
        if not stored:
            continue
        if path in by_file:
            ids = set(scope.whole[by_file[path]])
            gone = sorted(v for v in stored if v not in ids)
            if gone:
                entries[path] = gone
            continue
        if path in partial:
            unchecked.append(path)
            continue
        name = PurePosixPath(path.relative_to(directory).with_suffix("").as_posix())
        if _exists(scope.root, name) or name.parent in filtered:
            continue
        if not any(folder.holds(name.parent) for folder in scope.folders):
            continue
        if _ignored(scope.root, name, ignored):
            continue
        entries[path] = sorted(stored)
    return Unused(entries, unchecked)


def _ignored(root: Path, name: PurePosixPath, ignored: Callable[[Path], bool]) -> bool:
    path = root / name.parent / f"{name.name}.ipynb"
    candidates = [path, *(root / parent for parent in name.parents if str(parent) != ".")]
    return any(ignored(candidate) for candidate in candidates)
