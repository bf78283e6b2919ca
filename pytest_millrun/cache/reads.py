"""The key's ``reads`` part: what a passing run read, as digests, and why a later run differs.

The kernel records what the notebook reads (:mod:`pytest_millrun.inkernel.read_recorder`:
files opened or not found, folders listed, modules imported from outside the
interpreter).  Here, in the host, after a passing run, :func:`reads_part` turns
that record into the part stored with the key: paths relative to the notebook's
folder where they lie under it (so a key means the same from every front end),
each file known by the digest of its content, hashed once per run
(:func:`pytest_millrun.cache.keys.sized_digest`), or above the hash limit by its
size, mtime and inode.  A file whose size or mtime differ from when the run
opened it, a listing or a module that changed while the run went on: the run's
key is unusable, and :func:`reads_part` says why.  On a later run
:func:`current_reads` digests the same paths again and :func:`read_changes`
words what differs, as ``-v`` shows it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_millrun.cache.keys import DEFAULT_HASH_LIMIT_MIB, run_memo, sized_digest, too_large
from pytest_millrun.core.globs import path_regexes
from pytest_millrun.inkernel.read_recorder import PAYLOAD_VERSION, Rules, listing_digest

#: At most this many changed reads are named in the reasons; the rest are counted.
_NAMED = 5
_KINDS = ("files", "modules", "listings", "missing")


@dataclass(frozen=True)
class ReadSettings:
    """What decides a run's read sets: sent to the kernel, and used again in the host."""

    #: Folders whose files count even in the temp folder: the notebook's, the run's.
    roots: tuple[str, ...] = ()
    #: Folders and files that never count: the output folder, millrun's own source.
    exclude: tuple[str, ...] = ()
    #: Regular expressions of absolute paths the user ignores (``--millrun-cache-ignore``).
    ignore: tuple[str, ...] = ()
    hash_limit_mib: int = DEFAULT_HASH_LIMIT_MIB
    _rules: list[Rules] = field(default_factory=list, compare=False, repr=False)

    def kernel_settings(self) -> dict[str, Any]:
        """The JSON the kernel's recorder starts with."""
        return {
            "roots": list(self.roots),
            "exclude": list(self.exclude),
            "ignore": list(self.ignore),
        }

    def as_json(self) -> dict[str, Any]:
        """All of it as JSON, to travel with a job's key to wherever it runs."""
        return {**self.kernel_settings(), "hash_limit_mib": self.hash_limit_mib}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReadSettings:
        return cls(
            roots=tuple(data.get("roots", ())),
            exclude=tuple(data.get("exclude", ())),
            ignore=tuple(data.get("ignore", ())),
            hash_limit_mib=int(data.get("hash_limit_mib", DEFAULT_HASH_LIMIT_MIB)),
        )

    @property
    def rules(self) -> Rules:
        """The kernel's rules for a listing's names (the environment's folders: the kernel's)."""
        if not self._rules:
            self._rules.append(Rules(self.kernel_settings(), environment=False))
        return self._rules[0]


def read_settings(
    notebook_dir: Path,
    *,
    base: Path,
    exclude: Sequence[Path] = (),
    ignore: Sequence[str] = (),
    hash_limit_mib: int = DEFAULT_HASH_LIMIT_MIB,
) -> ReadSettings:
    """The settings of one notebook's runs; ``ignore`` globs are relative to ``base``."""
    root = os.path.abspath(base)
    millrun = Path(__file__).resolve().parents[1]  # an editable install's own source
    return ReadSettings(
        roots=tuple(dict.fromkeys([os.path.abspath(notebook_dir), root])),
        exclude=tuple(os.path.abspath(path) for path in (*exclude, millrun)),
        ignore=path_regexes(ignore, base),
        hash_limit_mib=hash_limit_mib,
    )


def name_of(path: str, notebook_dir: Path) -> str:
    """A path as the key holds it: relative to the notebook's folder when under it."""
    for folder in _folder_prefixes(notebook_dir):
        if path.startswith(folder):
            return path[len(folder) :].replace(os.sep, "/")
    return path


def _folder_prefixes(notebook_dir: Path) -> tuple[str, ...]:
    """The notebook's folder as given and resolved, each with its final separator.

    Worked out once per run (a run stamps thousands of reads per variation, and
    resolving the folder is an lstat per component).
    """
    memo = run_memo("folders")
    known = memo.get(notebook_dir)
    if known is None:
        both = (os.path.abspath(notebook_dir), os.path.realpath(notebook_dir))
        known = memo[notebook_dir] = tuple(dict.fromkeys(os.path.join(f, "") for f in both))
    return tuple(known)


def path_of(name: str, notebook_dir: Path) -> str:
    return os.path.join(os.path.abspath(notebook_dir), name)


def home_path(path: str, moved_from: str) -> str:
    """A path the kernel recorded, as it is on the client (``moved_from``: the folder of
    the Dask task that ran the notebook away from home, see ``dispatch.ship_worker``)."""
    if moved_from and path.startswith(moved_from + os.sep):
        return path[len(moved_from) :]
    return path


def reads_part(
    payload: Mapping[str, Any], notebook_dir: Path, settings: ReadSettings, moved_from: str = ""
) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``reads`` part of a passing run's key, or None and why the key cannot be kept.

    ``moved_from``: the run read its files under this folder (a Dask task's), at their
    client paths below it; the part names the client's paths.
    """
    if payload.get("problem"):
        return None, [str(payload["problem"])]
    if payload.get("version") != PAYLOAD_VERSION:
        return None, ["the kernel's read record is of another millrun version"]
    home_dir = Path(home_path(str(notebook_dir), moved_from))

    def named(path: str) -> str:
        return name_of(home_path(path, moved_from), home_dir)

    unusable: list[str] = []
    part: dict[str, Any] = {kind: {} for kind in _KINDS[:3]}
    for kind, word in (("files", "read"), ("modules", "imported")):
        for path, stat in payload.get(kind, {}).items():
            name = named(path)
            try:
                now = os.stat(path)
            except OSError:
                unusable.append(f"{word} {name} removed during the run")
                continue
            if [now.st_size, now.st_mtime_ns] != list(stat):
                unusable.append(f"{word} {name} changed during the run")
                continue
            part[kind][name] = sized_digest(Path(path), settings.hash_limit_mib)
    listed, changed = dict(payload.get("listings", {})), set(payload.get("changed", ()))
    for path in sorted(changed):
        word = "listing of" if path in listed else "imported"
        unusable.append(f"{word} {named(path)} changed during the run")
    for folder, seen in listed.items():
        name = named(folder)
        if folder not in changed and _listing(folder, settings) != seen:
            unusable.append(f"listing of {name} changed during the run")
        part["listings"][name] = seen
    missing = sorted(payload.get("missing", ()))
    part["missing"] = sorted(named(path) for path in missing)
    appeared = [path for path in missing if os.path.lexists(path)]
    unusable += [f"{named(path)} appeared during the run" for path in appeared]
    return (None, unusable) if unusable else (part, [])


def current_reads(
    stored: Mapping[str, Any], notebook_dir: Path, settings: ReadSettings
) -> dict[str, Any]:
    """The same paths as ``stored`` holds, digested as they are now."""
    now: dict[str, Any] = {}
    for kind in ("files", "modules"):
        found = {}
        for name in stored.get(kind) or {}:
            found[name] = sized_digest(Path(path_of(name, notebook_dir)), settings.hash_limit_mib)
        now[kind] = found
    now["listings"] = {
        name: _listing(path_of(name, notebook_dir), settings)
        for name in stored.get("listings") or {}
    }
    now["missing"] = [
        name
        for name in stored.get("missing") or ()
        if not os.path.lexists(path_of(name, notebook_dir))
    ]
    return now


def read_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why the reads differ, file by file: ``read data/prices.csv changed`` and the like."""
    reasons: list[str] = []
    for kind, word in (("files", "read "), ("modules", "imported "), ("listings", "listing of ")):
        before, after = old.get(kind) or {}, new.get(kind) or {}
        for name in sorted(before):
            now = after.get(name, "missing")
            if now == before[name]:
                continue
            if now == "missing":
                reasons.append(f"{word}{name} removed")
            else:
                reasons.append(f"{word}{name} changed{too_large(str(before[name]))}")
    still = set(new.get("missing") or ())
    appeared = [name for name in sorted(old.get("missing") or ()) if name not in still]
    reasons += [f"{name} now exists" for name in appeared]
    if len(reasons) > _NAMED:
        reasons[_NAMED:] = [f"{len(reasons) - _NAMED} more reads changed"]
    return reasons


def describe(part: Mapping[str, Any]) -> list[str]:
    """The read set, one line each, as ``-vv`` lists it."""
    lines = [f"read {name}" for name in sorted(part.get("files") or {})]
    lines += [f"imported {name}" for name in sorted(part.get("modules") or {})]
    lines += [f"listed {name}" for name in sorted(part.get("listings") or {})]
    lines += [f"looked for {name} (not found)" for name in sorted(part.get("missing") or ())]
    return lines


def _listing(folder: str, settings: ReadSettings) -> str:
    """A folder's listing digest, made once per run while the folder is unchanged."""
    try:
        stat = os.stat(folder)
    except OSError:
        return "missing"
    memo = run_memo("listings")
    key = (folder, stat.st_mtime_ns, stat.st_ino, settings.exclude, settings.ignore)
    known = memo.get(key)
    if known is None:
        known = memo[key] = listing_digest(folder, settings.rules)
    return str(known)

